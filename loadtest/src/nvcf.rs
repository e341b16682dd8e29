//! NVCF mode: sets itself up against a running stack as the README's quickstart does by hand —
//! mints an admin token and a scoped `invoke_function` key, creates a function of a `builtin/*`
//! image, deploys it on the first GPU / instance type the cluster groups offer, waits for `ACTIVE` —
//! then builds the invocation target (pexec or host-routed) with a body suited to the image, and
//! can delete what it made.

use crate::cli::{InvokeMode, NvcfArgs};
use crate::client::{ClientError, Follow202, RequestTemplate, Target};
use bytes::Bytes;
use http::{Method, Request, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use serde_json::{Value, json};
use std::time::{Duration, Instant};

/// The key service id NVCF keys are issued for.
pub const NVCF_SERVICE_ID: &str = "nvidia-cloud-functions-ncp-service-id-aketm";
/// Owner of the keys this tool mints.
pub const KEY_OWNER: &str = "loadtest@nvcf-api.local";

/// What [`setup`] made.
#[derive(Debug, Clone)]
pub struct Setup {
    pub admin_token: String,
    pub api_key: String,
    /// The API key's id (for its deletion).
    pub api_key_id: String,
    pub function_id: String,
    pub version_id: String,
    pub gpu: String,
    pub instance_type: String,
}

/// What a set-up has created so far, filled in as each piece exists, so that [`cleanup`] can
/// delete it whether the set-up finished, failed or was interrupted.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Created {
    pub admin_token: String,
    /// The invoke key (each run mints one; the key service allows an owner only so many).
    pub api_key_id: Option<String>,
    /// Function and version ids.
    pub function: Option<(String, String)>,
}

impl Created {
    /// Whether there is anything to delete.
    pub fn is_empty(&self) -> bool {
        self.api_key_id.is_none() && self.function.is_none()
    }

    /// What there is, for messages (ids only, never the secrets).
    pub fn describe(&self) -> String {
        let function = self
            .function
            .as_ref()
            .map(|(f, v)| format!("function {f} (version {v})"));
        let key = self.api_key_id.as_ref().map(|k| format!("API key {k}"));
        match (function, key) {
            (Some(f), Some(k)) => format!("{f} and {k}"),
            (Some(one), None) | (None, Some(one)) => one,
            (None, None) => "nothing".into(),
        }
    }
}

/// A small JSON client for the management and key APIs through the gateway.
#[derive(Debug, Clone)]
pub struct Api {
    client: Client<HttpConnector, Full<Bytes>>,
    gateway: String,
}

fn setup_err(what: &str, e: impl std::fmt::Display) -> ClientError {
    ClientError::Setup(format!("{what}: {e}"))
}

impl Api {
    pub fn new(gateway: &str) -> Self {
        Self {
            client: Client::builder(TokioExecutor::new()).build(HttpConnector::new()),
            gateway: gateway.to_string(),
        }
    }

    /// Sends `method path` with `Host: {host_prefix}{gateway}`; returns status and JSON body.
    pub async fn call(
        &self,
        method: Method,
        host_prefix: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: Option<&Value>,
    ) -> Result<(StatusCode, Value), ClientError> {
        let mut req = Request::builder()
            .method(method.clone())
            .uri(format!("http://{}{path}", self.gateway))
            .header("host", format!("{host_prefix}{}", self.gateway));
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        let body = match body {
            Some(b) => {
                req = req.header("content-type", "application/json");
                Bytes::from(b.to_string())
            }
            None => Bytes::new(),
        };
        let req = req
            .body(Full::new(body))
            .map_err(|e| setup_err("request", e))?;
        let resp = tokio::time::timeout(Duration::from_secs(30), self.client.request(req))
            .await
            .map_err(|_| setup_err(&format!("{method} {path}"), "timed out"))?
            .map_err(|e| setup_err(&format!("{method} {path}"), e))?;
        let status = resp.status();
        let bytes = resp
            .into_body()
            .collect()
            .await
            .map_err(|e| setup_err(&format!("{method} {path}"), e))?
            .to_bytes();
        let v = if bytes.is_empty() {
            Value::Null
        } else {
            serde_json::from_slice(&bytes)
                .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&bytes).into()))
        };
        Ok((status, v))
    }

    async fn expect(
        &self,
        what: &str,
        method: Method,
        host_prefix: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: Option<&Value>,
    ) -> Result<Value, ClientError> {
        let (st, v) = self.call(method, host_prefix, path, headers, body).await?;
        if !st.is_success() {
            return Err(setup_err(what, format!("{st}: {v}")));
        }
        Ok(v)
    }
}

