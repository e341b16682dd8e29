//! The `dispatch` step: pick a worker (power of two choices on outstanding requests), and build the
//! request it gets — the URI on the worker's listener, the worker-owned `NVCF-*` headers set by
//! the gateway (client copies dropped), hop-by-hop headers and the caller's `Authorization`
//! removed. The shared HTTP/2 client lives here too: h2c with prior knowledge, one multiplexed,
//! pooled connection per worker authority.

// foldhash, not SipHash: looked up on every call, keyed by control-plane ids and worker
// addresses (seeded per process).
use foldhash::HashMap;
use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, LazyLock, Mutex, PoisonError};
use std::time::Duration;

use bytes::{BufMut, BytesMut};
use futures_util::FutureExt;
use futures_util::future::Either;
use http::Response;
use http::header::{HeaderMap, HeaderName, HeaderValue};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioTimer};

use hyper::body::Incoming;

use crate::body::{Body, BoxError, ClientRequest, RequestBody};
use crate::config::WorkerProtocol;
use crate::fields::name_is;
use crate::headers::put_line;
use crate::invoke::h1;
use crate::invoke::respond::{DEFAULT_POLL, SSE_POLL};
use crate::invoke::upstream::CountingConnector;
use crate::routing::{RouteHeaders, VersionRoute, WorkerTarget};

/// Headers only the gateway/worker may set (nvcf-api.md §2.5, `workerOwnedHeaders`): a client's
/// copies never reach the container.
pub(crate) const WORKER_OWNED: &[&str] = &[
    "nvcf-reqid",
    "nvcf-sub",
    "nvcf-ncaid",
    "nvcf-function-name",
    "nvcf-function-id",
    "nvcf-function-version-id",
    "nvcf-asset-dir",
    "nvcf-large-output-dir",
    "nvcf-max-response-size-bytes",
    "nvcf-nspectid",
    "nvcf-backend",
    "nvcf-instancetype",
    "nvcf-region",
    "nvcf-env",
    "nvcf-function-asset-ids",
    "nvcf-invocation-region",
    "nvcf-poll-seconds",
];

/// Set to `true` on host-routed and `function-id` (TLB) passthrough calls (nvcf-api.md §2.5: "The
/// TLB path also injects nvcf-feature-disable-worker-compatibility: true"); never on pexec/exec.
/// A client's copy is never forwarded ([`Forwarded`]) either way; [`NvcfHeaders`] adds the
/// gateway's on passthrough calls (every `HostRouted`/`FunctionIdHeader` request resolves to a
/// passthrough target, every `Path` request to pexec, exec or a status poll).
pub(crate) const DISABLE_WORKER_COMPATIBILITY: HeaderName =
    HeaderName::from_static("nvcf-feature-disable-worker-compatibility");

/// Connects to a worker that do not complete in this long fail as 502 (workers are on the same
/// host or network; a black-holed address should not eat the whole poll window).
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// Idle worker connections are closed after this long; workers come and go with deployments.
const POOL_IDLE_TIMEOUT: Duration = Duration::from_secs(90);
/// h2 keep-alive PINGs detect a dead worker connection between invocations and keep NATs open
/// during long invocations.
const KEEP_ALIVE_INTERVAL: Duration = Duration::from_secs(20);
const KEEP_ALIVE_TIMEOUT: Duration = Duration::from_secs(10);

/// Per-stream receive window towards a worker (hyper's default is 2 MiB): bounds the response
/// bytes buffered for a client that stopped reading. Loopback and LAN round trips are far below
/// what 256 KiB sustains at full speed.
const STREAM_WINDOW: u32 = 256 * 1024;
/// Request body bytes queued per stream before the client is made to wait.
const SEND_BUFFER: usize = 256 * 1024;
/// Receive window of a whole worker connection, all streams together.
const CONNECTION_WINDOW: u32 = 16 * 1024 * 1024;

/// The client every invocation uses (`dataplane.worker-protocol`).
#[derive(Debug)]
pub(crate) enum WorkerClient {
    /// HTTP/2 only with prior knowledge (h2c): concurrent invocations of one worker multiplex
    /// onto one pooled connection, driven by its own task.
    H2(Box<Client<CountingConnector, Body>>),
    /// HTTP/1.1 keep-alive connections, one per invocation in flight, as nginx does upstream,
    /// driven on the calling task; a cancelled invocation closes its connection.
    Http1(Arc<h1::Client>),
}

