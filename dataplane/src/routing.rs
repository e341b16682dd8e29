//! The routing snapshot of the invocation path's `route` phase: which function versions are
//! invocable and on which workers, built from the replicated state. It is an immutable value,
//! rebuilt and swapped whole when the feed changes; a request reads one snapshot once.
//!
//! NVCF's rules (nvcf-api.md §2.2, §3.1): only ACTIVE and DEGRADING versions are invocable; a
//! DEGRADED one is a 400, anything else (unknown, INACTIVE, DEPLOYING, ERROR) a 404. Without a
//! pinned version one invocable version is picked at random.

use http::Uri;
use http::uri::{Authority, PathAndQuery, Scheme};
use model::feed::FeedState;
use model::function::FunctionStatus;
use model::worker::{InstanceStatus, WorkerStatus};
// foldhash, not SipHash: looked up on every call, keyed by control-plane ids and worker
// addresses (seeded per process).
use foldhash::HashMap;
use std::sync::Arc;
use uuid::Uuid;

/// A worker that serves a version, with that version's concurrency limit there.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WorkerTarget {
    pub worker_id: String,
    /// Base URL of the worker's invocation listener.
    pub address: String,
    /// The deployment's `maxRequestConcurrency` on this worker.
    pub max_concurrency: u32,
    /// `address` parsed once, when the snapshot is built (not on every request), or why it
    /// cannot be used.
    origin: Result<Origin, String>,
}

/// Scheme, authority and path prefix of a worker's base URL.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Origin {
    scheme: Scheme,
    authority: Authority,
    /// The base URL's path without its trailing `/` (usually empty).
    prefix: String,
}

impl WorkerTarget {
    pub fn new(worker_id: String, address: String, max_concurrency: u32) -> Self {
        let origin = Origin::parse(&address);
        Self {
            worker_id,
            address,
            max_concurrency,
            origin,
        }
    }

    /// The URI of an already parsed `path` on this worker: shared, not copied, when the worker's
    /// base URL has no path of its own (the usual case, and a passthrough call's).
    pub fn uri_with(&self, path: &PathAndQuery) -> Result<Uri, String> {
        let origin = self.origin.as_ref().map_err(Clone::clone)?;
        if !origin.prefix.is_empty() {
            return self.uri(path.as_str());
        }
        let mut parts = http::uri::Parts::default();
        parts.scheme = Some(origin.scheme.clone());
        parts.authority = Some(origin.authority.clone());
        parts.path_and_query = Some(path.clone());
        Uri::from_parts(parts).map_err(|e| format!("worker address '{}': {e}", self.address))
    }

    /// The URI of `path_and_query` on this worker.
    pub fn uri(&self, path_and_query: &str) -> Result<Uri, String> {
        let origin = self.origin.as_ref().map_err(Clone::clone)?;
        let slash = if path_and_query.starts_with('/') {
            ""
        } else {
            "/"
        };
        let path = if origin.prefix.is_empty() && slash.is_empty() {
            PathAndQuery::try_from(path_and_query)
        } else {
            PathAndQuery::try_from(format!("{}{slash}{path_and_query}", origin.prefix))
        }
        .map_err(|e| format!("path '{path_and_query}' on worker {}: {e}", self.address))?;
        let mut parts = http::uri::Parts::default();
        parts.scheme = Some(origin.scheme.clone());
        parts.authority = Some(origin.authority.clone());
        parts.path_and_query = Some(path);
        Uri::from_parts(parts).map_err(|e| format!("worker address '{}': {e}", self.address))
    }
}

impl Origin {
    fn parse(address: &str) -> Result<Self, String> {
        let uri: Uri = address
            .trim_end_matches('/')
            .parse()
            .map_err(|e| format!("worker address '{address}': {e}"))?;
        let (Some(scheme), Some(authority)) = (uri.scheme(), uri.authority()) else {
            return Err(format!("worker address '{address}' names no host"));
        };
        Ok(Self {
            scheme: scheme.clone(),
            authority: authority.clone(),
            prefix: uri.path().trim_end_matches('/').to_owned(),
        })
    }
}

