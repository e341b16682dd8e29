//! End to end through the gateway: the whole stack started from a config (port 0 everywhere, SQLite
//! in a temp dir), driven with the README's quickstart requests, plus the worker lifecycle with two
//! real workers and the shipped config files.

mod support;

use http::{Method, StatusCode};
use nvcf_gateway::config::{self, FileConfig};
use nvcf_gateway::launcher::{self, Role, Stack};
use serde_json::{Value, json};
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;
use support::{Gw, ISSUER, eventually};

/// The invocation suites' config, plus what this suite also checks: the admin listener, the TLS
/// listener, and how fast a silent worker is noticed.
fn test_config(dir: &Path) -> FileConfig {
    let mut cfg = support::test_config(dir);
    cfg.admin.listen = "127.0.0.1:0".into();
    cfg.dataplane.tls_listen = "127.0.0.1:0".into();
    cfg.controlplane.heartbeat_timeout = Duration::from_millis(600);
    cfg
}

/// The shared client, answering (status, JSON body or null).
struct Http(Gw);

impl Http {
    fn new(gw: SocketAddr) -> Self {
        Self(Gw::new(gw))
    }

    /// Sends a request to the gateway with `Host: <host_prefix><gw>`.
    async fn call(
        &self,
        method: Method,
        host_prefix: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: Option<Value>,
    ) -> (StatusCode, Value) {
        let body = body.map(|b| b.to_string()).unwrap_or_default();
        let a = self.0.call(method, host_prefix, path, headers, body).await;
        (a.status, a.json())
    }
}

async fn admin_token(http: &Http) -> String {
    support::admin_token(&http.0).await
}