/// A worker's response body, from either client: the h2 client's on the left, the HTTP/1.1
/// client's on the right.
///
/// The HTTP/1.1 body is boxed: it holds the worker connection (about 240 bytes), and the response
/// moves through several layers on its way to the client, each a copy of the whole value.
pub(crate) type WorkerBody = http_body_util::Either<Incoming, Box<h1::ResponseBody>>;

impl WorkerClient {
    /// Builds the shared worker client for a gateway with `serving_threads` serving threads
    /// (the HTTP/1.1 client keeps idle connections per thread). Needs a Tokio runtime.
    pub(crate) fn new(protocol: WorkerProtocol, serving_threads: usize) -> Self {
        match protocol {
            WorkerProtocol::H2 => Self::H2(Box::new(h2_client())),
            WorkerProtocol::Http1 => Self::Http1(h1::Client::new(serving_threads)),
        }
    }

    /// Sends `request`, with the client's headers as they came (what does not go to the worker
    /// is left out here: [`Forwarded`]) and the gateway's `nvcf` headers, to the worker; answers
    /// the response head, without hop-by-hop headers, the body streaming. (The HTTP/1.1 client
    /// leaves them out as it parses the head; the h2 client's answer can still carry
    /// `proxy-authenticate`, `trailer` and the like, which h2 does not reject, and they are
    /// removed here.)
    pub(crate) fn request(
        &self,
        request: ClientRequest,
        nvcf: NvcfHeaders<'_>,
    ) -> impl Future<Output = Result<Response<WorkerBody>, BoxError>> + Send + 'static + use<> {
        match self {
            Self::H2(client) => Either::Left(
                {
                    let mut request = (*request).map(RequestBody::into_body);
                    crate::fields::materialize_request(&mut request);
                    prepare_headers(request.headers_mut());
                    nvcf.insert_into(request.headers_mut());
                    client.request(request)
                }
                .map(|r| {
                    r.map(|mut response| {
                        crate::headers::remove_hop_by_hop(response.headers_mut());
                        response.map(WorkerBody::Left)
                    })
                    .map_err(Into::into)
                }),
            ),
            Self::Http1(client) => Either::Right(
                client
                    .request(request, Some(nvcf))
                    .map(|r| r.map(|response| response.map(WorkerBody::Right))),
            ),
        }
    }
}

fn h2_client() -> Client<CountingConnector, Body> {
    let mut connector = HttpConnector::new();
    connector.set_nodelay(true);
    connector.set_connect_timeout(Some(CONNECT_TIMEOUT));
    Client::builder(TokioExecutor::new())
        .timer(TokioTimer::new())
        .pool_timer(TokioTimer::new())
        .pool_idle_timeout(POOL_IDLE_TIMEOUT)
        .http2_only(true)
        .http2_keep_alive_interval(KEEP_ALIVE_INTERVAL)
        .http2_keep_alive_timeout(KEEP_ALIVE_TIMEOUT)
        // What one call can make the gateway hold when its client stops reading: the worker
        // may run this far ahead on a response, and we queue this much of a request body.
        .http2_initial_stream_window_size(STREAM_WINDOW)
        .http2_max_send_buf_size(SEND_BUFFER)
        // Shared by every call to the worker: room for many streams in flight at once.
        .http2_initial_connection_window_size(CONNECTION_WINDOW)
        .build(CountingConnector::new(connector))
}

/// The HTTP version of a worker request.
pub(crate) fn worker_version(protocol: WorkerProtocol) -> http::Version {
    match protocol {
        WorkerProtocol::H2 => http::Version::HTTP_2,
        WorkerProtocol::Http1 => http::Version::HTTP_11,
    }
}

/// Outstanding requests per worker, for power-of-two-choices.
#[derive(Debug, Default)]
pub(crate) struct Balancer {
    outstanding: Mutex<HashMap<String, Arc<AtomicU64>>>,
}

