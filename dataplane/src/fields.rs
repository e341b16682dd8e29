//! A message's end-to-end header fields as its sender wrote them in an HTTP/1.1 head: byte
//! ranges into the head, never parsed into a `HeaderMap` unless something needs one. Both
//! directions use them.
//!
//! * A client's HTTP/1.1 request ([`crate::front::head`]): the fields travel with the request
//!   body ([`crate::body::RequestBody`], then [`crate::body::Body`]) to the worker client. The
//!   gateway's readers look names up through [`crate::headers::RequestHeaders`] (the fields,
//!   then the map). The HTTP/1.1 worker client copies what it forwards into the worker's head as
//!   sent. The h2 worker client, the control-plane proxy and the exec wrapper turn them into map
//!   entries first ([`materialize_request`]).
//! * A worker's HTTP/1.1 response (the HTTP/1.1 worker client): the fields travel with the
//!   response body to the client's front. The HTTP/1.1 front copies them into the client's
//!   response head as they are, as nginx does. HTTP/2 and HTTP/3 answers, the pending store, and
//!   any gateway code that sets a header the worker may also have sent turn them into map entries
//!   first ([`materialize`], [`materialize_if_named`]), so that the gateway's own value replaces
//!   or joins the worker's as it did when every field went through the map.
//!
//! Names and values were checked by `httparse` (a token; visible ASCII, obs-text and tabs), the
//! same grammar `HeaderName` and `HeaderValue` accept, so that a field never fails to become a map
//! entry. Hop-by-hop fields and `content-length` are not among them: the first stay on the
//! sender's hop, the second is kept as a number ([`WireFields::content_length`]), which the next
//! hop's framing decides on.

use bytes::{BufMut, Bytes, BytesMut};
use http::header::{self, HeaderMap, HeaderValue};
use http::{Request, Response};
use smallvec::SmallVec;

use crate::invoke::respond::Marks;

/// The fields of one message head.
#[derive(Debug)]
pub(crate) struct WireFields {
    /// The head they were sliced from (shared, not copied).
    head: Bytes,
    /// Name start, name end, value start, value end, in the order they were sent; inline room
    /// for a typical head's few.
    spans: SmallVec<[[u32; 4]; 8]>,
    /// Bit `n % 64` set for each name `n` bytes long: most lookups of a name no field has end
    /// here, without comparing bytes.
    lengths: u64,
    content_length: Option<u64>,
    /// NVCF's headers, once the invocation path added them (responses only).
    marks: Option<Marks>,
}

impl WireFields {
    /// No fields yet, from `head`.
    pub(crate) fn new(head: Bytes) -> Self {
        Self {
            head,
            spans: SmallVec::new(),
            lengths: 0,
            content_length: None,
            marks: None,
        }
    }

    /// Adds the field whose name and value lie at these ranges of the head (a head is at most
    /// 1 MiB, so the offsets fit).
    pub(crate) fn push(&mut self, name: (usize, usize), value: (usize, usize)) {
        self.lengths |= length_bit(name.1 - name.0);
        self.spans
            .push([name.0, name.1, value.0, value.1].map(|n| n as u32));
    }

    /// Leaves out the fields whose name (any case) is in `names` (`lengths` may keep their bits:
    /// it only rules names out).
    pub(crate) fn remove_named<N: AsRef<[u8]>>(&mut self, names: &[N]) {
        let head = &self.head;
        self.spans.retain(|s| {
            let name = &head[s[0] as usize..s[1] as usize];
            !names.iter().any(|n| n.as_ref().eq_ignore_ascii_case(name))
        });
    }

    pub(crate) fn set_content_length(&mut self, length: Option<u64>) {
        self.content_length = length;
    }

    /// The `content-length` the sender stated.
    pub(crate) fn content_length(&self) -> Option<u64> {
        self.content_length
    }

    pub(crate) fn set_marks(&mut self, marks: Marks) {
        self.marks = Some(marks);
    }

