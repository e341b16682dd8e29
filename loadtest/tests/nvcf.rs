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

/// The whole stack on port 0, with room for `capacity` deployed instances on its one worker.
fn test_config(dir: &Path, capacity: u32) -> config::FileConfig {
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
quic-listen = "127.0.0.1:0"
data-dir = "{dp}"
[worker]
listen = "127.0.0.1:0"
data-dir = "{w}"
device = "cpu"
capacity = {capacity}
"#,
        cp = dir.join("cp").display(),
        dp = dir.join("dp").display(),
        w = dir.join("w1").display()
    );
    config::parse("test", &text, &BTreeMap::new()).expect("test config")
}

/// The stack of [`test_config`], started, and its gateway's address.
async fn start_stack(dir: &Path, capacity: u32) -> (launcher::Stack, String) {
    let stack = launcher::start(&test_config(dir, capacity), Role::Up, None)
        .await
        .expect("start");
    let gw = stack.gateway.expect("gateway").to_string();
    (stack, gw)
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
    let (stack, gw) = start_stack(dir.path(), 8).await;

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
        let mut made = nvcf::Created::default();
        let setup = nvcf::setup(&api, &a, false, &mut made)
            .await
            .expect("setup");
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
        nvcf::cleanup(&api, &made).await.expect("cleanup");
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
    let mut made = nvcf::Created::default();
    let setup = nvcf::setup(&api, &a, false, &mut made)
        .await
        .expect("setup");
    let (url, target, tpl) = nvcf::invocation(&a, &setup).expect("invocation");
    let r = loadtest::run(a.run.plan(url, target, tpl))
        .await
        .expect("run");
    assert_eq!((r.requests, r.ok, r.errors), (3, 3, 0), "{r}");
    assert!(r.polls >= 3, "every call was answered 202 first: {r}");
    assert_eq!(r.bytes.received, 3 * 4, "{r}");
    assert!(r.latency_us.min >= 1_400_000, "{r}");
    nvcf::cleanup(&api, &made).await.expect("cleanup");

    stack.shutdown().await.expect("shutdown");
}

/// A set-up that fails after creating its function deletes it, so that repeated failed runs do
/// not fill the workers with deployments nobody uses: here the one instance the worker has room
/// for is taken, so the second function never becomes ACTIVE.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_set_up_deletes_its_function() {
    let dir = tempfile::tempdir().expect("tmp");
    let (stack, gw) = start_stack(dir.path(), 1).await;
    let api = nvcf::Api::new(&gw);
    let mut kept_made = nvcf::Created::default();
    let kept = nvcf::setup(
        &api,
        &args(&["--gateway", &gw, "--keep"]),
        false,
        &mut kept_made,
    )
    .await
    .expect("the first function takes the worker's one place");

    let mut made = nvcf::Created::default();
    let e = nvcf::setup(
        &api,
        &args(&["--gateway", &gw, "--ready-timeout", "2s"]),
        false,
        &mut made,
    )
    .await
    .expect_err("no room for a second instance");
    assert!(e.to_string().contains("not ACTIVE"), "{e}");
    assert!(e.to_string().contains("no worker may have room"), "{e}");
    assert!(
        made.is_empty(),
        "deleted, so nothing left to delete: {made:?}"
    );
    let admin = format!("Bearer {}", kept.admin_token);
    let (status, list) = api
        .call(
            http::Method::GET,
            "api.",
            "/v2/nvcf/functions",
            &[("authorization", &admin)],
            None,
        )
        .await
        .expect("list functions");
    assert!(status.is_success(), "{status}: {list}");
    let ids: Vec<&str> = list["functions"]
        .as_array()
        .expect("functions")
        .iter()
        .filter_map(|f| f["id"].as_str())
        .collect();
    assert_eq!(ids, [kept.function_id.as_str()], "{list}");
    // Its API key went too: only the kept set-up's key is left for the owner.
    let key_headers = [
        ("authorization", admin.as_str()),
        ("key-issuer-service", "nvcf-api"),
        (
            "key-issuer-id",
            "nvidia-cloud-functions-ncp-service-id-aketm",
        ),
        ("key-owner-id", nvcf::KEY_OWNER),
    ];
    assert_eq!(
        key_ids(&api, &key_headers).await,
        std::slice::from_ref(&kept.api_key_id)
    );

    nvcf::cleanup(&api, &kept_made).await.expect("cleanup");
    assert_eq!(
        key_ids(&api, &key_headers).await,
        Vec::<String>::new(),
        "the cleanup deletes the key"
    );
    stack.shutdown().await.expect("shutdown");
}

/// The ids of the keys `GET /v1/keys` lists for the caller in `headers`.
async fn key_ids(api: &nvcf::Api, headers: &[(&str, &str)]) -> Vec<String> {
    let (status, list) = api
        .call(http::Method::GET, "api-keys.", "/v1/keys", headers, None)
        .await
        .expect("list keys");
    assert!(status.is_success(), "{status}: {list}");
    list["keys"]
        .as_array()
        .expect("keys")
        .iter()
        .filter_map(|k| k["id"].as_str().map(str::to_owned))
        .collect()
}

#[test]
fn keep_and_the_old_cleanup_flag() {
    assert!(!args(&[]).keep, "deleting at the end is the default");
    assert!(args(&["--keep"]).keep);
    // Older scripts pass --cleanup: still accepted, and it means the default.
    assert!(!args(&["--cleanup"]).keep);
    assert!(
        Cli::try_parse_from(["loadtest", "nvcf", "--keep", "--cleanup"]).is_err(),
        "contradictory"
    );
}
