//! The control plane over time: function status driven by scripted workers' heartbeats (nvcf-api.md
//! §3.1), graceful undeploys that wait for in-flight work, the worker registry, restarts on the
//! same data directory, and the state feed (snapshot, resume, live changes, shutdown).

mod common;

use common::*;
use http::StatusCode;
use model::worker::InstanceState;
use serde_json::{Value, json};
use std::time::Duration;
use uuid::Uuid;

/// The instance statuses the function's `activeInstances` shows.
async fn instance_statuses(cp: &Cp, admin: &str, fid: Uuid, vid: Uuid) -> Vec<String> {
    let f = cp.function(admin, fid, vid).await;
    let mut v: Vec<String> = f["activeInstances"]
        .as_array()
        .map(|a| {
            a.iter()
                .map(|i| i["instanceStatus"].as_str().unwrap_or_default().to_owned())
                .collect()
        })
        .unwrap_or_default();
    v.sort();
    v
}

#[tokio::test]
async fn status_follows_worker_readiness() {
    let cp = Cp::start().await;
    let admin = cp.admin().await;
    let w1 = cp.spawn_worker("w1", InstanceState::Starting).await;
    let w2 = cp.spawn_worker("w2", InstanceState::Starting).await;
    let (fid, vid) = cp.create_function(&admin, "lifecycle").await;
    let d = cp.deploy(&admin, fid, vid, 2, 2).await;
    assert_eq!(d["functionStatus"], "DEPLOYING");

    // One instance per worker.
    eventually("an instance on each worker", || async {
        let (a, b) = (cp.instances_of("w1").await, cp.instances_of("w2").await);
        (a.len() == 1 && b.len() == 1).then_some(())
    })
    .await;
    let f = cp.function(&admin, fid, vid).await;
    assert_eq!(f["status"], "DEPLOYING");
    let inst = &f["activeInstances"][0];
    assert_eq!(inst["instanceStatus"], "STARTING");
    assert_eq!(inst["functionId"], fid.to_string());
    assert_eq!(inst["gpu"], GPU);
    assert_eq!(inst["instanceType"], INSTANCE_TYPE);
    assert_eq!(inst["backend"], GROUP);
    assert_eq!(inst["location"], "local");
    assert_eq!(inst["ncaId"], "nvcf-default");
    // Instances are a detail: a key with only list_functions does not see them.
    let plain = cp.api_key(&["list_functions"]).await;
    let f = cp.function(&plain.value, fid, vid).await;
    assert!(f.get("activeInstances").is_none(), "{f}");

    // One ready of two: still deploying.
    w1.set(|s| s.state = InstanceState::Ready);
    eventually("w1's instance active", || async {
        let s = instance_statuses(&cp, &admin, fid, vid).await;
        (s == ["ACTIVE", "STARTING"]).then_some(())
    })
    .await;
    assert_eq!(cp.function(&admin, fid, vid).await["status"], "DEPLOYING");
    // Both: ACTIVE.
    w2.set(|s| s.state = InstanceState::Ready);
    cp.wait_status(&admin, fid, vid, "ACTIVE").await;
    let r = cp.get(&dep_path(fid, vid)).bearer(&admin).send().await;
    assert_eq!(r.expect(200)["deployment"]["functionStatus"], "ACTIVE");

    // One worker falls silent: DEGRADING; both: DEGRADED.
    w1.set(|s| s.paused = true);
    cp.wait_status(&admin, fid, vid, "DEGRADING").await;
    w2.set(|s| s.paused = true);
    cp.wait_status(&admin, fid, vid, "DEGRADED").await;
    let r = cp.get("/v2/nvcf/clusterGroups").bearer(&admin).send().await;
    assert_eq!(
        r.expect(200)["clusterGroups"][0]["gpus"][0]["name"],
        GPU,
        "lost workers stay registered"
    );
    // One comes back: DEGRADING; both: ACTIVE.
    w1.set(|s| s.paused = false);
    cp.wait_status(&admin, fid, vid, "DEGRADING").await;
    w2.set(|s| s.paused = false);
    cp.wait_status(&admin, fid, vid, "ACTIVE").await;
    drop((w1, w2));
    cp.stop().await;
}