    /// The `NVCF-REQID` the marks carry.
    pub(crate) fn request_id(&self) -> Option<&HeaderValue> {
        self.marks.as_ref().map(Marks::request_id)
    }

    /// Writes the fields `keep` lets through into a head being built, as they were sent: a run
    /// of fields that lay line after line (`\r\n` between them) in one copy.
    pub(crate) fn put_lines(&self, buf: &mut BytesMut, mut keep: impl FnMut(&[u8]) -> bool) {
        let head = &self.head[..];
        let mut run: Option<(usize, usize)> = None;
        let flush = |buf: &mut BytesMut, run: Option<(usize, usize)>| {
            if let Some((start, end)) = run {
                buf.put_slice(&head[start..end]);
                buf.put_slice(b"\r\n");
            }
        };
        for s in &self.spans {
            let [ns, ne, _, ve] = s.map(|n| n as usize);
            if !keep(&head[ns..ne]) {
                flush(buf, run.take());
                continue;
            }
            run = match run {
                Some((start, end)) if ns == end + 2 && &head[end..ns] == b"\r\n" => {
                    Some((start, ve))
                }
                other => {
                    flush(buf, other);
                    Some((ns, ve))
                }
            };
        }
        flush(buf, run);
    }

    /// Writes NVCF's headers, when added ([`Marks`]).
    pub(crate) fn put_marks(&self, buf: &mut BytesMut) {
        if let Some(marks) = &self.marks {
            marks.put(buf);
        }
    }

    /// At most the bytes the lines take in a head (the size of the one the fields came in, and
    /// room for the marks).
    pub(crate) fn wire_len(&self) -> usize {
        self.head.len() + 128
    }

    /// The fields as (name, value) bytes, names in the sender's case.
    #[cfg(test)]
    pub(crate) fn iter(&self) -> impl Iterator<Item = (&[u8], &[u8])> {
        self.spans.iter().map(|s| {
            (
                &self.head[s[0] as usize..s[1] as usize],
                &self.head[s[2] as usize..s[3] as usize],
            )
        })
    }

    /// Whether a field is named `name` (lower case), in any case.
    pub(crate) fn contains(&self, name: &str) -> bool {
        self.get(name).is_some()
    }

    /// The value of the first field named `name` (lower case), in any case.
    pub(crate) fn get(&self, name: &str) -> Option<&[u8]> {
        let s = self.find(name)?;
        self.head.get(s[2] as usize..s[3] as usize)
    }

    /// [`WireFields::get`] as text, when it is visible ASCII (what [`HeaderValue::to_str`]
    /// answers: the field grammar leaves only tabs and obs-text beside it, and tabs are taken).
    pub(crate) fn get_str(&self, name: &str) -> Option<&str> {
        self.get(name)
            .filter(|v| v.is_ascii())
            .and_then(|v| std::str::from_utf8(v).ok())
    }

    /// [`WireFields::get`] as a header value sharing the head's bytes.
    pub(crate) fn value(&self, name: &str) -> Option<HeaderValue> {
        let s = self.find(name)?;
        HeaderValue::from_maybe_shared(self.head.slice(s[2] as usize..s[3] as usize)).ok()
    }

    /// The span of the first field named `name`: lengths compared from the offsets, bytes only
    /// where they match.
    fn find(&self, name: &str) -> Option<&[u32; 4]> {
        if self.lengths & length_bit(name.len()) == 0 {
            return None;
        }
        self.spans.iter().find(|s| {
            (s[1] - s[0]) as usize == name.len()
                && self
                    .head
                    .get(s[0] as usize..s[1] as usize)
                    .is_some_and(|n| name_is(n, name))
        })
    }

    /// Whether any field is named one of `names` (lower case).
    pub(crate) fn contains_any(&self, names: &[&str]) -> bool {
        names.iter().any(|name| self.contains(name))
    }

