//! The access log (the `finish` phase's log line): one line per finished request, filtered as
//! `tracing` target [`TARGET`] at info level and written through the binary's [`Sink`] (or as a
//! `tracing` event when none is set), emitted from [`crate::server`] for every route (invocations,
//! proxied management and key calls, health, errors, CORS preflights). Its message is
//! `request key=value …` in a fixed order, formatted in one pass (cheaper than a dozen structured
//! fields; values never contain spaces, so the line splits on them).
//!
//! The line is written when the response body ends (or fails, or the client goes away before the
//! end), so it carries the whole latency and the bytes sent. Nothing is captured, allocated or
//! wrapped when `dataplane.access-log` is off or the `access` target is filtered out.
//!
//! Keys, in order: `method`, `path` (no query: query values may carry secrets), `protocol`
//! (`h1`|`h2`|`h3`), `status`, `latency_us` (request head to the end of the response body, in
//! µs), `ttfb_us` (to the response head), `request_id` (`NVCF-REQID` when the answer has one),
//! `function_id` and `version_id` (the version the call was routed to; as the request names them
//! when it never got that far), `bytes_received` (the request's `Content-Length`; these four only
//! when known), `bytes_sent` (response body bytes handed to the listener),
//! `client` (peer address), and `outcome` (`complete`, `aborted`: the client went away first,
//! `error`: the upstream body failed).

use std::cell::{Cell, RefCell};
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::OnceLock;
use std::task::{Context, Poll};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use http::{HeaderValue, Method, Request, Response, StatusCode, Version};
use http_body::{Body as HttpBody, Frame, SizeHint};

use crate::body::{Body, BoxError};
use crate::fields::{Fielded, WireFields};
use crate::invoke::finish::Named;

/// The `tracing` target of access lines (filter with e.g. `RUST_LOG=info,access=off`).
pub const TARGET: &str = "access";

/// True when an access line would be written: the callsite check, done once per request, or
/// once per process when a [`Sink`] is set: the binary sets one only after installing its
/// subscriber, whose filter never changes (the check went through the dispatcher and the filter's
/// directives, about 100 instructions a call).
pub(crate) fn enabled() -> bool {
    if SINK.get().is_some() {
        static ENABLED: OnceLock<bool> = OnceLock::new();
        return *ENABLED.get_or_init(|| tracing::enabled!(target: "access", tracing::Level::INFO));
    }
    tracing::enabled!(target: "access", tracing::Level::INFO)
}

/// A request's access line from its arrival: what is known then, the rest filled in by
/// [`attach`]. Boxed once, here: it travels with the call and then inside the response body, and
/// a pointer moves cheaper than its 300-odd bytes at every layer.
#[derive(Debug)]
pub(crate) struct Entry(Box<Line>);

/// What is known about a request when it arrives.
#[derive(Debug)]
struct Arrival {
    start: Instant,
    method: Method,
    /// The request's URI (its bytes shared, not copied); the line takes only its path.
    uri: http::Uri,
    protocol: &'static str,
    client: SocketAddr,
    bytes_received: Option<u64>,
    /// What the line names, once [`attach`] knows it.
    named: Option<Named>,
}

impl Entry {
    /// Captures `req`, which arrived at `start`. The function it names comes later, from
    /// whatever resolved its target ([`attach`]).
    pub(crate) fn new<B: Fielded>(start: Instant, req: &Request<B>, client: SocketAddr) -> Self {
        Self(Box::new(Line {
            arrival: Arrival::new(start, req, client),
            status: StatusCode::OK,
            request_id: None,
            ttfb: Duration::ZERO,
        }))
    }
}

impl Arrival {
    fn new<B: Fielded>(start: Instant, req: &Request<B>, client: SocketAddr) -> Self {
        Self {
            start,
            method: req.method().clone(),
            uri: req.uri().clone(),
            protocol: protocol(req.version()),
            client,
            bytes_received: crate::headers::RequestHeaders::of(req).content_length(),
            named: None,
        }
    }
}

/// The access log's name of a protocol version.
fn protocol(version: Version) -> &'static str {
    match version {
        Version::HTTP_3 => "h3",
        Version::HTTP_2 => "h2",
        _ => "h1",
    }
}

/// The arrival plus what the response head said.
#[derive(Debug)]
struct Line {
    arrival: Arrival,
    status: StatusCode,
    request_id: Option<HeaderValue>,
    ttfb: Duration,
}

