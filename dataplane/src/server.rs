//! The listeners: accepts connections and hands them to [`crate::front`] (HTTP/1.1 and h2c prior
//! knowledge on one port, TLS with ALPN h2/http1.1) and to [`crate::quic`] (HTTP/3) when given;
//! runs each request, whatever its protocol, through one [`handle`] (classify → answer), counts
//! it, and shuts down gracefully.

use std::net::SocketAddr;
use std::pin::pin;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures_util::FutureExt;
use http::{HeaderValue, Method, Response, StatusCode, Version, header};
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;
use tracing::{debug, info, warn};

use crate::body::{Body, ClientRequest, full};
use crate::classify::{InvocationKind, Route, classify};
use crate::config::DataplaneConfig;
use crate::drain::{Drain, Watch};
use crate::error::{DataplaneError, GatewayError};
use crate::front::Front;
use crate::headers::RequestHeaders;
use crate::invoke::Invoker;
use crate::io::ConnIo;
use crate::proxy::Proxy;
use crate::serving::ServingThreads;

/// How long shutdown waits for in-flight connections before giving up on them.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);
/// Pause after an accept error that is not about one connection (e.g. out of file descriptors),
/// so the loop does not spin while the condition lasts.
const ACCEPT_ERROR_BACKOFF: Duration = Duration::from_millis(50);

const HEALTH_BODY: &[u8] = br#"{"status":"OK"}"#;

/// Shared per-server state handed to every request.
#[derive(Debug)]
pub(crate) struct State {
    proxy: Proxy,
    invoker: Invoker,
    /// `dataplane.access-log`: one [`crate::access`] line per finished request.
    access_log: bool,
    metrics: crate::metrics::RequestMetrics,
}

/// The sockets the gateway serves on, bound by the caller.
#[derive(Debug)]
pub struct Listeners {
    /// HTTP/1.1 and h2c.
    pub plain: TcpListener,
    /// TLS (ALPN `h2`/`http/1.1`); needs `config.tls`.
    pub tls: Option<TcpListener>,
    /// HTTP/3 over QUIC; needs `config.quic`.
    pub quic: Option<std::net::UdpSocket>,
}

/// Serves the gateway on `listener` (HTTP/1.1 and h2c) until `shutdown` resolves, then stops
/// accepting and lets in-flight connections finish (for at most 5 s).
pub async fn run(
    config: DataplaneConfig,
    listener: TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), DataplaneError> {
    serve(config, listener, None, shutdown).await
}

/// Like [`run`], plus a TLS listener (ALPN `h2`/`http/1.1`) when `tls` is given; it needs
/// `config.tls` for its certificate.
pub async fn serve(
    config: DataplaneConfig,
    listener: TcpListener,
    tls: Option<TcpListener>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), DataplaneError> {
    let listeners = Listeners {
        plain: listener,
        tls,
        quic: None,
    };
    serve_all(config, listeners, shutdown).await
}