/// One outstanding request on a worker; dropping it ends it.
#[derive(Debug)]
pub(crate) struct Outstanding(Arc<AtomicU64>);

impl Drop for Outstanding {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

impl Balancer {
    fn counter(&self, worker_id: &str) -> Arc<AtomicU64> {
        let mut map = self
            .outstanding
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if let Some(c) = map.get(worker_id) {
            return Arc::clone(c);
        }
        let c = Arc::new(AtomicU64::new(0));
        map.insert(worker_id.to_owned(), Arc::clone(&c));
        c
    }

    /// Picks one of `targets`: two distinct candidates drawn from `random`, the one with fewer
    /// outstanding requests wins (the first on a tie). `None` when there is no target.
    pub(crate) fn pick(
        &self,
        targets: &[WorkerTarget],
        random: u64,
    ) -> Option<(usize, Outstanding)> {
        let n = targets.len() as u64;
        let chosen = match n {
            0 => return None,
            1 => 0,
            _ => {
                let a = random % n;
                // A second candidate distinct from the first.
                let b = (a + 1 + (random / n) % (n - 1)) % n;
                let load = |i: u64| {
                    targets
                        .get(usize::try_from(i).unwrap_or(0))
                        .map_or(u64::MAX, |t| {
                            self.counter(&t.worker_id).load(Ordering::Acquire)
                        })
                };
                if load(b) < load(a) { b } else { a }
            }
        };
        let index = usize::try_from(chosen).unwrap_or(0);
        let counter = self.counter(&targets.get(index)?.worker_id);
        counter.fetch_add(1, Ordering::AcqRel);
        Some((index, Outstanding(counter)))
    }
}

/// What the gateway tells the worker about one invocation: the version and the worker-owned
/// `NVCF-*` headers only the gateway knows (nvcf-api.md §2.5: the request id, the invocation
/// region, the poll budget; the ones that describe the function the worker adds from its feed).
/// The HTTP/1.1 client writes them straight into the request head, the version as a line
/// prebuilt per route; the HTTP/2 client inserts them into the request's map.
/// Client copies of these names are not forwarded ([`Forwarded`]), so neither form duplicates
/// one.
///
/// Borrowed: both clients use them before their future's first await, so nothing is cloned
/// into a future's state.
#[derive(Debug, Clone, Copy)]
pub(crate) struct NvcfHeaders<'a> {
    route: &'a RouteHeaders,
    /// The request id, formatted once per request.
    request_id: &'a HeaderValue,
    region: &'a Region,
    /// The budget left for the container, in seconds.
    poll_seconds: u64,
    /// A passthrough call: [`DISABLE_WORKER_COMPATIBILITY`] is set.
    passthrough: bool,
}

impl<'a> NvcfHeaders<'a> {
    pub(crate) fn new(
        route: &'a VersionRoute,
        request_id: &'a HeaderValue,
        region: &'a Region,
        poll_seconds: u64,
        passthrough: bool,
    ) -> Self {
        Self {
            route: &route.headers,
            request_id,
            region,
            poll_seconds,
            passthrough,
        }
    }

    /// Adds them to a request's map (the HTTP/2 client's form).
    pub(crate) fn insert_into(&self, headers: &mut HeaderMap) {
        let route = self.route;
        // Room for the five below at once, rather than a rehash partway through.
        headers.reserve(5);
        headers.insert(crate::headers::NVCF_REQID, self.request_id.clone());
        headers.insert(NVCF_FUNCTION_VERSION_ID, route.version_id.clone());
        headers.insert(NVCF_POLL_SECONDS, poll_value(self.poll_seconds));
        headers.insert(NVCF_INVOCATION_REGION, self.region.value.clone());
        if self.passthrough {
            headers.insert(DISABLE_WORKER_COMPATIBILITY, TRUE);
        }
    }

