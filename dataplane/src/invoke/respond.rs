//! The `respond` step: the poll window (`NVCF-POLL-SECONDS`, nvcf-api.md §2.3), and the response
//! the client gets once a worker answered — its status, headers (the worker client left out the
//! hop-by-hop ones) and body streamed back frame by frame, plus `NVCF-REQID`, `NVCF-STATUS` and
//! `nvcf-reqid` appended to `Access-Control-Expose-Headers`.
//!
//! When the window ends before the worker's response head, host-routed calls get 504 after the
//! window + 2 s ([`GRACE`]); pexec/exec calls are parked instead (202, [`crate::invoke::park`]).

use std::sync::LazyLock;
use std::time::Duration;

use bytes::{BufMut, BytesMut};

use http::header::{self, Entry, HeaderMap, HeaderName, HeaderValue};
use http::{Response, StatusCode};

use crate::error::GatewayError;
use crate::fields::Fielded;
use crate::headers::RequestHeaders;
use crate::invoke::target::Endpoint;

/// The client's poll header.
pub(crate) const POLL_SECONDS: &str = "nvcf-poll-seconds";
const POLL_SECONDS_NAME: HeaderName = HeaderName::from_static(POLL_SECONDS);
/// Window when the client names none.
pub(crate) const DEFAULT_POLL: u64 = 60;
/// Window for a pexec/exec call that asks for `text/event-stream` and names none (20 min).
pub(crate) const SSE_POLL: u64 = 1200;
/// The longest window a client may ask for.
const MAX_POLL: u64 = 3600;
/// How long past the poll window the gateway still waits for the worker's response head
/// (NVCF waits poll + 2 s before its 504).
pub(crate) const GRACE: Duration = Duration::from_secs(2);

/// The poll window in seconds for a request with `headers` on `endpoint`.
pub(crate) fn poll_seconds(
    headers: RequestHeaders<'_>,
    endpoint: Endpoint,
) -> Result<u64, GatewayError> {
    match headers.get(&POLL_SECONDS_NAME) {
        Some(v) => parse_poll(v),
        None => {
            // Host-routed calls keep 60 s even for SSE (nvcf-api.md §2.3): no lookup for them.
            let sse = endpoint != Endpoint::Passthrough
                && headers
                    .get(&header::ACCEPT)
                    .is_some_and(|a| a == b"text/event-stream");
            Ok(if sse { SSE_POLL } else { DEFAULT_POLL })
        }
    }
}

/// Parses a poll value: whole seconds, 0 → 1, more than 3600 or not a number → 400.
pub(crate) fn parse_poll(raw: &[u8]) -> Result<u64, GatewayError> {
    let n: u64 = std::str::from_utf8(raw)
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .ok_or(GatewayError::PollDuration)?;
    check_poll(n)
}

/// Applies the §2.3 bounds to a number of seconds.
pub(crate) fn check_poll(n: u64) -> Result<u64, GatewayError> {
    if n > MAX_POLL {
        return Err(GatewayError::PollDuration);
    }
    Ok(n.max(1))
}

/// NVCF's `NVCF-STATUS` for a response status.
pub(crate) fn nvcf_status(status: StatusCode) -> &'static str {
    match status.as_u16() {
        202 => "in-progress",
        200..=399 => "fulfilled",
        _ => "errored",
    }
}

/// The names [`mark`] sets, as they go on the wire: `NVCF-REQID`, `NVCF-STATUS`, and
/// `Access-Control-Expose-Headers`.
const MARKED: [&str; 3] = [
    model::headers::NVCF_REQID,
    "nvcf-status",
    "access-control-expose-headers",
];
const NVCF_STATUS: HeaderName = HeaderName::from_static(MARKED[1]);
/// `Access-Control-Expose-Headers` when the worker exposed nothing.
const EXPOSE_REQID: HeaderValue = HeaderValue::from_static(model::headers::NVCF_REQID);

/// [`nvcf_status`] as a prebuilt header value (`from_static` outside a constant checks the text
/// on every call).
fn nvcf_status_value(status: StatusCode) -> HeaderValue {
    const IN_PROGRESS: HeaderValue = HeaderValue::from_static("in-progress");
    const FULFILLED: HeaderValue = HeaderValue::from_static("fulfilled");
    const ERRORED: HeaderValue = HeaderValue::from_static("errored");
    match nvcf_status(status) {
        "in-progress" => IN_PROGRESS,
        "fulfilled" => FULFILLED,
        _ => ERRORED,
    }
}