#[tokio::test]
async fn failed_instances_put_a_deploying_function_in_error() {
    // A worker that misses the usual 500 ms (a loaded CI machine) would be LOST and its failed
    // instance dropped, taking the error out of `healthInfo`: not what this test is about.
    let cp = Cp::start_with(|f| f.heartbeat_timeout = Duration::from_secs(10)).await;
    let admin = cp.admin().await;
    let w = cp.spawn_worker("w1", InstanceState::Failed).await;
    let (fid, vid) = cp.create_function(&admin, "doomed").await;
    cp.deploy(&admin, fid, vid, 1, 1).await;
    cp.wait_status(&admin, fid, vid, "ERROR").await;
    let r = cp.get(&dep_path(fid, vid)).bearer(&admin).send().await;
    let d = r.expect(200)["deployment"].clone();
    assert_eq!(d["functionStatus"], "ERROR");
    assert_eq!(d["healthInfo"][0]["error"], "image pull failed");
    assert_eq!(d["healthInfo"][0]["gpu"], GPU);
    let by_id = format!(
        "/v2/nvcf/deployments/{}",
        d["deploymentId"].as_str().expect("id")
    );
    let r = cp.get(&by_id).bearer(&admin).send().await;
    assert_eq!(r.expect(200)["deployment"]["healthInfo"], d["healthInfo"]);
    // ERROR stays ERROR even if the instance recovers; only undeploying clears it.
    w.set(|s| s.state = InstanceState::Ready);
    eventually("the instance reported ready", || async {
        let s = instance_statuses(&cp, &admin, fid, vid).await;
        (s == ["ACTIVE"]).then_some(())
    })
    .await;
    assert_eq!(cp.function(&admin, fid, vid).await["status"], "ERROR");
    let r = cp.delete(&dep_path(fid, vid)).bearer(&admin).send().await;
    assert_eq!(r.expect(200)["function"]["status"], "INACTIVE");
    cp.deploy(&admin, fid, vid, 1, 1).await;
    cp.wait_status(&admin, fid, vid, "ACTIVE").await;
    drop(w);
    cp.stop().await;
}

#[tokio::test]
async fn unhealthy_worker_does_not_count() {
    let cp = Cp::start().await;
    let admin = cp.admin().await;
    cp.register_worker("w1").await.expect(200);
    let (fid, vid) = cp.create_function(&admin, "sick").await;
    cp.deploy(&admin, fid, vid, 1, 1).await;
    let inst = eventually("an instance", || async {
        cp.instances_of("w1").await.first().copied()
    })
    .await;
    cp.heartbeat("w1", vec![report(inst, InstanceState::Ready, 0)])
        .await
        .expect(200);
    cp.wait_status(&admin, fid, vid, "ACTIVE").await;
    let r = cp
        .post("/internal/v1/workers/w1/heartbeat")
        .bearer(TOKEN)
        .json(&json!({"healthy": false, "instances": [{"instanceId": inst, "state": "ready"}]}))
        .send()
        .await;
    r.expect(200);
    cp.wait_status(&admin, fid, vid, "DEGRADED").await;
    cp.heartbeat("w1", vec![report(inst, InstanceState::Ready, 0)])
        .await
        .expect(200);
    cp.wait_status(&admin, fid, vid, "ACTIVE").await;
    cp.stop().await;
}

#[tokio::test]
async fn graceful_undeploy_waits_for_in_flight_work() {
    let cp = Cp::start().await;
    let admin = cp.admin().await;
    let w = cp.spawn_worker("w1", InstanceState::Ready).await;
    w.set(|s| s.in_flight = 2);
    let (fid, vid) = cp.create_function(&admin, "drain").await;
    let d = cp.deploy(&admin, fid, vid, 1, 1).await;
    let did = d["deploymentId"].as_str().expect("id").to_owned();
    let sid = d["deploymentSpecifications"][0]["gpuSpecificationId"]
        .as_str()
        .expect("sid")
        .to_owned();
    cp.wait_status(&admin, fid, vid, "ACTIVE").await;

    let r = cp
        .delete(&format!("{}?graceful=true", dep_path(fid, vid)))
        .bearer(&admin)
        .send()
        .await;
    let f = r.expect(200)["function"].clone();
    assert_eq!(f["status"], "INACTIVE");
    assert_eq!(cp.function(&admin, fid, vid).await["status"], "INACTIVE");
    // Still draining: a new deployment must wait, the old one can no longer be scaled or deleted.
    cp.post(&dep_path(fid, vid))
        .bearer(&admin)
        .json(&dep_body(1, 1))
        .send()
        .await
        .problem(
            400,
            &format!(
                "Function id '{fid}', version '{vid}': Function deployment found for INACTIVE function. Wait for current deployment to be gracefully completed and removed."
            ),
        );
    cp.patch(&format!(
        "/v2/nvcf/deployments/{did}/gpu-specifications/{sid}"
    ))
    .bearer(&admin)
    .json(&json!({"maxInstances": 2}))
    .send()
    .await
    .problem(400, "being removed");
    cp.delete(&dep_path(fid, vid))
        .bearer(&admin)
        .send()
        .await
        .problem(404, "Deployment not found");
    assert_eq!(
        cp.instances_of("w1").await.len(),
        1,
        "the draining instance stays"
    );
    // The queue no longer lists it.
    cp.get(&format!("/v2/nvcf/queues/functions/{fid}"))
        .bearer(&admin)
        .send()
        .await
        .problem(404, "Queue not found");

    // Work done: the deployment disappears and a new one can be created.
    w.set(|s| s.in_flight = 0);
    eventually("the drained deployment removed", || async {
        let r = cp.get(&dep_path(fid, vid)).bearer(&admin).send().await;
        (r.status == StatusCode::NOT_FOUND).then_some(())
    })
    .await;
    cp.get(&format!("/v2/nvcf/deployments/{did}"))
        .bearer(&admin)
        .send()
        .await
        .expect(404);
    assert!(cp.instances_of("w1").await.is_empty());
    cp.deploy(&admin, fid, vid, 1, 1).await;
    cp.wait_status(&admin, fid, vid, "ACTIVE").await;
    drop(w);
    cp.stop().await;
}