    /// Writes them as HTTP/1.1 header lines (the HTTP/1.1 client's form): the route's prebuilt
    /// block, the gateway's region line, the usual poll budgets and the passthrough flag as
    /// lines built once, then the request id. No header map is touched, and a line costs one or
    /// three copies rather than four.
    pub(crate) fn encode(&self, buf: &mut BytesMut) {
        static LINES: LazyLock<NvcfLines> = LazyLock::new(NvcfLines::new);
        let lines = &*LINES;
        buf.put_slice(&self.route.block);
        buf.put_slice(&self.region.line);
        match self.poll_seconds {
            DEFAULT_POLL => buf.put_slice(&lines.default_poll),
            SSE_POLL => buf.put_slice(&lines.sse_poll),
            n => put_line(
                buf,
                NVCF_POLL_SECONDS.as_str().as_bytes(),
                itoa::Buffer::new().format(n).as_bytes(),
            ),
        }
        if self.passthrough {
            buf.put_slice(&lines.compatibility);
        }
        buf.put_slice(&lines.reqid);
        buf.put_slice(self.request_id.as_bytes());
        buf.put_slice(b"\r\n");
    }
}

/// The gateway's lines of [`NvcfHeaders::encode`] that are the same on every call.
struct NvcfLines {
    default_poll: Box<[u8]>,
    sse_poll: Box<[u8]>,
    compatibility: Box<[u8]>,
    /// `nvcf-reqid: `, the start of a line.
    reqid: Box<[u8]>,
}

impl NvcfLines {
    fn new() -> Self {
        let poll = |seconds: u64| {
            crate::headers::line(
                NVCF_POLL_SECONDS.as_str(),
                itoa::Buffer::new().format(seconds).as_bytes(),
            )
        };
        Self {
            default_poll: poll(DEFAULT_POLL),
            sse_poll: poll(SSE_POLL),
            compatibility: crate::headers::line(
                DISABLE_WORKER_COMPATIBILITY.as_str(),
                TRUE.as_bytes(),
            ),
            reqid: crate::headers::line_start(crate::headers::NVCF_REQID.as_str()),
        }
    }
}

/// The gateway's `NVCF-INVOCATION-REGION`, as a value and as a header line.
#[derive(Debug)]
pub(crate) struct Region {
    value: HeaderValue,
    line: Box<[u8]>,
}

impl Region {
    pub(crate) fn new(value: HeaderValue) -> Self {
        Self {
            line: crate::headers::line(NVCF_INVOCATION_REGION.as_str(), value.as_bytes()),
            value,
        }
    }
}

const TRUE: HeaderValue = HeaderValue::from_static("true");

/// True for a client header that must not reach the worker (besides the hop-by-hop ones): the caller's
/// credential (nvcf-api.md §2.1), `Host` (the worker request carries its authority in the URI),
/// `Expect` (answered by the gateway's own server; it is about the client's hop), the passthrough
/// selectors (the gateway's business), and client copies of worker-owned `NVCF-*` headers and of
/// [`DISABLE_WORKER_COMPATIBILITY`] (the gateway sets it). `name` in any case.
pub(crate) fn not_forwarded(name: &[u8]) -> bool {
    // By length first: most names have none of these lengths.
    let known = match name.len() {
        4 => "host",
        6 => "expect",
        11 => crate::invoke::target::FUNCTION_ID_HEADER,
        13 => "authorization",
        19 => crate::invoke::target::FUNCTION_VERSION_ID_HEADER,
        _ => "",
    };
    (!known.is_empty() && name_is(name, known))
        || (name.len() > 5
            && name[..5].eq_ignore_ascii_case(b"nvcf-")
            && (WORKER_OWNED.iter().any(|known| name_is(name, known))
                || name_is(name, DISABLE_WORKER_COMPATIBILITY.as_str())))
}

/// Which of a client's request headers go on to the worker: neither the hop-by-hop ones
/// ([`model::headers::HopByHop`]) nor [`not_forwarded`]'s. A filter rather than a rewrite: the
/// HTTP/1.1 worker client writes the worker's head from the client's map and skips what this
/// refuses, where removing those headers first (usually `Host` and `Authorization`) cost about
/// 1,000 instructions a call in hashed removals; [`prepare_headers`] applies it to the map the h2
/// client sends.
pub(crate) struct Forwarded<'a> {
    hop_by_hop: model::headers::HopByHop<'a>,
}

impl<'a> Forwarded<'a> {
    pub(crate) fn new(headers: &'a HeaderMap) -> Self {
        Self {
            hop_by_hop: model::headers::HopByHop::of(headers),
        }
    }

