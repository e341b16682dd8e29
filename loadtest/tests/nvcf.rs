//! NVCF mode against the real stack started in-process (port 0 everywhere, SQLite in a temp dir):
//! set-up (admin token, API key, function, deployment, ACTIVE), pexec and host-routed load on
//! h1 and h2c, then cleanup.

use clap::Parser as _;
use loadtest::cli::{Cli, Command, NvcfArgs};
use loadtest::nvcf;
use nvcf_gateway::config;
use nvcf_gateway::launcher::{self, Role};
use std::collections::BTreeMap;
use std::path::Path;

fn test_config(dir: &Path) -> config::FileConfig {
    let text = format!(
        r#"
internal-token = "loadtest-internal-token"
[admin]
listen = "127.0.0.1:0"
[controlplane]
listen = "127.0.0.1:0"
data-dir = "{cp}"
heartbeat-interval = "100ms"
heartbeat-timeout = "600ms"
[dataplane]
listen = "127.0.0.1:0"
tls-listen = "127.0.0.1:0"
data-dir = "{dp}"
[worker]
listen = "127.0.0.1:0"
data-dir = "{w}"
device = "cpu"
"#,
        cp = dir.join("cp").display(),
        dp = dir.join("dp").display(),
        w = dir.join("w1").display()
    );
    config::parse("test", &text, &BTreeMap::new()).expect("test config")
}

fn args(extra: &[&str]) -> NvcfArgs {
    let mut argv = vec!["loadtest", "nvcf", "-q"];
    argv.extend_from_slice(extra);
    match Cli::try_parse_from(argv).expect("parse").command {
        Some(Command::Nvcf(a)) => a,
        None => panic!("not nvcf"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nvcf_mode_against_the_stack() {
    let dir = tempfile::tempdir().expect("tmp");
    let stack = launcher::start(&test_config(dir.path()), Role::Up, None)
        .await
        .expect("start");
    let gw = stack.gateway.expect("gateway").to_string();

    for (image, mode, proto) in [
        ("builtin/echo", "pexec", "h1"),
        ("builtin/echo", "host", "h2c"),
        ("builtin/load-tester", "pexec", "h2c"),
    ] {
        let a = args(&[
            "--gateway",
            &gw,
            "--image",
            image,
            "--mode",
            mode,
            "--proto",
            proto,
            "-c",
            "2",
            "-m",
            "4",
            "--requests",
            "200",
            "--ready-timeout",
            "30s",
        ]);
        let api = nvcf::Api::new(&gw);
        let setup = nvcf::setup(&api, &a, false).await.expect("setup");
        assert_eq!(setup.gpu, "CPU");
        let (url, target, tpl) = nvcf::invocation(&a, &setup).expect("invocation");
        let r = loadtest::run(a.run.plan(url, target, tpl))
            .await
            .expect("run");
        assert_eq!(r.requests, 200, "{image} {mode} {proto}: {r}");
        assert_eq!(r.ok, 200, "{image} {mode} {proto}: {r}");
        assert_eq!(r.errors, 0, "{image} {mode} {proto}: {r}");
        if image == "builtin/echo" {
            // The echo answers the 256-byte default body back.
            assert_eq!(r.bytes.sent, 200 * 256, "{r}");
            assert_eq!(r.bytes.received, 200 * 256, "{r}");
        }
        nvcf::cleanup(&api, &setup).await.expect("cleanup");
    }

    // A call longer than NVCF-POLL-SECONDS is answered 202 and followed by status polls.
    let a = args(&[
        "--gateway",
        &gw,
        "--image",
        "builtin/load-tester",
        "-c",
        "3",
        "--requests",
        "3",
        "--body",
        r#"{"message":"slow","delay":1.5}"#,
        "-H",
        "NVCF-POLL-SECONDS: 1",
        "--poll-interval",
        "50ms",
    ]);
    let api = nvcf::Api::new(&gw);
    let setup = nvcf::setup(&api, &a, false).await.expect("setup");
    let (url, target, tpl) = nvcf::invocation(&a, &setup).expect("invocation");
    let r = loadtest::run(a.run.plan(url, target, tpl))
        .await
        .expect("run");
    assert_eq!((r.requests, r.ok, r.errors), (3, 3, 0), "{r}");
    assert!(r.polls >= 3, "every call was answered 202 first: {r}");
    assert_eq!(r.bytes.received, 3 * 4, "{r}");
    assert!(r.latency_us.min >= 1_400_000, "{r}");
    nvcf::cleanup(&api, &setup).await.expect("cleanup");

    stack.shutdown().await.expect("shutdown");
}
