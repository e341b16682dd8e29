//! Connections per protocol (HTTP/1.1, h2c, HTTP/2 over TLS by ALPN on hyper's low-level client;
//! HTTP/3 on quinn + h3), one request at a time, with errors sorted into the kinds the report counts.

use bytes::Bytes;
use http::header::{CONTENT_TYPE, HOST};
use http::{HeaderMap, HeaderName, HeaderValue, Method, Request, StatusCode, Uri};
use http_body_util::{BodyExt, Full};
use hyper::client::conn::{http1, http2};
use hyper_util::rt::{TokioExecutor, TokioIo};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;

use crate::cli::Proto;

/// What went wrong with a request, as the report counts it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorKind {
    /// TCP connect or TLS handshake failed (or timed out).
    Connect,
    /// No complete answer within `--timeout`.
    Timeout,
    /// The connection or stream was closed or reset under the request.
    Reset,
    /// Anything else on the wire: a malformed answer, a refused stream, a wrong ALPN.
    Protocol,
}

/// Errors of the library.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("connect: {0}")]
    Connect(String),
    #[error("timed out")]
    Timeout,
    #[error("connection reset: {0}")]
    Reset(String),
    #[error("protocol error: {0}")]
    Protocol(String),
    /// Bad flags or target; not a request failure.
    #[error("{0}")]
    Config(String),
    /// NVCF set-up failed; not a request failure.
    #[error("nvcf setup: {0}")]
    Setup(String),
}

impl ClientError {
    /// The kind to count, or `None` for errors that stop the run.
    pub fn kind(&self) -> Option<ErrorKind> {
        match self {
            Self::Connect(_) => Some(ErrorKind::Connect),
            Self::Timeout => Some(ErrorKind::Timeout),
            Self::Reset(_) => Some(ErrorKind::Reset),
            Self::Protocol(_) => Some(ErrorKind::Protocol),
            Self::Config(_) | Self::Setup(_) => None,
        }
    }
}

fn classify(e: &hyper::Error) -> ClientError {
    if e.is_timeout() {
        return ClientError::Timeout;
    }
    if e.is_canceled() || e.is_closed() || e.is_incomplete_message() {
        return ClientError::Reset(e.to_string());
    }
    let mut src: Option<&(dyn std::error::Error + 'static)> = std::error::Error::source(e);
    while let Some(s) = src {
        if let Some(io) = s.downcast_ref::<std::io::Error>() {
            use std::io::ErrorKind as K;
            if matches!(
                io.kind(),
                K::ConnectionReset | K::ConnectionAborted | K::BrokenPipe | K::UnexpectedEof
            ) {
                return ClientError::Reset(e.to_string());
            }
        }
        src = s.source();
    }
    ClientError::Protocol(e.to_string())
}

/// Where the load goes and how to connect.
#[derive(Debug, Clone)]
pub struct Target {
    pub proto: Proto,
    /// Host to connect to (from the URL).
    pub connect_host: String,
    pub port: u16,
    /// `Host` / `:authority` the requests carry (the URL's, or a `Host` header's).
    pub authority: String,
    pub path_and_query: String,
    pub tls: Option<Arc<rustls::ClientConfig>>,
    pub server_name: Option<ServerName<'static>>,
    pub connect_timeout: Duration,
}

/// TLS options for https targets.
#[derive(Debug, Clone, Default)]
pub struct TlsOptions<'a> {
    pub cacert: Option<&'a Path>,
    pub insecure: bool,
}

