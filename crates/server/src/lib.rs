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

/// What a command prints when it fails: the error, then each cause its text does not already
/// hold. Errors that quote their cause and also chain it (`"reading x: {source}"`) would show
/// it twice otherwise, as `anyhow`'s own report does.
pub fn failure_report(error: &anyhow::Error) -> String {
    let mut report = format!("error: {error}");
    for cause in error.chain().skip(1) {
        let text = cause.to_string();
        if !report.contains(&text) {
            report.push_str("\n  caused by: ");
            report.push_str(&text);
        }
    }
    report
}

#[cfg(test)]
mod tests {
    use anyhow::Context;

    use super::failure_report;

    #[derive(Debug, thiserror::Error)]
    #[error("reading calls.ndjson: {0}")]
    struct Quoting(#[source] std::io::Error);

    #[test]
    fn a_failure_names_each_cause_once() {
        let io = || std::io::Error::new(std::io::ErrorKind::NotFound, "no such file");
        let quoting: anyhow::Result<()> = Err(Quoting(io()).into());
        let report = failure_report(
            &quoting
                .context("importing calls.ndjson")
                .expect_err("fails"),
        );
        assert_eq!(
            report,
            "error: importing calls.ndjson\n  caused by: reading calls.ndjson: no such file"
        );
        let plain: std::io::Result<()> = Err(io());
        let report = failure_report(&plain.context("opening the store").expect_err("fails"));
        assert_eq!(
            report,
            "error: opening the store\n  caused by: no such file"
        );
    }
}
