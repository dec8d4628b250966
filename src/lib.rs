//! tokentap: an OpenAI-compatible reverse proxy that meters tokens.
//!
//! The binary is thin: it parses flags, loads the config, binds, and calls [`run`]. Tests
//! bind their own listeners on `127.0.0.1:0` and pass their own shutdown future.

pub mod admin;
pub mod app;
pub mod cli;
pub mod config;
pub mod cost;
pub mod demo;
pub mod error;
pub mod metering;
pub mod metrics;
pub mod proxy;
pub mod record;
pub mod repeated;
pub mod server;
pub mod shutdown;
pub mod tcp_send;
pub mod telemetry;
pub mod tracker;
pub mod upstream;
pub mod wire;

pub use app::App;
pub use server::{Listeners, run};
