//! Merchant Monitor's server: configuration, the embedded pipeline (WAL → aggregator →
//! rollup store and activity stream), the HTTP API, the demo generator, replay and benchmarks.
//!
//! The binary (`merchant-monitor`) is a thin command-line layer over this library; tests
//! start the same pieces in process.

pub mod bench;
pub mod cluster;
pub mod config;
pub mod demo;
pub mod http;
pub mod ingest;
pub mod pipeline;
pub mod replay;
pub mod serve;
