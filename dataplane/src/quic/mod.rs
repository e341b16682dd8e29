//! The HTTP/3 listener: a quinn endpoint on UDP (same certificate as the TLS listener, ALPN `h3`,
//! 0-RTT off) whose requests go through the same [`crate::server::handle`] as HTTP/1.1 and HTTP/2.
//! Connection counts, handshake failures and lost packets are recorded here; GSO/GRO come from
//! quinn-udp wherever the platform offers them.
//!
//! Shutdown: the endpoint stops accepting connections, every connection sends GOAWAY and finishes
//! the requests it already has, and the endpoint waits for them (bounded by the server's grace).

pub mod config;
mod stream;

use std::net::{SocketAddr, UdpSocket};
use std::sync::Arc;
use std::time::Duration;

use quinn::VarInt;
use tokio::sync::watch;
use tracing::{debug, info, warn};

use crate::config::QuicConfig;
use crate::error::DataplaneError;
use crate::server::State;

/// The only ALPN protocol offered on QUIC.
pub const ALPN: &[u8] = b"h3";

/// Builds the QUIC endpoint on an already-bound UDP socket.
pub(crate) fn endpoint(
    cfg: &QuicConfig,
    socket: UdpSocket,
) -> Result<quinn::Endpoint, DataplaneError> {
    // tokio needs the socket non-blocking.
    socket
        .set_nonblocking(true)
        .map_err(DataplaneError::Listener)?;
    let conf = |e: &dyn std::fmt::Display| DataplaneError::Config(format!("dataplane QUIC: {e}"));
    let mut tls = (*crate::tls::server_config(&cfg.tls)?).clone();
    tls.alpn_protocols = vec![ALPN.to_vec()];
    // 0-RTT off: early data can be replayed by an attacker, and invocations are non-idempotent POSTs.
    tls.max_early_data_size = 0;
    let crypto = quinn::crypto::rustls::QuicServerConfig::try_from(tls).map_err(|e| conf(&e))?;
    let mut transport = quinn::TransportConfig::default();
    transport
        .max_concurrent_bidi_streams(VarInt::from_u32(cfg.max_concurrent_streams))
        .max_idle_timeout(Some(
            quinn::IdleTimeout::try_from(cfg.idle_timeout).map_err(|e| conf(&e))?,
        ))
        .stream_receive_window(VarInt::from_u64(cfg.stream_receive_window).map_err(|e| conf(&e))?)
        .receive_window(VarInt::from_u64(cfg.receive_window).map_err(|e| conf(&e))?);
    let mut server = quinn::ServerConfig::with_crypto(Arc::new(crypto));
    server.transport_config(Arc::new(transport));
    let mut endpoint_config = quinn::EndpointConfig::default();
    endpoint_config
        .max_udp_payload_size(cfg.max_udp_payload)
        .map_err(|e| conf(&e))?;
    quinn::Endpoint::new(
        endpoint_config,
        Some(server),
        socket,
        Arc::new(quinn::TokioRuntime),
    )
    .map_err(DataplaneError::Listener)
}

/// Accepts connections until `stop` turns true, then drains them for at most `grace`.
pub(crate) async fn serve(
    endpoint: quinn::Endpoint,
    state: Arc<State>,
    max_header_bytes: u64,
    mut stop: watch::Receiver<bool>,
    grace: Duration,
) {
    if let Ok(local) = endpoint.local_addr() {
        info!(%local, "dataplane listening for HTTP/3 (QUIC)");
    }
    loop {
        let incoming = tokio::select! {
            _ = stop.wait_for(|s| *s) => break,
            incoming = endpoint.accept() => match incoming {
                Some(i) => i,
                None => break,
            },
        };
        let (state, stop) = (Arc::clone(&state), stop.clone());
        tokio::spawn(connection(incoming, state, max_header_bytes, stop));
    }
    // Refuse new connections; let the open ones finish their requests.
    endpoint.set_server_config(None);
    if tokio::time::timeout(grace, endpoint.wait_idle())
        .await
        .is_err()
    {
        warn!(
            ?grace,
            "HTTP/3 listener stopped with connections still open"
        );
    }
    endpoint.close(VarInt::from_u32(0), b"shutdown");
}