    /// Whether a header of this name goes on to the worker.
    pub(crate) fn forwards(&self, name: &HeaderName) -> bool {
        !(self.hop_by_hop.contains(name) || not_forwarded(name.as_str().as_bytes()))
    }
}

/// Rewrites a client's request headers for the h2 worker client: one pass over what the client
/// sent finds what [`Forwarded`] refuses, rather than one hashed removal per name that might be
/// there. The gateway's own headers ([`NvcfHeaders`]) are added by the worker client.
pub(crate) fn prepare_headers(headers: &mut HeaderMap) {
    // Inline room for the usual few: no allocation per request.
    let dropped: smallvec::SmallVec<[HeaderName; 4]> = {
        let forwarded = Forwarded::new(headers);
        headers
            .keys()
            .filter(|name| !forwarded.forwards(name))
            .cloned()
            .collect()
    };
    for name in dropped {
        headers.remove(name);
    }
}

/// The poll budget as a header value; the usual windows (the pexec default and the SSE one) are
/// static rather than formatted per request.
fn poll_value(seconds: u64) -> HeaderValue {
    match seconds {
        DEFAULT_POLL => HeaderValue::from_static("60"),
        SSE_POLL => HeaderValue::from_static("1200"),
        n => HeaderValue::from(n),
    }
}

const NVCF_FUNCTION_VERSION_ID: HeaderName = HeaderName::from_static("nvcf-function-version-id");
const NVCF_POLL_SECONDS: HeaderName = HeaderName::from_static("nvcf-poll-seconds");
const NVCF_INVOCATION_REGION: HeaderName = HeaderName::from_static("nvcf-invocation-region");

#[cfg(test)]
mod tests {
    use super::*;
    use uuid::Uuid;

