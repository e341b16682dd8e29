//! The client's request head, without I/O: parsed off the connection's read buffer by `httparse`
//! (the path and header fields are ranges of the buffer, not copied, and not parsed into a header
//! map: [`crate::fields`]), and what RFC 9112 makes of it: how the body is framed, whether the
//! connection stays open, whether the client waits for `100 Continue`.

use std::mem::MaybeUninit;

use bytes::{Bytes, BytesMut};
use http::{Method, Request, Uri, Version};

use crate::body::{ClientRequest, RequestBody};
use crate::fields::{WireFields, name_is};

/// The most header fields in one request head; more is answered 431.
pub(crate) const MAX_HEADERS: usize = 128;

/// How the request body is delimited on the wire.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Framing {
    /// No body (no `content-length`, no `transfer-encoding`, or `content-length: 0`).
    Empty,
    Length(u64),
    Chunked,
}

/// A parsed request head.
#[derive(Debug)]
pub(crate) struct Head {
    /// The request, boxed where it is made (it moves through the front's and the server's layers
    /// as a pointer). Its map is empty: the end-to-end header fields travel with its body,
    /// unparsed ([`RequestBody::whole`]), hop-by-hop ones left out and `content-length` kept as
    /// the number it states. The body is empty until the front sets what follows the head; the
    /// head's bytes back the path.
    pub(crate) request: ClientRequest,
    pub(crate) framing: Framing,
    /// Whether the client lets the connection carry another request after this one.
    pub(crate) keep_alive: bool,
    /// `Expect: 100-continue` on an HTTP/1.1 request with a body.
    pub(crate) expect_continue: bool,
    /// `TE: trailers`: the client takes trailers on a chunked response.
    pub(crate) wants_trailers: bool,
}

/// A request head the gateway refuses; the connection is answered and closed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum HeadError {
    #[error("the request head is larger than {0} bytes")]
    TooLarge(usize),
    #[error("the request head has more than {MAX_HEADERS} header fields")]
    TooManyHeaders,
    #[error("malformed request head: {0}")]
    Malformed(String),
    #[error("transfer-coding '{0}' is not supported (only chunked)")]
    UnsupportedCoding(String),
}

impl From<HeadError> for crate::error::GatewayError {
    fn from(e: HeadError) -> Self {
        match e {
            HeadError::TooLarge(_) | HeadError::TooManyHeaders => Self::HeadTooLarge(e.to_string()),
            HeadError::Malformed(_) => Self::MalformedHead(e.to_string()),
            HeadError::UnsupportedCoding(_) => Self::UnsupportedTransferCoding(e.to_string()),
        }
    }
}

/// Where one header's name and value lie in the head.
#[derive(Clone, Copy)]
struct Field {
    name: (u32, u32),
    value: (u32, u32),
}