#[tokio::test]
async fn scaling_places_and_removes_instances() {
    let cp = Cp::start().await;
    let admin = cp.admin().await;
    let w1 = cp.spawn_worker("w1", InstanceState::Ready).await;
    let w2 = cp.spawn_worker("w2", InstanceState::Ready).await;
    let (fid, vid) = cp.create_function(&admin, "scale").await;
    let d = cp.deploy(&admin, fid, vid, 1, 1).await;
    let patch = format!(
        "/v2/nvcf/deployments/{}/gpu-specifications/{}",
        d["deploymentId"].as_str().expect("id"),
        d["deploymentSpecifications"][0]["gpuSpecificationId"]
            .as_str()
            .expect("sid")
    );
    cp.wait_status(&admin, fid, vid, "ACTIVE").await;
    let count = || async { cp.instances_of("w1").await.len() + cp.instances_of("w2").await.len() };
    assert_eq!(count().await, 1);
    cp.patch(&patch)
        .bearer(&admin)
        .json(&json!({"maxInstances": 2, "minInstances": 2}))
        .send()
        .await
        .expect(200);
    eventually("two instances, one per worker", || async {
        (cp.instances_of("w1").await.len() == 1 && cp.instances_of("w2").await.len() == 1)
            .then_some(())
    })
    .await;
    cp.wait_status(&admin, fid, vid, "ACTIVE").await;
    // A version never gets two instances on one worker, even when asked for more.
    cp.patch(&patch)
        .bearer(&admin)
        .json(&json!({"maxInstances": 5}))
        .send()
        .await
        .expect(200);
    assert_eq!(count().await, 2);
    cp.patch(&patch)
        .bearer(&admin)
        .json(&json!({"minInstances": 1, "maxInstances": 1}))
        .send()
        .await
        .expect(200);
    eventually("one instance left", || async {
        (count().await == 1).then_some(())
    })
    .await;
    cp.wait_status(&admin, fid, vid, "ACTIVE").await;
    drop((w1, w2));
    cp.stop().await;
}

#[tokio::test]
async fn silent_workers_are_forgotten_and_may_register_again() {
    let cp = Cp::start_with(|f| f.worker_forget_after = Duration::from_millis(800)).await;
    let admin = cp.admin().await;
    cp.register_worker("w1").await.expect(200);
    let groups = || async {
        let r = cp.get("/v2/nvcf/clusterGroups").bearer(&admin).send().await;
        r.expect(200)["clusterGroups"]
            .as_array()
            .expect("groups")
            .len()
    };
    assert_eq!(groups().await, 1);
    eventually("the silent worker forgotten", || async {
        (groups().await == 0).then_some(())
    })
    .await;
    cp.heartbeat("w1", vec![])
        .await
        .problem(404, "Worker 'w1' is not registered");
    cp.register_worker("w1").await.expect(200);
    cp.heartbeat("w1", vec![]).await.expect(200);
    assert_eq!(groups().await, 1);
    // Registering again with the same offer is idempotent.
    let rev = cp.register_worker("w1").await.expect(200)["revision"].clone();
    let again = cp.register_worker("w1").await.expect(200)["revision"].clone();
    assert_eq!(rev, again);
    cp.stop().await;
}

// =========================================================================== restarts and the feed