    /// A client's request headers, in order.
    fn header_map(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(*k, HeaderValue::from_static(v));
        }
        h
    }

    fn targets(n: usize) -> Vec<WorkerTarget> {
        (0..n)
            .map(|i| {
                WorkerTarget::new(format!("w{i}"), format!("http://127.0.0.1:{}", 9000 + i), 4)
            })
            .collect()
    }

    #[test]
    fn the_http1_head_leaves_out_what_prepare_headers_drops() {
        let mut h = header_map(&[
            ("authorization", "Bearer x"),
            ("host", "f.invocation.gw"),
            ("connection", "X-Hop, keep-alive"),
            ("x-hop", "1"),
            ("keep-alive", "timeout=5"),
            ("te", "trailers"),
            ("upgrade", "h2c"),
            ("expect", "100-continue"),
            ("function-id", "f"),
            ("nvcf-reqid", "forged"),
            ("nvcf-feature-disable-worker-compatibility", "false"),
            ("nvcf-custom", "kept"),
            ("x-custom", "kept"),
            ("content-type", "application/json"),
        ]);
        let forwarded = Forwarded::new(&h);
        let line = crate::invoke::h1::codec::RequestLine {
            method: &http::Method::POST,
            path_and_query: "/",
            authority: "127.0.0.1:9",
        };
        let head = crate::invoke::h1::codec::encode_request_head(
            line,
            None,
            &h,
            crate::invoke::h1::codec::Forwards {
                map: |name: &HeaderName| forwarded.forwards(name),
                fields: |name: &[u8]| !not_forwarded(name),
            },
            crate::invoke::h1::codec::RequestFraming::Empty,
            |_| {},
        );
        let text = String::from_utf8(head.to_vec()).expect("utf-8");
        let written: Vec<&str> = text
            .split("\r\n")
            .skip(2) // the request line and the worker's `host`
            .filter_map(|line| line.split_once(": ").map(|(name, _)| name))
            .filter(|name| *name != "content-length")
            .collect();
        drop(forwarded);
        prepare_headers(&mut h);
        let mut kept: Vec<&str> = h.keys().map(HeaderName::as_str).collect();
        kept.sort_unstable();
        assert_eq!(kept, ["content-type", "nvcf-custom", "x-custom"]);
        assert_eq!(written, ["nvcf-custom", "x-custom", "content-type"]);
    }

    #[test]
    fn what_is_not_forwarded_is_known_in_any_case() {
        for name in [
            &b"Authorization"[..],
            b"HOST",
            b"Expect",
            b"Function-Id",
            b"function-version-id",
            b"NVCF-ReqID",
            b"nvcf-feature-disable-worker-compatibility",
        ] {
            assert!(not_forwarded(name), "{}", String::from_utf8_lossy(name));
        }
        for name in [
            &b"hosts"[..],
            b"x-host",
            b"NVCF-Custom",
            b"nvcf-",
            b"content-type",
        ] {
            assert!(!not_forwarded(name), "{}", String::from_utf8_lossy(name));
        }
    }

    #[test]
    fn p2c_prefers_the_less_loaded_of_two() {
        let b = Balancer::default();
        assert!(b.pick(&[], 0).is_none());
        let t = targets(2);
        // random 0: candidates w0 then w1; tie → w0.
        let (i, g0) = b.pick(&t, 0).expect("pick");
        assert_eq!(i, 0);
        // w0 has one outstanding: w1 wins whichever comes first.
        let (i, g1) = b.pick(&t, 0).expect("pick");
        assert_eq!(i, 1);
        let (i, _g2) = b.pick(&t, 1).expect("pick");
        assert_eq!(i, 1, "tie goes to the first candidate (w1 for random 1)");
        drop((g0, g1));
        let one = targets(1);
        assert_eq!(b.pick(&one, 12345).expect("single").0, 0);
    }

    #[test]
    fn p2c_candidates_are_distinct_and_in_range() {
        let b = Balancer::default();
        let t = targets(5);
        for r in 0..200u64 {
            let (i, _g) = b.pick(&t, r).expect("pick");
            assert!(i < 5);
        }
    }

    #[test]
    fn poll_values_static_or_formatted() {
        for n in [0, 7, 60, 1200, 3600] {
            assert_eq!(poll_value(n), n.to_string().as_str());
        }
    }

    #[test]
    fn worker_compatibility_is_disabled_on_passthrough_only() {
        let route = crate::bench::route(Uuid::new_v4(), Uuid::new_v4(), "f", targets(1));
        let id = crate::headers::uuid_value(Uuid::new_v4());
        let region = Region::new(HeaderValue::from_static("local"));
        for passthrough in [true, false] {
            let mut h = HeaderMap::new();
            h.append(
                DISABLE_WORKER_COMPATIBILITY,
                HeaderValue::from_static("false"),
            );
            h.append(
                DISABLE_WORKER_COMPATIBILITY,
                HeaderValue::from_static("maybe"),
            );
            prepare_headers(&mut h);
            assert!(h.is_empty(), "a client's copies are dropped");
            let nvcf = NvcfHeaders::new(&route, &id, &region, 60, passthrough);
            nvcf.insert_into(&mut h);
            let values: Vec<_> = h.get_all(DISABLE_WORKER_COMPATIBILITY).iter().collect();
            let mut lines = BytesMut::new();
            nvcf.encode(&mut lines);
            let line = "nvcf-feature-disable-worker-compatibility: true\r\n";
            let text = String::from_utf8(lines.to_vec()).expect("utf-8");
            if passthrough {
                assert_eq!(values, ["true"]);
                assert_eq!(text.matches(line).count(), 1);
            } else {
                assert!(values.is_empty());
                assert!(!text.contains("compatibility"));
            }
        }
    }

    /// The h2 client's answers lose the hop-by-hop headers h2 lets through, as the HTTP/1.1
    /// client's do while it parses (`h1::codec`'s tests).
    #[tokio::test]
    async fn h2_answers_lose_hop_by_hop_headers() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("addr");
        tokio::spawn(async move {
            let (tcp, _) = listener.accept().await.expect("accept");
            let service = hyper::service::service_fn(|_req| async {
                http::Response::builder()
                    .header("proxy-authenticate", "Basic")
                    .header("trailer", "x-t")
                    .header("x-kept", "1")
                    .body(http_body_util::Full::new(bytes::Bytes::from_static(b"ok")))
            });
            let _ = hyper::server::conn::http2::Builder::new(TokioExecutor::new())
                .serve_connection(hyper_util::rt::TokioIo::new(tcp), service)
                .await;
        });
        let route = crate::bench::route(Uuid::new_v4(), Uuid::new_v4(), "f", targets(1));
        let id = crate::headers::request_id_value(Uuid::new_v4());
        let region = Region::new(HeaderValue::from_static("local"));
        let nvcf = NvcfHeaders::new(&route, &id, &region, 60, false);
        let request = http::Request::get(format!("http://{addr}/"))
            .body(crate::body::RequestBody::default())
            .expect("request");
        let response = WorkerClient::new(WorkerProtocol::H2, 0)
            .request(Box::new(request), nvcf)
            .await
            .expect("answer");
        let h = response.headers();
        assert!(h.get("proxy-authenticate").is_none() && h.get("trailer").is_none());
        assert_eq!(h["x-kept"], "1");
    }

    #[test]
    fn uri_and_headers() {
        let uri =
            |address: &str, path: &str| WorkerTarget::new("w".into(), address.into(), 1).uri(path);
        assert_eq!(
            uri("http://127.0.0.1:9000/", "/echo?a=b")
                .expect("uri")
                .to_string(),
            "http://127.0.0.1:9000/echo?a=b"
        );
        assert_eq!(uri("http://w:1", "infer").expect("uri").path(), "/infer");
        assert_eq!(
            uri("http://w:1/base/", "/infer?x")
                .expect("uri")
                .to_string(),
            "http://w:1/base/infer?x"
        );
        assert!(uri("nope", "/x").is_err());
        assert!(uri("http://w:1", "/bad path").is_err());

        let route = crate::bench::route(Uuid::new_v4(), Uuid::new_v4(), "echo-fn", targets(1));
        let mut h = header_map(&[
            ("authorization", "Bearer x"),
            ("host", "f.invocation.gw"),
            ("nvcf-reqid", "forged"),
            ("nvcf-invocation-region", "mars"),
            ("nvcf-sub", "forged"),
            ("connection", "x-hop"),
            ("x-hop", "1"),
            ("x-custom", "kept"),
            ("nvcf-poll-seconds", "9"),
            ("expect", "100-continue"),
        ]);
        let id = Uuid::new_v4();
        let region = Region::new(HeaderValue::from_static("local"));
        prepare_headers(&mut h);
        let id_value = crate::headers::uuid_value(id);
        let nvcf = NvcfHeaders::new(&route, &id_value, &region, 60, true);
        // The HTTP/1.1 form writes the same lines the HTTP/2 form inserts.
        let mut lines = BytesMut::new();
        nvcf.encode(&mut lines);
        let text = String::from_utf8(lines.to_vec()).expect("utf-8");
        nvcf.insert_into(&mut h);
        let nvcf_in_map: Vec<String> = h
            .iter()
            .filter(|(k, _)| k.as_str().starts_with("nvcf-"))
            .map(|(k, v)| format!("{k}: {}", v.to_str().expect("ascii")))
            .collect();
        let mut encoded: Vec<&str> = text.split_terminator("\r\n").collect();
        let mut expected: Vec<&str> = nvcf_in_map.iter().map(String::as_str).collect();
        encoded.sort_unstable();
        expected.sort_unstable();
        assert_eq!(encoded, expected);
        assert!(h.get("authorization").is_none());
        assert!(h.get("host").is_none());
        assert!(h.get("expect").is_none());
        assert!(h.get("nvcf-sub").is_none());
        assert!(h.get("x-hop").is_none());
        assert_eq!(h["x-custom"], "kept");
        assert_eq!(h["nvcf-reqid"], id.to_string().as_str());
        assert_eq!(h["nvcf-invocation-region"], "local");
        assert_eq!(h["nvcf-poll-seconds"], "60");
        // The worker adds the headers that describe the function from its own feed.
        for owned in ["nvcf-function-id", "nvcf-ncaid", "nvcf-function-name"] {
            assert!(h.get(owned).is_none(), "{owned}");
        }
        assert_eq!(
            h["nvcf-function-version-id"],
            route.version_id.to_string().as_str()
        );
        assert_eq!(h.get_all("nvcf-reqid").iter().count(), 1);
    }
}