    /// Appends the fields (and the `content-length`, and NVCF's headers) to `headers`, values
    /// sharing the head's bytes.
    pub(crate) fn append_to(&self, headers: &mut HeaderMap) {
        // Room for all of it at once, NVCF's three and a few the gateway may add: a map that
        // grows midway is rebuilt.
        headers.reserve(self.spans.len() + 8);
        for s in &self.spans {
            let name = crate::headers::header_name(&self.head[s[0] as usize..s[1] as usize]);
            let value =
                HeaderValue::from_maybe_shared(self.head.slice(s[2] as usize..s[3] as usize));
            // Both were checked by `httparse` against the grammar these accept (module doc).
            if let (Ok(name), Ok(value)) = (name, value) {
                headers.append(name, value);
            }
        }
        if let Some(n) = self.content_length {
            headers
                .entry(header::CONTENT_LENGTH)
                .or_insert_with(|| HeaderValue::from(n));
        }
        if let Some(marks) = &self.marks {
            marks.apply(headers);
        }
    }
}

pub(crate) const fn length_bit(len: usize) -> u64 {
    1 << (len % 64)
}

/// Bit `n` set for each name `n` bytes long (up to 63) among `names`: a name whose length has no
/// bit is none of them, without comparing bytes.
pub(crate) const fn length_mask(names: &[&str]) -> u64 {
    let mut mask = 0;
    let mut i = 0;
    while i < names.len() {
        mask |= length_bit(names[i].len());
        i += 1;
    }
    mask
}

/// The lengths of the names a head's one pass reads and leaves out of its fields: the hop-by-hop
/// ones and `content-length`. A name of another length is kept without comparing bytes.
pub(crate) const LEFT_OUT_LENGTHS: u64 =
    length_mask(model::headers::HOP_BY_HOP) | length_mask(&["content-length"]);

/// Whether `name` is `known` (lower case), in any case: compared as sent first (most senders
/// write lower case, and the bytes compare at once), case-blind only when that fails.
pub(crate) fn name_is(name: &[u8], known: &str) -> bool {
    name.len() == known.len()
        && (name == known.as_bytes() || name.eq_ignore_ascii_case(known.as_bytes()))
}

/// A body that may carry its message's [`WireFields`]. The defaults are a body that never does.
pub(crate) trait Fielded {
    fn fields(&self) -> Option<&WireFields> {
        None
    }

    fn fields_mut(&mut self) -> Option<&mut WireFields> {
        None
    }

    fn take_fields(&mut self) -> Option<Box<WireFields>> {
        None
    }
}

impl<L: Fielded, R: Fielded> Fielded for http_body_util::Either<L, R> {
    fn fields(&self) -> Option<&WireFields> {
        match self {
            Self::Left(b) => b.fields(),
            Self::Right(b) => b.fields(),
        }
    }

    fn fields_mut(&mut self) -> Option<&mut WireFields> {
        match self {
            Self::Left(b) => b.fields_mut(),
            Self::Right(b) => b.fields_mut(),
        }
    }

    fn take_fields(&mut self) -> Option<Box<WireFields>> {
        match self {
            Self::Left(b) => b.take_fields(),
            Self::Right(b) => b.take_fields(),
        }
    }
}

/// The h2 worker client's bodies: their fields are in the map already.
impl Fielded for hyper::body::Incoming {}

/// Tests' bodiless messages.
#[cfg(test)]
impl Fielded for () {}

/// Moves the fields `response`'s body carries into its header map.
pub(crate) fn materialize<B: Fielded>(response: &mut Response<B>) {
    if let Some(fields) = response.body_mut().take_fields() {
        fields.append_to(response.headers_mut());
    }
}

/// Moves the fields `request`'s body carries into its header map.
pub(crate) fn materialize_request<B: Fielded>(request: &mut Request<B>) {
    if let Some(fields) = request.body_mut().take_fields() {
        fields.append_to(request.headers_mut());
    }
}

