//! Header rewriting for the reverse proxy: hop-by-hop removal in both directions, and the gateway's
//! own headers on requests to the control plane (internal credential, client address, forwarding).

use std::net::IpAddr;

use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use model::headers::{CLIENT_ADDR, GATEWAY_AUTH};

use crate::fields::{Fielded, WireFields};

const X_FORWARDED_FOR: &str = "x-forwarded-for";
const X_FORWARDED_PROTO: &str = "x-forwarded-proto";

/// One hop-by-hop list for the whole installation (the worker's passthrough uses it too).
pub(crate) use model::headers::remove_hop_by_hop;

/// `NVCF-REQID` as a prebuilt name: a lookup by `&str` parses the name on every call.
pub(crate) const NVCF_REQID: HeaderName = HeaderName::from_static(model::headers::NVCF_REQID);

/// The names nearly every call's heads carry, by length (the requests' and the workers' answers').
const COMMON_NAMES: [&[(&[u8], HeaderName)]; 15] = [
    &[],
    &[],
    &[],
    &[],
    &[(b"host", header::HOST), (b"date", header::DATE)],
    &[],
    &[
        (b"accept", header::ACCEPT),
        (b"origin", header::ORIGIN),
        (b"cookie", header::COOKIE),
        (b"expect", header::EXPECT),
        (b"server", header::SERVER),
    ],
    &[],
    &[],
    &[],
    &[
        (b"user-agent", header::USER_AGENT),
        (b"connection", header::CONNECTION),
    ],
    &[],
    &[(b"content-type", header::CONTENT_TYPE)],
    &[(b"authorization", header::AUTHORIZATION)],
    &[(b"content-length", header::CONTENT_LENGTH)],
];

/// A header name off the wire, as [`HeaderName::from_bytes`] makes it, with the names nearly
/// every call carries matched first, as sent in lower case (HTTP/2 requires it, and most HTTP/1.1
/// clients and servers send it): `from_bytes` copies the name lower-cased and searches every
/// standard name. A name in another case goes that way (a case-blind match here, byte by byte,
/// cost more than it saved).
pub(crate) fn header_name(name: &[u8]) -> Result<HeaderName, http::header::InvalidHeaderName> {
    let common = COMMON_NAMES
        .get(name.len())
        .and_then(|names| names.iter().find(|(known, _)| *known == name));
    match common {
        Some((_, known)) => Ok(known.clone()),
        None => HeaderName::from_bytes(name),
    }
}

/// The first value of `name` in `headers`, as [`HeaderMap::get`] answers it. A name outside the
/// standard set is hashed byte by byte on every lookup; a request or answer of a few headers is
/// searched faster by comparing names in order (an enum tag for the standard ones).
pub(crate) fn find<'a>(headers: &'a HeaderMap, name: &HeaderName) -> Option<&'a HeaderValue> {
    if headers.len() > 8 {
        return headers.get(name);
    }
    headers.iter().find(|(n, _)| *n == name).map(|(_, v)| v)
}

/// Appends one HTTP/1.1 header line (`name: value\r\n`) to a request head being built.
pub(crate) fn put_line(buf: &mut impl bytes::BufMut, name: &[u8], value: &[u8]) {
    buf.put_slice(name);
    buf.put_slice(b": ");
    buf.put_slice(value);
    buf.put_slice(b"\r\n");
}

/// A header value's decimal number: ASCII digits only (no sign, no spaces), `None` on anything
/// else or on overflow.
pub(crate) fn decimal(digits: &[u8]) -> Option<u64> {
    if digits.is_empty() {
        return None;
    }
    digits.iter().try_fold(0u64, |n, &d| {
        d.is_ascii_digit()
            .then(|| n.checked_mul(10)?.checked_add(u64::from(d - b'0')))
            .flatten()
    })
}

/// `name: value\r\n` as bytes: a line the gateway writes on every call, built once (from the
/// name's one definition) and copied whole.
pub(crate) fn line(name: &str, value: &[u8]) -> Box<[u8]> {
    let mut line = Vec::with_capacity(name.len() + value.len() + 4);
    put_line(&mut line, name.as_bytes(), value);
    line.into()
}

/// `name: `, the start of a line whose value changes on every call, built once.
pub(crate) fn line_start(name: &str) -> Box<[u8]> {
    format!("{name}: ").into_bytes().into()
}

