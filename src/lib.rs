//! The all-in-one launcher's library: config loading (file + env overrides), the admin listener,
//! and starting the components of a role. `src/main.rs` is only argument parsing around it.

#![forbid(unsafe_code)]

pub mod admin;
pub mod config;
pub mod launcher;
pub mod logging;
