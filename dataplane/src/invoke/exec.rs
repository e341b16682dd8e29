//! The `exec` wrapper (nvcf-api.md §2.6): the request is `{"requestHeader": {...}?, "requestBody":
//! <any JSON>}` and `requestBody` goes to the worker as a JSON POST; the answer wraps the worker's
//! as `{"reqId","status","percentComplete","response"}` (200) or `{"reqId","status","errorCode"}`.

use bytes::Bytes;
use http::{HeaderValue, Response, StatusCode, header};
use http_body_util::{BodyExt, Limited};

use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::body::{Body, RequestBody};
use crate::error::GatewayError;
use crate::invoke::respond::{mark, nvcf_status};

/// Largest exec request body, and largest worker answer it wraps: axum's default body limit,
/// which is what NVCF's exec extractor applies (2 MB); the wrapper buffers both whole.
pub(crate) const MAX_EXEC_BODY: usize = 2 * 1024 * 1024;

/// The wrapped request.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct ExecRequest {
    #[serde(default)]
    pub(crate) request_header: Option<ExecRequestHeader>,
    pub(crate) request_body: serde_json::Value,
}

/// `requestHeader` (asset references are not supported and ignored).
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct ExecRequestHeader {
    #[serde(default)]
    pub(crate) poll_duration_seconds: Option<u64>,
}

/// The wrapped response (nulls omitted).
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
struct ExecResponse {
    req_id: Uuid,
    status: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    response_reference: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    percent_complete: Option<u8>,
    #[serde(skip_serializing_if = "Option::is_none")]
    error_code: Option<u16>,
    #[serde(skip_serializing_if = "Option::is_none")]
    response: Option<serde_json::Value>,
}

/// Reads up to [`MAX_EXEC_BODY`] bytes of `body`.
pub(crate) async fn read_limited(body: RequestBody) -> Result<Bytes, GatewayError> {
    match Limited::new(body, MAX_EXEC_BODY).collect().await {
        Ok(c) => Ok(c.to_bytes()),
        Err(e) if e.is::<http_body_util::LengthLimitError>() => Err(GatewayError::BodyTooLarge {
            limit: MAX_EXEC_BODY as u64,
        }),
        Err(e) => Err(GatewayError::ClientBody(e.to_string())),
    }
}

/// Parses the wrapped request; malformed JSON is a 400 with serde's message.
pub(crate) fn parse(bytes: &[u8]) -> Result<ExecRequest, GatewayError> {
    serde_json::from_slice(bytes).map_err(|e| GatewayError::BadRequest(e.to_string()))
}

/// Wraps the worker's answer: `status`, its `Location` (302) and body.
pub(crate) fn wrap(
    request_id: Uuid,
    status: StatusCode,
    location: Option<String>,
    body: &[u8],
) -> Result<(StatusCode, Bytes), GatewayError> {
    let mut out = ExecResponse {
        req_id: request_id,
        status: nvcf_status(status),
        response_reference: None,
        percent_complete: None,
        error_code: None,
        response: None,
    };
    let client_status = match status.as_u16() {
        200 => {
            let value = serde_json::from_slice(body).map_err(|e| GatewayError::WorkerResponse {
                request_id,
                detail: format!("the body is not JSON: {e}"),
            })?;
            out.percent_complete = Some(100);
            out.response = Some(value);
            StatusCode::OK
        }
        202 => StatusCode::ACCEPTED,
        302 => {
            out.percent_complete = Some(100);
            out.response_reference = location;
            StatusCode::OK
        }
        code => {
            out.error_code = Some(code);
            status
        }
    };
    let json = serde_json::to_vec(&out).map_err(|e| GatewayError::Internal(e.to_string()))?;
    Ok((client_status, Bytes::from(json)))
}

/// The client's response carrying a wrapped answer.
pub(crate) fn response(request_id: Uuid, status: StatusCode, body: Bytes) -> Response<Body> {
    let mut response = Response::new(crate::body::full(body));
    *response.status_mut() = status;
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    mark(
        headers,
        &crate::headers::request_id_value(request_id),
        status,
    );
    response
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::{Value, json};

    #[test]
    fn parses_the_wrapper() {
        let r = parse(br#"{"requestHeader":{"pollDurationSeconds":5},"requestBody":{"a":1}}"#)
            .expect("parse");
        assert_eq!(r.request_body, json!({"a": 1}));
        assert_eq!(
            r.request_header.and_then(|h| h.poll_duration_seconds),
            Some(5)
        );
        let r = parse(br#"{"requestBody":[1,2]}"#).expect("no header");
        assert!(r.request_header.is_none());
        let e = parse(b"{").expect_err("bad");
        assert_eq!(e.status().as_u16(), 400);
        let e = parse(b"{}").expect_err("missing");
        assert!(e.to_string().contains("requestBody"), "{e}");
    }

    #[test]
    fn wraps_answers() {
        let id = Uuid::nil();
        let (s, b) = wrap(id, StatusCode::OK, None, br#"{"x":1}"#).expect("200");
        assert_eq!(s, StatusCode::OK);
        let v: Value = serde_json::from_slice(&b).expect("json");
        assert_eq!(
            v,
            json!({"reqId": id, "status": "fulfilled", "percentComplete": 100, "response": {"x": 1}})
        );
        let (s, b) = wrap(id, StatusCode::NOT_FOUND, None, b"nope").expect("404");
        assert_eq!(s, StatusCode::NOT_FOUND);
        let v: Value = serde_json::from_slice(&b).expect("json");
        assert_eq!(
            v,
            json!({"reqId": id, "status": "errored", "errorCode": 404})
        );
        let e = wrap(id, StatusCode::OK, None, b"not json").expect_err("500");
        assert_eq!(e.status().as_u16(), 500);
        let (s, b) = wrap(id, StatusCode::FOUND, Some("http://x".into()), b"").expect("302");
        assert_eq!(s, StatusCode::OK);
        let v: Value = serde_json::from_slice(&b).expect("json");
        assert_eq!(v["responseReference"], "http://x");
    }
}
