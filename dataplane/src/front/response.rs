//! The response head on the wire, without I/O: how the body is framed (RFC 9112 §6), the status
//! line and header lines, `connection` as the exchange ends it, and a `date` formatted once a
//! second per thread.

use std::cell::RefCell;
use std::time::{Duration, UNIX_EPOCH};

use bytes::{BufMut, BytesMut};
use http::{HeaderMap, Method, StatusCode, Version, header};
use http_body::SizeHint;

use crate::fields::WireFields;
use crate::headers::put_line;

/// How the response body goes on the wire.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum BodyPlan {
    /// No body bytes at all (HEAD, 1xx, 204, 304).
    None,
    Length(u64),
    Chunked,
    /// An HTTP/1.0 client and no known length: the body ends when the connection closes.
    UntilClose,
}

/// What the response head needs to know of the request it answers.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Exchange {
    pub(crate) head_only: bool,
    pub(crate) version: Version,
    /// Whether the connection is meant to carry another request; may be turned off here.
    pub(crate) keep_alive: bool,
}

impl Exchange {
    pub(crate) fn new(method: &Method, version: Version, keep_alive: bool) -> Self {
        Self {
            head_only: method == Method::HEAD,
            version,
            keep_alive,
        }
    }
}

/// Writes the status line and headers of a response into `buf` and says how its body follows:
/// the worker's `fields` as it sent them (when they came unparsed), then `headers`. A
/// `content-length` the handler or the worker stated is trusted (the body is checked against it
/// as it is written); otherwise an exact size hint gives one, and anything else is chunked.
/// `connection`, `keep-alive` and `transfer-encoding` are this hop's and written here, never
/// copied.
pub(crate) fn encode_head(
    buf: &mut BytesMut,
    status: StatusCode,
    headers: &HeaderMap,
    fields: Option<&WireFields>,
    size_hint: &SizeHint,
    exchange: &mut Exchange,
) -> BodyPlan {
    let declared = crate::headers::find(headers, &header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok()?.parse::<u64>().ok())
        .or_else(|| fields.and_then(WireFields::content_length));
    let bodiless_status = status.is_informational()
        || status == StatusCode::NO_CONTENT
        || status == StatusCode::NOT_MODIFIED;
    let length = declared.or(size_hint.exact());
    let plan = if bodiless_status || exchange.head_only {
        BodyPlan::None
    } else if let Some(n) = length {
        BodyPlan::Length(n)
    } else if exchange.version == Version::HTTP_11 {
        BodyPlan::Chunked
    } else {
        exchange.keep_alive = false;
        BodyPlan::UntilClose
    };

    buf.reserve(128 + headers.len() * 48 + fields.map_or(0, WireFields::wire_len));
    buf.put_slice(b"HTTP/1.1 ");
    buf.put_slice(status.as_str().as_bytes());
    buf.put_u8(b' ');
    buf.put_slice(status.canonical_reason().unwrap_or("Unknown").as_bytes());
    buf.put_slice(b"\r\n");
    let mut dated = false;
    // Neither hop-by-hop fields nor `content-length` are among them (`crate::fields`); NVCF's
    // headers follow them.
    if let Some(fields) = fields {
        fields.put_lines(buf, |name| {
            dated |= crate::fields::name_is(name, "date");
            true
        });
        fields.put_marks(buf);
    }
    for (name, value) in headers {
        if name == header::CONNECTION
            || name == header::TRANSFER_ENCODING
            || name == header::CONTENT_LENGTH
            || name == "keep-alive"
        {
            continue;
        }
        dated |= name == header::DATE;
        put_line(buf, name.as_str().as_bytes(), value.as_bytes());
    }
    if !dated {
        put_date(buf);
    }
    // 1xx and 204 never state a length; a HEAD or 304 answer states the one a GET would have had.
    let states_length = !(status.is_informational() || status == StatusCode::NO_CONTENT);
    match (plan, length) {
        (BodyPlan::Chunked, _) => buf.put_slice(b"transfer-encoding: chunked\r\n"),
        (_, Some(n)) if states_length => {
            buf.put_slice(b"content-length: ");
            buf.put_slice(itoa::Buffer::new().format(n).as_bytes());
            buf.put_slice(b"\r\n");
        }
        _ => {}
    }
    if !exchange.keep_alive {
        buf.put_slice(b"connection: close\r\n");
    } else if exchange.version == Version::HTTP_10 {
        buf.put_slice(b"connection: keep-alive\r\n");
    }
    buf.put_slice(b"\r\n");
    plan
}

/// The `100 Continue` interim response.
pub(crate) const CONTINUE: &[u8] = b"HTTP/1.1 100 Continue\r\n\r\n";