async fn status_of(http: &Http, token: &str, fid: &str, vid: &str) -> String {
    let auth = format!("Bearer {token}");
    let (s, v) = http
        .call(
            Method::GET,
            "api.",
            &format!("/v2/nvcf/functions/{fid}/versions/{vid}"),
            &[("authorization", &auth)],
            None,
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    v["function"]["status"]
        .as_str()
        .unwrap_or_default()
        .to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn quickstart_through_the_gateway() {
    let dir = tempfile::tempdir().expect("tmp");
    let stack = launcher::start(&test_config(dir.path()), Role::Up, None)
        .await
        .expect("start");
    let http = Http::new(stack.gateway.expect("gateway"));

    // The seed's admin-token command, verbatim shape: POST with only a Host header.
    let token = admin_token(&http).await;
    assert!(token.starts_with("nvcf-admin-"));
    let auth = format!("Bearer {token}");

    // The seed's scoped-key command.
    let key_body = json!({
        "description": "invoke key", "expires_at": "2099-01-01T00:00:00Z",
        "authorizations": {"policies": [{"aud": ISSUER, "auds": [ISSUER], "product": "nv-cloud-functions",
            "resources": [{"id": "*", "type": "account-functions"}, {"id": "*", "type": "authorized-functions"}],
            "scopes": ["invoke_function", "list_functions", "queue_details", "list_functions_details"]}]}
    });
    let key_headers = [
        ("key-issuer-service", "nvcf-api"),
        ("key-issuer-id", ISSUER),
        ("key-owner-id", "svc@nvcf-api.local"),
    ];
    let (s, v) = http
        .call(
            Method::POST,
            "api-keys.",
            "/v1/keys",
            &key_headers,
            Some(key_body.clone()),
        )
        .await;
    // 365 days at most: the far-future date is refused with NVCF's text.
    assert_eq!(s, StatusCode::BAD_REQUEST, "{v}");
    assert!(
        v["detail"]
            .as_str()
            .unwrap_or_default()
            .contains("not more than 365 days"),
        "{v}"
    );
    let mut key_body = key_body;
    let expires = model::time::Timestamp::now()
        .plus(Duration::from_secs(86_400))
        .to_string();
    key_body["expires_at"] = json!(expires);
    let (s, v) = http
        .call(
            Method::POST,
            "api-keys.",
            "/v1/keys",
            &key_headers,
            Some(key_body),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    let key = v["value"].as_str().expect("key").to_owned();
    assert!(key.starts_with("nvapi-"));
    let key_auth = format!("Bearer {key}");

    // The key works as a bearer for listing, but cannot create functions (no register_function).
    let (s, v) = http
        .call(
            Method::GET,
            "api.",
            "/v2/nvcf/functions",
            &[("authorization", &key_auth)],
            None,
        )
        .await;
    assert_eq!((s, v), (StatusCode::OK, json!({"functions": []})));
    let fn_body =
        json!({"name": "echo-fn", "inferenceUrl": "/echo", "containerImage": "builtin/echo"});
    let (s, _) = http
        .call(
            Method::POST,
            "api.",
            "/v2/nvcf/functions",
            &[("authorization", &key_auth)],
            Some(fn_body.clone()),
        )
        .await;
    assert_eq!(s, StatusCode::FORBIDDEN);

    // Cluster groups come from the registered worker (eventually: it registers asynchronously).
    eventually(
        "the worker to register",
        Duration::from_secs(10),
        || async {
            let (s, v) = http
                .call(
                    Method::GET,
                    "api.",
                    "/v2/nvcf/clusterGroups",
                    &[("authorization", &auth)],
                    None,
                )
                .await;
            s == StatusCode::OK && v["clusterGroups"][0]["gpus"][0]["name"] == "CPU"
        },
    )
    .await;

    // Create, deploy, and watch it become ACTIVE.
    let (s, v) = http
        .call(
            Method::POST,
            "api.",
            "/v2/nvcf/functions",
            &[("authorization", &auth)],
            Some(fn_body),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(v["function"]["status"], "INACTIVE");
    let fid = v["function"]["id"].as_str().expect("id").to_owned();
    let vid = v["function"]["versionId"].as_str().expect("vid").to_owned();
    let dep = json!({"deploymentSpecifications": [{"gpu": "CPU", "instanceType": "NCP.CPU_1x", "minInstances": 1, "maxInstances": 1}]});
    let (s, v) = http
        .call(
            Method::POST,
            "api.",
            &format!("/v2/nvcf/deployments/functions/{fid}/versions/{vid}"),
            &[("authorization", &auth)],
            Some(dep),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(v["deployment"]["functionStatus"], "DEPLOYING");
    eventually("ACTIVE", Duration::from_secs(10), || async {
        status_of(&http, &token, &fid, &vid).await == "ACTIVE"
    })
    .await;

    // Path fallback with a bare host reaches the same API; /internal never does.
    let (s, v) = http
        .call(
            Method::GET,
            "",
            "/v2/nvcf/functions/ids",
            &[("authorization", &key_auth)],
            None,
        )
        .await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(v["functionIds"], json!([fid]));
    let (s, v) = http
        .call(Method::GET, "api.", "/internal/v1/feed", &[], None)
        .await;
    assert_eq!(s, StatusCode::NOT_FOUND, "{v}");

    // An unknown host is a 404 problem from the gateway itself.
    let (s, v) = http.call(Method::GET, "nowhere.", "/x", &[], None).await;
    assert_eq!(s, StatusCode::NOT_FOUND);
    assert_eq!(v["status"], 404);

    // The admin listener answers health and readiness (no recorder is installed in tests).
    let admin = stack.admin.expect("admin");
    let admin_gw = Gw::new(admin);
    for path in ["/healthz", "/readyz"] {
        let a = admin_gw.call(Method::GET, "", path, &[], "").await;
        assert_eq!(a.status, StatusCode::OK, "{path}");
    }
    stack.shutdown().await.expect("shutdown");
}

async fn second_worker(cfg: &FileConfig, stack: &Stack, dir: &Path) -> Stack {
    let mut w = cfg.clone();
    w.internal_token = stack.internal_token.clone();
    w.admin.listen = String::new();
    w.worker.controlplane_url = format!("http://{}", stack.controlplane.expect("cp"));
    w.worker.data_dir = dir.join("w2");
    launcher::start(&w, Role::Worker, None)
        .await
        .expect("worker 2")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_workers_deploying_active_degrading() {
    let dir = tempfile::tempdir().expect("tmp");
    let cfg = test_config(dir.path());
    let stack = launcher::start(&cfg, Role::Up, None).await.expect("start");
    let w2 = second_worker(&cfg, &stack, dir.path()).await;
    let http = Http::new(stack.gateway.expect("gateway"));
    let token = admin_token(&http).await;
    let auth = format!("Bearer {token}");

    eventually("two workers", Duration::from_secs(10), || async {
        let (_, v) = http
            .call(
                Method::GET,
                "api.",
                "/v2/nvcf/clusterGroups",
                &[("authorization", &auth)],
                None,
            )
            .await;
        v["clusterGroups"][0]["clusters"]
            .as_array()
            .is_some_and(|c| !c.is_empty())
    })
    .await;
    let fn_body = json!({"name": "mlp", "inferenceUrl": "/infer", "containerImage": "builtin/mlp"});
    let (_, v) = http
        .call(
            Method::POST,
            "api.",
            "/v2/nvcf/functions",
            &[("authorization", &auth)],
            Some(fn_body),
        )
        .await;
    let fid = v["function"]["id"].as_str().expect("id").to_owned();
    let vid = v["function"]["versionId"].as_str().expect("vid").to_owned();

    // Both workers must have registered before deploying with minInstances 2.
    let dep = json!({"deploymentSpecifications": [{"gpu": "cpu", "instanceType": "ncp.cpu_1x", "minInstances": 2, "maxInstances": 2}]});
    let path = format!("/v2/nvcf/deployments/functions/{fid}/versions/{vid}");
    let (s, v) = http
        .call(
            Method::POST,
            "api.",
            &path,
            &[("authorization", &auth)],
            Some(dep),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(v["deployment"]["functionStatus"], "DEPLOYING");
    // Names are matched case-insensitively and answered in the workers' spelling.
    assert_eq!(v["deployment"]["deploymentSpecifications"][0]["gpu"], "CPU");
    eventually(
        "ACTIVE with two ready workers",
        Duration::from_secs(15),
        || async { status_of(&http, &token, &fid, &vid).await == "ACTIVE" },
    )
    .await;
    let (_, v) = http
        .call(
            Method::GET,
            "api.",
            &format!("/v2/nvcf/functions/{fid}/versions/{vid}"),
            &[("authorization", &auth)],
            None,
        )
        .await;
    assert_eq!(
        v["function"]["activeInstances"].as_array().map(Vec::len),
        Some(2),
        "{v}"
    );

    // The second worker stops heartbeating: one of two ready → DEGRADING.
    w2.shutdown().await.expect("stop worker 2");
    eventually("DEGRADING", Duration::from_secs(15), || async {
        status_of(&http, &token, &fid, &vid).await == "DEGRADING"
    })
    .await;
    stack.shutdown().await.expect("shutdown");
}

#[test]
fn shipped_configs_are_valid() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("config");
    let mut checked = 0;
    for entry in std::fs::read_dir(&dir).expect("config dir") {
        let path = entry.expect("entry").path();
        if path.extension().is_some_and(|e| e == "toml") {
            let cfg = config::load(Some(&path), &BTreeMap::new()).expect("parse");
            cfg.validate_all(&path.display().to_string())
                .expect("valid");
            checked += 1;
        }
    }
    assert!(
        checked >= 4,
        "expected local.toml and one example per role, found {checked}"
    );
}