impl Target {
    /// Parses `url`; `host_override` is a `Host` header from the flags.
    pub fn new(
        url: &str,
        proto: Proto,
        host_override: Option<&str>,
        tls: &TlsOptions<'_>,
        connect_timeout: Duration,
    ) -> Result<Self, ClientError> {
        let uri: Uri = url
            .parse()
            .map_err(|e| ClientError::Config(format!("bad URL {url:?}: {e}")))?;
        let https = match uri.scheme_str() {
            Some("http") => false,
            Some("https") => true,
            _ => {
                return Err(ClientError::Config(format!(
                    "URL {url:?} must start with http:// or https://"
                )));
            }
        };
        match (proto, https) {
            (Proto::H2c, true) => {
                return Err(ClientError::Config("h2c needs an http:// URL".into()));
            }
            (Proto::H2, false) => {
                return Err(ClientError::Config(
                    "h2 (HTTP/2 over TLS) needs an https:// URL".into(),
                ));
            }
            (Proto::H3, false) => {
                return Err(ClientError::Config("h3 needs an https:// URL".into()));
            }
            _ => {}
        }
        let host = uri
            .host()
            .ok_or_else(|| ClientError::Config(format!("URL {url:?} has no host")))?
            .trim_start_matches('[')
            .trim_end_matches(']')
            .to_string();
        let port = uri.port_u16().unwrap_or(if https { 443 } else { 80 });
        let authority = match host_override {
            Some(h) => h.to_string(),
            None => uri.authority().map(|a| a.to_string()).unwrap_or_default(),
        };
        let path_and_query = uri
            .path_and_query()
            .map(|p| p.as_str().to_string())
            .unwrap_or_else(|| "/".into());
        let (tls, server_name) = if https {
            let alpn: &[&[u8]] = match proto {
                Proto::H2 => &[b"h2"],
                Proto::H3 => &[b"h3"],
                Proto::H1 | Proto::H2c => &[b"http/1.1"],
            };
            let cfg = tls_config(tls, alpn)?;
            let name = ServerName::try_from(host.clone())
                .map_err(|e| ClientError::Config(format!("bad TLS server name {host:?}: {e}")))?;
            (Some(Arc::new(cfg)), Some(name))
        } else {
            (None, None)
        };
        Ok(Self {
            proto,
            connect_host: host,
            port,
            authority,
            path_and_query,
            tls,
            server_name,
            connect_timeout,
        })
    }

    /// The request URI: origin-form for HTTP/1.1, absolute for HTTP/2 (`:scheme`/`:authority`).
    pub fn uri(&self, path_and_query: &str) -> Result<Uri, ClientError> {
        let s = match self.proto {
            Proto::H1 => path_and_query.to_string(),
            Proto::H2c => format!("http://{}{path_and_query}", self.authority),
            Proto::H2 | Proto::H3 => format!("https://{}{path_and_query}", self.authority),
        };
        s.parse()
            .map_err(|e| ClientError::Config(format!("bad request URI {s:?}: {e}")))
    }
}

/// A rustls client config on the ring provider.
pub fn tls_config(
    opts: &TlsOptions<'_>,
    alpn: &[&[u8]],
) -> Result<rustls::ClientConfig, ClientError> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ClientConfig::builder_with_provider(Arc::clone(&provider))
        .with_safe_default_protocol_versions()
        .map_err(|e| ClientError::Config(format!("tls: {e}")))?;
    let mut cfg = if opts.insecure {
        builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(NoVerify(provider)))
            .with_no_client_auth()
    } else {
        let path = opts.cacert.ok_or_else(|| {
            ClientError::Config("an https target needs --cacert PEM or --insecure".into())
        })?;
        let mut roots = rustls::RootCertStore::empty();
        for cert in CertificateDer::pem_file_iter(path)
            .map_err(|e| ClientError::Config(format!("{}: {e}", path.display())))?
        {
            let cert = cert.map_err(|e| ClientError::Config(format!("{}: {e}", path.display())))?;
            roots
                .add(cert)
                .map_err(|e| ClientError::Config(format!("{}: {e}", path.display())))?;
        }
        builder.with_root_certificates(roots).with_no_client_auth()
    };
    cfg.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    Ok(cfg)
}

/// `--insecure`: accepts any certificate but still checks handshake signatures.
#[derive(Debug)]
struct NoVerify(Arc<rustls::crypto::CryptoProvider>);