/// Parses the head at the front of `buf`, which is consumed (its bytes now back the request).
/// `Ok(None)` while the head is incomplete; `limit` bounds its size.
pub(crate) fn parse(buf: &mut BytesMut, limit: usize) -> Result<Option<Head>, HeadError> {
    // RFC 9112 §2.2: empty lines before a request line are ignored.
    let blank = buf
        .iter()
        .take_while(|&&b| b == b'\r' || b == b'\n')
        .count();
    if blank > 0 {
        let _ = buf.split_to(blank);
    }
    let mut slots = [const { MaybeUninit::<httparse::Header<'_>>::uninit() }; MAX_HEADERS];
    let mut req = httparse::Request::new(&mut []);
    let base = buf.as_ptr() as usize;
    let offsets = |s: &[u8]| {
        let start = s.as_ptr() as usize - base;
        // Within `limit` (at most 1 MiB), so these fit.
        (start as u32, (start + s.len()) as u32)
    };
    let len = match req.parse_with_uninit_headers(buf, &mut slots) {
        Ok(httparse::Status::Complete(len)) if len <= limit => len,
        Ok(httparse::Status::Complete(_)) => return Err(HeadError::TooLarge(limit)),
        Ok(httparse::Status::Partial) if buf.len() > limit => {
            return Err(HeadError::TooLarge(limit));
        }
        Ok(httparse::Status::Partial) => return Ok(None),
        Err(httparse::Error::TooManyHeaders) => return Err(HeadError::TooManyHeaders),
        Err(e) => return Err(HeadError::Malformed(e.to_string())),
    };
    let method = req.method.unwrap_or_default();
    let method = Method::from_bytes(method.as_bytes())
        .map_err(|_| HeadError::Malformed(format!("invalid method '{method}'")))?;
    let path = offsets(req.path.unwrap_or_default().as_bytes());
    let version = if req.version == Some(0) {
        Version::HTTP_10
    } else {
        Version::HTTP_11
    };
    // Filled as the fields are read, not zeroed whole first (2 KiB for `MAX_HEADERS`); inline
    // room for a usual head.
    let mut fields: smallvec::SmallVec<[Field; 16]> = smallvec::SmallVec::new();
    for h in req.headers.iter() {
        fields.push(Field {
            name: offsets(h.name.as_bytes()),
            value: offsets(h.value),
        });
    }

    let head = buf.split_to(len).freeze();
    let uri = Uri::from_maybe_shared(head.slice(path.0 as usize..path.1 as usize))
        .map_err(|e| HeadError::Malformed(format!("invalid request target: {e}")))?;
    let mut kept = Box::new(WireFields::new(head.clone()));
    let mut semantics = Semantics::default();
    for field in &fields {
        let (ns, ne) = (field.name.0 as usize, field.name.1 as usize);
        let (vs, ve) = (field.value.0 as usize, field.value.1 as usize);
        // Hop-by-hop fields are read here and never kept (one pass, no removals), nor is
        // `content-length` (a number, kept apart).
        if semantics.see(&head[ns..ne], &head[vs..ve])? {
            kept.push((ns, ne), (vs, ve));
        }
    }
    if !semantics.named.is_empty() {
        kept.remove_named(&semantics.named);
    }
    kept.set_content_length(semantics.content_length);
    let framing = semantics.framing(version)?;
    let keep_alive = !semantics.close && (version == Version::HTTP_11 || semantics.keep_alive);
    let expect_continue =
        version == Version::HTTP_11 && framing != Framing::Empty && semantics.expect_continue;
    let wants_trailers = semantics.trailers;

    let mut request = Box::new(Request::new(RequestBody::whole(Bytes::new(), kept)));
    *request.method_mut() = method;
    *request.uri_mut() = uri;
    *request.version_mut() = version;
    Ok(Some(Head {
        request,
        framing,
        keep_alive,
        expect_continue,
        wants_trailers,
    }))
}

/// What the connection-level headers say, gathered in the one pass over the fields.
#[derive(Debug, Default)]
struct Semantics {
    content_length: Option<u64>,
    /// `transfer-encoding` codings seen, and whether the only one is `chunked`.
    codings: usize,
    chunked: bool,
    first_coding: Option<String>,
    close: bool,
    keep_alive: bool,
    expect_continue: bool,
    trailers: bool,
    /// Other names `connection` lists (hop-by-hop too, left out after the pass), lower-cased.
    named: smallvec::SmallVec<[Box<[u8]>; 2]>,
}

impl Semantics {
    /// Notes a field (name in any case): whether it is end-to-end, to be kept (`false` for the
    /// hop-by-hop ones and `content-length`).
    fn see(&mut self, name: &[u8], value: &[u8]) -> Result<bool, HeadError> {
        /// The lengths of every name read here: most names have none of them.
        const READ: u64 = crate::fields::LEFT_OUT_LENGTHS | crate::fields::length_mask(&["expect"]);
        if READ & crate::fields::length_bit(name.len()) == 0 {
            return Ok(true);
        }
        if name_is(name, "content-length") {
            if tokens(value).next().is_none() {
                return Err(HeadError::Malformed("empty content-length".into()));
            }
            for token in tokens(value) {
                // Digits only: `u64::from_str` would also take a leading `+`.
                let parsed = crate::headers::decimal(token).ok_or_else(|| {
                    HeadError::Malformed(format!(
                        "invalid content-length '{}'",
                        String::from_utf8_lossy(value)
                    ))
                })?;
                if self.content_length.is_some_and(|l| l != parsed) {
                    return Err(HeadError::Malformed(
                        "conflicting content-length values".into(),
                    ));
                }
                self.content_length = Some(parsed);
            }
            return Ok(false);
        }
        if name_is(name, "transfer-encoding") {
            for token in tokens(value) {
                self.codings += 1;
                self.chunked = self.codings == 1 && token.eq_ignore_ascii_case(b"chunked");
                if self.first_coding.is_none() {
                    self.first_coding = Some(String::from_utf8_lossy(token).into_owned());
                }
            }
            if self.codings == 0 {
                return Err(HeadError::Malformed("empty transfer-encoding".into()));
            }
            return Ok(false);
        }
        if name_is(name, "connection") {
            for token in tokens(value) {
                if token.eq_ignore_ascii_case(b"close") {
                    self.close = true;
                } else if token.eq_ignore_ascii_case(b"keep-alive") {
                    self.keep_alive = true;
                } else {
                    self.named.push(token.to_ascii_lowercase().into());
                }
            }
            return Ok(false);
        }
        if name_is(name, "te") {
            self.trailers |= tokens(value).any(|t| t.eq_ignore_ascii_case(b"trailers"));
            return Ok(false);
        }
        if name_is(name, "expect") {
            // End-to-end by RFC 9110, but about the client's hop here: the gateway answers it
            // (and does not forward it).
            self.expect_continue |= value.eq_ignore_ascii_case(b"100-continue");
        }
        Ok(!model::headers::HOP_BY_HOP.iter().any(|h| name_is(name, h)))
    }

    /// RFC 9112 §6.3 for requests. Both `content-length` and `transfer-encoding` on one request
    /// is refused rather than resolved: proxies that resolve it differently are how requests get
    /// smuggled.
    fn framing(&self, version: Version) -> Result<Framing, HeadError> {
        if self.codings > 0 {
            if self.content_length.is_some() {
                return Err(HeadError::Malformed(
                    "both content-length and transfer-encoding".into(),
                ));
            }
            if version == Version::HTTP_10 {
                return Err(HeadError::Malformed(
                    "transfer-encoding on an HTTP/1.0 request".into(),
                ));
            }
            if !self.chunked {
                return Err(HeadError::UnsupportedCoding(
                    self.first_coding.clone().unwrap_or_default(),
                ));
            }
            return Ok(Framing::Chunked);
        }
        Ok(match self.content_length {
            None | Some(0) => Framing::Empty,
            Some(n) => Framing::Length(n),
        })
    }
}

/// The comma-separated tokens of a header value, trimmed, empty ones skipped.
fn tokens(value: &[u8]) -> impl Iterator<Item = &[u8]> {
    value
        .split(|&b| b == b',')
        .map(<[u8]>::trim_ascii)
        .filter(|t| !t.is_empty())
}

/// Bytes of a body that arrived with the head, when the whole body is there.
pub(crate) fn take_whole_body(buf: &mut BytesMut, framing: Framing) -> Option<Bytes> {
    match framing {
        Framing::Empty => Some(Bytes::new()),
        Framing::Length(n) => {
            let n = usize::try_from(n).ok()?;
            (buf.len() >= n).then(|| buf.split_to(n).freeze())
        }
        Framing::Chunked => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse_all(text: &[u8]) -> Result<Option<Head>, HeadError> {
        parse(&mut BytesMut::from(text), 16 * 1024)
    }

    /// The fields a parsed head's (still empty) body carries.
    fn fields_of(h: &Head) -> &WireFields {
        use crate::fields::Fielded;
        h.request
            .body()
            .fields()
            .expect("an HTTP/1.1 head's fields")
    }

    fn head(text: &str) -> Head {
        parse_all(text.as_bytes())
            .expect("parses")
            .expect("complete")
    }

    #[test]
    fn a_complete_head_becomes_a_request_and_leaves_the_body() {
        let mut buf = BytesMut::from(
            &b"\r\nPOST /v2/nvcf/pexec/functions/x?a=1 HTTP/1.1\r\nHost: api.x\r\nX-Custom: one\r\nx-custom: two\r\ncontent-length: 4\r\n\r\nbodyNEXT"[..],
        );
        let h = parse(&mut buf, 1024).expect("parses").expect("complete");
        assert_eq!(h.request.method(), Method::POST);
        assert_eq!(h.request.uri().path(), "/v2/nvcf/pexec/functions/x");
        assert_eq!(h.request.uri().query(), Some("a=1"));
        assert_eq!(h.request.version(), Version::HTTP_11);
        assert!(h.request.headers().is_empty(), "the fields stay unparsed");
        assert_eq!(fields_of(&h).get("host"), Some(&b"api.x"[..]));
        let fields: Vec<_> = fields_of(&h).iter().collect();
        assert_eq!(
            fields,
            [
                (&b"Host"[..], &b"api.x"[..]),
                (b"X-Custom", b"one"),
                (b"x-custom", b"two")
            ],
            "in order and case, without content-length"
        );
        assert_eq!(fields_of(&h).content_length(), Some(4));
        assert_eq!(h.framing, Framing::Length(4));
        assert!(h.keep_alive && !h.expect_continue && !h.wants_trailers);
        assert_eq!(
            take_whole_body(&mut buf, h.framing).as_deref(),
            Some(&b"body"[..])
        );
        assert_eq!(&buf[..], b"NEXT");
    }

    #[test]
    fn partial_heads_wait_until_the_limit() {
        let mut buf = BytesMut::from(&b"GET / HTTP/1.1\r\nhost: x\r\n"[..]);
        assert!(parse(&mut buf, 1024).expect("partial").is_none());
        assert_eq!(buf.len(), 25, "nothing consumed");
        let long = format!("GET / HTTP/1.1\r\nx-big: {}\r\n", "a".repeat(2000));
        assert_eq!(
            parse(&mut BytesMut::from(long.as_bytes()), 1024).expect_err("refused"),
            HeadError::TooLarge(1024)
        );
        let complete = format!("{long}\r\n");
        assert_eq!(
            parse(&mut BytesMut::from(complete.as_bytes()), 1024).expect_err("refused"),
            HeadError::TooLarge(1024)
        );
        let many: String = (0..=MAX_HEADERS).map(|i| format!("x-{i}: v\r\n")).collect();
        assert_eq!(
            parse_all(format!("GET / HTTP/1.1\r\n{many}\r\n").as_bytes()).expect_err("refused"),
            HeadError::TooManyHeaders
        );
    }

    #[test]
    fn absolute_form_targets_keep_their_authority() {
        let h = head("GET http://api.x:8080/v2/nvcf/functions HTTP/1.1\r\nhost: other\r\n\r\n");
        assert_eq!(
            h.request.uri().authority().map(|a| a.as_str()),
            Some("api.x:8080")
        );
        assert_eq!(h.request.uri().path(), "/v2/nvcf/functions");
    }

    #[test]
    fn framing_follows_rfc_9112_and_refuses_ambiguity() {
        let framing = |headers: &str| {
            parse_all(format!("POST / HTTP/1.1\r\n{headers}\r\n").as_bytes())
                .map(|h| h.expect("complete").framing)
        };
        assert_eq!(framing(""), Ok(Framing::Empty));
        assert_eq!(framing("content-length: 0\r\n"), Ok(Framing::Empty));
        assert_eq!(framing("content-length: 12\r\n"), Ok(Framing::Length(12)));
        assert_eq!(
            framing("content-length: 12\r\ncontent-length: 12\r\n"),
            Ok(Framing::Length(12))
        );
        assert_eq!(
            framing("content-length: 12, 12\r\n"),
            Ok(Framing::Length(12))
        );
        assert_eq!(
            framing("Transfer-Encoding: Chunked\r\n"),
            Ok(Framing::Chunked)
        );
        for bad in [
            "content-length: 12\r\ncontent-length: 13\r\n",
            "content-length: +12\r\n",
            "content-length: nope\r\n",
            "content-length: 99999999999999999999999\r\n",
            "content-length: 3\r\ntransfer-encoding: chunked\r\n",
            "transfer-encoding: \r\n",
            "content-length: \r\n",
        ] {
            assert!(
                matches!(framing(bad), Err(HeadError::Malformed(_))),
                "{bad:?}"
            );
        }
        for unsupported in [
            "transfer-encoding: gzip\r\n",
            "transfer-encoding: gzip, chunked\r\n",
        ] {
            assert!(
                matches!(framing(unsupported), Err(HeadError::UnsupportedCoding(_))),
                "{unsupported:?}"
            );
        }
        assert!(matches!(
            parse_all(b"POST / HTTP/1.0\r\ntransfer-encoding: chunked\r\n\r\n"),
            Err(HeadError::Malformed(_))
        ));
    }

    #[test]
    fn connection_handling_depends_on_version_and_tokens() {
        assert!(head("GET / HTTP/1.1\r\n\r\n").keep_alive);
        assert!(!head("GET / HTTP/1.1\r\nconnection: Close\r\n\r\n").keep_alive);
        assert!(!head("GET / HTTP/1.0\r\n\r\n").keep_alive);
        assert!(head("GET / HTTP/1.0\r\nconnection: keep-alive\r\n\r\n").keep_alive);
        assert!(!head("GET / HTTP/1.1\r\nconnection: te, close\r\n\r\n").keep_alive);
        let h = head(
            "POST / HTTP/1.1\r\nexpect: 100-Continue\r\ncontent-length: 3\r\nte: trailers\r\n\r\n",
        );
        assert!(h.expect_continue && h.wants_trailers);
        assert!(!head("GET / HTTP/1.1\r\nexpect: 100-continue\r\n\r\n").expect_continue);
    }

    #[test]
    fn hop_by_hop_fields_are_read_and_left_out() {
        let h = head(
            "POST / HTTP/1.1\r\nConnection: keep-alive, X-Hop\r\nx-hop: 1\r\nTE: trailers\r\n\
             Keep-Alive: timeout=5\r\nUpgrade: h2c\r\nTransfer-Encoding: chunked\r\n\
             Expect: 100-continue\r\nx-end: 2\r\n\r\n",
        );
        let names: Vec<_> = fields_of(&h).iter().map(|(n, _)| n).collect();
        assert_eq!(names, [&b"Expect"[..], b"x-end"]);
        assert_eq!(fields_of(&h).content_length(), None);
        assert!(h.keep_alive && h.wants_trailers && h.expect_continue);
        assert_eq!(h.framing, Framing::Chunked);
    }

    #[test]
    fn malformed_heads_are_errors() {
        for bad in [
            &b"GARBAGE\r\n\r\n"[..],
            b"GET /\x01\x02 HTTP/1.1\r\nhost: x\r\n\r\n",
            b"\x00\x01\x02\x03\r\n\r\n",
            b"GET / HTTP/1.1\r\nbad header line\r\n\r\n",
            b"GET / HTTP/2.0\r\n\r\n",
            b"GET / HTTP/1.1\r\nx: \x7f\r\n\r\n",
        ] {
            assert!(
                matches!(parse_all(bad), Err(HeadError::Malformed(_))),
                "{bad:?}"
            );
        }
    }
}