/// Everything the invocation path needs of one function version.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VersionRoute {
    pub function_id: Uuid,
    pub version_id: Uuid,
    pub name: String,
    pub status: FunctionStatus,
    /// Path the worker sees for pexec/exec calls.
    pub inference_url: String,
    /// Workers with a ready instance of this version, on READY workers, ordered by worker id.
    pub targets: Vec<WorkerTarget>,
    /// The `NVCF-FUNCTION-VERSION-ID` every request to this version carries, built once per snapshot.
    pub headers: RouteHeaders,
    /// The version's metric handles, registered once per snapshot.
    pub metrics: crate::metrics::VersionMetrics,
}

/// The version's `NVCF-FUNCTION-VERSION-ID`, prebuilt so that dispatch clones (a reference count)
/// instead of formatting per request. The headers that describe the function (`NVCF-FUNCTION-ID`,
/// `-NCAID`, `-FUNCTION-NAME`) are the worker's to add from its feed, not sent per call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RouteHeaders {
    pub version_id: http::HeaderValue,
    /// The same as an HTTP/1.1 header line, copied into a worker request head as one piece.
    pub block: bytes::Bytes,
}

impl RouteHeaders {
    pub fn new(version_id: Uuid) -> Self {
        let version_id = crate::headers::uuid_value(version_id);
        let mut block = Vec::with_capacity(64);
        crate::headers::put_line(
            &mut block,
            b"nvcf-function-version-id",
            version_id.as_bytes(),
        );
        Self {
            version_id,
            block: block.into(),
        }
    }
}

impl VersionRoute {
    /// How many requests the version's ready workers take at once.
    pub fn capacity(&self) -> u64 {
        self.targets
            .iter()
            .map(|t| u64::from(t.max_concurrency))
            .sum()
    }
}

/// Why a function cannot be invoked.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RouteError {
    #[error("Function id '{function_id}' version '{}': Specified function in account '{}' is not found", .version_id.map_or_else(|| "null".to_owned(), |v| v.to_string()), model::NCA_ID)]
    NotFound {
        function_id: Uuid,
        version_id: Option<Uuid>,
    },
    #[error("Function id '{function_id}': DEGRADED function cannot be invoked")]
    Degraded { function_id: Uuid },
}

/// The invocable versions of every function.
#[derive(Debug, Clone, Default)]
pub struct RoutingSnapshot {
    /// The feed revision this snapshot reflects.
    pub revision: u64,
    by_function: HashMap<Uuid, Vec<Arc<VersionRoute>>>,
}

impl RoutingSnapshot {
    /// Builds the snapshot from the replicated state.
    pub fn build(state: &FeedState) -> Self {
        let mut targets: HashMap<Uuid, Vec<WorkerTarget>> = HashMap::default();
        for i in state
            .instances
            .values()
            .filter(|i| i.status == InstanceStatus::Active)
        {
            let Some(w) = state
                .workers
                .get(&i.worker_id)
                .filter(|w| w.status == WorkerStatus::Ready)
            else {
                continue;
            };
            targets
                .entry(i.function_version_id)
                .or_default()
                .push(WorkerTarget::new(
                    i.worker_id.clone(),
                    w.registration.address.clone(),
                    i.max_request_concurrency,
                ));
        }
        let mut by_function: HashMap<Uuid, Vec<Arc<VersionRoute>>> = HashMap::default();
        for f in state.functions.values() {
            let mut t = targets.remove(&f.version_id).unwrap_or_default();
            t.sort_by(|a, b| a.worker_id.cmp(&b.worker_id));
            by_function
                .entry(f.id)
                .or_default()
                .push(Arc::new(VersionRoute {
                    headers: RouteHeaders::new(f.version_id),
                    metrics: crate::metrics::VersionMetrics::new(f.id, f.version_id),
                    function_id: f.id,
                    version_id: f.version_id,
                    name: f.name.clone(),
                    status: f.status,
                    inference_url: f.inference_url.clone(),
                    targets: t,
                }));
        }
        for versions in by_function.values_mut() {
            versions.sort_by_key(|v| v.version_id);
        }
        Self {
            revision: state.revision,
            by_function,
        }
    }

