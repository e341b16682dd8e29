//! HTTP/1.1 wire pieces of the worker client, without I/O: the request head, the response head
//! (parsed by `httparse`, header values sliced out of the read buffer without copying), and the
//! chunked transfer-coding in both directions.

use bytes::{BufMut, Bytes, BytesMut};
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::{Method, StatusCode};

use crate::fields::{WireFields, name_is};

/// The most a worker's response head (or a chunked body's trailers) may take.
pub(crate) const MAX_HEAD: usize = 64 * 1024;
/// The most header lines in a worker's response head.
const MAX_HEADERS: usize = 100;
/// The longest chunk-size line (hex size plus extensions) accepted.
const MAX_CHUNK_LINE: usize = 4096;

/// A worker's response that does not parse: the exchange fails as a bad gateway.
#[derive(Debug, thiserror::Error)]
pub(crate) enum ParseError {
    #[error("malformed response head from the worker: {0}")]
    Head(httparse::Error),
    #[error("the worker's response head is larger than {MAX_HEAD} bytes")]
    HeadTooLarge,
    #[error("invalid header in the worker's response: {0}")]
    Header(String),
    #[error("the worker answered 101 Switching Protocols, which invocations do not support")]
    Upgrade,
    #[error("malformed chunked body from the worker: {0}")]
    Chunk(&'static str),
}

/// How a request body goes on the wire.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum RequestFraming {
    /// No body: `content-length: 0` on methods that usually carry one, nothing otherwise.
    Empty,
    Length(u64),
    Chunked,
}

/// What a request line and its `host` say.
#[derive(Debug, Clone, Copy)]
pub(crate) struct RequestLine<'a> {
    pub(crate) method: &'a Method,
    pub(crate) path_and_query: &'a str,
    pub(crate) authority: &'a str,
}

/// Which of the caller's header fields go into the worker's head.
pub(crate) struct Forwards<M: Fn(&HeaderName) -> bool, F: Fn(&[u8]) -> bool> {
    /// For the map's entries.
    pub(crate) map: M,
    /// For the unparsed fields (any case; hop-by-hop ones were left out already).
    pub(crate) fields: F,
}

/// The head of `line`: the caller's unparsed `fields` (an HTTP/1.1 client's, copied as sent),
/// then its `headers`, that `forwards` lets through (the client's headers, minus what does not
/// go to the worker), except `host`, and any `content-length` or `transfer-encoding`, which
/// `framing` replaces. `extra` writes more header lines (the gateway's own) after the caller's.
/// Written into one buffer made with room for all of it: growing an empty buffer costs more than
/// making it at its size.
pub(crate) fn encode_request_head(
    line: RequestLine<'_>,
    fields: Option<&WireFields>,
    headers: &HeaderMap,
    forwards: Forwards<impl Fn(&HeaderName) -> bool, impl Fn(&[u8]) -> bool>,
    framing: RequestFraming,
    extra: impl FnOnce(&mut BytesMut),
) -> BytesMut {
    let RequestLine {
        method,
        path_and_query,
        authority,
    } = line;
    // Room for the gateway's own lines too.
    let mut buf = BytesMut::with_capacity(
        384 + path_and_query.len() + headers.len() * 48 + fields.map_or(0, WireFields::wire_len),
    );
    buf.put_slice(method.as_str().as_bytes());
    buf.put_u8(b' ');
    buf.put_slice(path_and_query.as_bytes());
    buf.put_slice(b" HTTP/1.1\r\nhost: ");
    buf.put_slice(authority.as_bytes());
    buf.put_slice(b"\r\n");
    // As sent, `cookie` lines too (an HTTP/1.1 client sends one).
    if let Some(fields) = fields {
        fields.put_lines(&mut buf, &forwards.fields);
    }
    let mut cookies = 0usize;
    for (name, value) in headers {
        if name == header::CONTENT_LENGTH
            || name == header::TRANSFER_ENCODING
            || name == header::HOST
            || !(forwards.map)(name)
        {
            continue;
        }
        if name == header::COOKIE {
            // HTTP/1.1 wants one `cookie` line (h2 clients may send several); joined below.
            cookies += 1;
            continue;
        }
        crate::headers::put_line(&mut buf, name.as_str().as_bytes(), value.as_bytes());
    }
    if cookies > 0 {
        buf.put_slice(b"cookie: ");
        for (i, value) in headers.get_all(header::COOKIE).iter().enumerate() {
            if i > 0 {
                buf.put_slice(b"; ");
            }
            buf.put_slice(value.as_bytes());
        }
        buf.put_slice(b"\r\n");
    }
    extra(&mut buf);
    match framing {
        RequestFraming::Length(n) => {
            buf.put_slice(b"content-length: ");
            buf.put_slice(itoa::Buffer::new().format(n).as_bytes());
            buf.put_slice(b"\r\n");
        }
        RequestFraming::Empty if carries_body(method) => buf.put_slice(b"content-length: 0\r\n"),
        RequestFraming::Empty => {}
        RequestFraming::Chunked => buf.put_slice(b"transfer-encoding: chunked\r\n"),
    }
    buf.put_slice(b"\r\n");
    buf
}