/// HTTP/3's "no error" code, for closing a drained connection.
const H3_NO_ERROR: VarInt = VarInt::from_u32(0x100);

/// What woke a connection's loop.
enum Event<R> {
    Accepted(R),
    Stop,
    Done,
}

/// Keeps the connection gauge right however the connection task ends.
struct Counted;

impl Counted {
    fn new() -> Self {
        crate::metrics::add_quic_connections(1.0);
        Self
    }
}

impl Drop for Counted {
    fn drop(&mut self) {
        crate::metrics::add_quic_connections(-1.0);
    }
}

/// One QUIC connection: handshake, then one task per request stream.
async fn connection(
    incoming: quinn::Incoming,
    state: Arc<State>,
    max_header_bytes: u64,
    mut stop: watch::Receiver<bool>,
) {
    let peer = incoming.remote_address();
    let conn = match incoming.accept() {
        Ok(connecting) => connecting.await,
        Err(e) => Err(e),
    };
    let conn = match conn {
        Ok(c) => c,
        Err(e) => {
            crate::metrics::record_quic_handshake_failure();
            debug!(%peer, error = %e, "QUIC handshake failed");
            return;
        }
    };
    let _counted = Counted::new();
    let quic = conn.clone();
    let mut h3 = match h3::server::builder()
        .max_field_section_size(max_header_bytes)
        .build::<_, bytes::Bytes>(h3_quinn::Connection::new(conn))
        .await
    {
        Ok(h3) => h3,
        Err(e) => {
            debug!(%peer, error = %e, "HTTP/3 connection setup failed");
            record_lost(&quic);
            return;
        }
    };
    let mut stopping = false;
    let mut requests = tokio::task::JoinSet::new();
    loop {
        if stopping && requests.is_empty() {
            // GOAWAY sent and every request answered: close now rather than wait for the client.
            quic.close(H3_NO_ERROR, b"shutting down");
            break;
        }
        let event = tokio::select! {
            accepted = h3.accept() => Event::Accepted(accepted),
            _ = stop.wait_for(|s| *s), if !stopping => Event::Stop,
            Some(_) = requests.join_next(), if !requests.is_empty() => Event::Done,
        };
        match event {
            Event::Done => {}
            Event::Stop => {
                stopping = true;
                // GOAWAY: the client sends no new requests; the open ones finish.
                if let Err(e) = h3.shutdown(0).await {
                    debug!(%peer, error = %e, "HTTP/3 GOAWAY failed");
                }
            }
            Event::Accepted(Ok(Some(resolver))) => {
                let (state, quic) = (Arc::clone(&state), quic.clone());
                requests.spawn(async move {
                    match resolver.resolve_request().await {
                        Ok((req, stream)) => {
                            stream::serve(&state, &quic, peer, req, stream).await;
                        }
                        Err(e) => debug!(%peer, error = %e, "HTTP/3 request head failed"),
                    }
                });
            }
            Event::Accepted(Ok(None)) => break,
            Event::Accepted(Err(e)) => {
                debug!(%peer, error = %e, "HTTP/3 connection ended");
                break;
            }
        }
    }
    // Requests still running end on their own (they fail fast once the connection is gone).
    requests.detach_all();
    // The HTTP/3 session is over (client closed, or GOAWAY drained): its loss count is final
    // enough. Streams still flushing keep the QUIC connection open until they are done.
    record_lost(&quic);
}

fn record_lost(conn: &quinn::Connection) {
    crate::metrics::record_quic_lost_packets(conn.stats().path.lost_packets);
}

/// The `Alt-Svc` value advertising an HTTP/3 listener on `local`'s port.
pub(crate) fn alt_svc(local: SocketAddr) -> http::HeaderValue {
    // A formatted port is always a valid header value.
    http::HeaderValue::from_str(&format!("h3=\":{}\"", local.port()))
        .unwrap_or(http::HeaderValue::from_static("clear"))
}