/// A client request's header fields, wherever they are: the unparsed fields of an HTTP/1.1 head
/// that its body carries ([`crate::fields`]), and the request's map (an HTTP/2 or HTTP/3
/// request's fields, and what the gateway added). The one way the invocation path reads them.
#[derive(Clone, Copy)]
pub(crate) struct RequestHeaders<'a> {
    fields: Option<&'a WireFields>,
    map: &'a HeaderMap,
}

impl<'a> RequestHeaders<'a> {
    pub(crate) fn of<B: Fielded>(req: &'a http::Request<B>) -> Self {
        Self {
            fields: req.body().fields(),
            map: req.headers(),
        }
    }

    /// Only `map` (a request without unparsed fields).
    #[cfg(test)]
    pub(crate) fn map(map: &'a HeaderMap) -> Self {
        Self { fields: None, map }
    }

    /// The first value named `name`, as bytes.
    pub(crate) fn get(&self, name: &HeaderName) -> Option<&'a [u8]> {
        self.fields
            .and_then(|f| f.get(name.as_str()))
            .or_else(|| find(self.map, name).map(HeaderValue::as_bytes))
    }

    /// [`RequestHeaders::get`] as text, when the value is visible ASCII (as
    /// [`HeaderValue::to_str`] answers it).
    pub(crate) fn get_str(&self, name: &HeaderName) -> Option<&'a str> {
        match self.fields.map(|f| f.get_str(name.as_str())) {
            Some(Some(text)) => Some(text),
            _ => find(self.map, name).and_then(|v| v.to_str().ok()),
        }
    }

    /// [`RequestHeaders::get`] as a header value (sharing the head's bytes).
    pub(crate) fn value(&self, name: &HeaderName) -> Option<HeaderValue> {
        self.fields
            .and_then(|f| f.value(name.as_str()))
            .or_else(|| find(self.map, name).cloned())
    }

    pub(crate) fn contains(&self, name: &HeaderName) -> bool {
        self.get(name).is_some()
    }

    /// The `content-length` the request stated (an HTTP/1.1 head's is a number apart from its
    /// fields).
    pub(crate) fn content_length(&self) -> Option<u64> {
        self.fields
            .and_then(WireFields::content_length)
            .or_else(|| {
                find(self.map, &header::CONTENT_LENGTH)
                    .and_then(|v| v.to_str().ok())
                    .and_then(|v| v.parse().ok())
            })
    }
}

/// The host the client addressed: the URI authority (h2 `:authority`, h1 absolute-form), else the
/// `Host` header.
pub(crate) fn request_host<B: Fielded>(req: &http::Request<B>) -> Option<&str> {
    req.uri()
        .authority()
        // Without any `user@` prefix an absolute-form target may carry.
        .map(|a| a.as_str().rsplit('@').next().unwrap_or_default())
        .or_else(|| RequestHeaders::of(req).get_str(&header::HOST))
}

/// A UUID as a header value, hyphenated lower case, formatted without a heap `String`. Its bytes
/// are shared from the start, so that clones (worker request, response, access line) only count
/// references.
pub(crate) fn uuid_value(id: uuid::Uuid) -> HeaderValue {
    let mut text = [0u8; uuid::fmt::Hyphenated::LENGTH];
    id.hyphenated().encode_lower(&mut text);
    // A hyphenated UUID is always a valid header value.
    HeaderValue::from_maybe_shared(bytes::Bytes::from_owner(text))
        .unwrap_or_else(|_| HeaderValue::from_static(""))
}

/// A request id (`NVCF-REQID`) as a header value: [`uuid_value`], marked sensitive, which HPACK
/// encodes as a never-indexed literal. A request id is new on every response, so indexing it
/// only churns the connection's dynamic table (evicting the entries that do repeat) and costs a
/// search of the table per response; h2 skips both for sensitive values.
pub(crate) fn request_id_value(id: uuid::Uuid) -> HeaderValue {
    let mut value = uuid_value(id);
    value.set_sensitive(true);
    value
}

