//! The worker's listener. It answers `GET /health`; the invocation data path (HTTP/2 streams from
//! the gateway into the kernels) is built on this listener in the next step of the project, and
//! until then every other request gets a 501 problem document saying so.

use bytes::Bytes;
use http::{Request, Response, StatusCode, header};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto::Builder;
use model::problem::{CONTENT_TYPE, Problem};
use std::convert::Infallible;
use tokio::net::TcpListener;
use tokio::sync::watch;

async fn handle(req: Request<Incoming>) -> Result<Response<Full<Bytes>>, Infallible> {
    let (status, ctype, body) = if req.uri().path() == "/health" {
        (
            StatusCode::OK,
            "application/json",
            Bytes::from_static(br#"{"status":"OK"}"#),
        )
    } else {
        let p = Problem::new(
            StatusCode::NOT_IMPLEMENTED,
            "this worker does not serve invocations yet",
        )
        .with_instance(req.uri().path());
        (
            StatusCode::NOT_IMPLEMENTED,
            CONTENT_TYPE,
            Bytes::from(p.to_json()),
        )
    };
    let mut resp = Response::new(Full::new(body));
    *resp.status_mut() = status;
    resp.headers_mut()
        .insert(header::CONTENT_TYPE, http::HeaderValue::from_static(ctype));
    Ok(resp)
}

/// Serves HTTP/1.1 and h2c until `stop` flips.
pub async fn serve(listener: TcpListener, mut stop: watch::Receiver<bool>) {
    loop {
        let accepted = tokio::select! {
            a = listener.accept() => a,
            _ = stop.changed() => return,
        };
        let Ok((stream, _)) = accepted else { continue };
        let _ = stream.set_nodelay(true);
        let mut stop = stop.clone();
        tokio::spawn(async move {
            let builder = Builder::new(TokioExecutor::new());
            let conn = builder.serve_connection(TokioIo::new(stream), service_fn(handle));
            tokio::select! {
                _ = conn => {}
                _ = stop.changed() => {}
            }
        });
    }
}