#[tokio::test]
async fn restart_keeps_functions_deployments_and_credentials() {
    let cp = Cp::start().await;
    let admin = cp.admin().await;
    let key = cp.api_key(&["list_functions", "deploy_function"]).await;
    cp.register_worker("w1").await.expect(200);
    let (fid, vid) = cp.create_function(&admin, "durable").await;
    let vid2 = cp.create_version(&admin, fid).await;
    let (f2, v2) = cp.create_function(&admin, "second").await;
    let d = cp.deploy(&admin, fid, vid, 0, 1).await;
    let did = d["deploymentId"].as_str().expect("id").to_owned();
    // (read with the key: it sees no instances, which depend on workers that are not running)
    let before_fn = cp.function(&key.value, fid, vid).await;
    let before_list = cp
        .get("/v2/nvcf/functions")
        .bearer(&key.value)
        .send()
        .await
        .expect(200)
        .clone();

    let cp = cp.restart().await;
    // Credentials minted before still work.
    let after_fn = cp.function(&key.value, fid, vid).await;
    assert_eq!(after_fn, before_fn);
    assert_eq!(before_list["functions"].as_array().expect("list").len(), 3);
    let after_list = cp
        .get("/v2/nvcf/functions")
        .bearer(&key.value)
        .send()
        .await
        .expect(200)
        .clone();
    assert_eq!(after_list, before_list);
    assert_eq!(ids(&cp.function(&admin, fid, vid2).await), (fid, vid2));
    assert_eq!(ids(&cp.function(&admin, f2, v2).await), (f2, v2));
    let r = cp
        .get(&format!("/v2/nvcf/deployments/{did}"))
        .bearer(&key.value)
        .send()
        .await;
    let d2 = r.expect(200)["deployment"].clone();
    assert_eq!(
        d2["deploymentSpecifications"],
        d["deploymentSpecifications"]
    );
    assert_eq!(d2["functionStatus"], "ACTIVE");
    let r = cp.get("/v1/keys").key_headers().send().await;
    assert_eq!(r.expect(200)["keys"][0]["id"], key.id.as_str());
    cp.post("/v1/introspect")
        .json(&json!({"audience_service_id": NVCF, "key": key.value}))
        .send()
        .await
        .expect(200);
    // The registry survives too (clusterGroups from the stored workers).
    let r = cp.get("/v2/nvcf/clusterGroups").bearer(&admin).send().await;
    assert_eq!(r.expect(200)["clusterGroups"][0]["name"], GROUP);
    // And it keeps working: changes after the restart.
    cp.put(&fn_path(fid, vid))
        .bearer(&admin)
        .json(&json!({"tags": ["after"]}))
        .send()
        .await
        .expect(200);
    let cp = cp.restart().await;
    assert_eq!(
        cp.function(&admin, fid, vid).await["tags"],
        json!(["after"])
    );
    cp.stop().await;
}