fn str_at<'a>(v: &'a Value, ptr: &str, what: &str) -> Result<&'a str, ClientError> {
    v.pointer(ptr)
        .and_then(Value::as_str)
        .ok_or_else(|| setup_err(what, format!("no {ptr} in {v}")))
}

/// Picks `(gpu, instance type)` from a `/v2/nvcf/clusterGroups` answer: the wanted ones when given
/// (the instance type then defaults to that GPU's default), else the first GPU listed.
pub fn pick_gpu(
    groups: &Value,
    gpu: Option<&str>,
    instance_type: Option<&str>,
) -> Result<(String, String), ClientError> {
    let gpus = groups
        .get("clusterGroups")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(|g| g.get("gpus").and_then(Value::as_array))
        .flatten();
    for g in gpus {
        let Some(name) = g.get("name").and_then(Value::as_str) else {
            continue;
        };
        if gpu.is_some_and(|w| w != name) {
            continue;
        }
        let types: Vec<&Value> = g
            .get("instanceTypes")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .collect();
        let chosen = match instance_type {
            Some(it) => types
                .iter()
                .find(|t| t.get("name").and_then(Value::as_str) == Some(it)),
            None => types
                .iter()
                .find(|t| t.get("default").and_then(Value::as_bool) == Some(true))
                .or_else(|| types.first()),
        };
        if let Some(t) = chosen.and_then(|t| t.get("name")).and_then(Value::as_str) {
            return Ok((name.to_string(), t.to_string()));
        }
    }
    Err(setup_err(
        "clusterGroups",
        format!(
            "no GPU {} with instance type {} is offered (is a worker registered?)",
            gpu.unwrap_or("(any)"),
            instance_type.unwrap_or("(any)")
        ),
    ))
}