/// Adds `NVCF-REQID`, `NVCF-STATUS` for `status`, and `nvcf-reqid` to the exposed headers (kept
/// beside whatever the worker exposed).
pub(crate) fn mark(headers: &mut HeaderMap, request_id: &HeaderValue, status: StatusCode) {
    headers.insert(crate::headers::NVCF_REQID, request_id.clone());
    headers.insert(NVCF_STATUS, nvcf_status_value(status));
    match headers.entry(header::ACCESS_CONTROL_EXPOSE_HEADERS) {
        Entry::Vacant(slot) => {
            slot.insert(EXPOSE_REQID);
        }
        Entry::Occupied(mut slot) => {
            let mut joined = Vec::new();
            for value in slot.iter().map(HeaderValue::as_bytes) {
                if !value.is_empty() {
                    joined.extend_from_slice(value);
                    joined.extend_from_slice(b", ");
                }
            }
            joined.extend_from_slice(b"nvcf-reqid");
            // Joined from valid values with ASCII separators.
            slot.insert(HeaderValue::from_bytes(&joined).unwrap_or(EXPOSE_REQID));
        }
    }
}

/// NVCF's headers for a worker's answer whose fields travel unparsed ([`crate::fields`]) and
/// name none of them: what [`mark`] adds, kept beside the fields and written after them.
#[derive(Debug)]
pub(crate) struct Marks {
    request_id: HeaderValue,
    status: StatusCode,
}

impl Marks {
    pub(crate) fn new(request_id: HeaderValue, status: StatusCode) -> Self {
        Self { request_id, status }
    }

    pub(crate) fn request_id(&self) -> &HeaderValue {
        &self.request_id
    }

    /// Writes the header lines, as [`mark`] adds them to a map without any of them, in three
    /// copies: the request id's line's start, the id, and the rest, built once per status.
    pub(crate) fn put(&self, buf: &mut BytesMut) {
        static LINES: LazyLock<MarkLines> = LazyLock::new(MarkLines::new);
        let lines = &*LINES;
        buf.put_slice(&lines.reqid);
        buf.put_slice(self.request_id.as_bytes());
        buf.put_slice(match nvcf_status(self.status) {
            "in-progress" => &lines.in_progress,
            "fulfilled" => &lines.fulfilled,
            _ => &lines.errored,
        });
    }

    /// Adds them to `headers` (the worker's fields already there).
    pub(crate) fn apply(&self, headers: &mut HeaderMap) {
        mark(headers, &self.request_id, self.status);
    }
}

/// [`Marks::put`]'s prebuilt text.
struct MarkLines {
    /// `nvcf-reqid: `.
    reqid: Box<[u8]>,
    /// The end of the request id's line, then the status line and the exposed headers' line.
    in_progress: Box<[u8]>,
    fulfilled: Box<[u8]>,
    errored: Box<[u8]>,
}

impl MarkLines {
    fn new() -> Self {
        let [reqid, status, expose] = MARKED;
        let tail = |value: &str| {
            format!(
                "\r\n{status}: {value}\r\n{expose}: {}\r\n",
                model::headers::NVCF_REQID
            )
            .into_bytes()
            .into()
        };
        Self {
            reqid: crate::headers::line_start(reqid),
            in_progress: tail("in-progress"),
            fulfilled: tail("fulfilled"),
            errored: tail("errored"),
        }
    }
}

/// Turns the worker's response head into the client's: NVCF's headers are added. (The worker
/// client answered it without hop-by-hop headers: [`crate::invoke::dispatch::WorkerClient::request`].)
pub(crate) fn passthrough<B: Fielded>(
    mut response: Response<B>,
    request_id: &HeaderValue,
) -> Response<B> {
    let status = response.status();
    // The worker's own values of these are replaced or joined: they must be in the map.
    crate::fields::materialize_if_named(&mut response, &MARKED);
    if let Some(fields) = response.body_mut().fields_mut() {
        fields.set_marks(Marks::new(request_id.clone(), status));
        return response;
    }
    mark(response.headers_mut(), request_id, status);
    response
}

#[cfg(test)]
mod tests {
    use super::*;
    use uuid::Uuid;

