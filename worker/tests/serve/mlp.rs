//! `builtin/mlp` through the server: both body forms, width errors, weights files, dynamic
//! batching of concurrent requests and cancellation of a queued one.

use crate::support::*;
use http::StatusCode;
use model::function::ModelDto;
use std::time::Duration;
use worker::config::ServeConfig;
use worker::kernels::cpu::CpuBackend;
use worker::kernels::mlp::{SEED, SEEDED_SHAPE};
use worker::kernels::{Activation, Backend, DenseLayer, MlpWeights};

fn seeded_forward(rows: &[Vec<f32>]) -> Vec<f32> {
    let m = CpuBackend
        .load_mlp(&MlpWeights::seeded(SEEDED_SHAPE, SEED))
        .expect("load");
    m.forward(&rows.concat(), rows.len()).expect("forward").0
}

fn row(seed: usize, width: usize) -> Vec<f32> {
    (0..width)
        .map(|j| ((seed * width + j) as f32 * 0.37).sin())
        .collect()
}

#[tokio::test]
async fn mlp_json_binary_and_width_errors() {
    let f = function("builtin/mlp");
    let cfg = ServeConfig {
        max_batch_delay: Duration::ZERO,
        ..ServeConfig::default()
    };
    let w = start(&[(&f, 8)], cfg).await;
    let rows = vec![row(1, 64), row(2, 64)];
    let want = seeded_forward(&rows);
    let r = call_json(w.addr, f.version_id, serde_json::json!({ "inputs": rows })).await;
    assert_eq!(r.status, StatusCode::OK, "{r:?}");
    let outputs = r.json()["outputs"].as_array().expect("outputs").clone();
    assert_eq!(outputs.len(), 2);
    let got: Vec<f32> = outputs.iter().flat_map(floats).collect();
    assert_close(&got, &want);

    let r = call(
        w.addr,
        post(
            w.addr,
            Some(f.version_id),
            "/",
            Some("application/octet-stream"),
            full(le(&rows.concat())),
        ),
    )
    .await;
    assert_eq!(r.headers["content-type"], "application/octet-stream");
    assert_close(&from_le(&r.body), &want);

    let r = call_json(
        w.addr,
        f.version_id,
        serde_json::json!({"inputs": [row(1, 64), row(2, 63)]}),
    )
    .await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    assert!(
        r.detail()
            .contains("`inputs[1]` has 63 values; this network takes 64"),
        "{r:?}"
    );
    let r = call(
        w.addr,
        post(
            w.addr,
            Some(f.version_id),
            "/",
            Some("application/octet-stream"),
            full(le(&row(0, 65))),
        ),
    )
    .await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
}

fn with_weights(uri: &str) -> model::function::FunctionVersion {
    let mut f = function("builtin/mlp");
    f.models = vec![ModelDto {
        name: Some("net".into()),
        version: None,
        uri: Some(uri.into()),
        llm_config: None,
    }];
    f
}

#[tokio::test]
async fn mlp_weights_file_is_loaded_or_named_when_missing() {
    let dir = tempfile::tempdir().expect("tempdir");
    let net = MlpWeights {
        layers: vec![
            DenseLayer {
                in_dim: 2,
                out_dim: 2,
                weights: vec![1.0, -1.0, 0.5, 0.5],
                bias: vec![0.0, 1.0],
                activation: Activation::Relu,
            },
            DenseLayer {
                in_dim: 2,
                out_dim: 1,
                weights: vec![2.0, 1.0],
                bias: vec![0.5],
                activation: Activation::Identity,
            },
        ],
    };
    let path = dir.path().join("net.safetensors");
    std::fs::write(&path, net.to_safetensors().expect("serialize")).expect("write");
    let good = with_weights(&format!("file://{}", path.display()));
    let missing_path = dir.path().join("missing.safetensors").display().to_string();
    let missing = with_weights(&missing_path);
    let garbage_path = dir.path().join("garbage.safetensors");
    std::fs::write(&garbage_path, b"not a network").expect("write");
    let garbage = with_weights(&garbage_path.display().to_string());
    let w = start(
        &[(&good, 4), (&missing, 4), (&garbage, 4)],
        ServeConfig::default(),
    )
    .await;

    let r = call_json(
        w.addr,
        good.version_id,
        serde_json::json!({"inputs": [[1, 3], [2, 0]]}),
    )
    .await;
    assert_eq!(
        (r.status, r.json()),
        (
            StatusCode::OK,
            serde_json::json!({"outputs": [[3.5], [6.5]]})
        )
    );
    let r = call_json(
        w.addr,
        missing.version_id,
        serde_json::json!({"inputs": [[1, 3]]}),
    )
    .await;
    assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert!(r.detail().contains(&missing_path), "{r:?}");
    let r = call_json(
        w.addr,
        garbage.version_id,
        serde_json::json!({"inputs": [[1, 3]]}),
    )
    .await;
    assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert!(r.detail().contains("garbage.safetensors"), "{r:?}");
}

#[tokio::test]
async fn concurrent_mlp_requests_share_launches_and_get_their_own_rows() {
    let f = function("builtin/mlp");
    let cfg = ServeConfig {
        max_batch_delay: Duration::from_millis(20),
        ..ServeConfig::default()
    };
    let w = start(&[(&f, 64)], cfg).await;
    let s = h2(w.addr).await;
    let calls = (0..16).map(|i| {
        let mut s = s.clone();
        let addr = w.addr;
        let rows = vec![row(i, 64)];
        let body = serde_json::json!({ "inputs": rows }).to_string();
        async move {
            let resp = s.send_request(post(addr, Some(f.version_id), "/", None, full(body)));
            (rows, collect(resp.await.expect("response")).await)
        }
    });
    for (rows, r) in futures_util::future::join_all(calls).await {
        assert_eq!(r.status, StatusCode::OK, "{r:?}");
        let got: Vec<f32> = r.json()["outputs"]
            .as_array()
            .expect("outputs")
            .iter()
            .flat_map(floats)
            .collect();
        assert_close(&got, &seeded_forward(&rows));
    }
    let launches = w.launches.lock().expect("lock").clone();
    assert_eq!(launches.iter().sum::<usize>(), 16);
    assert!(
        launches.len() < 16,
        "16 requests took {} launches",
        launches.len()
    );
    assert_eq!(w.server.loaded_models(), 1);

    // Once the version leaves this worker its network is dropped.
    w.shared.feed.lock().expect("lock").instances.clear();
    w.server.sweep();
    assert_eq!(w.server.loaded_models(), 0);
}

#[tokio::test]
async fn a_cancelled_mlp_request_is_never_computed() {
    let f = function("builtin/mlp");
    let cfg = ServeConfig {
        max_batch_delay: Duration::from_millis(500),
        ..ServeConfig::default()
    };
    let w = start(&[(&f, 8)], cfg).await;
    let vid = f.version_id;
    let mut s = h2(w.addr).await;
    let three = serde_json::json!({"inputs": [row(1, 64), row(2, 64), row(3, 64)]}).to_string();
    let task = tokio::spawn(s.send_request(post(w.addr, Some(vid), "/", None, full(three))));
    eventually("admission", || w.shared.in_flight.get(&vid) == 1).await;
    task.abort();
    eventually("in_flight back to 0", || w.shared.in_flight.get(&vid) == 0).await;
    let r = call_json(w.addr, vid, serde_json::json!({"inputs": [row(4, 64)]})).await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(
        *w.launches.lock().expect("lock"),
        vec![1],
        "only the live request ran"
    );
}
