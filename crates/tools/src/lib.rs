//! The command-line tools around the server: `gen` (`dataset`: seeded realistic datasets), `replay` (send
//! a file to a server's ingest endpoint, with progress) and `bench` (the benchmarks behind the
//! performance targets). The binary wires them as subcommands.

pub mod bench;
pub mod dataset;
pub mod replay;