#[tokio::test]
async fn feed_snapshot_resume_and_live_changes() {
    let cp = Cp::start().await;
    let admin = cp.admin().await;
    let key = cp.api_key(&["invoke_function"]).await;
    let (fid, vid) = cp.create_function(&admin, "fed").await;

    // Snapshot: every entity; keys by hash only.
    let snap = cp.snapshot().await;
    let rev = snap["revision"].as_u64().expect("revision");
    assert!(rev >= 3, "{snap}");
    assert!(snap["key_hash_secret"].as_str().expect("secret").len() >= 32);
    let entities = snap["entities"].as_array().expect("entities");
    let keys: Vec<&Value> = entities
        .iter()
        .filter(|e| e["kind"] == "key")
        .map(|e| &e["value"])
        .collect();
    assert_eq!(keys.len(), 2, "the admin token and the API key");
    for k in &keys {
        let h = k["hash"].as_str().expect("hash");
        assert_eq!(h.len(), 64);
        assert!(h.chars().all(|c| c.is_ascii_hexdigit()));
        assert!(k.get("value").is_none());
    }
    let text = snap.to_string();
    assert!(
        !text.contains(&key.value) && !text.contains(&admin),
        "secrets never go on the feed"
    );
    let f = entities
        .iter()
        .find(|e| e["kind"] == "function")
        .expect("the function");
    assert_eq!(f["value"]["versionId"], vid.to_string());
    // `since` newer than anything known, or 0: a snapshot.
    let (_, lines) = cp.feed(rev + 1000, 1, Some(TOKEN)).await;
    assert_eq!(lines[0]["type"], "snapshot");
    assert_eq!(lines[0]["revision"], rev);

    // Resume at the current revision: nothing to replay, an idle heartbeat.
    let (_, lines) = cp.feed(rev, 1, Some(TOKEN)).await;
    assert_eq!(lines[0], json!({"type": "heartbeat", "revision": rev}));
    // Resume from an older revision: the log, not a snapshot.
    let (_, lines) = cp.feed(rev - 1, 1, Some(TOKEN)).await;
    assert_eq!(lines[0]["type"], "upsert");
    assert_eq!(lines[0]["revision"], rev);

    // Live changes reach an open feed in order.
    let (status, mut live) = cp.open_feed(rev, Some(TOKEN)).await;
    assert_eq!(status, StatusCode::OK);
    cp.put(&fn_path(fid, vid))
        .bearer(&admin)
        .json(&json!({"tags": ["live"]}))
        .send()
        .await
        .expect(200);
    let line = live.next_change().await;
    assert_eq!(line["type"], "upsert");
    assert_eq!(line["revision"], rev + 1);
    assert_eq!(line["entity"]["kind"], "function");
    assert_eq!(line["entity"]["value"]["tags"], json!(["live"]));
    cp.delete(&format!("/v1/keys/{}", key.id))
        .key_headers()
        .send()
        .await
        .expect(204);
    let line = live.next_change().await;
    assert_eq!(
        line,
        json!({"type": "delete", "revision": rev + 2, "kind": "key", "id": key.id})
    );
    drop(live);

    // Restart: the revision carries on, and a client resumes without a snapshot.
    let rev = rev + 2;
    let cp = cp.restart().await;
    let (_, lines) = cp.feed(rev, 1, Some(TOKEN)).await;
    assert_eq!(lines[0], json!({"type": "heartbeat", "revision": rev}));
    let (_, mut resumed) = cp.open_feed(rev, Some(TOKEN)).await;
    let (f2, _) = cp.create_function(&admin, "after-restart").await;
    let line = resumed.next_change().await;
    assert_eq!(line["type"], "upsert");
    assert_eq!(line["revision"], rev + 1);
    assert_eq!(line["entity"]["value"]["id"], f2.to_string());
    drop(resumed);
    let (_, lines) = cp.feed(rev, 1, Some(TOKEN)).await;
    assert_eq!(
        lines[0]["revision"],
        rev + 1,
        "replayed from the stored log"
    );
    let snap = cp.snapshot().await;
    assert_eq!(snap["revision"], rev + 1);
    cp.stop().await;
}

#[tokio::test]
async fn feed_needs_the_internal_token() {
    let cp = Cp::start().await;
    let admin = cp.admin().await;
    let (status, lines) = cp.feed(0, 1, None).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert_eq!(lines[0]["status"], 401);
    assert_eq!(lines[0]["instance"], "/internal/v1/feed");
    let (status, _) = cp.feed(0, 1, Some(&admin)).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    cp.stop().await;
}

#[tokio::test]
async fn shutdown_ends_open_feeds() {
    let cp = Cp::start().await;
    let (status, mut feed) = cp.open_feed(0, Some(TOKEN)).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(feed.next().await["type"], "snapshot");
    // A connected gateway must not keep the control plane from stopping.
    let (dir, file) = cp.stop().await;
    assert!(
        feed.try_next(GUARD)
            .await
            .is_none_or(|l| l["type"] == "heartbeat"),
        "the feed ends"
    );
    // And the data directory can be opened again at once.
    let cp = Cp::launch(dir, file).await;
    cp.stop().await;
}

#[tokio::test]
async fn feed_beyond_retention_gets_a_snapshot() {
    let cp = Cp::start_with(|f| f.feed_retention = 2).await;
    let admin = cp.admin().await;
    for i in 0..4 {
        cp.create_function(&admin, &format!("f{i}")).await;
    }
    let rev = cp.snapshot().await["revision"].as_u64().expect("revision");
    assert_eq!(rev, 5);
    // The last two changes are kept: resuming from rev-2 replays them.
    let (_, lines) = cp.feed(rev - 2, 2, Some(TOKEN)).await;
    assert_eq!(lines[0]["type"], "upsert");
    assert_eq!(lines[0]["revision"], rev - 1);
    assert_eq!(lines[1]["revision"], rev);
    // Older: a snapshot.
    let (_, lines) = cp.feed(rev - 3, 1, Some(TOKEN)).await;
    assert_eq!(lines[0]["type"], "snapshot");
    assert_eq!(lines[0]["revision"], rev);
    assert_eq!(
        lines[0]["entities"]
            .as_array()
            .expect("entities")
            .iter()
            .filter(|e| e["kind"] == "function")
            .count(),
        4
    );
    cp.stop().await;
}