/// Serves on every listener in `listeners` until `shutdown` resolves, then drains them all (for at
/// most 5 s). The QUIC socket needs `config.quic`, the TLS listener `config.tls`.
pub async fn serve_all(
    config: DataplaneConfig,
    listeners: Listeners,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), DataplaneError> {
    let Listeners {
        plain: listener,
        tls,
        quic,
    } = listeners;
    let local = listener.local_addr().map_err(DataplaneError::Listener)?;
    let acceptor = match (&tls, &config.tls) {
        (Some(_), Some(t)) => Some(TlsAcceptor::from(crate::tls::server_config(t)?)),
        (Some(_), None) => {
            return Err(DataplaneError::Config(
                "a TLS listener was given but dataplane.tls-listen is not configured".into(),
            ));
        }
        (None, _) => None,
    };
    let quic = match (quic, &config.quic) {
        (Some(socket), Some(q)) => Some(crate::quic::endpoint(q, socket)?),
        (Some(_), None) => {
            return Err(DataplaneError::Config(
                "a QUIC socket was given but dataplane.quic-listen is not configured".into(),
            ));
        }
        (None, _) => None,
    };
    let alt_svc = match &quic {
        Some(endpoint) => Some(crate::quic::alt_svc(
            endpoint.local_addr().map_err(DataplaneError::Listener)?,
        )),
        None => None,
    };
    // The feed follower publishes routing and keys; it stops with the listener.
    let snapshot = crate::feed::empty(&config.key_prefix);
    let (stop_feed, stop_rx) = tokio::sync::watch::channel(false);
    let follower = tokio::spawn(crate::feed::follow(
        cp_client::CpClient::new(
            config.controlplane_url.clone(),
            config.internal_token.clone(),
        ),
        Arc::clone(&snapshot),
        config.key_prefix.clone(),
        stop_rx,
    ));
    let state = Arc::new(State {
        proxy: Proxy::new(&config)?,
        invoker: Invoker::new(&config, snapshot),
        access_log: config.access_log,
        metrics: crate::metrics::RequestMetrics::new(),
    });
    let reporter = {
        let state = Arc::clone(&state);
        tokio::spawn(crate::queue_report::run(
            cp_client::CpClient::new(
                config.controlplane_url.clone(),
                config.internal_token.clone(),
            ),
            move || state.invoker.queue_depths(),
            config.queue_report_interval,
            stop_feed.subscribe(),
        ))
    };
    let quic_task = quic.map(|endpoint| {
        tokio::spawn(crate::quic::serve(
            endpoint,
            Arc::clone(&state),
            u64::try_from(config.max_header_bytes).unwrap_or(u64::MAX),
            // The same `true` that stops the feed follower stops the QUIC listener.
            stop_feed.subscribe(),
            SHUTDOWN_GRACE,
        ))
    });
    // Alt-Svc only over TLS: HTTP/3 is TLS, and clients take an alternative only for an https
    // origin (RFC 7838 §2.1; an http origin would need RFC 8164's opportunistic security, which
    // clients do not implement), so on the cleartext listener it is bytes every answer carries
    // for nothing.
    let front = |alt_svc| {
        Arc::new(Front::new(
            Arc::clone(&state),
            config.max_header_bytes,
            config.header_read_timeout,
            config.idle_timeout,
            alt_svc,
        ))
    };
    let (front, secure_front) = (front(None), front(alt_svc));
    // Every connection holds a watch; firing asks them to finish, and `closed` completes when the
    // last one has.
    let drain = Drain::new();
    let mut shutdown = pin!(shutdown);
    info!(%local, controlplane = %config.controlplane_url, "dataplane listening");
    if let Some(t) = &tls {
        info!(local = %t.local_addr().map_err(DataplaneError::Listener)?, "dataplane listening for TLS");
    }
    let mut serving = match config.serving_threads {
        0 => None,
        n => Some(ServingThreads::start(n).map_err(DataplaneError::Threads)?),
    };

    loop {
        let (stream, peer, secure) = tokio::select! {
            () = &mut shutdown => break,
            accepted = listener.accept() => match accepted {
                Ok((stream, peer)) => (stream, peer, false),
                Err(e) => {
                    accept_error(&e).await;
                    continue;
                }
            },
            accepted = accept_optional(tls.as_ref()) => match accepted {
                Ok((stream, peer)) => (stream, peer, true),
                Err(e) => {
                    accept_error(&e).await;
                    continue;
                }
            },
        };
        if let Err(e) = stream.set_nodelay(true) {
            debug!(%peer, error = %e, "set TCP_NODELAY failed");
        }
        let conn = Connection {
            peer,
            front: Arc::clone(if secure { &secure_front } else { &front }),
            tls: acceptor.clone().filter(|_| secure),
            handshake_timeout: config.header_read_timeout,
            stop: drain.watch(),
        };
        match &mut serving {
            None => {
                tokio::spawn(conn.serve(stream));
            }
            // Moved as a plain socket: the serving thread registers it with its own runtime.
            Some(threads) => match stream.into_std() {
                Ok(stream) => threads.hand(Box::new(move || {
                    Box::pin(async move {
                        match tokio::net::TcpStream::from_std(stream) {
                            Ok(stream) => conn.serve(stream).await,
                            Err(e) => debug!(%peer, error = %e, "cannot register a connection"),
                        }
                    })
                })),
                Err(e) => debug!(%peer, error = %e, "cannot hand a connection over"),
            },
        }
    }

    drop(listener);
    drop(tls);
    let _ = stop_feed.send(true);
    if let Err(e) = follower.await {
        warn!(error = %e, "feed follower ended abnormally");
    }
    // A report in flight may wait for the control plane's timeout; it is advisory, so cut it.
    reporter.abort();
    info!(connections = drain.watches(), "dataplane shutting down");
    drain.fire();
    tokio::select! {
        () = drain.closed() => info!("dataplane stopped"),
        () = tokio::time::sleep(SHUTDOWN_GRACE) => {
            warn!(grace = ?SHUTDOWN_GRACE, "dataplane stopped with connections still open");
        }
    }
    if let Some(threads) = serving {
        threads.stop().await;
    }
    if let Some(task) = quic_task
        && let Err(e) = task.await
    {
        warn!(error = %e, "HTTP/3 listener ended abnormally");
    }
    Ok(())
}

