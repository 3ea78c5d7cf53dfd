//! Merchant Monitor's server: configuration, wiring of the engine (embedded, or cluster mode
//! on Kafka with the `kafka` feature), the HTTP API and the demo. The capabilities live in
//! their own crates (`mm-ingest`, `mm-engine`, `mm-cluster`, `mm-query`, `mm-tools`, …).
//!
//! The binary (`merchant-monitor`) is a thin command-line layer over this library; tests
//! start the same pieces in process.

pub mod config;
pub mod demo;
pub mod http;
pub mod import;
pub mod serve;