/// Methods whose requests normally have a body, so that an empty one is stated as such.
fn carries_body(method: &Method) -> bool {
    matches!(*method, Method::POST | Method::PUT | Method::PATCH)
}

/// The chunk header for `len` bytes of data (`{len:x}\r\n`).
pub(crate) fn chunk_header(len: usize) -> Bytes {
    let mut buf = BytesMut::with_capacity(18);
    put_chunk_header(&mut buf, len);
    buf.freeze()
}

/// Appends the chunk header for `len` bytes of data (`{len:x}\r\n`) to `buf`.
pub(crate) fn put_chunk_header(buf: &mut BytesMut, len: usize) {
    let mut digits = [0u8; 16];
    let mut n = len;
    let mut i = digits.len();
    loop {
        i -= 1;
        digits[i] = b"0123456789abcdef"[n & 0xf];
        n >>= 4;
        if n == 0 {
            break;
        }
    }
    buf.put_slice(&digits[i..]);
    buf.put_slice(b"\r\n");
}

/// How a worker's response body is delimited.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ResponseFraming {
    /// No body (HEAD, 204, 304).
    None,
    Length(u64),
    Chunked,
    /// Until the worker closes the connection.
    UntilClose,
}

/// A worker's parsed response head.
#[derive(Debug)]
pub(crate) struct ResponseHead {
    pub(crate) status: StatusCode,
    /// The end-to-end fields, unparsed: hop-by-hop ones left out, and `content-length` kept as
    /// the number it states when it frames the body.
    /// Boxed where it is made: it travels with the body, and is moved several times on the way.
    pub(crate) fields: Box<WireFields>,
    pub(crate) framing: ResponseFraming,
    /// Whether the connection may carry another request once this exchange is complete.
    pub(crate) keep_alive: bool,
}