/// An accepted connection and what serves it.
struct Connection {
    peer: SocketAddr,
    front: Arc<Front>,
    /// The TLS handshake comes first (a connection of the TLS listener).
    tls: Option<TlsAcceptor>,
    handshake_timeout: Duration,
    stop: Watch,
}

impl Connection {
    /// Serves the connection until it closes, or until `stop` and its exchange in progress ends.
    async fn serve(self, stream: tokio::net::TcpStream) {
        let Self {
            peer,
            front,
            tls,
            handshake_timeout,
            stop,
        } = self;
        let Some(acceptor) = tls else {
            return front.serve(ConnIo::new(stream), peer, stop).await;
        };
        let tls = match tokio::time::timeout(handshake_timeout, acceptor.accept(stream)).await {
            Ok(Ok(tls)) => tls,
            Ok(Err(e)) => {
                crate::metrics::record_tls_handshake_failure();
                debug!(%peer, error = %e, "TLS handshake failed");
                return;
            }
            Err(_) => {
                crate::metrics::record_tls_handshake_failure();
                debug!(%peer, "TLS handshake timed out");
                return;
            }
        };
        if tls.get_ref().1.alpn_protocol() == Some(b"h2") {
            front.serve_h2(tls, peer, stop).await;
        } else {
            front.serve(tls, peer, stop).await;
        }
    }
}

/// Accepts from `listener`, or never when there is none.
async fn accept_optional(
    listener: Option<&TcpListener>,
) -> std::io::Result<(tokio::net::TcpStream, SocketAddr)> {
    match listener {
        Some(l) => l.accept().await,
        None => std::future::pending().await,
    }
}

async fn accept_error(e: &std::io::Error) {
    use std::io::ErrorKind::{ConnectionAborted, ConnectionReset, Interrupted, WouldBlock};
    if matches!(
        e.kind(),
        ConnectionAborted | ConnectionReset | Interrupted | WouldBlock
    ) {
        debug!(error = %e, "accept failed for one connection");
    } else {
        warn!(error = %e, "accept failed; backing off");
        tokio::time::sleep(ACCEPT_ERROR_BACKOFF).await;
    }
}

/// Answers one request from any listener: classify, dispatch to the route's handler, map errors,
/// count, write the access line when the answer ends, and advertise HTTP/3 with `alt_svc` (given
/// for HTTP/1.1 and HTTP/2 over TLS while the QUIC listener is on).
///
/// The futures on this path are written as `async move` blocks or combinators rather than
/// `async fn`s: an `async fn` keeps each by-value argument twice in its state (as the argument
/// and as the local it is moved into), and hyper copies this state as it moves (into the
/// HTTP/1.1 dispatcher's slot, into every HTTP/2 stream's task).
pub(crate) fn handle<'a>(
    state: &'a State,
    peer: SocketAddr,
    req: ClientRequest,
    alt_svc: Option<&'a HeaderValue>,
) -> impl Future<Output = Response<Body>> + Send + 'a {
    let protocol = protocol_label(req.version());
    answer(state, peer, req, protocol).map(move |mut response| {
        if let Some(alt_svc) = alt_svc {
            crate::fields::materialize_if_named(&mut response, &["alt-svc"]);
            response
                .headers_mut()
                .insert(header::ALT_SVC, alt_svc.clone());
        }
        response
    })
}

