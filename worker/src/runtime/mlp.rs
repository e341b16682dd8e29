//! `builtin/mlp`: a dense network's forward pass, dynamically batched.
//!
//! * JSON: `{"inputs": [[f32; input width], ...]}` answered `{"outputs": [[f32; output width], ...]}`.
//! * `Content-Type: application/octet-stream`: rows × input width little-endian f32 (a multiple of
//!   `4 × input width` bytes) answered as rows × output width little-endian f32.
//!
//! Weights: the safetensors file named by the function's `models[0].uri` (a `file://` prefix is
//! stripped; any other value is a local path), or, when the function names none, the seeded
//! network `MlpWeights::seeded(SEEDED_SHAPE, SEED)` (64 → 256 → 256 → 16). They are loaded onto the
//! backend once per function version, on the first request, and kept with the version's batcher
//! until the version leaves this worker. A weights file that is missing, unreadable or not a usable
//! network answers **422** naming the path: the request is well formed, the function's model is
//! not; it is retried on the next request, so fixing the file needs no redeploy.
//!
//! Every request goes through the version's [`Batcher`]: concurrent requests share one launch of
//! up to `max-batch-size` rows, waiting at most `max-batch-delay`.

use super::{
    Body, Ctx, Invocation, RuntimeError, f32s_from_le, f32s_to_le, full, is_octet_stream,
    json_field, json_object, json_response, offload, read_body,
};
use crate::batcher::{Batcher, Launch};
use crate::kernels::mlp::{SEED, SEEDED_SHAPE};
use crate::kernels::{KernelError, KernelTiming, LoadedMlp, MlpWeights};
use http::{Request, Response, StatusCode};
use hyper::body::Incoming;
use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Instant;
use tokio::sync::OnceCell;
use uuid::Uuid;

/// A version's network resident on the backend, and the batcher that launches it.
#[derive(Debug)]
pub struct Slot {
    pub model: Arc<dyn LoadedMlp>,
    pub batcher: Batcher,
}

/// Loaded networks by function version id.
#[derive(Debug, Default)]
pub struct Models {
    slots: Mutex<HashMap<Uuid, Arc<OnceCell<Arc<Slot>>>>>,
}

impl Models {
    fn slots(&self) -> MutexGuard<'_, HashMap<Uuid, Arc<OnceCell<Arc<Slot>>>>> {
        self.slots.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The version's slot, loading its weights on first use (concurrent first requests share one
    /// load; a failed load is retried by the next request).
    pub async fn get(&self, ctx: &Ctx, inv: &Invocation) -> Result<Arc<Slot>, RuntimeError> {
        let cell = Arc::clone(self.slots().entry(inv.version_id).or_default());
        cell.get_or_try_init(|| load(ctx, inv)).await.cloned()
    }

    /// Drops the networks of versions `keep` rejects (requests still running keep theirs alive).
    pub fn retain(&self, keep: impl Fn(&Uuid) -> bool) {
        self.slots().retain(|v, _| keep(v));
    }

    /// Versions with a slot (loaded or loading).
    pub fn len(&self) -> usize {
        self.slots().len()
    }

