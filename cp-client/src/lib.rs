//! The client of the control plane's internal API, shared by workers and gateways: JSON calls with
//! the internal credential, and the state feed read as a stream of newline-delimited messages.

#![forbid(unsafe_code)]

use bytes::{Buf, Bytes, BytesMut};
use http::{Method, Request, StatusCode, Uri, header};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use model::feed::FeedMessage;
use serde::Serialize;
use serde::de::DeserializeOwned;
use std::time::Duration;

/// The longest feed line accepted (a snapshot of a large installation).
const MAX_LINE: usize = 256 << 20;

/// Failures talking to the control plane.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("control plane unreachable: {0}")]
    Connect(String),
    #[error("control plane answered {status}: {body}")]
    Status { status: StatusCode, body: String },
    #[error("invalid answer from the control plane: {0}")]
    Decode(String),
    #[error("control plane call timed out")]
    Timeout,
}

/// A client of the control plane's internal endpoints.
#[derive(Debug, Clone)]
pub struct CpClient {
    client: Client<HttpConnector, Full<Bytes>>,
    base: Uri,
    token: String,
}

impl CpClient {
    pub fn new(base: Uri, token: String) -> Self {
        let mut connector = HttpConnector::new();
        connector.set_nodelay(true);
        connector.set_connect_timeout(Some(Duration::from_secs(5)));
        let client = Client::builder(TokioExecutor::new()).build(connector);
        Self {
            client,
            base,
            token,
        }
    }

    fn uri(&self, path_and_query: &str) -> Result<Uri, ClientError> {
        let mut parts = self.base.clone().into_parts();
        parts.path_and_query = Some(
            path_and_query
                .parse()
                .map_err(|e| ClientError::Decode(format!("{e}")))?,
        );
        Uri::from_parts(parts).map_err(|e| ClientError::Decode(e.to_string()))
    }

    async fn send(
        &self,
        method: Method,
        path: &str,
        body: Bytes,
    ) -> Result<http::Response<Incoming>, ClientError> {
        let req = Request::builder()
            .method(method)
            .uri(self.uri(path)?)
            .header(header::AUTHORIZATION, format!("Bearer {}", self.token))
            .header(header::CONTENT_TYPE, "application/json")
            .body(Full::new(body))
            .map_err(|e| ClientError::Decode(e.to_string()))?;
        self.client
            .request(req)
            .await
            .map_err(|e| ClientError::Connect(e.to_string()))
    }

    /// POSTs JSON and decodes the JSON answer; non-2xx answers are [`ClientError::Status`].
    pub async fn post_json<T: Serialize, R: DeserializeOwned>(
        &self,
        path: &str,
        body: &T,
    ) -> Result<R, ClientError> {
        let body = serde_json::to_vec(body).map_err(|e| ClientError::Decode(e.to_string()))?;
        let call = async {
            let resp = self.send(Method::POST, path, Bytes::from(body)).await?;
            let status = resp.status();
            let bytes = resp
                .into_body()
                .collect()
                .await
                .map_err(|e| ClientError::Connect(e.to_string()))?
                .to_bytes();
            if !status.is_success() {
                return Err(ClientError::Status {
                    status,
                    body: String::from_utf8_lossy(&bytes).into_owned(),
                });
            }
            serde_json::from_slice(&bytes).map_err(|e| ClientError::Decode(e.to_string()))
        };
        tokio::time::timeout(Duration::from_secs(10), call)
            .await
            .map_err(|_| ClientError::Timeout)?
    }

    /// Opens the feed from `since`.
    pub async fn feed(&self, since: u64) -> Result<FeedStream, ClientError> {
        let resp = tokio::time::timeout(
            Duration::from_secs(10),
            self.send(
                Method::GET,
                &format!("/internal/v1/feed?since={since}"),
                Bytes::new(),
            ),
        )
        .await
        .map_err(|_| ClientError::Timeout)??;
        let status = resp.status();
        if !status.is_success() {
            let bytes = resp
                .into_body()
                .collect()
                .await
                .map(|c| c.to_bytes())
                .unwrap_or_default();
            return Err(ClientError::Status {
                status,
                body: String::from_utf8_lossy(&bytes).into_owned(),
            });
        }
        Ok(FeedStream {
            body: resp.into_body(),
            buf: BytesMut::new(),
        })
    }
}

/// An open feed.
#[derive(Debug)]
pub struct FeedStream {
    body: Incoming,
    buf: BytesMut,
}

impl FeedStream {
    /// The next message; `Ok(None)` when the control plane ended the stream.
    pub async fn next(&mut self) -> Result<Option<FeedMessage>, ClientError> {
        loop {
            if let Some(pos) = self.buf.iter().position(|b| *b == b'\n') {
                let line = self.buf.split_to(pos + 1);
                let line = &line[..pos];
                if line.iter().all(u8::is_ascii_whitespace) {
                    continue;
                }
                return serde_json::from_slice(line)
                    .map(Some)
                    .map_err(|e| ClientError::Decode(e.to_string()));
            }
            if self.buf.len() > MAX_LINE {
                return Err(ClientError::Decode("feed line too long".into()));
            }
            match self.body.frame().await {
                None => return Ok(None),
                Some(Err(e)) => return Err(ClientError::Connect(e.to_string())),
                Some(Ok(frame)) => {
                    if let Ok(mut data) = frame.into_data() {
                        while data.has_remaining() {
                            let chunk = data.chunk();
                            self.buf.extend_from_slice(chunk);
                            let n = chunk.len();
                            data.advance(n);
                        }
                    }
                }
            }
        }
    }
}