/// The body each image answers sensibly to, when no body flag is given: echo gets `size` bytes
/// (256 by default), mlp one 64-wide row, the others a small JSON message.
pub fn default_body(image: &str, size: Option<usize>) -> (Bytes, &'static str) {
    let base = image.split(':').next().unwrap_or(image);
    match base {
        "builtin/mlp" => {
            let row: Vec<f32> = (0..64).map(|i| i as f32 / 64.0).collect();
            (
                Bytes::from(json!({ "inputs": [row] }).to_string()),
                "application/json",
            )
        }
        "builtin/echo" => (
            Bytes::from(vec![b'x'; size.unwrap_or(256)]),
            "application/octet-stream",
        ),
        "builtin/saxpy" => (
            Bytes::from(
                json!({ "a": 2.0, "x": [1.0, 2.0, 3.0, 4.0], "y": [1.0, 1.0, 1.0, 1.0] })
                    .to_string(),
            ),
            "application/json",
        ),
        _ => (
            Bytes::from_static(br#"{"message":"hi"}"#),
            "application/json",
        ),
    }
}

/// Mints the credentials, creates and deploys the function, waits for `ACTIVE` and for the gateway
/// to route it. What it creates is noted in `made` as soon as it exists, so that a caller whose
/// set-up was interrupted can still delete it; when the set-up fails, what it made is deleted
/// here (unless `--keep`) and `made` is left empty.
pub async fn setup(
    api: &Api,
    args: &NvcfArgs,
    log: bool,
    made: &mut Created,
) -> Result<Setup, ClientError> {
    let say = |m: String| {
        if log {
            eprintln!("nvcf: {m}");
        }
    };
    let e = match create_and_deploy(api, args, &say, made).await {
        Ok(setup) => return Ok(setup),
        Err(e) => e,
    };
    if !args.keep && !made.is_empty() {
        match cleanup(api, made).await {
            Ok(()) => {
                say(format!(
                    "deleted what the failed set-up made ({})",
                    made.describe()
                ));
                *made = Created::default();
            }
            // Left in `made`: the caller may try again.
            Err(c) => say(format!("could not delete {}: {c}", made.describe())),
        }
    }
    Err(e)
}

async fn create_and_deploy(
    api: &Api,
    args: &NvcfArgs,
    say: &impl Fn(String),
    made: &mut Created,
) -> Result<Setup, ClientError> {
    let v = api
        .expect(
            "mint admin token",
            Method::POST,
            "api-keys.",
            "/v1/admin/keys",
            &[],
            None,
        )
        .await?;
    let admin_token = str_at(&v, "/value", "admin token")?.to_string();
    made.admin_token.clone_from(&admin_token);
    let admin = format!("Bearer {admin_token}");

    let expires = time::OffsetDateTime::now_utc() + time::Duration::days(1);
    let expires = expires
        .replace_nanosecond(0)
        .unwrap_or(expires)
        .format(&time::format_description::well_known::Rfc3339)
        .map_err(|e| setup_err("expires_at", e))?;
    let key_body = json!({
        "description": "loadtest invoke key",
        "expires_at": expires,
        "audience_service_ids": [NVCF_SERVICE_ID],
        "authorizations": {"policies": [{
            "aud": NVCF_SERVICE_ID,
            "auds": [NVCF_SERVICE_ID],
            "product": "nv-cloud-functions",
            "resources": [{"id": "*", "type": "account-functions"}, {"id": "*", "type": "authorized-functions"}],
            "scopes": ["invoke_function", "list_functions", "queue_details", "list_functions_details"]
        }]}
    });
    let key_headers = [
        ("authorization", admin.as_str()),
        ("key-issuer-service", "nvcf-api"),
        ("key-issuer-id", NVCF_SERVICE_ID),
        ("key-owner-id", KEY_OWNER),
    ];
    let v = api
        .expect(
            "create API key",
            Method::POST,
            "api-keys.",
            "/v1/keys",
            &key_headers,
            Some(&key_body),
        )
        .await?;
    let api_key = str_at(&v, "/value", "API key")?.to_string();
    let api_key_id = str_at(&v, "/id", "API key")?.to_string();
    made.api_key_id = Some(api_key_id.clone());

    let auth = [("authorization", admin.as_str())];
    // A stack that was just started may not have its worker registered yet (a CUDA worker
    // compiles its kernels first): wait for the offer as long as for the deployment.
    let offer_deadline = Instant::now() + args.ready_timeout;
    let (gpu, instance_type) = loop {
        let groups = api
            .expect(
                "list cluster groups",
                Method::GET,
                "api.",
                "/v2/nvcf/clusterGroups",
                &auth,
                None,
            )
            .await?;
        match pick_gpu(&groups, args.gpu.as_deref(), args.instance_type.as_deref()) {
            Ok(offer) => break offer,
            Err(e) if Instant::now() >= offer_deadline => return Err(e),
            Err(_) => tokio::time::sleep(Duration::from_millis(200)).await,
        }
    };

    let short = args
        .image
        .rsplit('/')
        .next()
        .unwrap_or("fn")
        .replace([':', '.'], "-");
    let name = format!(
        "loadtest-{short}-{}",
        time::OffsetDateTime::now_utc().unix_timestamp()
    );
    let f = api
        .expect(
            "create function",
            Method::POST,
            "api.",
            "/v2/nvcf/functions",
            &auth,
            Some(&json!({ "name": name, "inferenceUrl": "/infer", "containerImage": args.image })),
        )
        .await?;
    let function_id = str_at(&f, "/function/id", "function")?.to_string();
    let version_id = str_at(&f, "/function/versionId", "function")?.to_string();
    say(format!(
        "created {name} ({function_id} / {version_id}) from {}",
        args.image
    ));
    made.function = Some((function_id.clone(), version_id.clone()));
    let setup = Setup {
        admin_token,
        api_key,
        api_key_id,
        function_id,
        version_id,
        gpu,
        instance_type,
    };
    let (function_id, version_id) = (&setup.function_id, &setup.version_id);
    let (gpu, instance_type) = (&setup.gpu, &setup.instance_type);

    let slots = (args.run.connections * args.run.streams.max(1)) as u32;
    let concurrency = args
        .max_concurrency
        .unwrap_or(slots.max(64))
        .clamp(1, 16384);
    api.expect(
        "deploy",
        Method::POST,
        "api.",
        &format!("/v2/nvcf/deployments/functions/{function_id}/versions/{version_id}"),
        &auth,
        Some(&json!({"deploymentSpecifications": [{
            "gpu": gpu, "instanceType": instance_type,
            "minInstances": 1, "maxInstances": 1, "maxRequestConcurrency": concurrency
        }]})),
    )
    .await?;
    say(format!(
        "deploying on {gpu} / {instance_type}, maxRequestConcurrency {concurrency}"
    ));

    let deadline = Instant::now() + args.ready_timeout;
    let path = format!(
        "/v2/nvcf/functions/{}/versions/{}",
        setup.function_id, setup.version_id
    );
    loop {
        let v = api
            .expect("function status", Method::GET, "api.", &path, &auth, None)
            .await?;
        match v.pointer("/function/status").and_then(Value::as_str) {
            Some("ACTIVE") => break,
            Some("ERROR") => {
                return Err(setup_err(
                    "deploy",
                    format!("the function went to ERROR: {v}"),
                ));
            }
            Some(status) if Instant::now() >= deadline => {
                // The usual cause: every worker offering the GPU is full (each instance takes
                // one of a worker's `capacity` places until its deployment is deleted).
                let hint = if status == "DEPLOYING" {
                    "; no worker may have room for another instance (see the workers' `capacity`, \
                     and delete deployments no longer used)"
                } else {
                    ""
                };
                return Err(setup_err(
                    "deploy",
                    format!(
                        "not ACTIVE after {:?} (status {status}{hint}): {v}",
                        args.ready_timeout
                    ),
                ));
            }
            None if Instant::now() >= deadline => {
                return Err(setup_err(
                    "deploy",
                    format!("not ACTIVE after {:?}: {v}", args.ready_timeout),
                ));
            }
            _ => tokio::time::sleep(Duration::from_millis(100)).await,
        }
    }
    say("ACTIVE".into());
    // ACTIVE is the control plane's word; the gateway learns it from its feed a moment later
    // (until then it answers 404, or 503 while no worker is ready). One small call shows when.
    let invoke = format!("Bearer {}", setup.api_key);
    let path = format!("/v2/nvcf/pexec/functions/{}", setup.function_id);
    loop {
        let (status, v) = api
            .call(
                Method::POST,
                "",
                &path,
                &[("authorization", &invoke), ("nvcf-poll-seconds", "5")],
                Some(&serde_json::json!({})),
            )
            .await?;
        if status != StatusCode::NOT_FOUND && status != StatusCode::SERVICE_UNAVAILABLE {
            break;
        }
        if Instant::now() >= deadline {
            return Err(setup_err(
                "deploy",
                format!("ACTIVE, but the gateway still answers {status}: {v}"),
            ));
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    Ok(setup)
}

/// The URL, target and request template of the invocations.
pub fn invocation(
    args: &NvcfArgs,
    s: &Setup,
) -> Result<(String, Target, RequestTemplate), ClientError> {
    let (scheme, addr) = match args.run.proto {
        crate::Proto::H2 | crate::Proto::H3 => (
            "https",
            args.tls_gateway.as_deref().ok_or_else(|| {
                ClientError::Config("--proto h2 and h3 need --tls-gateway ADDR".into())
            })?,
        ),
        _ => ("http", args.gateway.as_str()),
    };
    let gw = args.gateway.as_str();
    let (url, host) = match args.mode {
        InvokeMode::Pexec => (
            format!(
                "{scheme}://{addr}/v2/nvcf/pexec/functions/{}",
                s.function_id
            ),
            format!("invocation.{gw}"),
        ),
        InvokeMode::Host => (
            format!("{scheme}://{addr}/infer"),
            format!("{}.invocation.{gw}", s.function_id),
        ),
    };
    let (body, ct) = args.request.body(Some(default_body(&args.image, None)))?;
    let mut headers = args.request.headers.clone();
    headers.push(format!("Authorization: Bearer {}", s.api_key));
    if !headers
        .iter()
        .any(|h| h.to_ascii_lowercase().starts_with("host:"))
    {
        headers.push(format!("Host: {host}"));
    }
    let (mut tpl, host) = RequestTemplate::new(args.request.method.as_deref(), &headers, body, ct)?;
    tpl.follow_202 = Some(Follow202 {
        status_prefix: "/v2/nvcf/pexec/status/".into(),
        interval: args.poll_interval,
    });
    let target = Target::new(
        &url,
        args.run.proto,
        host.as_deref(),
        &args.run.tls(),
        args.run.connect_timeout,
    )?;
    Ok((url, target, tpl))
}

/// Deletes what a set-up created: the deployment and the function, then the API key; returns
/// what failed, if anything.
pub async fn cleanup(api: &Api, made: &Created) -> Result<(), ClientError> {
    let admin = format!("Bearer {}", made.admin_token);
    let auth = [("authorization", admin.as_str())];
    if let Some((function_id, version_id)) = &made.function {
        let dep = format!("/v2/nvcf/deployments/functions/{function_id}/versions/{version_id}");
        let (st, v) = api.call(Method::DELETE, "api.", &dep, &auth, None).await?;
        if !st.is_success() && st != StatusCode::NOT_FOUND {
            return Err(setup_err("delete deployment", format!("{st}: {v}")));
        }
        let f = format!("/v2/nvcf/functions/{function_id}/versions/{version_id}");
        // A graceful undeploy may still be draining; retry the function delete for a while.
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let (st, v) = api.call(Method::DELETE, "api.", &f, &auth, None).await?;
            if st.is_success() || st == StatusCode::NOT_FOUND {
                break;
            }
            if Instant::now() >= deadline {
                return Err(setup_err("delete function", format!("{st}: {v}")));
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
    if let Some(key_id) = &made.api_key_id {
        let headers = [
            ("authorization", admin.as_str()),
            ("key-issuer-service", "nvcf-api"),
            ("key-issuer-id", NVCF_SERVICE_ID),
            ("key-owner-id", KEY_OWNER),
        ];
        let path = format!("/v1/keys/{key_id}");
        let (st, v) = api
            .call(Method::DELETE, "api-keys.", &path, &headers, None)
            .await?;
        if !st.is_success() && st != StatusCode::NOT_FOUND {
            return Err(setup_err("delete API key", format!("{st}: {v}")));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn picks_first_or_wanted_gpu() {
        let g = json!({"clusterGroups": [{"name": "local", "gpus": [
            {"name": "CPU", "instanceTypes": [{"name": "NCP.CPU_1x", "default": true}]},
            {"name": "H100", "instanceTypes": [{"name": "a", "default": false}, {"name": "b", "default": true}]}
        ]}]});
        assert_eq!(
            pick_gpu(&g, None, None).expect("any"),
            ("CPU".into(), "NCP.CPU_1x".into())
        );
        assert_eq!(
            pick_gpu(&g, Some("H100"), None).expect("h100"),
            ("H100".into(), "b".into())
        );
        assert_eq!(
            pick_gpu(&g, Some("H100"), Some("a")).expect("a"),
            ("H100".into(), "a".into())
        );
        assert!(pick_gpu(&g, Some("A100"), None).is_err());
        assert!(pick_gpu(&json!({"clusterGroups": []}), None, None).is_err());
    }

    #[test]
    fn default_bodies() {
        let (b, _) = default_body("builtin/mlp", None);
        let v: Value = serde_json::from_slice(&b).expect("json");
        assert_eq!(v["inputs"][0].as_array().map(Vec::len), Some(64));
        assert_eq!(default_body("builtin/echo", Some(10)).0.len(), 10);
        assert_eq!(
            &default_body("builtin/load-tester", None).0[..],
            br#"{"message":"hi"}"#
        );
    }
}