/// Parses a response head from the front of `buf`, consuming it. `Ok(None)`: more bytes are
/// needed. Interim 1xx responses are skipped.
pub(crate) fn parse_response_head(
    buf: &mut BytesMut,
    method: &Method,
) -> Result<Option<ResponseHead>, ParseError> {
    loop {
        // (name, value) byte ranges into `buf`, so that the values can be shared, not copied.
        // Inline room for a typical head: no allocation per response.
        let mut ranges: smallvec::SmallVec<[(usize, usize, usize, usize); 32]> =
            smallvec::SmallVec::new();
        let (len, code, minor) = {
            // Left uninitialised: httparse writes the slots it fills (no 3 KiB of zeroes per head).
            let mut slots =
                [const { std::mem::MaybeUninit::<httparse::Header<'_>>::uninit() }; MAX_HEADERS];
            let mut response = httparse::Response::new(&mut []);
            let parsed = httparse::ParserConfig::default().parse_response_with_uninit_headers(
                &mut response,
                buf,
                &mut slots,
            );
            let len = match parsed {
                Ok(httparse::Status::Complete(len)) => len,
                Ok(httparse::Status::Partial) if buf.len() > MAX_HEAD => {
                    return Err(ParseError::HeadTooLarge);
                }
                Ok(httparse::Status::Partial) => return Ok(None),
                Err(httparse::Error::TooManyHeaders) => {
                    return Err(ParseError::Header(format!(
                        "more than {MAX_HEADERS} headers"
                    )));
                }
                Err(e) => return Err(ParseError::Head(e)),
            };
            let base = buf.as_ptr() as usize;
            for h in response.headers.iter() {
                let name = h.name.as_ptr() as usize - base;
                let value = h.value.as_ptr() as usize - base;
                ranges.push((name, name + h.name.len(), value, value + h.value.len()));
            }
            (
                len,
                response.code.unwrap_or(0),
                response.version.unwrap_or(1),
            )
        };
        if len > MAX_HEAD {
            return Err(ParseError::HeadTooLarge);
        }
        let head = buf.split_to(len).freeze();
        let status = StatusCode::from_u16(code)
            .map_err(|_| ParseError::Header(format!("status code {code}")))?;
        if status == StatusCode::SWITCHING_PROTOCOLS {
            return Err(ParseError::Upgrade);
        }
        if status.is_informational() {
            continue;
        }
        let mut hop = Hop::default();
        let mut fields = Box::new(WireFields::new(head.clone()));
        for &(ns, ne, vs, ve) in &ranges {
            // Hop-by-hop fields are read here and never kept (one pass, no removals), nor is
            // `content-length` (a number, kept apart).
            if hop.take(&head[ns..ne], &head[vs..ve]) {
                fields.push((ns, ne), (vs, ve));
            }
        }
        return finish_head(status, minor, fields, hop, method).map(Some);
    }
}

/// What a response's connection-level headers said: the hop-by-hop ones and `content-length`.
#[derive(Debug)]
struct Hop {
    close: bool,
    keep_alive: bool,
    /// Whether `transfer-encoding` was present, and whether its last coding was `chunked`.
    transfer_encoding: bool,
    chunked: bool,
    /// Other names `connection` lists (hop-by-hop too, removed after the pass), lower-cased.
    named: Vec<Box<[u8]>>,
    /// The `content-length` the values seen so far state, or what was wrong with them: read in
    /// the same pass (no lookup afterwards), judged only if the framing comes down to it.
    length: Result<Option<u64>, String>,
}

impl Default for Hop {
    fn default() -> Self {
        Self {
            close: false,
            keep_alive: false,
            transfer_encoding: false,
            chunked: false,
            named: Vec::new(),
            length: Ok(None),
        }
    }
}

impl Hop {
    /// Notes a field (name in any case): false for a hop-by-hop one and for `content-length`
    /// (both left out of the fields), true for an end-to-end one.
    fn take(&mut self, name: &[u8], value: &[u8]) -> bool {
        // Most names have none of the lengths read here.
        if crate::fields::LEFT_OUT_LENGTHS & crate::fields::length_bit(name.len()) == 0 {
            return true;
        }
        if name_is(name, "content-length") {
            self.see_length(value);
            return false;
        }
        if name_is(name, "connection") {
            for token in value.split(|&b| b == b',').map(<[u8]>::trim_ascii) {
                if token.eq_ignore_ascii_case(b"close") {
                    self.close = true;
                } else if token.eq_ignore_ascii_case(b"keep-alive") {
                    self.keep_alive = true;
                } else if !token.is_empty() {
                    self.named.push(token.to_ascii_lowercase().into());
                }
            }
            return false;
        }
        if name_is(name, "transfer-encoding") {
            self.transfer_encoding = true;
            // The last coding of the last value decides (RFC 9112 §6.3).
            self.chunked = value
                .rsplit(|&b| b == b',')
                .next()
                .is_some_and(|c| c.trim_ascii().eq_ignore_ascii_case(b"chunked"));
            return false;
        }
        !model::headers::HOP_BY_HOP.iter().any(|h| name_is(name, h))
    }

    /// Adds one `content-length` value (a comma list); several values must agree.
    fn see_length(&mut self, value: &[u8]) {
        let Ok(mut length) = self.length else {
            return;
        };
        for part in value.split(|&b| b == b',') {
            let part = part.trim_ascii();
            let Some(n) = crate::headers::decimal(part) else {
                self.length = Err(format!(
                    "content-length '{}'",
                    String::from_utf8_lossy(part)
                ));
                return;
            };
            if length.is_some_and(|l| l != n) {
                self.length = Err("conflicting content-length values".into());
                return;
            }
            length = Some(n);
        }
        self.length = Ok(length);
    }
}

/// Works out the framing and reuse of a parsed head.
fn finish_head(
    status: StatusCode,
    minor: u8,
    mut fields: Box<WireFields>,
    hop: Hop,
    method: &Method,
) -> Result<ResponseHead, ParseError> {
    // A `content-length` that `connection` names is removed with it, as if never sent.
    let mut length = hop.length;
    if !hop.named.is_empty() {
        fields.remove_named(&hop.named);
        if hop.named.iter().any(|n| &n[..] == b"content-length") {
            length = Ok(None);
        }
    }
    let mut keep_alive = if minor == 0 {
        hop.keep_alive
    } else {
        !hop.close
    };
    let framing = if *method == Method::HEAD
        || status == StatusCode::NO_CONTENT
        || status == StatusCode::NOT_MODIFIED
    {
        // A HEAD or 304 answer's length is the one a GET would have had: kept for the client.
        fields.set_content_length(length.ok().flatten());
        ResponseFraming::None
    } else if hop.transfer_encoding {
        // A Content-Length beside Transfer-Encoding is ignored (and must not reach the client).
        if hop.chunked {
            ResponseFraming::Chunked
        } else {
            ResponseFraming::UntilClose
        }
    } else if let Some(n) = length.map_err(ParseError::Header)? {
        fields.set_content_length(Some(n));
        ResponseFraming::Length(n)
    } else {
        ResponseFraming::UntilClose
    };
    if framing == ResponseFraming::UntilClose {
        keep_alive = false;
    }
    Ok(ResponseHead {
        status,
        fields,
        framing,
        keep_alive,
    })
}

/// What one step of the chunked decoder produced.
#[derive(Debug)]
pub(crate) enum Decoded {
    Data(Bytes),
    /// The buffer holds no complete next piece.
    NeedMore,
    /// The last chunk and the trailers (if any) are consumed.
    Done(Option<HeaderMap>),
}

/// Decodes a chunked body from a read buffer, a piece at a time.
#[derive(Debug, Default)]
pub(crate) struct ChunkedDecoder {
    state: ChunkState,
}

#[derive(Debug, Default, Clone, Copy)]
enum ChunkState {
    #[default]
    Size,
    Data(u64),
    /// The CRLF after a chunk's data.
    DataEnd,
    Trailers,
    Done,
}

impl ChunkedDecoder {
    /// Whether the last chunk has been decoded.
    #[cfg(test)]
    fn is_done(&self) -> bool {
        matches!(self.state, ChunkState::Done)
    }

    /// Decodes what `buf` holds, consuming it: data as it comes (a chunk may come in pieces).
    pub(crate) fn decode(&mut self, buf: &mut BytesMut) -> Result<Decoded, ParseError> {
        loop {
            match self.state {
                ChunkState::Size => {
                    let Some(end) = find_crlf(buf, MAX_CHUNK_LINE)? else {
                        return Ok(Decoded::NeedMore);
                    };
                    let size = parse_chunk_size(&buf[..end])?;
                    let _ = buf.split_to(end + 2);
                    self.state = if size == 0 {
                        ChunkState::Trailers
                    } else {
                        ChunkState::Data(size)
                    };
                }
                ChunkState::Data(left) => {
                    if buf.is_empty() {
                        return Ok(Decoded::NeedMore);
                    }
                    let take = usize::try_from(left).unwrap_or(usize::MAX).min(buf.len());
                    let data = buf.split_to(take).freeze();
                    let left = left - take as u64;
                    self.state = if left == 0 {
                        ChunkState::DataEnd
                    } else {
                        ChunkState::Data(left)
                    };
                    return Ok(Decoded::Data(data));
                }
                ChunkState::DataEnd => {
                    if buf.len() < 2 {
                        return Ok(Decoded::NeedMore);
                    }
                    if &buf[..2] != b"\r\n" {
                        return Err(ParseError::Chunk("no CRLF after chunk data"));
                    }
                    let _ = buf.split_to(2);
                    self.state = ChunkState::Size;
                }
                ChunkState::Trailers => return self.trailers(buf),
                ChunkState::Done => return Ok(Decoded::Done(None)),
            }
        }
    }

    fn trailers(&mut self, buf: &mut BytesMut) -> Result<Decoded, ParseError> {
        let mut slots = [httparse::EMPTY_HEADER; MAX_HEADERS];
        let (len, trailers) = match httparse::parse_headers(buf, &mut slots) {
            Ok(httparse::Status::Complete((len, parsed))) => {
                let mut trailers = HeaderMap::new();
                for h in parsed.iter() {
                    // Trailers are advisory: one that is not a valid header is dropped.
                    if let (Ok(name), Ok(value)) = (
                        HeaderName::from_bytes(h.name.as_bytes()),
                        HeaderValue::from_bytes(h.value),
                    ) {
                        trailers.append(name, value);
                    }
                }
                (len, trailers)
            }
            Ok(httparse::Status::Partial) if buf.len() > MAX_HEAD => {
                return Err(ParseError::Chunk("trailers too large"));
            }
            Ok(httparse::Status::Partial) => return Ok(Decoded::NeedMore),
            Err(_) => return Err(ParseError::Chunk("malformed trailers")),
        };
        let _ = buf.split_to(len);
        self.state = ChunkState::Done;
        Ok(Decoded::Done((!trailers.is_empty()).then_some(trailers)))
    }
}

/// The offset of the first CRLF in `buf`, looking no further than `limit` bytes.
fn find_crlf(buf: &[u8], limit: usize) -> Result<Option<usize>, ParseError> {
    match buf.windows(2).take(limit).position(|w| w == b"\r\n") {
        Some(i) => Ok(Some(i)),
        None if buf.len() > limit => Err(ParseError::Chunk("chunk-size line too long")),
        None => Ok(None),
    }
}

/// A chunk-size line: hex digits, then optional whitespace and `;extensions`.
fn parse_chunk_size(line: &[u8]) -> Result<u64, ParseError> {
    let mut size: u64 = 0;
    let mut digits = 0;
    for &b in line {
        let d = match b {
            b'0'..=b'9' => b - b'0',
            b'a'..=b'f' => b - b'a' + 10,
            b'A'..=b'F' => b - b'A' + 10,
            b';' | b' ' | b'\t' => break,
            _ => return Err(ParseError::Chunk("invalid chunk size")),
        };
        size = size
            .checked_mul(16)
            .and_then(|s| s.checked_add(u64::from(d)))
            .ok_or(ParseError::Chunk("chunk size overflows"))?;
        digits += 1;
    }
    if digits == 0 {
        return Err(ParseError::Chunk("empty chunk size"));
    }
    Ok(size)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn head(method: &Method, headers: &[(&str, &str)], framing: RequestFraming) -> String {
        let mut map = HeaderMap::new();
        for (k, v) in headers {
            map.append(
                HeaderName::from_bytes(k.as_bytes()).expect("name"),
                HeaderValue::from_str(v).expect("value"),
            );
        }
        let line = RequestLine {
            method,
            path_and_query: "/echo?a=1",
            authority: "127.0.0.1:9",
        };
        let forwards = Forwards {
            map: |name: &HeaderName| name != "x-refused",
            fields: |_: &[u8]| true,
        };
        let buf = encode_request_head(line, None, &map, forwards, framing, |_| {});
        String::from_utf8(buf.to_vec()).expect("utf-8")
    }

    #[test]
    fn a_clients_fields_are_copied_as_sent_before_the_map() {
        let sent = Bytes::from_static(b"X-One:  a b\r\nDrop-Me: 1\r\nx-two: 2\r\n");
        let mut fields = WireFields::new(sent.clone());
        for (name, value) in [("X-One", "a b"), ("Drop-Me", "1"), ("x-two", "2")] {
            let text = std::str::from_utf8(&sent).expect("ascii");
            let n = text.find(name).expect("name");
            let v = n + text[n..].find(value).expect("value");
            fields.push((n, n + name.len()), (v, v + value.len()));
        }
        let mut map = HeaderMap::new();
        map.insert("content-type", HeaderValue::from_static("application/json"));
        let line = RequestLine {
            method: &Method::POST,
            path_and_query: "/",
            authority: "w:1",
        };
        let forwards = Forwards {
            map: |_: &HeaderName| true,
            fields: |name: &[u8]| !name.eq_ignore_ascii_case(b"drop-me"),
        };
        let head = encode_request_head(
            line,
            Some(&fields),
            &map,
            forwards,
            RequestFraming::Length(2),
            |buf| buf.put_slice(b"nvcf-x: y\r\n"),
        );
        assert_eq!(
            &head[..],
            b"POST / HTTP/1.1\r\nhost: w:1\r\nX-One:  a b\r\nx-two: 2\r\n\
              content-type: application/json\r\nnvcf-x: y\r\ncontent-length: 2\r\n\r\n"
        );
    }

    #[test]
    fn request_head_states_its_framing_once() {
        let h = head(
            &Method::POST,
            &[
                ("content-length", "99"),
                ("x-a", "1"),
                ("host", "client"),
                ("x-refused", "1"),
            ],
            RequestFraming::Length(5),
        );
        assert_eq!(
            h,
            "POST /echo?a=1 HTTP/1.1\r\nhost: 127.0.0.1:9\r\nx-a: 1\r\ncontent-length: 5\r\n\r\n"
        );
        let h = head(&Method::POST, &[], RequestFraming::Chunked);
        assert!(h.ends_with("transfer-encoding: chunked\r\n\r\n"), "{h}");
        assert!(head(&Method::POST, &[], RequestFraming::Empty).contains("content-length: 0\r\n"));
        assert!(!head(&Method::GET, &[], RequestFraming::Empty).contains("content-length"));
    }

    #[test]
    fn cookies_are_joined_into_one_line() {
        let h = head(
            &Method::GET,
            &[("cookie", "a=1"), ("cookie", "b=2")],
            RequestFraming::Empty,
        );
        assert!(h.contains("\r\ncookie: a=1; b=2\r\n"), "{h}");
        assert_eq!(h.matches("cookie").count(), 1);
    }

    #[test]
    fn chunk_headers_are_lower_hex() {
        assert_eq!(&chunk_header(1)[..], b"1\r\n");
        assert_eq!(&chunk_header(255)[..], b"ff\r\n");
        assert_eq!(&chunk_header(0x10000)[..], b"10000\r\n");
    }

    fn parse(text: &str, method: &Method) -> (Result<Option<ResponseHead>, ParseError>, BytesMut) {
        let mut buf = BytesMut::from(text.as_bytes());
        let r = parse_response_head(&mut buf, method);
        (r, buf)
    }

    /// The head's fields as the map an HTTP/2 client's answer gets.
    fn map(head: &ResponseHead) -> HeaderMap {
        let mut map = HeaderMap::new();
        head.fields.append_to(&mut map);
        map
    }

    #[test]
    fn response_head_with_length_leaves_the_body() {
        let (r, rest) = parse(
            "HTTP/1.1 200 OK\r\ncontent-length: 3\r\nx-b: v\r\nconnection: keep-alive\r\n\r\nabc",
            &Method::POST,
        );
        let h = r.expect("parses").expect("complete");
        assert_eq!(h.status, StatusCode::OK);
        assert_eq!(h.framing, ResponseFraming::Length(3));
        assert!(h.keep_alive);
        assert_eq!(h.fields.content_length(), Some(3));
        let fields: Vec<_> = h.fields.iter().collect();
        assert_eq!(fields, [(&b"x-b"[..], &b"v"[..])]);
        let map = map(&h);
        assert_eq!(map["x-b"], "v");
        assert_eq!(map["content-length"], "3");
        assert!(map.get("connection").is_none());
        assert_eq!(&rest[..], b"abc");
    }

    /// `content-length` is read while the head is parsed: values must agree, and one is judged
    /// only when it frames the body.
    #[test]
    fn response_lengths_are_checked_when_they_frame_the_body() {
        let head = |extra: &str, method: &Method| {
            parse(&format!("HTTP/1.1 200 OK\r\n{extra}\r\n"), method).0
        };
        let framing = |extra: &str| {
            head(extra, &Method::GET)
                .expect("parses")
                .expect("complete")
                .framing
        };
        assert_eq!(
            framing("content-length: 5, 5\r\n"),
            ResponseFraming::Length(5)
        );
        assert_eq!(
            framing("content-length: 5\r\ncontent-length: 5\r\n"),
            ResponseFraming::Length(5)
        );
        for (extra, message) in [
            ("content-length: 5\r\ncontent-length: 6\r\n", "conflicting"),
            ("content-length: 5, 6\r\n", "conflicting"),
            ("content-length: x\r\n", "content-length 'x'"),
            ("content-length: -1\r\n", "content-length '-1'"),
        ] {
            let e = head(extra, &Method::GET).expect_err(extra);
            assert!(e.to_string().contains(message), "{extra}: {e}");
        }
        // Not consulted: a HEAD answer has no body, transfer-encoding wins (and the length is
        // dropped), a length `connection` names is gone with it.
        let h = head("content-length: x\r\n", &Method::HEAD)
            .expect("HEAD")
            .expect("complete");
        assert_eq!(h.framing, ResponseFraming::None);
        let h = head(
            "content-length: x\r\ntransfer-encoding: chunked\r\n",
            &Method::GET,
        )
        .expect("chunked")
        .expect("complete");
        assert_eq!(h.framing, ResponseFraming::Chunked);
        assert!(map(&h).get("content-length").is_none());
        let h = head(
            "connection: content-length\r\ncontent-length: 5\r\n",
            &Method::GET,
        )
        .expect("named")
        .expect("complete");
        assert_eq!(h.framing, ResponseFraming::UntilClose);
        assert!(!h.keep_alive);
        assert!(map(&h).get("content-length").is_none());
    }

    #[test]
    fn hop_by_hop_headers_stay_on_this_hop() {
        let (r, _) = parse(
            "HTTP/1.1 200 OK\r\nconnection: x-a, keep-alive\r\nx-a: 1\r\nkeep-alive: timeout=5\r\n\
             upgrade: h2c\r\ntransfer-encoding: gzip, chunked\r\nx-b: 2\r\n\r\n",
            &Method::GET,
        );
        let h = r.expect("parses").expect("complete");
        assert_eq!(h.framing, ResponseFraming::Chunked);
        assert!(h.keep_alive);
        let map = map(&h);
        let names: Vec<&str> = map.keys().map(HeaderName::as_str).collect();
        assert_eq!(names, ["x-b"]);
    }

    #[test]
    fn partial_heads_wait_and_interim_responses_are_skipped() {
        let (r, _) = parse("HTTP/1.1 200 OK\r\ncontent-le", &Method::GET);
        assert!(r.expect("no error").is_none());
        let (r, _) = parse(
            "HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 204 No Content\r\n\r\n",
            &Method::POST,
        );
        let h = r.expect("parses").expect("complete");
        assert_eq!(h.status, StatusCode::NO_CONTENT);
        assert_eq!(h.framing, ResponseFraming::None);
    }

    #[test]
    fn framing_and_reuse_follow_rfc_9112() {
        let framing = |text: &str, method: &Method| {
            let h = parse(text, method).0.expect("parses").expect("complete");
            (h.framing, h.keep_alive)
        };
        assert_eq!(
            framing(
                "HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\ncontent-length: 9\r\n\r\n",
                &Method::GET
            ),
            (ResponseFraming::Chunked, true)
        );
        assert_eq!(
            framing("HTTP/1.1 200 OK\r\n\r\n", &Method::GET),
            (ResponseFraming::UntilClose, false)
        );
        assert_eq!(
            framing(
                "HTTP/1.1 200 OK\r\ncontent-length: 4\r\n\r\n",
                &Method::HEAD
            ),
            (ResponseFraming::None, true)
        );
        assert_eq!(
            framing(
                "HTTP/1.1 200 OK\r\ncontent-length: 4\r\nconnection: close\r\n\r\n",
                &Method::GET
            ),
            (ResponseFraming::Length(4), false)
        );
        assert_eq!(
            framing("HTTP/1.0 200 OK\r\ncontent-length: 4\r\n\r\n", &Method::GET),
            (ResponseFraming::Length(4), false)
        );
    }

    #[test]
    fn bad_heads_are_errors() {
        for text in [
            "HTTP/1.1 200 OK\r\ncontent-length: 4\r\ncontent-length: 5\r\n\r\n",
            "HTTP/1.1 200 OK\r\ncontent-length: x\r\n\r\n",
            "HTTP/1.1 101 Switching Protocols\r\n\r\n",
            "NOT HTTP\r\n\r\n",
        ] {
            assert!(parse(text, &Method::GET).0.is_err(), "{text:?}");
        }
        let huge = format!("HTTP/1.1 200 OK\r\nx: {}", "a".repeat(MAX_HEAD + 1));
        assert!(matches!(
            parse(&huge, &Method::GET).0,
            Err(ParseError::HeadTooLarge)
        ));
    }

    fn decode_all(wire: &[u8], step: usize) -> Result<(Vec<u8>, Option<HeaderMap>), ParseError> {
        let mut d = ChunkedDecoder::default();
        let mut buf = BytesMut::new();
        let mut out = Vec::new();
        let mut fed = 0;
        loop {
            match d.decode(&mut buf)? {
                Decoded::Data(b) => out.extend_from_slice(&b),
                Decoded::Done(t) => {
                    assert!(d.is_done());
                    return Ok((out, t));
                }
                Decoded::NeedMore => {
                    if fed == wire.len() {
                        return Err(ParseError::Chunk("ran out"));
                    }
                    let n = step.min(wire.len() - fed);
                    buf.extend_from_slice(&wire[fed..fed + n]);
                    fed += n;
                }
            }
        }
    }

    #[test]
    fn chunked_bodies_decode_whatever_the_read_sizes() {
        let wire =
            b"5;ext=1\r\nhello\r\n1A\r\nabcdefghijklmnopqrstuvwxyz\r\n0\r\nx-t: done\r\n\r\n";
        for step in [1, 2, 3, 7, wire.len()] {
            let (body, trailers) = decode_all(wire, step).expect("decodes");
            assert_eq!(body, b"helloabcdefghijklmnopqrstuvwxyz", "step {step}");
            assert_eq!(trailers.expect("trailers")["x-t"], "done");
        }
        let (body, trailers) = decode_all(b"0\r\n\r\n", 1).expect("empty body");
        assert!(body.is_empty() && trailers.is_none());
    }

    #[test]
    fn bad_chunks_are_errors() {
        for wire in [
            &b"zz\r\nhello\r\n0\r\n\r\n"[..],
            b"5\r\nhelloXX0\r\n\r\n",
            b"\r\n",
            b"fffffffffffffffffff\r\n",
        ] {
            assert!(decode_all(wire, 4).is_err(), "{wire:?}");
        }
        let long = vec![b'1'; MAX_CHUNK_LINE + 10];
        assert!(decode_all(&long, long.len()).is_err());
    }
}
