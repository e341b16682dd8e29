//! The access line of an invocation names the version that served it — the gateway picks one when
//! the call names only the function — through the whole stack. One test per binary: it installs a
//! process-wide `tracing` subscriber to read the lines.

mod support;

use http::{Method, StatusCode};
use nvcf_gateway::launcher::{self, Role};
use serde_json::json;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use support::*;

#[derive(Clone, Default)]
struct LogBuffer(Arc<Mutex<Vec<u8>>>);

impl std::io::Write for LogBuffer {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().expect("lock").extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for LogBuffer {
    type Writer = Self;
    fn make_writer(&'a self) -> Self {
        self.clone()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_access_line_names_the_routed_version() {
    let buffer = LogBuffer::default();
    tracing::subscriber::set_global_default(
        tracing_subscriber::fmt()
            .with_writer(buffer.clone())
            .with_ansi(false)
            .with_env_filter(tracing_subscriber::EnvFilter::new("access=info"))
            .finish(),
    )
    .expect("the only subscriber in this binary");
    let dir = tempfile::tempdir().expect("tmp");
    let stack = launcher::start(&test_config(dir.path()), Role::Up, None)
        .await
        .expect("start");
    let gw = Gw::new(stack.gateway.expect("gateway"));
    let admin = admin_token(&gw).await;
    wait_for_worker(&gw, &admin).await;
    let all = json!([{"id": "*", "type": "account-functions"}]);
    let (key, _) = api_key(&gw, &["invoke_function"], all).await;
    let (fid, vid) = deploy(&gw, &admin, "echo", "builtin/echo", 8).await;
    wait_invocable(&gw, &key, &fid, "{}").await;

    let path = format!("/v2/nvcf/pexec/functions/{fid}");
    let a = gw
        .call(
            Method::POST,
            "invocation.",
            &path,
            &[("authorization", &format!("Bearer {key}"))],
            "{\"marker\":1}",
        )
        .await;
    assert_eq!(a.status, StatusCode::OK, "{:?}", a.body);
    let reqid = a.header("nvcf-reqid").to_owned();
    eventually("the access line", Duration::from_secs(3), || async {
        String::from_utf8_lossy(&buffer.0.lock().expect("lock")).contains(&reqid)
    })
    .await;
    let text = String::from_utf8_lossy(&buffer.0.lock().expect("lock")).into_owned();
    let line = text
        .lines()
        .find(|l| l.contains(&reqid))
        .expect("a line with the request id");
    for want in [
        format!("function_id={fid}"),
        format!("version_id={vid}"),
        "status=200".to_owned(),
        "method=POST".to_owned(),
        format!("path={path}"),
        "outcome=complete".to_owned(),
    ] {
        assert!(line.contains(&want), "{want} missing in: {line}");
    }
    stack.shutdown().await.expect("shutdown");
}