/// Hands `response` back with its body wrapped so that the access line of `entry` is written when
/// the body ends; unchanged when there is no entry (access log off). `named` is the function (and
/// version) an invocation named or was served by; `ttfb` the time from the request's arrival to
/// this response head (the caller's reading, which its metrics share).
pub(crate) fn attach(
    entry: Option<Entry>,
    response: Response<Body>,
    named: Option<Named>,
    ttfb: Duration,
) -> Response<Body> {
    let Some(Entry(mut line)) = entry else {
        return response;
    };
    let (parts, inner) = response.into_parts();
    line.arrival.named = named;
    line.ttfb = ttfb;
    line.status = parts.status;
    line.request_id = match inner.fields().and_then(WireFields::request_id) {
        Some(id) => Some(id.clone()),
        None => crate::headers::find(&parts.headers, &crate::headers::NVCF_REQID).cloned(),
    };
    Response::from_parts(
        parts,
        Body::wrapping(inner, |inner| Logged::new(inner, line)),
    )
}

/// A response body that counts what it hands out and writes the access line at its end.
#[derive(Debug)]
struct Logged {
    inner: Body,
    /// `None` once the line is written.
    line: Option<Box<Line>>,
    sent: u64,
}

impl Logged {
    fn new(inner: Body, line: Box<Line>) -> Self {
        let mut logged = Self {
            inner,
            line: Some(line),
            sent: 0,
        };
        if logged.inner.is_end_stream() {
            logged.finish("complete");
        }
        logged
    }

    fn finish(&mut self, outcome: &'static str) {
        if let Some(line) = self.line.take() {
            emit(&line, self.sent, outcome);
        }
    }
}

impl HttpBody for Logged {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let polled = Pin::new(&mut self.inner).poll_frame(cx);
        match &polled {
            Poll::Ready(None) => self.finish("complete"),
            Poll::Ready(Some(Err(_))) => self.finish("error"),
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(data) = frame.data_ref() {
                    self.sent += data.len() as u64;
                }
                if self.inner.is_end_stream() {
                    self.finish("complete");
                }
            }
            Poll::Pending => {}
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

impl Drop for Logged {
    fn drop(&mut self) {
        // Dropped before its end: the client went away (or the connection broke).
        self.finish("aborted");
    }
}

/// Whole microseconds: integers format far cheaper than floats, and read as well.
fn micros(d: Duration) -> u64 {
    u64::try_from(d.as_micros()).unwrap_or(u64::MAX)
}

/// One access line's fields in a fixed `key=value` layout, formatted in one pass: a single
/// `Display` message costs a fraction of a dozen separately visited, escaped `tracing` fields (the
/// profile put the structured form at 8% of the gateway's CPU).
struct Fields<'a> {
    line: &'a Line,
    /// Taken once, so that every rendering of the line says the same.
    latency: Duration,
    sent: u64,
    outcome: &'static str,
}

impl Fields<'_> {
    /// Appends the line's fields to `out`: straight pushes, integers through `itoa`, UUIDs and an
    /// IPv4 peer encoded on the stack; no `fmt` machinery on the usual path.
    fn render(&self, out: &mut Vec<u8>) {
        let (line, e) = (self.line, &self.line.arrival);
        let mut ints = itoa::Buffer::new();
        let mut int = |out: &mut Vec<u8>, key: &str, n: u64| {
            put(out, key);
            put(out, ints.format(n));
        };
        put(out, "method=");
        put(out, e.method.as_str());
        put(out, " path=");
        put(out, e.uri.path());
        put(out, " protocol=");
        put(out, e.protocol);
        int(out, " status=", u64::from(line.status.as_u16()));
        int(out, " latency_us=", micros(self.latency));
        int(out, " ttfb_us=", micros(line.ttfb));
        if let Some(id) = line.request_id.as_ref().and_then(|v| v.to_str().ok()) {
            put(out, " request_id=");
            put(out, id);
        }
        if let Some(id) = e.named.map(|n| n.function_id) {
            put(out, " function_id=");
            push_id(out, 0, id);
        }
        if let Some(id) = e.named.and_then(|n| n.version_id) {
            put(out, " version_id=");
            push_id(out, 1, id);
        }
        if let Some(n) = e.bytes_received {
            int(out, " bytes_received=", n);
        }
        int(out, " bytes_sent=", self.sent);
        put(out, " client=");
        match e.client {
            SocketAddr::V4(a) => {
                let [a0, a1, a2, a3] = a.ip().octets();
                for (i, octet) in [a0, a1, a2, a3].into_iter().enumerate() {
                    if i > 0 {
                        out.push(b'.');
                    }
                    put(out, ints.format(octet));
                }
                out.push(b':');
                put(out, ints.format(a.port()));
            }
            SocketAddr::V6(a) => {
                use std::io::Write;
                // Writing to a `Vec` cannot fail.
                let _ = write!(out, "{a}");
            }
        }
        put(out, " outcome=");
        put(out, self.outcome);
    }
}