impl rustls::client::danger::ServerCertVerifier for NoVerify {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
        Ok(rustls::client::danger::ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

/// One connection's request handle.
#[derive(Debug)]
pub enum Sender {
    H1(http1::SendRequest<Full<Bytes>>),
    H2(http2::SendRequest<Full<Bytes>>),
    H3(H3Sender),
}

/// An HTTP/3 connection's request handle (cloned by its streams).
#[derive(Clone)]
pub struct H3Sender {
    send: h3::client::SendRequest<h3_quinn::OpenStreams, Bytes>,
    /// Set by the connection driver when the connection is gone.
    closed: Arc<std::sync::atomic::AtomicBool>,
    /// Keeps the UDP endpoint alive as long as the connection is used.
    _endpoint: quinn::Endpoint,
}

impl std::fmt::Debug for H3Sender {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("H3Sender")
            .field("closed", &self.closed)
            .finish_non_exhaustive()
    }
}

impl Sender {
    pub fn is_closed(&self) -> bool {
        match self {
            Self::H1(s) => s.is_closed(),
            Self::H2(s) => s.is_closed(),
            Self::H3(s) => s.closed.load(std::sync::atomic::Ordering::Relaxed),
        }
    }

    /// A handle for another stream on the same connection (HTTP/2 and HTTP/3 only).
    pub fn share(&self) -> Option<Self> {
        match self {
            Self::H1(_) => None,
            Self::H2(s) => Some(Self::H2(s.clone())),
            Self::H3(s) => Some(Self::H3(s.clone())),
        }
    }
}

fn classify_h3(e: &h3::error::StreamError) -> ClientError {
    use h3::error::{ConnectionError, StreamError};
    match e {
        StreamError::ConnectionError {
            0: ConnectionError::Timeout { .. },
            ..
        } => ClientError::Timeout,
        StreamError::ConnectionError { .. }
        | StreamError::RemoteTerminate { .. }
        | StreamError::RemoteClosing { .. } => ClientError::Reset(e.to_string()),
        _ => ClientError::Protocol(e.to_string()),
    }
}

async fn connect_h3(t: &Target) -> Result<Sender, ClientError> {
    let (Some(cfg), Some(name)) = (&t.tls, &t.server_name) else {
        return Err(ClientError::Config("h3 needs TLS".into()));
    };
    let addr = tokio::net::lookup_host((t.connect_host.as_str(), t.port))
        .await
        .map_err(|e| ClientError::Connect(format!("{}: {e}", t.connect_host)))?
        .next()
        .ok_or_else(|| ClientError::Connect(format!("{}: no address", t.connect_host)))?;
    let bind: std::net::SocketAddr = if addr.is_ipv6() {
        "[::]:0"
    } else {
        "0.0.0.0:0"
    }
    .parse()
    .map_err(|e| ClientError::Config(format!("{e}")))?;
    let mut endpoint = quinn::Endpoint::client(bind)
        .map_err(|e| ClientError::Connect(format!("udp bind: {e}")))?;
    let quic = quinn::crypto::rustls::QuicClientConfig::try_from(Arc::clone(cfg))
        .map_err(|e| ClientError::Config(format!("quic tls: {e}")))?;
    endpoint.set_default_client_config(quinn::ClientConfig::new(Arc::new(quic)));
    let server_name = match name {
        ServerName::DnsName(d) => d.as_ref().to_string(),
        ServerName::IpAddress(ip) => std::net::IpAddr::from(*ip).to_string(),
        _ => t.connect_host.clone(),
    };
    let conn = endpoint
        .connect(addr, &server_name)
        .map_err(|e| ClientError::Connect(format!("quic: {e}")))?
        .await
        .map_err(|e| ClientError::Connect(format!("quic handshake: {e}")))?;
    let (mut driver, send) = h3::client::new(h3_quinn::Connection::new(conn))
        .await
        .map_err(|e| ClientError::Connect(format!("h3: {e}")))?;
    let closed = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let flag = Arc::clone(&closed);
    tokio::spawn(async move {
        let _ = std::future::poll_fn(|cx| driver.poll_close(cx)).await;
        flag.store(true, std::sync::atomic::Ordering::Relaxed);
    });
    Ok(Sender::H3(H3Sender {
        send,
        closed,
        _endpoint: endpoint,
    }))
}

async fn exchange_h3(
    s: &mut H3Sender,
    req: Request<Full<Bytes>>,
    body: Bytes,
) -> Result<(StatusCode, HeaderMap, u64), ClientError> {
    use bytes::Buf as _;
    let (parts, _) = req.into_parts();
    let mut stream = s
        .send
        .send_request(Request::from_parts(parts, ()))
        .await
        .map_err(|e| classify_h3(&e))?;
    if !body.is_empty() {
        stream.send_data(body).await.map_err(|e| classify_h3(&e))?;
    }
    stream.finish().await.map_err(|e| classify_h3(&e))?;
    let resp = stream.recv_response().await.map_err(|e| classify_h3(&e))?;
    let mut n = 0u64;
    while let Some(mut chunk) = stream.recv_data().await.map_err(|e| classify_h3(&e))? {
        let len = chunk.remaining();
        n += len as u64;
        chunk.advance(len);
    }
    let (parts, ()) = resp.into_parts();
    Ok((parts.status, parts.headers, n))
}

/// Opens one connection to the target.
pub async fn connect(t: &Target) -> Result<Sender, ClientError> {
    if t.proto == Proto::H3 {
        return tokio::time::timeout(t.connect_timeout, connect_h3(t))
            .await
            .map_err(|_| ClientError::Connect("timed out".into()))?;
    }
    let fut = async {
        let tcp = TcpStream::connect((t.connect_host.as_str(), t.port))
            .await
            .map_err(|e| ClientError::Connect(format!("{}:{}: {e}", t.connect_host, t.port)))?;
        let _ = tcp.set_nodelay(true);
        match (&t.tls, &t.server_name) {
            (Some(cfg), Some(name)) => {
                let tls = tokio_rustls::TlsConnector::from(Arc::clone(cfg))
                    .connect(name.clone(), tcp)
                    .await
                    .map_err(|e| ClientError::Connect(format!("tls handshake: {e}")))?;
                if t.proto == Proto::H2 && tls.get_ref().1.alpn_protocol() != Some(b"h2") {
                    return Err(ClientError::Protocol(
                        "the server did not negotiate h2 by ALPN".into(),
                    ));
                }
                handshake(tls, t.proto).await
            }
            _ => handshake(tcp, t.proto).await,
        }
    };
    tokio::time::timeout(t.connect_timeout, fut)
        .await
        .map_err(|_| ClientError::Connect("timed out".into()))?
}

async fn handshake<I>(io: I, proto: Proto) -> Result<Sender, ClientError>
where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let io = TokioIo::new(io);
    match proto {
        Proto::H1 => {
            let (s, conn) = http1::handshake(io)
                .await
                .map_err(|e| ClientError::Connect(e.to_string()))?;
            tokio::spawn(async move {
                let _ = conn.await;
            });
            Ok(Sender::H1(s))
        }
        Proto::H2c | Proto::H2 | Proto::H3 => {
            let (s, conn) = http2::Builder::new(TokioExecutor::new())
                .initial_stream_window_size(4 << 20)
                .initial_connection_window_size(16 << 20)
                .handshake(io)
                .await
                .map_err(|e| ClientError::Connect(e.to_string()))?;
            tokio::spawn(async move {
                let _ = conn.await;
            });
            Ok(Sender::H2(s))
        }
    }
}