/// The metrics `protocol` label of a request's version.
fn protocol_label(version: Version) -> &'static str {
    match version {
        Version::HTTP_3 => "h3",
        Version::HTTP_2 => "h2",
        _ => "http1",
    }
}

#[expect(
    clippy::manual_async_fn,
    reason = "an async fn keeps its by-value arguments twice in its state"
)]
fn answer(
    state: &State,
    peer: SocketAddr,
    req: ClientRequest,
    protocol: &'static str,
) -> impl Future<Output = Response<Body>> + Send {
    async move {
        let start = Instant::now();
        let host = crate::headers::request_host(&req);
        let headers = RequestHeaders::of(&req);
        let route = classify(
            req.method(),
            host,
            req.uri().path(),
            headers.get_str(&crate::invoke::target::FUNCTION_ID_NAME),
        );
        // Captured only when a line would be written: nothing to pay with the access log off.
        let access = (state.access_log && crate::access::enabled())
            .then(|| crate::access::Entry::new(start, &req, peer));
        // A handle on the request's URI (shared bytes, no copy) for errors and the debug line.
        let uri = req.uri().clone();
        // The path router is CORS-permissive (NVCF §6.2); host-routed calls pass OPTIONS through.
        let cors = route == Route::Invocation(InvocationKind::Path);
        let origin = cors.then(|| headers.value(&header::ORIGIN)).flatten();
        if cors && let Some(preflight) = crate::cors::preflight(req.method(), headers) {
            let elapsed = start.elapsed();
            state
                .metrics
                .record(route, preflight.status(), protocol, elapsed);
            // Answered here, not by the invocation path: the line's function comes from the path.
            let named = access.as_ref().and_then(|_| {
                crate::invoke::target::resolve(
                    InvocationKind::Path,
                    host,
                    req.uri().path(),
                    headers,
                )
                .ok()?
                .named()
            });
            return crate::access::attach(access, preflight, named, elapsed);
        }

        let (result, named) = match route {
            Route::Health => (Ok(health(req.method())), None),
            Route::KeyService | Route::Management => {
                let mut req = *req;
                crate::fields::materialize_request(&mut req);
                // Boxed and awaited through its vtable: inline, the proxy's state (670 bytes)
                // would make every invocation's future larger, and its code would sit in the
                // invocation's poll.
                (state.proxy.forward(req, peer.ip()).boxed().await, None)
            }
            Route::Invocation(kind) => {
                let resolved =
                    crate::invoke::target::resolve(kind, host, req.uri().path(), headers);
                state.invoker.handle(resolved, req, start).await
            }
            Route::NotFound => (
                Err(GatewayError::NoRoute {
                    host: host.unwrap_or_default().to_owned(),
                    path: uri.path().to_owned(),
                }),
                None,
            ),
        };
        let mut response = result.unwrap_or_else(|e| e.into_response(uri.path()));
        crate::cors::decorate(origin, &mut response);
        debug!(%peer, route = route.label(), status = %response.status(), path = uri.path(), "request");
        // One clock reading for the metric and the access line's time to the response head.
        let elapsed = start.elapsed();
        state
            .metrics
            .record(route, response.status(), protocol, elapsed);
        crate::access::attach(access, response, named, elapsed)
    }
}

fn health(method: &Method) -> Response<Body> {
    let body = if method == Method::HEAD {
        Bytes::new()
    } else {
        Bytes::from_static(HEALTH_BODY)
    };
    let mut response = Response::new(full(body));
    *response.status_mut() = StatusCode::OK;
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    response
}

#[cfg(test)]
mod tests {
    use http::Request;

    #[test]
    fn host_prefers_authority() {
        let req = Request::builder()
            .uri("http://api.x:8080/v2/nvcf/functions")
            .header("host", "other")
            .body(())
            .expect("request");
        assert_eq!(crate::headers::request_host(&req), Some("api.x:8080"));
        let req = Request::builder()
            .uri("/x")
            .header("host", "api.y")
            .body(())
            .expect("request");
        assert_eq!(crate::headers::request_host(&req), Some("api.y"));
        let req = Request::builder().uri("/x").body(()).expect("request");
        assert_eq!(crate::headers::request_host(&req), None);
    }
}