/// Appends `text` to a line being built.
fn put(out: &mut Vec<u8>, text: &str) {
    out.extend_from_slice(text.as_bytes());
}

thread_local! {
    /// The last function id (0) and version id (1) this thread's lines named, with their text: a
    /// thread's consecutive lines mostly name the same function, and comparing an id costs less
    /// than encoding it.
    static LAST_IDS: RefCell<[(uuid::Uuid, String); 2]> = RefCell::new(
        [(); 2].map(|()| (uuid::Uuid::nil(), uuid::Uuid::nil().to_string())),
    );
}

/// Appends `id` hyphenated, from the thread's last text for `slot` when it is the same id.
fn push_id(out: &mut Vec<u8>, slot: usize, id: uuid::Uuid) {
    let remembered = LAST_IDS.try_with(|last| {
        let mut last = last.borrow_mut();
        let (known, text) = &mut last[slot];
        if *known != id {
            *known = id;
            text.clear();
            text.push_str(
                id.hyphenated()
                    .encode_lower(&mut uuid::Uuid::encode_buffer()),
            );
        }
        put(out, text);
    });
    // A line written while the thread ends, after its locals are gone: encoded on the stack.
    if remembered.is_err() {
        put(
            out,
            id.hyphenated()
                .encode_lower(&mut uuid::Uuid::encode_buffer()),
        );
    }
}

impl std::fmt::Display for Fields<'_> {
    /// The `tracing` path (no sink set): the same text as [`Fields::render`].
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut out = Vec::with_capacity(320);
        self.render(&mut out);
        // Only `str`s were put in.
        f.write_str(&String::from_utf8_lossy(&out))
    }
}

/// Where access lines go instead of `tracing`'s formatter, once the binary has set one (its
/// batched log buffer): the line is the same, without the per-character escaping and the
/// event dispatch (about 3% of the gateway's CPU in the profile).
pub trait Sink: Send + Sync {
    /// Appends one whole line, which `write` puts at the end of the buffer it is given (the
    /// logging thread's own: a line is formatted where it is batched, not copied there).
    fn append_with(&self, write: &mut dyn FnMut(&mut Vec<u8>));
}

static SINK: OnceLock<Box<dyn Sink>> = OnceLock::new();

/// Sends every later access line to `sink`, formatted as `tracing`'s full format writes it
/// without target and colours. Whether a line is written still follows the `access` filter of
/// the global subscriber, read once from then on: set the subscriber first. False when a sink was
/// already set (it stays).
pub fn set_sink(sink: Box<dyn Sink>) -> bool {
    SINK.set(sink).is_ok()
}

fn emit(line: &Line, sent: u64, outcome: &'static str) {
    // One clock reading for the latency and the line's time.
    let now = Instant::now();
    let fields = Fields {
        line,
        latency: now.saturating_duration_since(line.arrival.start),
        sent,
        outcome,
    };
    if let Some(sink) = SINK.get() {
        let wall = crate::clock::wall_at(now);
        sink.append_with(&mut |buf| write_line(buf, wall, &fields));
        return;
    }
    tracing::info!(target: "access", "request {}", fields);
}

/// One line as the binary's `tracing` subscriber would write it: RFC 3339 time in µs, the level
/// padded to five, the message.
fn write_line(buf: &mut Vec<u8>, now: SystemTime, fields: &Fields<'_>) {
    push_rfc3339_micros(buf, now);
    put(buf, "  INFO request ");
    fields.render(buf);
    buf.push(b'\n');
}

thread_local! {
    /// The calendar part of the last second a line was stamped in (`2026-11-26T10:49:22.`):
    /// formatted once a second, not once a line.
    static SECOND: Cell<(u64, [u8; 20])> = const { Cell::new((u64::MAX, [0; 20])) };
}

