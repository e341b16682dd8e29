//! The gateway: one listener serving HTTP/1.1 and h2c (plus optional TLS and HTTP/3 listeners), request classification by Host and path, a
//! streaming reverse proxy to the control plane for the management and key-service APIs, and the
//! synchronous invocation path (feed follower, authenticate, route, admit, dispatch, respond). See `docs/architecture.md` §1–2 and `nvcf-api.md` §5.
//!
//! Entry point: [`run`] with a validated [`DataplaneConfig`] (from [`DataplaneFile::validate`]) and an
//! already-bound listener, so that tests and the binary both choose their own sockets.

#![forbid(unsafe_code)]

pub mod access;
#[doc(hidden)]
pub mod bench;
mod body;
pub mod classify;
mod clock;
pub mod config;
mod cors;
mod deadline;
mod drain;
pub mod error;
pub mod feed;
mod fields;
mod front;
mod headers;
mod invoke;
mod io;
pub mod keys;
pub mod latency;
pub mod metrics;
mod pending;
mod proxy;
mod queue_report;
pub mod quic;
pub mod routing;
mod server;
mod serving;
pub mod tls;

pub use classify::{InvocationKind, Route, classify};
pub use config::{ConfigError, DataplaneConfig, DataplaneFile, QuicConfig};
pub use error::{Cause, DataplaneError, GatewayError};
pub use metrics::describe_metrics;
pub use server::{Listeners, run, serve, serve_all};
