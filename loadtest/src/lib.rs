//! `loadtest`: a load generator for the gateway, used instead of wrk/h2load/oha.
//!
//! HTTP/1.1, h2c, HTTP/2 over TLS and HTTP/3 (quinn + h3); closed loop (connections × streams) and open loop (a fixed
//! arrival rate, latency measured from each request's intended send time so coordinated omission
//! does not hide stalls); HdrHistogram percentiles, a live progress line, a human table and a JSON
//! report; and an NVCF mode ([`nvcf`]) that sets itself up against a running stack.
//!
//! | module | what |
//! |---|---|
//! | [`cli`] | command-line flags (clap) |
//! | [`client`] | connections per protocol, one request, error kinds |
//! | [`scheduler`] | closed/open loop drivers and the open-loop timetable (pure) |
//! | [`stats`] | per-task counters and the latency histogram |
//! | [`report`] | the JSON report and the human table |
//! | [`nvcf`] | NVCF mode: keys, function, deployment, invocation target |

pub mod cli;
pub mod client;
pub mod nvcf;
pub mod report;
pub mod scheduler;
pub mod stats;

pub use cli::{Proto, RunArgs};
pub use client::{ClientError, ErrorKind, Target};
pub use report::Report;
pub use scheduler::{RunPlan, run};