/// Follows `202 Accepted` answers that carry `NVCF-REQID` with `GET {prefix}{reqid}` polls.
#[derive(Debug, Clone)]
pub struct Follow202 {
    pub status_prefix: String,
    pub interval: Duration,
}

/// What each request carries.
#[derive(Debug, Clone)]
pub struct RequestTemplate {
    pub method: Method,
    /// Headers without `Host` (that is the target's authority).
    pub headers: HeaderMap,
    pub body: Bytes,
    pub follow_202: Option<Follow202>,
}

impl RequestTemplate {
    /// From `--header 'K: V'` strings; returns the template and a `Host` override, if any.
    pub fn new(
        method: Option<&str>,
        headers: &[String],
        body: Bytes,
        content_type: Option<&str>,
    ) -> Result<(Self, Option<String>), ClientError> {
        let method = match method {
            Some(m) => Method::from_bytes(m.as_bytes())
                .map_err(|_| ClientError::Config(format!("bad method {m:?}")))?,
            None if body.is_empty() => Method::GET,
            None => Method::POST,
        };
        let mut map = HeaderMap::new();
        let mut host = None;
        for h in headers {
            let (k, v) = h
                .split_once(':')
                .ok_or_else(|| ClientError::Config(format!("header {h:?} is not `Name: value`")))?;
            let name = HeaderName::from_bytes(k.trim().as_bytes())
                .map_err(|_| ClientError::Config(format!("bad header name {k:?}")))?;
            let value = HeaderValue::from_str(v.trim())
                .map_err(|_| ClientError::Config(format!("bad header value {v:?}")))?;
            if name == HOST {
                host = Some(v.trim().to_string());
            } else {
                map.append(name, value);
            }
        }
        if let Some(ct) = content_type
            && !map.contains_key(CONTENT_TYPE)
        {
            map.insert(
                CONTENT_TYPE,
                HeaderValue::from_str(ct)
                    .map_err(|_| ClientError::Config("bad content type".into()))?,
            );
        }
        Ok((
            Self {
                method,
                headers: map,
                body,
                follow_202: None,
            },
            host,
        ))
    }

