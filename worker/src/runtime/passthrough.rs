//! Any non-built-in image: the worker forwards the invocation to the inference server the operator
//! runs beside it, as NVIDIA's worker sidecar does.
//!
//! The request goes to `http://127.0.0.1:{inferencePort or 8000}{path and query}` over HTTP/1.1
//! (a pooled `hyper_util` legacy client) with its method, its headers minus the hop-by-hop ones
//! (nvcf-api.md §2.1 step 3) and `Host`, plus the worker-owned headers that describe the function
//! (`NVCF-FUNCTION-ID`, `-NCAID`, `-FUNCTION-NAME`, from the worker's feed, replacing any copies),
//! and its body streamed as it arrives. The response's status, headers (minus hop-by-hop) and
//! streamed body come back unchanged; a container error status passes through as is (the gateway
//! decides what the client sees). A connection that cannot be made answers 502 "Inference
//! connection error while making inference request".

use super::{Body, Ctx, Invocation, RuntimeError};
use http::header;
use http::{Request, Response, Uri, Version};
use http_body_util::BodyExt;
use hyper::body::Incoming;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use model::headers::remove_hop_by_hop;

/// Port of the inference server when the function names none.
pub const DEFAULT_INFERENCE_PORT: u16 = 8000;

/// The pooled client towards the inference servers on this host.
#[derive(Debug, Clone)]
pub struct Proxy {
    client: Client<HttpConnector, Incoming>,
}

impl Proxy {
    pub fn new() -> Self {
        let mut connector = HttpConnector::new();
        connector.set_nodelay(true);
        Self {
            client: Client::builder(TokioExecutor::new()).build(connector),
        }
    }
}

impl Default for Proxy {
    fn default() -> Self {
        Self::new()
    }
}

/// Forwards one invocation and streams the answer back.
pub async fn serve(
    ctx: &Ctx,
    inv: &Invocation,
    req: Request<Incoming>,
) -> Result<Response<Body>, RuntimeError> {
    let port = inv.inference_port.unwrap_or(DEFAULT_INFERENCE_PORT);
    let (mut parts, body) = req.into_parts();
    let path = parts.uri.path_and_query().map_or("/", |p| p.as_str());
    let uri: Uri = format!("http://127.0.0.1:{port}{path}")
        .parse()
        .map_err(|e| RuntimeError::BadRequest(format!("invalid request path '{path}': {e}")))?;
    remove_hop_by_hop(&mut parts.headers);
    parts.headers.remove(header::HOST);
    if let Some(owned) = &inv.container_headers {
        owned.insert_into(&mut parts.headers);
    }
    let mut out = Request::new(body);
    *out.method_mut() = parts.method;
    *out.uri_mut() = uri;
    *out.version_mut() = Version::HTTP_11;
    *out.headers_mut() = parts.headers;
    let resp = ctx.proxy.client.request(out).await.map_err(|e| {
        let cause = std::error::Error::source(&e).map_or_else(|| e.to_string(), |s| s.to_string());
        RuntimeError::InferenceConnection(format!("127.0.0.1:{port}: {cause}"))
    })?;
    let (mut parts, body) = resp.into_parts();
    remove_hop_by_hop(&mut parts.headers);
    let mut back = Response::new(body.map_err(Into::into).boxed_unsync());
    *back.status_mut() = parts.status;
    *back.headers_mut() = parts.headers;
    Ok(back)
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    #[test]
    fn strips_hop_by_hop_and_connection_named_headers() {
        let mut h = http::HeaderMap::new();
        h.insert(
            header::CONNECTION,
            HeaderValue::from_static("keep-alive, x-private"),
        );
        h.insert("x-private", HeaderValue::from_static("1"));
        h.insert("keep-alive", HeaderValue::from_static("timeout=5"));
        h.insert(
            header::TRANSFER_ENCODING,
            HeaderValue::from_static("chunked"),
        );
        h.insert("nvcf-reqid", HeaderValue::from_static("r"));
        remove_hop_by_hop(&mut h);
        assert_eq!(h.len(), 1);
        assert_eq!(h["nvcf-reqid"], "r");
    }
}
