//! `gen`: a seeded realistic NDJSON dataset with controlled disorder.

use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::Context;
use clap::Args;
use mm_traffic::TrafficConfig;

/// Write a realistic NDJSON dataset of N events (seeded, with controlled disorder).
#[derive(Debug, Args, Clone)]
pub struct GenArgs {
    /// Number of events.
    #[arg(long, short = 'n', default_value_t = 1_000_000)]
    pub events: u64,
    /// Output file; `-` for stdout.
    #[arg(long, short = 'o', default_value = "-")]
    pub output: PathBuf,
    #[arg(long, default_value_t = 7)]
    pub seed: u64,
    #[arg(long, default_value_t = 5_000)]
    pub merchants: usize,
    /// Event-time rate of the dataset (events per second of event time).
    #[arg(long, default_value_t = 20_000.0)]
    pub rate: f64,
    /// Share of events that arrive up to `max-lateness` late.
    #[arg(long, default_value_t = 0.05)]
    pub late_fraction: f64,
    /// Largest lateness, in seconds.
    #[arg(long, default_value_t = 300)]
    pub max_lateness: u64,
    /// Event time of the first event (RFC 3339 or epoch ms) [default: now minus the
    /// dataset's duration, so the data ends about now].
    #[arg(long)]
    pub start: Option<String>,
}

/// Runs `gen`.
pub fn run(args: GenArgs) -> anyhow::Result<()> {
    let start_ts_us = match &args.start {
        Some(text) => {
            mm_model::time::parse_param(text).with_context(|| format!("--start {text:?}"))?
        }
        None => mm_model::time::now_us() - (args.events as f64 / args.rate * 1e6) as i64,
    };
    let config = TrafficConfig {
        seed: args.seed,
        merchants: args.merchants,
        start_ts_us,
        events_per_second: args.rate,
        late_fraction: args.late_fraction,
        max_lateness_us: args.max_lateness as i64 * 1_000_000,
        ..TrafficConfig::default()
    };
    write_gen(config, args.events, &args.output)
}

/// Writes `events` generated events as NDJSON to `output` (`-` for stdout).
pub fn write_gen(config: TrafficConfig, events: u64, output: &Path) -> anyhow::Result<()> {
    let started = std::time::Instant::now();
    let bytes = if output == Path::new("-") {
        let stdout = std::io::stdout();
        let mut writer = std::io::BufWriter::with_capacity(1 << 20, stdout.lock());
        let bytes =
            mm_traffic::write_dataset(config, events, &mut writer).context("writing to stdout")?;
        writer.flush().context("writing to stdout")?;
        bytes
    } else {
        let file = std::fs::File::create(output)
            .with_context(|| format!("creating {}", output.display()))?;
        let mut writer = std::io::BufWriter::with_capacity(1 << 20, file);
        let bytes = mm_traffic::write_dataset(config, events, &mut writer)
            .with_context(|| format!("writing {}", output.display()))?;
        writer
            .flush()
            .with_context(|| format!("writing {}", output.display()))?;
        bytes
    };
    eprintln!(
        "wrote {events} events ({:.1} MB) in {:.2} s",
        bytes as f64 / 1e6,
        started.elapsed().as_secs_f64()
    );
    Ok(())
}

/// Opens an NDJSON file for reading, decompressing gzip and zstd (recognised by their magic
/// bytes, whatever the file is called).
pub fn open_input(path: &Path) -> anyhow::Result<Box<dyn std::io::Read + Send>> {
    use std::io::{BufRead, BufReader};
    let file = std::fs::File::open(path).with_context(|| format!("opening {}", path.display()))?;
    let mut reader = BufReader::with_capacity(1 << 20, file);
    let head = reader
        .fill_buf()
        .with_context(|| format!("reading {}", path.display()))?;
    Ok(match head {
        [0x1f, 0x8b, ..] => Box::new(flate2::bufread::MultiGzDecoder::new(reader)),
        [0x28, 0xb5, 0x2f, 0xfd, ..] => Box::new(
            zstd::stream::read::Decoder::with_buffer(reader)
                .with_context(|| format!("starting to decompress {}", path.display()))?,
        ),
        _ => Box::new(reader),
    })
}