    fn build(
        &self,
        t: &Target,
        method: Method,
        path: &str,
        body: Bytes,
    ) -> Result<Request<Full<Bytes>>, ClientError> {
        let mut req = Request::new(Full::new(body));
        *req.method_mut() = method;
        *req.uri_mut() = t.uri(path)?;
        *req.headers_mut() = self.headers.clone();
        if t.proto == Proto::H1 {
            let host = HeaderValue::from_str(&t.authority)
                .map_err(|_| ClientError::Config("bad Host".into()))?;
            req.headers_mut().insert(HOST, host);
        }
        Ok(req)
    }
}

/// What one request got back.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Outcome {
    pub status: StatusCode,
    /// Response body bytes, status polls included.
    pub bytes_received: u64,
    pub bytes_sent: u64,
    pub polls: u64,
}

async fn exchange(
    s: &mut Sender,
    req: Request<Full<Bytes>>,
    body: Bytes,
) -> Result<(StatusCode, HeaderMap, u64), ClientError> {
    let resp = match s {
        Sender::H3(h) => return exchange_h3(h, req, body).await,
        Sender::H1(h) => {
            h.ready().await.map_err(|e| classify(&e))?;
            h.send_request(req).await
        }
        Sender::H2(h) => {
            h.ready().await.map_err(|e| classify(&e))?;
            h.send_request(req).await
        }
    }
    .map_err(|e| classify(&e))?;
    let (parts, mut body) = resp.into_parts();
    let mut n = 0u64;
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(|e| classify(&e))?;
        if let Some(d) = frame.data_ref() {
            n += d.len() as u64;
        }
    }
    Ok((parts.status, parts.headers, n))
}

/// Sends one request (and its status polls) on `s`.
pub async fn send(
    s: &mut Sender,
    t: &Target,
    tpl: &RequestTemplate,
) -> Result<Outcome, ClientError> {
    let req = tpl.build(t, tpl.method.clone(), &t.path_and_query, tpl.body.clone())?;
    let (mut status, mut headers, mut received) = exchange(s, req, tpl.body.clone()).await?;
    let mut polls = 0;
    if let Some(f) = &tpl.follow_202 {
        while status == StatusCode::ACCEPTED {
            let Some(id) = headers
                .get("nvcf-reqid")
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned)
            else {
                break;
            };
            if !f.interval.is_zero() {
                tokio::time::sleep(f.interval).await;
            }
            let req = tpl.build(
                t,
                Method::GET,
                &format!("{}{id}", f.status_prefix),
                Bytes::new(),
            )?;
            let (st, h, n) = exchange(s, req, Bytes::new()).await?;
            polls += 1;
            received += n;
            status = st;
            headers = h;
            // A status answer may carry a fresh id; fall back to the old one.
            if !headers.contains_key("nvcf-reqid")
                && let Ok(v) = HeaderValue::from_str(&id)
            {
                headers.insert("nvcf-reqid", v);
            }
        }
    }
    Ok(Outcome {
        status,
        bytes_received: received,
        bytes_sent: tpl.body.len() as u64,
        polls,
    })
}