/// `now` as RFC 3339 UTC with microseconds, exactly as `humantime::format_rfc3339_micros`.
fn push_rfc3339_micros(buf: &mut Vec<u8>, now: SystemTime) {
    let since = now.duration_since(UNIX_EPOCH).unwrap_or_default();
    let secs = since.as_secs();
    let (cached, mut prefix) = SECOND.get();
    if cached != secs {
        // `YYYY-MM-DDTHH:MM:SSZ` (years past 9999 never reach a log line).
        let whole = humantime::format_rfc3339_seconds(UNIX_EPOCH + Duration::from_secs(secs));
        let text = whole.to_string();
        let Some(calendar) = text.as_bytes().get(..19) else {
            put(buf, &humantime::format_rfc3339_micros(now).to_string());
            return;
        };
        prefix[..19].copy_from_slice(calendar);
        prefix[19] = b'.';
        SECOND.set((secs, prefix));
    }
    buf.extend_from_slice(&prefix);
    let micros = since.subsec_micros();
    let mut digits = itoa::Buffer::new();
    let text = digits.format(micros);
    for _ in text.len()..6 {
        buf.push(b'0');
    }
    put(buf, text);
    buf.push(b'Z');
}

#[cfg(test)]
mod tests {
    use std::io::Write;
    use std::sync::{Arc, Mutex};

    use super::*;
    use crate::classify::InvocationKind;
    use http_body_util::BodyExt;

    /// A `MakeWriter` collecting everything the subscriber writes.
    #[derive(Clone, Default)]
    struct Buffer(Arc<Mutex<Vec<u8>>>);

    impl Write for Buffer {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for Buffer {
        type Writer = Self;
        fn make_writer(&'a self) -> Self {
            self.clone()
        }
    }

    impl Buffer {
        fn text(&self) -> String {
            String::from_utf8_lossy(
                &self
                    .0
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner),
            )
            .into_owned()
        }
    }

    fn subscriber(buffer: &Buffer, filter: &str) -> impl tracing::Subscriber + Send + Sync {
        tracing_subscriber::fmt()
            .with_writer(buffer.clone())
            .with_ansi(false)
            .with_env_filter(tracing_subscriber::EnvFilter::new(filter))
            .finish()
    }

    const FID: &str = "0f6d3c8e-9a3b-4c1e-8d2f-1a2b3c4d5e6f";
    const REQID: &str = "11111111-2222-4333-8444-555555555555";

    fn request() -> Request<()> {
        Request::post(format!("/v2/nvcf/pexec/functions/{FID}?secret=hunter2"))
            .version(Version::HTTP_2)
            .header("content-length", "5")
            .body(())
            .expect("request")
    }

    fn response() -> Response<Body> {
        let mut r = Response::new(crate::body::full(Bytes::from_static(b"hello world")));
        r.headers_mut()
            .insert("nvcf-reqid", HeaderValue::from_static(REQID));
        r
    }

    #[tokio::test]
    async fn one_line_with_every_field_when_the_body_ends() {
        let buffer = Buffer::default();
        let _guard = tracing::subscriber::set_default(subscriber(&buffer, "access=info"));
        assert!(enabled());
        let client: SocketAddr = "127.0.0.1:4242".parse().expect("addr");
        let req = request();
        let entry = Entry::new(Instant::now(), &req, client);
        // What the invocation path passes on: the target its request names.
        let named = crate::invoke::target::resolve(
            InvocationKind::Path,
            Some("invocation.gw"),
            req.uri().path(),
            crate::headers::RequestHeaders::of(&req),
        )
        .expect("target")
        .named();
        let response = attach(Some(entry), response(), named, Duration::from_micros(3));
        assert!(buffer.text().is_empty(), "nothing before the body ends");
        let body = response.into_body().collect().await.expect("body");
        assert_eq!(&body.to_bytes()[..], b"hello world");
        let text = buffer.text();
        assert_eq!(text.lines().count(), 1, "{text}");
        for field in [
            " access: request ",
            "method=POST",
            &format!("path=/v2/nvcf/pexec/functions/{FID} "),
            "protocol=h2",
            "status=200",
            "latency_us=",
            "ttfb_us=3 ",
            &format!("request_id={REQID}"),
            &format!("function_id={FID}"),
            "bytes_received=5",
            "bytes_sent=11",
            "client=127.0.0.1:4242",
            "outcome=complete",
        ] {
            assert!(text.contains(field), "{field} missing from {text}");
        }
        assert!(!text.contains("hunter2"), "query leaked: {text}");
        assert!(!text.contains("version_id"), "{text}");
    }

    #[tokio::test]
    async fn a_body_dropped_early_is_logged_as_aborted() {
        let buffer = Buffer::default();
        let _guard = tracing::subscriber::set_default(subscriber(&buffer, "access=info"));
        let req = Request::get("/health").body(()).expect("request");
        let entry = Entry::new(Instant::now(), &req, "[::1]:1".parse().expect("addr"));
        drop(attach(Some(entry), response(), None, Duration::ZERO));
        let text = buffer.text();
        assert!(text.contains("outcome=aborted"), "{text}");
        assert!(text.contains("bytes_sent=0"), "{text}");
        assert!(text.contains("protocol=h1"), "{text}");
        assert!(!text.contains("function_id"), "{text}");
    }