/// Rewrites a client request's headers for the control plane: hop-by-hop headers go, client
/// copies of the gateway's trusted headers are replaced, the client address is recorded, and
/// split `cookie` headers (allowed in h2) are joined as HTTP/1.1 requires.
pub(crate) fn prepare_upstream_request(headers: &mut HeaderMap, token: &HeaderValue, peer: IpAddr) {
    remove_hop_by_hop(headers);
    join_cookies(headers);

    let peer = peer.to_canonical();
    let peer_text = peer.to_string();
    // An IP address always makes a valid header value.
    let peer_value = HeaderValue::from_str(&peer_text).unwrap_or(HeaderValue::from_static(""));

    // `insert` drops every client-supplied value of the name.
    headers.insert(GATEWAY_AUTH, token.clone());
    headers.insert(CLIENT_ADDR, peer_value.clone());

    let prior: Vec<&str> = headers
        .get_all(X_FORWARDED_FOR)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .collect();
    let forwarded_for = if prior.is_empty() {
        peer_value
    } else {
        HeaderValue::from_str(&format!("{}, {peer_text}", prior.join(", "))).unwrap_or(peer_value)
    };
    headers.insert(X_FORWARDED_FOR, forwarded_for);
    headers.insert(X_FORWARDED_PROTO, HeaderValue::from_static("http"));
}

