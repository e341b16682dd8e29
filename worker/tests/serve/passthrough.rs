//! Passthrough to an inference server beside the worker: status, headers and bodies streamed
//! both ways, hop-by-hop headers dropped, a refused connection answered 502.

use crate::support::*;
use bytes::Bytes;
use futures_util::stream;
use http::{Request, Response, StatusCode};
use http_body_util::{BodyExt, StreamBody};
use hyper::body::{Frame, Incoming};
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use std::convert::Infallible;
use std::net::SocketAddr;
use tokio::net::TcpListener;
use worker::config::ServeConfig;

/// An inference server that answers 201 with what it saw, its body streamed in two frames.
async fn inference_server() -> SocketAddr {
    let l = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = l.local_addr().expect("addr");
    tokio::spawn(async move {
        while let Ok((tcp, _)) = l.accept().await {
            let svc = service_fn(|req: Request<Incoming>| async move {
                let header = |name: &str| {
                    req.headers()
                        .get(name)
                        .and_then(|v| v.to_str().ok())
                        .unwrap_or("-")
                        .to_owned()
                };
                let seen = format!(
                    "{} {} test={} private={}",
                    req.method(),
                    req.uri(),
                    header("x-test"),
                    req.headers().contains_key("x-private"),
                );
                // The worker-owned headers that describe the function.
                let function = format!(
                    "{} {} {}",
                    header("nvcf-function-id"),
                    header("nvcf-ncaid"),
                    header("nvcf-function-name")
                );
                let body = req
                    .into_body()
                    .collect()
                    .await
                    .map(|b| b.to_bytes())
                    .unwrap_or_default();
                let frames: Vec<Result<Frame<Bytes>, Infallible>> = vec![
                    Ok(Frame::data(Bytes::from_static(b"got:"))),
                    Ok(Frame::data(body)),
                ];
                Response::builder()
                    .status(201)
                    .header("x-seen", seen)
                    .header("x-function", function)
                    .header("content-type", "text/x-result")
                    .body(StreamBody::new(stream::iter(frames)))
            });
            tokio::spawn(
                hyper::server::conn::http1::Builder::new().serve_connection(TokioIo::new(tcp), svc),
            );
        }
    });
    addr
}

#[tokio::test]
async fn passthrough_forwards_to_the_inference_server() {
    let upstream = inference_server().await;
    let mut f = function("nvcr.io/acme/model:2");
    f.inference_port = Some(upstream.port());
    let mut refused = function("nvcr.io/acme/down:1");
    refused.inference_port = {
        let l = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        Some(l.local_addr().expect("addr").port())
    };
    let w = start(&[(&f, 4), (&refused, 4)], ServeConfig::default()).await;

    let (body, sent) = chunked(8, 1000);
    let mut req = post(w.addr, Some(f.version_id), "/v1/infer?q=1", None, body);
    req.headers_mut()
        .insert("x-test", "yes".parse().expect("hv"));
    // A caller's copy of a worker-owned header is replaced with the feed's value.
    req.headers_mut()
        .insert("nvcf-function-name", "forged".parse().expect("hv"));
    let r = call(w.addr, req).await;
    assert_eq!(r.status, StatusCode::CREATED);
    assert_eq!(
        r.headers["x-seen"],
        "POST /v1/infer?q=1 test=yes private=false"
    );
    // Set by the worker from its feed: the gateway does not send them.
    assert_eq!(r.headers["x-function"], format!("{} nvcf-default f", f.id));
    assert_eq!(r.headers["content-type"], "text/x-result");
    assert_eq!(r.body.len(), 4 + sent.len());
    assert!(r.body[4..] == sent[..]);

    // Over HTTP/1.1, hop-by-hop headers (and those `Connection` names) stop at the worker.
    let mut s = h1(w.addr).await;
    let mut req = post(w.addr, Some(f.version_id), "/h1", None, full("b"));
    *req.uri_mut() = "/h1".parse().expect("uri");
    let h = req.headers_mut();
    h.insert("host", w.addr.to_string().parse().expect("hv"));
    h.insert("connection", "x-private".parse().expect("hv"));
    h.insert("x-private", "1".parse().expect("hv"));
    let r = collect(s.send_request(req).await.expect("h1")).await;
    assert_eq!(r.headers["x-seen"], "POST /h1 test=- private=false");
    assert_eq!(&r.body[..], b"got:b");

    let r = call(
        w.addr,
        post(w.addr, Some(refused.version_id), "/", None, full("x")),
    )
    .await;
    assert_eq!(r.status, StatusCode::BAD_GATEWAY);
    assert!(
        r.detail()
            .starts_with("Inference connection error while making inference request"),
        "{r:?}"
    );
}