    /// The version to invoke: the pinned one, or one of the invocable ones chosen by `pick` (a
    /// random number from the caller, so this stays deterministic under test).
    pub fn lookup(
        &self,
        function_id: Uuid,
        version_id: Option<Uuid>,
        pick: u64,
    ) -> Result<&Arc<VersionRoute>, RouteError> {
        let not_found = RouteError::NotFound {
            function_id,
            version_id,
        };
        let versions = self
            .by_function
            .get(&function_id)
            .ok_or(not_found.clone())?;
        if let Some(vid) = version_id {
            let v = versions
                .iter()
                .find(|v| v.version_id == vid)
                .ok_or(not_found.clone())?;
            return match v.status {
                s if s.is_invocable() => Ok(v),
                FunctionStatus::Degraded => Err(RouteError::Degraded { function_id }),
                _ => Err(not_found),
            };
        }
        // Counted, then walked to the picked one: no list built per request.
        let invocable = || versions.iter().filter(|v| v.status.is_invocable());
        let count = invocable().count();
        if count == 0 {
            return if versions
                .iter()
                .any(|v| v.status == FunctionStatus::Degraded)
            {
                Err(RouteError::Degraded { function_id })
            } else {
                Err(not_found)
            };
        }
        invocable()
            .nth((pick % count as u64) as usize)
            .ok_or(not_found)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use model::feed::{Entity, FeedMessage};
    use model::function::{
        ApiBodyFormat, FunctionType, FunctionVersion, HealthDto, HealthProtocol,
    };
    use model::time::Timestamp;
    use model::worker::{InstanceRecord, WorkerRecord, WorkerRegistration};

    fn version(fid: Uuid, status: FunctionStatus) -> FunctionVersion {
        FunctionVersion {
            id: fid,
            version_id: Uuid::new_v4(),
            nca_id: model::NCA_ID.into(),
            name: "f".into(),
            status,
            inference_url: "/infer".into(),
            inference_port: None,
            container_args: None,
            container_environment: vec![],
            models: vec![],
            container_image: Some("builtin/echo".into()),
            api_body_format: ApiBodyFormat::Custom,
            helm_chart: None,
            helm_chart_service_name: None,
            health: HealthDto {
                protocol: HealthProtocol::Http,
                uri: "/h".into(),
                port: 8000,
                timeout: "PT10S".into(),
                expected_status_code: 200,
            },
            created_at: Timestamp::now(),
            resources: vec![],
            tags: vec![],
            description: None,
            function_type: FunctionType::Default,
            secrets: vec![],
            rate_limit: None,
            llm_invocation_config: None,
            telemetries: None,
            utils_container_image: None,
        }
    }

    fn worker(id: &str, status: WorkerStatus) -> WorkerRecord {
        WorkerRecord {
            registration: WorkerRegistration {
                worker_id: id.into(),
                address: format!("http://{id}"),
                cluster_group: "g".into(),
                cluster: "c".into(),
                gpus: vec![],
                instance_types: vec![],
                capacity: 4,
            },
            status,
            registered_at: Timestamp::now(),
        }
    }

    fn instance(v: &FunctionVersion, worker: &str, status: InstanceStatus) -> InstanceRecord {
        InstanceRecord {
            instance_id: Uuid::new_v4(),
            worker_id: worker.into(),
            function_id: v.id,
            function_version_id: v.version_id,
            deployment_id: Uuid::nil(),
            gpu_specification_id: Uuid::nil(),
            gpu: "CPU".into(),
            instance_type: "NCP.CPU_1x".into(),
            backend: "g".into(),
            max_request_concurrency: 4,
            status,
            error: None,
            created_at: Timestamp::now(),
            updated_at: Timestamp::now(),
        }
    }

    fn state(entities: Vec<Entity>) -> FeedState {
        let mut s = FeedState::default();
        s.apply(FeedMessage::Snapshot {
            revision: 7,
            key_hash_secret: String::new(),
            entities,
        })
        .expect("snapshot");
        s
    }

    #[test]
    fn only_ready_instances_on_ready_workers_are_targets() {
        let fid = Uuid::new_v4();
        let v = version(fid, FunctionStatus::Active);
        let s = state(vec![
            Entity::Worker(worker("a", WorkerStatus::Ready)),
            Entity::Worker(worker("b", WorkerStatus::Lost)),
            Entity::Worker(worker("c", WorkerStatus::Ready)),
            Entity::Instance(instance(&v, "a", InstanceStatus::Active)),
            Entity::Instance(instance(&v, "b", InstanceStatus::Active)),
            Entity::Instance(instance(&v, "c", InstanceStatus::Starting)),
            Entity::Function(v.clone()),
        ]);
        let snap = RoutingSnapshot::build(&s);
        assert_eq!(snap.revision, 7);
        let r = snap.lookup(fid, None, 0).expect("route");
        assert_eq!(
            r.targets
                .iter()
                .map(|t| t.worker_id.as_str())
                .collect::<Vec<_>>(),
            ["a"]
        );
        assert_eq!(r.capacity(), 4);
    }

    #[test]
    fn status_rules() {
        let fid = Uuid::new_v4();
        let active = version(fid, FunctionStatus::Active);
        let degrading = version(fid, FunctionStatus::Degrading);
        let deploying = version(fid, FunctionStatus::Deploying);
        let degraded = version(fid, FunctionStatus::Degraded);
        let snap = RoutingSnapshot::build(&state(vec![
            Entity::Function(active.clone()),
            Entity::Function(degrading.clone()),
            Entity::Function(deploying.clone()),
            Entity::Function(degraded.clone()),
        ]));
        assert_eq!(
            snap.lookup(fid, Some(degrading.version_id), 0)
                .expect("pinned")
                .version_id,
            degrading.version_id
        );
        assert!(matches!(
            snap.lookup(fid, Some(deploying.version_id), 0),
            Err(RouteError::NotFound { .. })
        ));
        assert!(matches!(
            snap.lookup(fid, Some(degraded.version_id), 0),
            Err(RouteError::Degraded { .. })
        ));
        // Unpinned: only the two invocable versions are ever picked.
        let picked: std::collections::HashSet<Uuid> = (0..10)
            .map(|p| snap.lookup(fid, None, p).expect("pick").version_id)
            .collect();
        assert_eq!(
            picked,
            [active.version_id, degrading.version_id]
                .into_iter()
                .collect()
        );
        let e = snap.lookup(Uuid::nil(), None, 0).expect_err("unknown");
        assert_eq!(
            e.to_string(),
            "Function id '00000000-0000-0000-0000-000000000000' version 'null': Specified function in account 'nvcf-default' is not found"
        );
        let only_degraded = RoutingSnapshot::build(&state(vec![Entity::Function(degraded)]));
        assert_eq!(
            only_degraded
                .lookup(fid, None, 0)
                .expect_err("degraded")
                .to_string(),
            format!("Function id '{fid}': DEGRADED function cannot be invoked")
        );
    }

    #[test]
    fn worker_uris_keep_the_path_and_query_under_any_base_path() {
        let pq: PathAndQuery = "/echo?x=1".parse().expect("pq");
        let plain = WorkerTarget::new("w".into(), "http://127.0.0.1:9/".into(), 1);
        assert_eq!(
            plain.uri_with(&pq).expect("plain").to_string(),
            "http://127.0.0.1:9/echo?x=1"
        );
        assert_eq!(
            plain.uri("/echo?x=1").expect("str"),
            plain.uri_with(&pq).expect("parsed")
        );
        let based = WorkerTarget::new("w".into(), "http://127.0.0.1:9/base/".into(), 1);
        assert_eq!(
            based.uri_with(&pq).expect("based").to_string(),
            "http://127.0.0.1:9/base/echo?x=1"
        );
        let broken = WorkerTarget::new("w".into(), "not a url".into(), 1);
        assert!(broken.uri_with(&pq).is_err());
    }
}