fn join_cookies(headers: &mut HeaderMap) {
    let mut values = headers.get_all(header::COOKIE).iter();
    let (Some(first), Some(_)) = (values.next(), values.next()) else {
        return;
    };
    let mut joined = first.as_bytes().to_vec();
    for v in headers.get_all(header::COOKIE).iter().skip(1) {
        joined.extend_from_slice(b"; ");
        joined.extend_from_slice(v.as_bytes());
    }
    if let Ok(value) = HeaderValue::from_bytes(&joined) {
        headers.insert(header::COOKIE, value);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decimals_are_digits_only() {
        assert_eq!(decimal(b"0"), Some(0));
        assert_eq!(decimal(b"18446744073709551615"), Some(u64::MAX));
        for bad in [
            &b""[..],
            b"18446744073709551616",
            b"+1",
            b"-1",
            b" 1",
            b"1a",
            b"1.0",
        ] {
            assert_eq!(decimal(bad), None, "{}", String::from_utf8_lossy(bad));
        }
    }

    #[test]
    fn request_headers_read_the_fields_then_the_map() {
        let head = bytes::Bytes::from_static(b"Host: h.x\r\nX-Text: caf\xc3\xa9\r\n");
        let mut fields = WireFields::new(head);
        fields.push((0, 4), (6, 9));
        fields.push((11, 17), (19, 24));
        fields.set_content_length(Some(7));
        let body = crate::body::RequestBody::whole(bytes::Bytes::new(), Box::new(fields));
        let mut req = http::Request::new(body);
        req.headers_mut()
            .insert(header::ACCEPT, HeaderValue::from_static("text/plain"));
        let h = RequestHeaders::of(&req);
        assert_eq!(h.get(&header::HOST), Some(&b"h.x"[..]));
        assert_eq!(h.get_str(&header::HOST), Some("h.x"));
        assert_eq!(
            h.get_str(&header::ACCEPT),
            Some("text/plain"),
            "from the map"
        );
        let text = HeaderName::from_static("x-text");
        assert_eq!(h.get(&text), Some("café".as_bytes()));
        assert_eq!(
            h.get_str(&text),
            None,
            "not visible ASCII, as HeaderValue::to_str"
        );
        assert_eq!(
            h.value(&header::HOST),
            Some(HeaderValue::from_static("h.x"))
        );
        assert!(h.contains(&header::ACCEPT) && !h.contains(&header::ORIGIN));
        assert_eq!(h.content_length(), Some(7));
        assert_eq!(request_host(&req), Some("h.x"));
    }

    #[test]
    fn find_answers_as_get_does() {
        let few = map(&[
            ("x-a", "1"),
            ("function-id", "f"),
            ("x-a", "2"),
            ("host", "h"),
        ]);
        let mut many = http::HeaderMap::new();
        for i in 0..12 {
            many.append(
                http::HeaderName::from_bytes(format!("x-{i}").as_bytes()).expect("name"),
                http::HeaderValue::from(i),
            );
        }
        many.append("function-id", http::HeaderValue::from_static("g"));
        for map in [&few, &many] {
            for name in ["x-a", "function-id", "host", "x-3", "absent"] {
                let name = http::HeaderName::from_static(name);
                assert_eq!(super::find(map, &name), map.get(&name), "{name}");
            }
        }
    }

    #[test]
    fn common_names_parse_as_from_bytes_does() {
        for name in [
            "host",
            "Host",
            "DATE",
            "accept",
            "Origin",
            "cookie",
            "expect",
            "server",
            "User-Agent",
            "connection",
            "Keep-Alive",
            "content-type",
            "Authorization",
            "Content-Length",
            "x-custom",
            "hots",
            "content-typf",
            "nvcf-reqid",
        ] {
            let fast = super::header_name(name.as_bytes()).expect(name);
            let slow = http::HeaderName::from_bytes(name.as_bytes()).expect(name);
            assert_eq!(fast, slow, "{name}");
            assert_eq!(fast.as_str(), name.to_ascii_lowercase(), "{name}");
        }
        for bad in ["", "bad name", "caf\u{e9}", "a:b"] {
            assert!(super::header_name(bad.as_bytes()).is_err(), "{bad:?}");
        }
    }

    fn map(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(*k, HeaderValue::from_static(v));
        }
        h
    }

    #[test]
    fn request_ids_are_never_indexed_route_ids_are() {
        let id = uuid::Uuid::new_v4();
        let (reqid, route) = (request_id_value(id), uuid_value(id));
        assert_eq!(reqid, id.to_string().as_str());
        assert_eq!(reqid, route);
        assert!(reqid.is_sensitive());
        assert!(reqid.clone().is_sensitive(), "a clone keeps the mark");
        assert!(!route.is_sensitive());
    }

    #[test]
    fn hop_by_hop_and_connection_named_headers_go() {
        let mut h = map(&[
            ("connection", "keep-alive, X-Custom-Hop"),
            ("connection", "x-other"),
            ("x-custom-hop", "1"),
            ("x-other", "1"),
            ("keep-alive", "timeout=5"),
            ("proxy-connection", "keep-alive"),
            ("proxy-authorization", "Basic x"),
            ("proxy-authenticate", "Basic"),
            ("te", "trailers"),
            ("trailer", "x-t"),
            ("transfer-encoding", "chunked"),
            ("upgrade", "websocket"),
            ("authorization", "Bearer abc"),
            ("host", "api.x"),
            ("content-length", "3"),
        ]);
        remove_hop_by_hop(&mut h);
        let mut left: Vec<_> = h.keys().map(|k| k.as_str()).collect();
        left.sort_unstable();
        assert_eq!(left, ["authorization", "content-length", "host"]);
    }

    #[test]
    fn trusted_headers_are_replaced_and_forwarding_recorded() {
        let mut h = map(&[
            ("x-nvcf-gateway-auth", "forged"),
            ("x-nvcf-gateway-auth", "forged2"),
            ("x-nvcf-client-addr", "10.0.0.1"),
            ("x-forwarded-for", "1.1.1.1"),
            ("x-forwarded-for", "2.2.2.2"),
            ("x-forwarded-proto", "https"),
        ]);
        let token = HeaderValue::from_static("tok");
        prepare_upstream_request(&mut h, &token, "127.0.0.1".parse().expect("ip"));
        let all = |n: &str| {
            h.get_all(n)
                .iter()
                .map(|v| v.to_str().expect("ascii"))
                .collect::<Vec<_>>()
        };
        assert_eq!(all("x-nvcf-gateway-auth"), ["tok"]);
        assert_eq!(all("x-nvcf-client-addr"), ["127.0.0.1"]);
        assert_eq!(all("x-forwarded-for"), ["1.1.1.1, 2.2.2.2, 127.0.0.1"]);
        assert_eq!(all("x-forwarded-proto"), ["http"]);
    }

    #[test]
    fn mapped_ipv6_peer_is_canonical_and_cookies_join() {
        let mut h = map(&[("cookie", "a=1"), ("cookie", "b=2")]);
        let token = HeaderValue::from_static("tok");
        prepare_upstream_request(&mut h, &token, "::ffff:10.1.2.3".parse().expect("ip"));
        assert_eq!(h[CLIENT_ADDR], "10.1.2.3");
        assert_eq!(h["x-forwarded-for"], "10.1.2.3");
        assert_eq!(h.get_all("cookie").iter().count(), 1);
        assert_eq!(h["cookie"], "a=1; b=2");
    }
}