/// [`materialize`] when a field is named one of `names` (lower case): what the caller is about to
/// set in the map must see the worker's value.
pub(crate) fn materialize_if_named<B: Fielded>(response: &mut Response<B>, names: &[&str]) {
    if response
        .body()
        .fields()
        .is_some_and(|f| f.contains_any(names))
    {
        materialize(response);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fields(head: &'static [u8], pairs: &[(&str, &str)]) -> WireFields {
        let mut fields = WireFields::new(Bytes::from_static(head));
        let text = std::str::from_utf8(head).expect("ascii");
        for (name, value) in pairs {
            let n = text.find(name).expect("name");
            let v = n + text[n..].find(value).expect("value");
            fields.push((n, n + name.len()), (v, v + value.len()));
        }
        fields
    }

    #[test]
    fn fields_are_found_in_any_case_and_removed_by_name() {
        let mut f = fields(
            b"Content-Type: text/plain\r\nX-One: 1\r\nx-two: 2\r\n",
            &[
                ("Content-Type", "text/plain"),
                ("X-One", "1"),
                ("x-two", "2"),
            ],
        );
        assert!(f.contains("content-type"));
        assert!(f.contains("x-one"));
        assert!(!f.contains("x-on"));
        assert!(f.contains_any(&["nope", "x-two"]));
        f.remove_named(&[b"X-TWO", b"x-one"]);
        let left: Vec<_> = f.iter().collect();
        assert_eq!(left, [(&b"Content-Type"[..], &b"text/plain"[..])]);
    }

    #[test]
    fn lines_are_written_as_sent_in_runs() {
        // `B`'s line ends in a bare LF and `D`'s value is followed by spaces: neither joins a run.
        let f = fields(
            b"A: 1\r\nB:2\nC:  3\r\nD: 4  \r\nDrop: x\r\nE: 5\r\n",
            &[
                ("A", "1"),
                ("B", "2"),
                ("C", "3"),
                ("D", "4"),
                ("Drop", "x"),
                ("E", "5"),
            ],
        );
        let mut buf = BytesMut::new();
        let mut seen = Vec::new();
        f.put_lines(&mut buf, |name| {
            seen.push(name.to_vec());
            name != b"Drop"
        });
        assert_eq!(&buf[..], b"A: 1\r\nB:2\r\nC:  3\r\nD: 4\r\nE: 5\r\n");
        assert_eq!(seen.len(), 6);
    }

    #[test]
    fn materialized_fields_are_lower_case_map_entries_in_order() {
        let mut f = fields(
            b"Vary: a\r\nX-Id: 7\r\nvary: b\r\n",
            &[("Vary", "a"), ("X-Id", "7"), ("vary", "b")],
        );
        f.set_content_length(Some(12));
        let mut map = HeaderMap::new();
        f.append_to(&mut map);
        let vary: Vec<_> = map.get_all("vary").iter().collect();
        assert_eq!(vary, ["a", "b"]);
        assert_eq!(map["x-id"], "7");
        assert_eq!(map[header::CONTENT_LENGTH], "12");
        assert_eq!(map.len(), 4);
    }

    #[test]
    fn materializing_empties_the_body_of_its_fields() {
        let mut f = fields(b"X-Id: 7\r\n", &[("X-Id", "7")]);
        f.set_content_length(None);
        let body = crate::body::full(Bytes::new()).with_fields(Some(Box::new(f)));
        let mut response = Response::new(body);
        materialize_if_named(&mut response, &["alt-svc"]);
        assert!(response.body().fields().is_some(), "not named: kept");
        materialize_if_named(&mut response, &["x-id"]);
        assert!(response.body().fields().is_none());
        assert_eq!(response.headers()["x-id"], "7");
        assert!(response.headers().get(header::CONTENT_LENGTH).is_none());
    }
}