    fn with(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(*k, HeaderValue::from_static(v));
        }
        h
    }

    #[test]
    fn poll_rules() {
        let p = |pairs: &[(&'static str, &'static str)], e| {
            poll_seconds(RequestHeaders::map(&with(pairs)), e)
        };
        assert_eq!(p(&[], Endpoint::Pexec).expect("default"), 60);
        let sse = [("accept", "text/event-stream")];
        assert_eq!(p(&sse, Endpoint::Pexec).expect("sse"), 1200);
        assert_eq!(p(&sse, Endpoint::Passthrough).expect("tlb sse"), 60);
        assert_eq!(
            p(&[("accept", "text/event-stream, */*")], Endpoint::Pexec).expect("not exactly"),
            60
        );
        assert_eq!(p(&[(POLL_SECONDS, "0")], Endpoint::Pexec).expect("0"), 1);
        assert_eq!(p(&[(POLL_SECONDS, " 5 ")], Endpoint::Pexec).expect("5"), 5);
        assert_eq!(
            p(&[(POLL_SECONDS, "3600")], Endpoint::Pexec).expect("max"),
            3600
        );
        for bad in ["3601", "abc", "-1", "1.5", ""] {
            let e = p(&[(POLL_SECONDS, bad)], Endpoint::Pexec).expect_err(bad);
            assert_eq!(e.status().as_u16(), 400);
            assert_eq!(e.to_string(), "failed to parse poll duration");
        }
    }

    /// A worker answer's fields (HTTP/1.1 worker client), parsed from `wire`, on a body.
    fn worker_answer(wire: &[u8]) -> Response<crate::body::Body> {
        let mut wire = bytes::BytesMut::from(wire);
        let head = crate::invoke::h1::codec::parse_response_head(&mut wire, &http::Method::GET)
            .expect("parses")
            .expect("complete");
        let mut response =
            Response::new(crate::body::full(bytes::Bytes::new()).with_fields(Some(head.fields)));
        *response.status_mut() = head.status;
        response
    }

    #[test]
    fn unparsed_worker_fields_get_the_marks_beside_them_or_in_the_map() {
        let id = crate::headers::request_id_value(Uuid::new_v4());
        // None of NVCF's names: the marks go with the fields, the map stays empty.
        let mut r = passthrough(
            worker_answer(b"HTTP/1.1 200 OK\r\nX-A: 1\r\ncontent-length: 0\r\n\r\n"),
            &id,
        );
        assert!(r.headers().is_empty());
        assert_eq!(r.body().fields().and_then(|f| f.request_id()), Some(&id));
        crate::fields::materialize(&mut r);
        assert_eq!(r.headers()["x-a"], "1");
        assert_eq!(r.headers()["nvcf-reqid"], id);
        assert_eq!(r.headers()["nvcf-status"], "fulfilled");
        assert_eq!(r.headers()["access-control-expose-headers"], "nvcf-reqid");
        // The worker sent its own: the map, where ours replace or join them.
        let r = passthrough(
            worker_answer(
                b"HTTP/1.1 200 OK\r\nNVCF-REQID: forged\r\nAccess-Control-Expose-Headers: x-a\r\n\
                  content-length: 0\r\n\r\n",
            ),
            &id,
        );
        assert!(r.body().fields().is_none());
        assert_eq!(r.headers().get_all("nvcf-reqid").iter().count(), 1);
        assert_eq!(r.headers()["nvcf-reqid"], id);
        assert_eq!(
            r.headers()["access-control-expose-headers"],
            "x-a, nvcf-reqid"
        );
    }

    #[test]
    fn status_names() {
        assert_eq!(nvcf_status(StatusCode::OK), "fulfilled");
        assert_eq!(nvcf_status(StatusCode::FOUND), "fulfilled");
        assert_eq!(nvcf_status(StatusCode::ACCEPTED), "in-progress");
        assert_eq!(nvcf_status(StatusCode::NOT_FOUND), "errored");
        assert_eq!(nvcf_status(StatusCode::GATEWAY_TIMEOUT), "errored");
    }

    #[test]
    fn marks_and_appends_expose_headers() {
        let id = Uuid::new_v4();
        let resp = Response::builder()
            .status(200)
            .header("access-control-expose-headers", "x-a")
            .header("x-kept", "1")
            .body(crate::body::full(bytes::Bytes::new()))
            .expect("resp");
        let resp = passthrough(resp, &crate::headers::request_id_value(id));
        let h = resp.headers();
        assert_eq!(h["nvcf-reqid"], id.to_string().as_str());
        assert_eq!(h["nvcf-status"], "fulfilled");
        assert_eq!(h["access-control-expose-headers"], "x-a, nvcf-reqid");
        assert_eq!(h["x-kept"], "1");
        let mut bare = HeaderMap::new();
        mark(
            &mut bare,
            &crate::headers::request_id_value(id),
            StatusCode::BAD_GATEWAY,
        );
        assert_eq!(bare["nvcf-status"], "errored");
        assert_eq!(bare["access-control-expose-headers"], "nvcf-reqid");
        // Several exposed lists (one empty) become one.
        let mut several = with(&[
            ("access-control-expose-headers", "x-a"),
            ("access-control-expose-headers", ""),
            ("access-control-expose-headers", "x-b, x-c"),
        ]);
        mark(
            &mut several,
            &crate::headers::request_id_value(id),
            StatusCode::ACCEPTED,
        );
        let exposed: Vec<_> = several
            .get_all("access-control-expose-headers")
            .iter()
            .collect();
        assert_eq!(exposed, ["x-a, x-b, x-c, nvcf-reqid"]);
        assert_eq!(several["nvcf-status"], "in-progress");
    }
}