    /// Whether no version has a slot.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// The local path of a `models[].uri`.
fn weights_path(uri: &str) -> &str {
    uri.strip_prefix("file://").unwrap_or(uri)
}

async fn load(ctx: &Ctx, inv: &Invocation) -> Result<Arc<Slot>, RuntimeError> {
    let weights = match inv.model_uri.as_deref() {
        None => MlpWeights::seeded(SEEDED_SHAPE, SEED),
        Some(uri) => {
            let path = weights_path(uri).to_owned();
            let bytes = tokio::fs::read(&path).await.map_err(|e| {
                RuntimeError::Weights(format!(
                    "cannot read the weights file {path} (models[].uri of function version {}): {e}",
                    inv.version_id
                ))
            })?;
            let parsed = tokio::task::spawn_blocking(move || MlpWeights::from_safetensors(&bytes))
                .await
                .map_err(|e| RuntimeError::Internal(format!("weights parser failed: {e}")))?;
            parsed.map_err(|e| {
                RuntimeError::Weights(format!(
                    "the weights file {path} is not a usable network: {e}"
                ))
            })?
        }
    };
    let origin = inv
        .model_uri
        .clone()
        .unwrap_or_else(|| "the seeded network".into());
    let model = ctx
        .exec
        .run(&inv.metrics, "mlp_load", None, move |b| {
            let start = Instant::now();
            let m = b.load_mlp(&weights)?;
            Ok((
                m,
                KernelTiming {
                    kernel: start.elapsed(),
                    ..KernelTiming::default()
                },
            ))
        })
        .await
        .map_err(|e| match e {
            KernelError::Input(m) => RuntimeError::Weights(format!("{origin}: {m}")),
            e => RuntimeError::Kernel(e),
        })?;
    let exec = ctx.exec.clone();
    let metrics = Arc::clone(&inv.metrics);
    let forward_model = Arc::clone(&model);
    let launch: Launch = Box::new(move |inputs, rows| {
        let (exec, metrics, model) = (
            exec.clone(),
            Arc::clone(&metrics),
            Arc::clone(&forward_model),
        );
        Box::pin(async move {
            exec.run(&metrics, "mlp_forward", None, move |_| {
                model.forward(&inputs, rows)
            })
            .await
        })
    });
    tracing::info!(version = %inv.version_id, inputs = model.input_width(), outputs = model.output_width(), "mlp loaded");
    let batcher = Batcher::spawn(
        ctx.cfg.max_batch_size,
        ctx.cfg.max_batch_delay,
        Arc::clone(&inv.metrics),
        launch,
    );
    Ok(Arc::new(Slot { model, batcher }))
}

/// `(inputs, rows)` of a JSON body.
fn parse_json(body: &[u8], width: usize) -> Result<(Vec<f32>, usize), RuntimeError> {
    let mut o = json_object(body)?;
    let rows: Vec<Vec<f32>> = json_field(&mut o, "inputs", "an array of rows of numbers")?
        .ok_or_else(|| RuntimeError::BadRequest("`inputs` is required".into()))?;
    if rows.is_empty() {
        return Err(RuntimeError::BadRequest(
            "`inputs` must hold at least one row".into(),
        ));
    }
    let mut flat = Vec::with_capacity(rows.len() * width);
    for (i, r) in rows.iter().enumerate() {
        if r.len() != width {
            return Err(RuntimeError::BadRequest(format!(
                "`inputs[{i}]` has {} values; this network takes {width} per row",
                r.len()
            )));
        }
        flat.extend_from_slice(r);
    }
    Ok((flat, rows.len()))
}

/// `(inputs, rows)` of a little-endian f32 body.
fn parse_binary(body: &[u8], width: usize) -> Result<(Vec<f32>, usize), RuntimeError> {
    let row_bytes = 4 * width;
    if body.is_empty() || row_bytes == 0 || !body.len().is_multiple_of(row_bytes) {
        return Err(RuntimeError::BadRequest(format!(
            "an application/octet-stream mlp body is one or more rows of {width} little-endian f32 \
             ({row_bytes} bytes per row); got {} bytes",
            body.len()
        )));
    }
    Ok((f32s_from_le(body), body.len() / row_bytes))
}

/// Answers an mlp request.
pub async fn serve(
    ctx: &Ctx,
    inv: &Invocation,
    req: Request<Incoming>,
) -> Result<Response<Body>, RuntimeError> {
    let binary = is_octet_stream(req.headers());
    let (parts, body) = req.into_parts();
    let body = read_body(&parts.headers, body, ctx.cfg.max_body_bytes).await?;
    let slot = ctx.models.get(ctx, inv).await?;
    let width = slot.model.input_width();
    let (inputs, rows) = offload(body.len(), move || {
        if binary {
            parse_binary(&body, width)
        } else {
            parse_json(&body, width)
        }
    })
    .await?;
    // Dropping `pending` (the client went away) takes the job out of the batch queue.
    let pending = slot
        .batcher
        .submit(inputs, rows, Instant::now())
        .map_err(|e| RuntimeError::Internal(e.to_string()))?;
    let out = pending
        .await
        .map_err(|_| RuntimeError::Internal("the batcher dropped the request".into()))??;
    if binary {
        return Ok(full(
            StatusCode::OK,
            "application/octet-stream",
            f32s_to_le(&out),
        ));
    }
    let width = slot.model.output_width().max(1);
    let size = out.len() * 8;
    json_response(size, Answer { out, width }).await
}

/// `{"outputs": [[...], ...]}`: rows of `width` values, serialized without copying them.
struct Answer {
    out: Vec<f32>,
    width: usize,
}

impl serde::Serialize for Answer {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeMap;
        struct Rows<'a>(&'a [f32], usize);
        impl serde::Serialize for Rows<'_> {
            fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.collect_seq(self.0.chunks(self.1))
            }
        }
        let mut m = s.serialize_map(Some(1))?;
        m.serialize_entry("outputs", &Rows(&self.out, self.width))?;
        m.end()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_rows_are_checked_for_width() {
        let (v, rows) = parse_json(br#"{"inputs":[[1,2],[3,4]]}"#, 2).expect("ok");
        assert_eq!((v, rows), (vec![1.0, 2.0, 3.0, 4.0], 2));
        let e = parse_json(br#"{"inputs":[[1,2],[3]]}"#, 2).expect_err("width");
        assert!(
            e.to_string()
                .contains("`inputs[1]` has 1 values; this network takes 2"),
            "{e}"
        );
        assert!(parse_json(br#"{"inputs":[]}"#, 2).is_err());
        assert!(
            parse_json(br#"{"inputs":[["a"]]}"#, 1)
                .expect_err("type")
                .to_string()
                .contains("`inputs` must be an array of rows of numbers")
        );
        assert!(parse_json(br#"{}"#, 1).is_err());
    }

    #[test]
    fn binary_rows_are_whole() {
        let body = f32s_to_le(&[1.0, 2.0, 3.0, 4.0]);
        assert_eq!(parse_binary(&body, 2).expect("ok").1, 2);
        let e = parse_binary(&body[..12], 2).expect_err("partial row");
        assert!(
            e.to_string().contains("8 bytes per row); got 12 bytes"),
            "{e}"
        );
        assert!(parse_binary(&[], 2).is_err());
    }

    #[test]
    fn file_uris_are_local_paths() {
        assert_eq!(weights_path("file:///m/w.safetensors"), "/m/w.safetensors");
        assert_eq!(weights_path("/m/w.safetensors"), "/m/w.safetensors");
    }
}