/// The end of a chunked body: the last chunk and the trailers, if any.
pub(crate) fn put_last_chunk(buf: &mut BytesMut, trailers: Option<&HeaderMap>) {
    buf.put_slice(b"0\r\n");
    for (name, value) in trailers.into_iter().flatten() {
        put_line(buf, name.as_str().as_bytes(), value.as_bytes());
    }
    buf.put_slice(b"\r\n");
}

thread_local! {
    /// The second last formatted and its `date` line.
    static DATE: RefCell<(u64, [u8; 29])> = const { RefCell::new((u64::MAX, [0; 29])) };
}

/// A `date` line for now (RFC 9110 §6.6.1: an origin server with a clock sends one; the gateway
/// answers many responses itself).
fn put_date(buf: &mut BytesMut) {
    // The coarse clock: the line names a second, and may lag the precise one by a tick.
    let secs = crate::clock::coarse_unix_secs();
    DATE.with_borrow_mut(|(cached, text)| {
        if *cached != secs {
            let formatted = httpdate::fmt_http_date(UNIX_EPOCH + Duration::from_secs(secs));
            if formatted.len() == text.len() {
                text.copy_from_slice(formatted.as_bytes());
                *cached = secs;
            }
        }
        buf.put_slice(b"date: ");
        buf.put_slice(text);
        buf.put_slice(b"\r\n");
    });
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    fn encode(
        status: StatusCode,
        headers: &[(&str, &str)],
        hint: SizeHint,
        method: Method,
        version: Version,
        keep_alive: bool,
    ) -> (String, BodyPlan, bool) {
        let mut map = HeaderMap::new();
        for (n, v) in headers {
            map.append(
                http::HeaderName::from_bytes(n.as_bytes()).expect("name"),
                HeaderValue::from_str(v).expect("value"),
            );
        }
        let mut exchange = Exchange::new(&method, version, keep_alive);
        let mut buf = BytesMut::new();
        let plan = encode_head(&mut buf, status, &map, None, &hint, &mut exchange);
        let text = String::from_utf8(buf.to_vec()).expect("utf8");
        (text, plan, exchange.keep_alive)
    }

    /// A worker's head parsed by the worker client and written for the client.
    fn relay(wire: &[u8], method: Method, status_marks: Option<&str>) -> (String, BodyPlan) {
        let mut wire = BytesMut::from(wire);
        let head = crate::invoke::h1::codec::parse_response_head(&mut wire, &method)
            .expect("parses")
            .expect("complete");
        let mut fields = head.fields;
        if let Some(id) = status_marks {
            fields.set_marks(crate::invoke::respond::Marks::new(
                HeaderValue::from_str(id).expect("id"),
                head.status,
            ));
        }
        let hint = match head.framing {
            crate::invoke::h1::codec::ResponseFraming::Length(n) => SizeHint::with_exact(n),
            crate::invoke::h1::codec::ResponseFraming::None => SizeHint::with_exact(0),
            _ => SizeHint::default(),
        };
        let mut exchange = Exchange::new(&method, Version::HTTP_11, true);
        let mut buf = BytesMut::new();
        let plan = encode_head(
            &mut buf,
            head.status,
            &HeaderMap::new(),
            Some(&fields),
            &hint,
            &mut exchange,
        );
        (String::from_utf8(buf.to_vec()).expect("utf8"), plan)
    }

    #[test]
    fn a_worker_head_is_copied_as_sent_with_nvcf_headers_after_it() {
        let (text, plan) = relay(
            b"HTTP/1.1 201 Created\r\nContent-Type: text/plain\r\nConnection: X-Hop\r\nX-Hop: 1\r\n\
              Date: Tue, 01 Jan 2030 00:00:00 GMT\r\nX-Multi: a\r\nx-multi: b\r\n\
              Content-Length: 5\r\nKeep-Alive: timeout=5\r\n\r\nhello",
            Method::POST,
            Some("id-1"),
        );
        assert_eq!(plan, BodyPlan::Length(5));
        assert_eq!(
            text,
            "HTTP/1.1 201 Created\r\nContent-Type: text/plain\r\n\
             Date: Tue, 01 Jan 2030 00:00:00 GMT\r\nX-Multi: a\r\nx-multi: b\r\n\
             nvcf-reqid: id-1\r\nnvcf-status: fulfilled\r\n\
             access-control-expose-headers: nvcf-reqid\r\ncontent-length: 5\r\n\r\n"
        );
        // No date from the worker: the gateway's; the length a HEAD answer states is kept.
        let (text, plan) = relay(
            b"HTTP/1.1 200 OK\r\ncontent-length: 42\r\n\r\n",
            Method::HEAD,
            None,
        );
        assert_eq!(plan, BodyPlan::None);
        assert!(text.starts_with("HTTP/1.1 200 OK\r\ndate: "), "{text}");
        assert!(
            text.ends_with(" GMT\r\ncontent-length: 42\r\n\r\n"),
            "{text}"
        );
        // A chunked answer is the client's chunked answer: the worker's framing is not copied.
        let (text, plan) = relay(
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nContent-Length: 3\r\nX-A: 1\r\n\r\n",
            Method::GET,
            None,
        );
        assert_eq!(plan, BodyPlan::Chunked);
        assert_eq!(text.matches("chunked").count(), 1, "{text}");
        assert!(!text.contains("ontent-length"), "{text}");
        assert!(text.contains("X-A: 1\r\n"), "{text}");
    }

    #[test]
    fn known_lengths_are_stated_and_hop_headers_are_ours() {
        let (text, plan, keep) = encode(
            StatusCode::OK,
            &[
                ("content-type", "application/json"),
                ("connection", "upgrade"),
                ("transfer-encoding", "gzip"),
            ],
            SizeHint::with_exact(15),
            Method::POST,
            Version::HTTP_11,
            true,
        );
        assert_eq!(plan, BodyPlan::Length(15));
        assert!(keep);
        assert!(text.starts_with("HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ndate: "));
        assert!(
            text.ends_with(" GMT\r\ncontent-length: 15\r\n\r\n"),
            "{text}"
        );
        assert!(
            !text.contains("upgrade") && !text.contains("gzip"),
            "{text}"
        );
    }

    #[test]
    fn unknown_lengths_are_chunked_for_http11_and_close_delimited_for_http10() {
        let (text, plan, keep) = encode(
            StatusCode::OK,
            &[],
            SizeHint::default(),
            Method::GET,
            Version::HTTP_11,
            true,
        );
        assert_eq!(plan, BodyPlan::Chunked);
        assert!(keep);
        assert!(
            text.ends_with("transfer-encoding: chunked\r\n\r\n"),
            "{text}"
        );
        let (text, plan, keep) = encode(
            StatusCode::OK,
            &[],
            SizeHint::default(),
            Method::GET,
            Version::HTTP_10,
            true,
        );
        assert_eq!(plan, BodyPlan::UntilClose);
        assert!(!keep);
        assert!(text.ends_with("connection: close\r\n\r\n"), "{text}");
        // A declared length wins over an unknown hint.
        let (text, plan, _) = encode(
            StatusCode::OK,
            &[("content-length", "7")],
            SizeHint::default(),
            Method::GET,
            Version::HTTP_10,
            true,
        );
        assert_eq!(plan, BodyPlan::Length(7));
        assert!(
            text.ends_with("content-length: 7\r\nconnection: keep-alive\r\n\r\n"),
            "{text}"
        );
    }

    #[test]
    fn bodiless_answers_write_no_body() {
        let (text, plan, _) = encode(
            StatusCode::OK,
            &[],
            SizeHint::with_exact(15),
            Method::HEAD,
            Version::HTTP_11,
            true,
        );
        assert_eq!(plan, BodyPlan::None);
        assert!(
            text.contains("content-length: 15\r\n"),
            "HEAD states GET's length"
        );
        let (text, plan, _) = encode(
            StatusCode::NO_CONTENT,
            &[("content-length", "0")],
            SizeHint::with_exact(0),
            Method::DELETE,
            Version::HTTP_11,
            false,
        );
        assert_eq!(plan, BodyPlan::None);
        assert!(!text.contains("content-length"), "{text}");
        assert!(text.ends_with("connection: close\r\n\r\n"), "{text}");
    }

    #[test]
    fn chunk_framing() {
        let mut buf = BytesMut::new();
        crate::invoke::h1::codec::put_chunk_header(&mut buf, 0x1a2b);
        crate::invoke::h1::codec::put_chunk_header(&mut buf, 0);
        let mut trailers = HeaderMap::new();
        trailers.insert("x-sum", HeaderValue::from_static("9"));
        put_last_chunk(&mut buf, Some(&trailers));
        assert_eq!(&buf[..], b"1a2b\r\n0\r\n0\r\nx-sum: 9\r\n\r\n");
    }

    #[test]
    fn date_is_an_imf_fixdate() {
        let mut buf = BytesMut::new();
        put_date(&mut buf);
        put_date(&mut buf);
        let text = String::from_utf8(buf.to_vec()).expect("utf8");
        let first = text.lines().next().expect("line");
        let date = first.strip_prefix("date: ").expect("name");
        assert!(httpdate::parse_http_date(date).is_ok(), "{date}");
        assert_eq!(text.lines().count(), 2);
    }
}
