//! warden: a gRPC authentication service.
//!
//! Layers, each knowing only the one below: `grpc` (transport) → `domain`
//! (what warden does) → `store` (persistence). `app` wires them together;
//! `main.rs` is the command line.

#![cfg_attr(
    not(test),
    deny(clippy::unwrap_used, clippy::expect_used, clippy::panic, clippy::todo)
)]

pub mod app;
pub mod cli;
pub mod config;
pub mod domain;
pub mod grpc;
pub mod http;
pub mod limits;
pub mod mail;
pub mod metrics;
pub mod proto;
pub mod state;
pub mod store;
pub mod telemetry;