    #[tokio::test]
    async fn the_routed_version_and_any_peer_address_are_written() {
        let buffer = Buffer::default();
        let _guard = tracing::subscriber::set_default(subscriber(&buffer, "access=info"));
        let vid = uuid::Uuid::new_v4();
        for client in ["10.20.30.40:65535", "0.0.0.0:0", "[2001:db8::7]:8443"] {
            let client: SocketAddr = client.parse().expect("addr");
            let req = request();
            let entry = Entry::new(Instant::now(), &req, client);
            let routed = Named {
                function_id: FID.parse().expect("fid"),
                version_id: Some(vid),
            };
            let response = attach(Some(entry), response(), Some(routed), Duration::ZERO);
            response.into_body().collect().await.expect("body");
            let text = buffer.text();
            let last = text.lines().last().unwrap_or_default();
            assert!(last.contains(&format!(" client={client} ")), "{last}");
            assert!(last.contains(&format!(" version_id={vid} ")), "{last}");
        }
    }

    #[test]
    fn remembered_ids_follow_the_lines() {
        let (a, b) = (uuid::Uuid::new_v4(), uuid::Uuid::new_v4());
        for (slot, id) in [
            (0, a),
            (0, b),
            (0, a),
            (1, b),
            (1, b),
            (0, uuid::Uuid::nil()),
        ] {
            let mut out = Vec::new();
            super::push_id(&mut out, slot, id);
            assert_eq!(out, id.to_string().into_bytes());
        }
    }

    #[test]
    fn the_sink_line_is_what_tracing_would_write() {
        let buffer = Buffer::default();
        let production = tracing_subscriber::fmt()
            .with_writer(buffer.clone())
            .with_ansi(false)
            .with_target(false)
            .with_env_filter(tracing_subscriber::EnvFilter::new("access=info"))
            .finish();
        let _guard = tracing::subscriber::set_default(production);
        let req = request();
        let line = Line {
            arrival: Arrival::new(Instant::now(), &req, "10.0.0.1:5".parse().expect("addr")),
            status: StatusCode::OK,
            request_id: Some(HeaderValue::from_static(REQID)),
            ttfb: Duration::from_micros(7),
        };
        let fields = Fields {
            line: &line,
            latency: Duration::from_micros(1234),
            sent: 11,
            outcome: "complete",
        };
        tracing::info!(target: "access", "request {}", fields);
        let mut direct = Vec::new();
        write_line(&mut direct, SystemTime::now(), &fields);
        let direct = String::from_utf8(direct).expect("utf-8");
        let traced = buffer.text();
        // Equal after the timestamps (which differ by the time between the two).
        let (t1, rest1) = traced.split_once(' ').expect("timestamp");
        let (t2, rest2) = direct.split_once(' ').expect("timestamp");
        assert_eq!(rest1, rest2);
        assert_eq!(t1.len(), t2.len(), "{t1} vs {t2}");
        assert!(t2.ends_with('Z') && t2.contains('T'), "{t2}");
        assert!(direct.contains(" latency_us=1234 ttfb_us=7 "), "{direct}");
    }

    #[test]
    fn timestamps_match_humantime_across_seconds() {
        let base = UNIX_EPOCH + Duration::from_secs(1_795_000_000);
        for offset_us in [
            0u64,
            1,
            999,
            1_000,
            999_999,
            1_000_000,
            1_000_001,
            86_400_000_123,
        ] {
            let t = base + Duration::from_micros(offset_us);
            let mut ours = Vec::new();
            push_rfc3339_micros(&mut ours, t);
            assert_eq!(
                ours,
                humantime::format_rfc3339_micros(t).to_string().into_bytes()
            );
        }
        let mut now = Vec::new();
        let t = SystemTime::now();
        push_rfc3339_micros(&mut now, t);
        assert_eq!(
            now,
            humantime::format_rfc3339_micros(t).to_string().into_bytes()
        );
    }

    #[test]
    fn filtered_out_means_disabled() {
        let buffer = Buffer::default();
        let _guard = tracing::subscriber::set_default(subscriber(&buffer, "info,access=off"));
        assert!(!enabled());
        // Without an entry the response is handed back as is and nothing is written.
        let r = attach(None, response(), None, Duration::ZERO);
        assert_eq!(r.headers()["nvcf-reqid"], REQID);
        assert!(buffer.text().is_empty());
    }
}
