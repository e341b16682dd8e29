//! Parking (the dataplane's 202, nvcf-api.md "deliberate differences"): a pexec/exec call whose poll
//! window ends before the worker answers gets `202` with `NVCF-REQID` and `NVCF-STATUS:
//! in-progress` (an empty body for pexec, the in-progress wrapper for exec), while a background
//! task keeps the worker request — and the admission slot and worker load with it — until the
//! answer is read whole into the [`crate::pending`] table. `GET .../status/{id}` re-authorizes the
//! caller for the same function and version, waits up to its own window, and answers the result
//! once (then 404) or 202 again.

use std::time::Duration;

use bytes::Bytes;
use http::{HeaderValue, Response, StatusCode, header};
use uuid::Uuid;

use super::{Ctx, Invoker, Work, exec, respond};
use crate::body::{self, Body};
use crate::error::GatewayError;
use crate::invoke::finish::Held;
use crate::invoke::target::Endpoint;
use crate::pending::store::answer;
use crate::pending::{Owner, Stored, Taken};

/// The `202` for a parked request: empty for pexec, the in-progress wrapper for exec.
pub(crate) fn accepted(request_id: Uuid, exec: bool) -> Response<Body> {
    crate::metrics::record_accepted();
    let status = StatusCode::ACCEPTED;
    if exec {
        let body = exec::wrap(request_id, status, None, b"")
            .map(|(_, b)| b)
            .unwrap_or_default();
        return exec::response(request_id, status, body);
    }
    let mut response = Response::new(body::full(Bytes::new()));
    *response.status_mut() = status;
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_LENGTH, HeaderValue::from_static("0"));
    respond::mark(
        headers,
        &crate::headers::request_id_value(request_id),
        status,
    );
    response
}

impl Invoker {
    /// Runs `work` until the poll window ends; then parks it and answers 202. The places in `held`
    /// go with the response (pexec streams), are given back at once (exec is complete), or stay
    /// with the parked task.
    pub(super) async fn answer_or_park(
        &self,
        ctx: &Ctx,
        mut work: Work,
        held: Held,
    ) -> Result<(Response<Body>, Option<Held>), GatewayError> {
        let deadline = tokio::time::Instant::from_std(ctx.start) + ctx.poll;
        tokio::select! {
            biased;
            result = &mut work => {
                let response = result?;
                if ctx.target.endpoint == Endpoint::Exec {
                    // The wrapped answer is complete: nothing streams after it.
                    drop(held);
                    Ok((response, None))
                } else {
                    Ok((response, Some(held)))
                }
            }
            () = tokio::time::sleep_until(deadline) => Ok((self.park(ctx, work, held), None)),
        }
    }

    /// Moves `work` into a task that keeps its outcome in the pending table, and answers 202.
    fn park(&self, ctx: &Ctx, work: Work, held: Held) -> Response<Body> {
        let id = ctx.request_id;
        let exec = ctx.target.endpoint == Endpoint::Exec;
        self.pending.insert(
            id,
            Owner {
                function_id: ctx.route.function_id,
                version_id: ctx.route.version_id,
                exec,
            },
        );
        let store = std::sync::Arc::clone(&self.pending);
        // A parked request runs at most the TTL (NVCF's whole-request bound is 1 h as well).
        let waited = store.limits().ttl;
        let deadline = tokio::time::Instant::now() + waited;
        let function_id = ctx.route.function_id.to_string();
        tokio::spawn(async move {
            let (stored, bytes) = match tokio::time::timeout_at(deadline, work).await {
                Ok(Ok(response)) => store.keep(id, response, deadline).await,
                Ok(Err(e)) => (Stored::Failed(e), 0),
                Err(_) => (
                    Stored::Failed(GatewayError::WorkerTimeout {
                        request_id: id,
                        waited,
                    }),
                    0,
                ),
            };
            if let Stored::Failed(e) = &stored {
                // The client saw a 202; the failure is counted here, when it happens.
                crate::metrics::record_invocation_error(
                    crate::metrics::status_label(e.status()),
                    function_id,
                );
            }
            // The places go before the result is visible: its poller may invoke again at once.
            drop(held);
            store.complete(id, stored, bytes);
        });
        tracing::debug!(%id, "poll window ended; request parked");
        accepted(id, exec)
    }

    /// The parked request a status poll names: 404 for an id that is not a UUID or not held.
    pub(super) fn poll_owner(&self, raw: &str) -> Result<(Uuid, Owner), GatewayError> {
        let found = Uuid::try_parse(raw)
            .ok()
            .filter(|_| raw.len() == 36)
            .and_then(|id| self.pending.owner(id).map(|o| (id, o)));
        found.ok_or_else(|| {
            crate::metrics::record_status_poll("not_found");
            GatewayError::RequestNotFound(raw.chars().take(64).collect())
        })
    }

    /// Waits up to `window` for the result of `id` (already authorized): the result once, 202
    /// while it runs, 404 when it is gone (fetched by a concurrent poll, or expired).
    pub(super) async fn poll(
        &self,
        id: Uuid,
        owner: Owner,
        window: Duration,
    ) -> Result<Response<Body>, GatewayError> {
        match self.pending.wait(id, window).await {
            Taken::Ready(stored) => {
                crate::metrics::record_status_poll("result");
                answer(stored).await
            }
            Taken::Running => {
                crate::metrics::record_status_poll("in_progress");
                Ok(accepted(id, owner.exec))
            }
            Taken::Missing => {
                crate::metrics::record_status_poll("not_found");
                Err(GatewayError::RequestNotFound(id.to_string()))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::BodyExt;

    #[tokio::test]
    async fn accepted_shapes() {
        let id = Uuid::new_v4();
        let r = accepted(id, false);
        assert_eq!(r.status(), StatusCode::ACCEPTED);
        assert_eq!(r.headers()["content-length"], "0");
        assert_eq!(r.headers()["nvcf-status"], "in-progress");
        assert_eq!(r.headers()["nvcf-reqid"], id.to_string().as_str());
        assert_eq!(r.headers()["access-control-expose-headers"], "nvcf-reqid");
        let r = accepted(id, true);
        assert_eq!(r.status(), StatusCode::ACCEPTED);
        assert_eq!(r.headers()["content-type"], "application/json");
        let body = r.into_body().collect().await.expect("body").to_bytes();
        let v: serde_json::Value = serde_json::from_slice(&body).expect("json");
        assert_eq!(v["status"], "in-progress");
        assert_eq!(v["reqId"], id.to_string().as_str());
    }
}
