//! `bench`: the benchmarks behind the performance targets, printing medians.
//!
//! - `aggregate`: window aggregation in process, one thread (target ≥ 1,000,000 events/s).
//! - `parse`: parse + aggregate a generated 2M-event NDJSON file (or `--input FILE`), no HTTP
//!   (target ≥ 1.5M/s).
//! - `query`: one merchant over 24 h at 1-minute step with 10,000 merchants stored (p99 ≤ 10 ms).
//! - `ingest`: HTTP ingest end to end against a child server, batches of 1,000, durable acks,
//!   rollups written (target ≥ 200,000 events/s sustained), with the server's peak RSS.
//! - `stages`: one thread, nanoseconds per event of each step (UTF-8 check, parse, encode,
//!   decode, aggregate).
//! - `archive`: bytes stored per event and the archive's write rate.
//! - `lookup`: correlation-id lookups in an archive of `--lookup-events` events over 24 h.
//! - `kafka` (feature `kafka`; against `--kafka-brokers`, else a local in-memory tansu broker
//!   it starts): consume → aggregate → store against a bare consumer of the same topic, in
//!   the same run.
//! - `ingest-keys`: the ingest benchmark without and with an `Idempotency-Key` on every
//!   batch, alternating in one run (target: ratio ≥ 0.9).
//! - `import`: `import` of a 2M-event NDJSON file (or `--input FILE`) into a fresh data
//!   directory, against DuckDB's `read_json` + `GROUP BY` of the same file, alternating.
//! - `tracing`: HTTP ingest and publishing with traces off, exported at sampling 0.01 and at
//!   1.0 (to an OTLP/HTTP sink in the benchmark), alternating in one run (target: 0.01 costs
//!   under 3 %).
//! - `bad-lines`: 64 clients send 16 MiB bodies of unparseable lines for `--ingest-seconds`;
//!   the server's resident memory before, at its peak and after, against the request-memory
//!   bound.

use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use clap::Args;
use mm_traffic::TrafficConfig;

mod aggregate;
mod archive;
mod bad_lines;
mod child;
mod chunks;
mod handoff;
mod import;
mod ingest;
#[cfg(feature = "kafka")]
mod kafka;
mod publish;
mod query;
mod traces;

pub use aggregate::parse_and_aggregate;

use aggregate::{bench_aggregate, bench_parse, bench_stages};
use archive::{bench_archive, bench_lookup};
use ingest::bench_ingest;
use query::bench_query;

#[derive(Debug, Args, Clone)]
pub struct BenchArgs {
    /// Benchmarks to run, comma-separated: aggregate, parse, stages, query, ingest, archive,
    /// lookup, kafka (starts a local broker unless --kafka-brokers), bad-lines, ingest-keys,
    /// import, publish (the event gateway against /v1/ingest), tracing (ingest and publish
    /// with traces off, 1 %, 100 %).
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "aggregate,parse,query,ingest"
    )]
    pub only: Vec<String>,
    /// Events in the generated datasets.
    #[arg(long, default_value_t = 2_000_000)]
    pub events: u64,
    /// Repetitions of each in-process benchmark (the median is reported).
    #[arg(long, default_value_t = 5)]
    pub runs: usize,
    /// Duration of each ingest, ingest-keys and bad-lines run.
    #[arg(long, default_value_t = 60)]
    pub ingest_seconds: u64,
    /// Events archived for the lookup benchmark (spread over 24 hours).
    #[arg(long, default_value_t = 50_000_000)]
    pub lookup_events: u64,
    /// Parser threads for the parse benchmark [default: available cores].
    #[arg(long)]
    pub threads: Option<usize>,
    /// A Kafka broker for the `kafka` benchmark (default: a local in-memory tansu broker it
    /// starts).
    #[arg(long, value_name = "HOST:PORT")]
    pub kafka_brokers: Option<String>,
    /// librdkafka settings for every client of the `kafka` benchmark, applied last, e.g.
    /// `fetch.wait.max.ms=500` (comma-separated or repeated).
    #[arg(long, value_name = "KEY=VALUE", value_delimiter = ',')]
    pub kafka_client: Vec<String>,
    /// Aggregation consumers the `kafka` benchmark's pipeline runs (`[kafka]
    /// aggregation_threads`) [default: the setting's default].
    #[arg(long, value_name = "N")]
    pub aggregation_threads: Option<usize>,
    /// An NDJSON file of API calls (plain, gzip or zstd) for the `parse` and `import`
    /// benchmarks instead of the generated one, read with the default field mapping.
    #[arg(long, value_name = "FILE")]
    pub input: Option<PathBuf>,
    /// Directory for datasets and stores [default: a fresh temporary directory].
    #[arg(long)]
    pub work_dir: Option<PathBuf>,
}

fn median(values: &mut [f64]) -> f64 {
    values.sort_by(f64::total_cmp);
    values[values.len() / 2]
}

pub fn run(args: BenchArgs) -> anyhow::Result<()> {
    let work_dir = match &args.work_dir {
        Some(dir) => dir.clone(),
        None => std::env::temp_dir().join(format!("mm-bench-{}", std::process::id())),
    };
    std::fs::create_dir_all(&work_dir)
        .with_context(|| format!("creating {}", work_dir.display()))?;
    println!("work directory: {}", work_dir.display());
    for name in &args.only {
        match name.as_str() {
            "aggregate" => bench_aggregate(&args)?,
            "parse" => bench_parse(&args, &work_dir)?,
            "stages" => bench_stages(&args, &work_dir)?,
            "archive" => bench_archive(&args, &work_dir)?,
            "lookup" => bench_lookup(&args, &work_dir)?,
            "query" => bench_query(&args, &work_dir)?,
            "ingest" => bench_ingest(&args, &work_dir)?,
            "bad-lines" => bad_lines::bench_bad_lines(&args, &work_dir)?,
            "ingest-keys" => ingest::bench_ingest_keys(&args, &work_dir)?,
            "import" => import::bench_import(&args, &work_dir)?,
            "publish" => publish::bench_publish(&args, &work_dir)?,
            "tracing" => traces::bench_tracing(&args, &work_dir)?,
            #[cfg(feature = "kafka")]
            "kafka" => kafka::bench_kafka(&args, &work_dir)?,
            #[cfg(not(feature = "kafka"))]
            "kafka" => bail!("the kafka benchmark needs a build with the `kafka` feature"),
            other => bail!(
                "unknown benchmark {other:?} (aggregate, parse, stages, query, ingest, ingest-keys, import, publish, tracing, archive, lookup, kafka, bad-lines)"
            ),
        }
    }
    if args.work_dir.is_none() {
        let _ = std::fs::remove_dir_all(&work_dir);
    }
    Ok(())
}

fn dataset(work_dir: &Path, events: u64) -> anyhow::Result<PathBuf> {
    // 2,000 events per second of event time: a 2M-event file spans about 17 minutes, so the
    // 5% of events that arrive up to 5 minutes late include true corrections.
    let path = work_dir.join(format!("dataset-{events}-r2000.ndjson"));
    if !path.exists() {
        let config = TrafficConfig {
            start_ts_us: 1_795_273_200_000_000,
            seed: 11,
            events_per_second: 2_000.0,
            ..TrafficConfig::default()
        };
        crate::dataset::write_gen(config, events, &path)?;
    }
    Ok(path)
}

fn percentile(sorted: &[f64], q: f64) -> f64 {
    sorted[((sorted.len() - 1) as f64 * q).round() as usize]
}
