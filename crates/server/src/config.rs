//! Configuration: a TOML file (every field optional), environment overrides, command-line
//! flags, validated into one typed [`Config`].
//!
//! ```toml
//! listen = "127.0.0.1:8080"
//! grpc_listen = "127.0.0.1:9090"  # the event gateway over gRPC; off when absent
//! data_dir = "./data"
//!
//! [auth]
//! tokens = ["s3cret"]          # bearer tokens accepted by every endpoint
//!
//! [ingest]
//! max_body_bytes = 16777216   # compressed request body limit (413 beyond)
//! max_record_bytes = 262144
//! max_clock_skew = "5m"       # events further in the future are rejected
//! max_inflight_requests = 64  # more concurrent ingest requests get 429
//! max_reported_errors = 100   # rejected records listed in full per answer
//! idempotency_window = "24h"  # how long an Idempotency-Key is remembered
//!
//! [http]                      # connections and request bodies (mm_http::RawHttpSettings)
//! max_connections = 4096
//! header_read_timeout = "10s"
//! idle_timeout = "60s"
//!
//! [window]
//! grace = "3m"
//! idle_timeout = "10s"
//! checkpoint_interval = "2s"
//!
//! [storage]
//! retention = "30d"
//! ballast_bytes = 67108864    # reserve given up when the disk fills
//!
//! [mapping]                   # JSON pointers into incoming records
//! merchant = "/merchant"
//!
//! [activity]
//! file = "activity.ndjson"    # relative to data_dir; omit to disable the file sink
//!
//! [telemetry]                 # traces (mm_trace::RawTelemetry); off without an endpoint
//! otlp_endpoint = "http://127.0.0.1:4318"
//! otlp_protocol = "http"      # or "grpc" (then usually port 4317)
//! sampling_ratio = 0.01       # new traces recorded; callers' traceparent decides for theirs
//! service_name = "merchant-monitor"
//! ```
//!
//! Environment overrides: `MM_LISTEN`, `MM_GRPC_LISTEN`, `MM_DATA_DIR`, `MM_AUTH_TOKENS` (comma-separated),
//! `MM_RETENTION`, `MM_GRACE`, `MM_OTLP_ENDPOINT` (empty: traces off).

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, bail};
use mm_model::mapping::FieldMapping;
use serde::Deserialize;

/// The file format, as written by users.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawConfig {
    /// Address the HTTP API listens on.
    pub listen: Option<String>,
    /// Address the event gateway's gRPC services listen on (HTTP/2); none by default.
    pub grpc_listen: Option<String>,
    /// Directory of the WAL, the rollup store and the activity file.
    pub data_dir: Option<PathBuf>,
    #[serde(default)]
    pub auth: RawAuth,
    #[serde(default)]
    pub ingest: RawIngest,
    #[serde(default)]
    pub http: mm_http::RawHttpSettings,
    #[serde(default)]
    pub window: RawWindow,
    #[serde(default)]
    pub storage: RawStorage,
    #[serde(default)]
    pub mapping: FieldMapping,
    #[serde(default)]
    pub activity: RawActivity,
    /// Cluster mode: consume from (and ingest into) Kafka.
    pub kafka: Option<mm_kafka::KafkaSettings>,
    /// Traces: OTLP export of spans (off without an endpoint).
    #[serde(default)]
    pub telemetry: mm_trace::RawTelemetry,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawAuth {
    /// Bearer tokens; without any, only a loopback listener is allowed.
    #[serde(default)]
    pub tokens: Vec<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawIngest {
    pub max_body_bytes: Option<usize>,
    pub max_decoded_bytes: Option<usize>,
    pub max_record_bytes: Option<usize>,
    pub max_clock_skew: Option<String>,
    pub max_inflight_requests: Option<usize>,
    /// Rejected records listed in full in an ingest answer; the rest are counted by code.
    pub max_reported_errors: Option<usize>,
    /// How long a request's Idempotency-Key is remembered (default 24h).
    pub idempotency_window: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawWindow {
    pub grace: Option<String>,
    pub idle_timeout: Option<String>,
    pub checkpoint_interval: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawStorage {
    pub retention: Option<String>,
    pub wal_segment_bytes: Option<u64>,
    /// Events held in memory before the archive writes them to Parquet.
    pub archive_flush_events: Option<usize>,
    /// Longest time an event waits in memory before the archive writes it to Parquet.
    pub archive_flush_age: Option<String>,
    /// Largest archive size in bytes; the oldest segments are dropped beyond it.
    pub archive_max_bytes: Option<u64>,
    /// Space kept in reserve in the data directory and given up when the disk fills, so
    /// acknowledged events can still be checkpointed and archived (0 disables it).
    pub ballast_bytes: Option<u64>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawActivity {
    /// NDJSON file of closed windows and corrections, relative to `data_dir`.
    pub file: Option<PathBuf>,
}

/// Validated settings.
#[derive(Debug, Clone)]
pub struct Config {
    pub listen: SocketAddr,
    /// Where the event gateway's gRPC services listen, if anywhere.
    pub grpc_listen: Option<SocketAddr>,
    pub data_dir: PathBuf,
    pub tokens: Vec<String>,
    pub max_body_bytes: usize,
    pub max_decoded_bytes: usize,
    pub max_record_bytes: usize,
    pub max_clock_skew: Duration,
    pub max_inflight_requests: usize,
    pub max_reported_errors: usize,
    pub idempotency_window: Duration,
    pub http: mm_http::HttpSettings,
    pub grace: Duration,
    pub idle_timeout: Duration,
    pub checkpoint_interval: Duration,
    pub retention: Duration,
    pub wal_segment_bytes: u64,
    pub archive_flush_events: usize,
    pub archive_flush_age: Duration,
    pub archive_max_bytes: Option<u64>,
    pub ballast_bytes: u64,
    pub mapping: FieldMapping,
    pub activity_file: Option<PathBuf>,
    /// Cluster mode when present.
    pub kafka: Option<mm_kafka::KafkaSettings>,
    /// Span export.
    pub telemetry: mm_trace::TelemetrySettings,
}

/// Reads `30d`, `3m`, `10s`, `500ms`, `2h` (one number and one unit).
pub fn parse_duration(text: &str) -> anyhow::Result<Duration> {
    Ok(mm_model::time::parse_duration(text)?)
}

fn duration_or(field: &str, text: Option<&str>, default: Duration) -> anyhow::Result<Duration> {
    match text {
        Some(text) => parse_duration(text).with_context(|| format!("invalid {field}")),
        None => Ok(default),
    }
}

/// Overrides from flags, applied last.
#[derive(Debug, Default, Clone)]
pub struct Overrides {
    pub listen: Option<String>,
    pub grpc_listen: Option<String>,
    pub data_dir: Option<PathBuf>,
    pub kafka: KafkaOverrides,
}

/// The cluster-mode essentials as flags.
#[derive(Debug, Default, Clone)]
pub struct KafkaOverrides {
    pub brokers: Option<String>,
    pub input_topic: Option<String>,
    pub group_id: Option<String>,
    pub activity_topic: Option<String>,
    pub dlq_topic: Option<String>,
}

impl KafkaOverrides {
    fn apply(&self, kafka: &mut Option<mm_kafka::KafkaSettings>) -> anyhow::Result<()> {
        if let Some(brokers) = &self.brokers {
            let settings = kafka.get_or_insert_with(|| {
                mm_kafka::KafkaSettings::new(brokers, "api-calls", "merchant-monitor")
            });
            settings.brokers = brokers.clone();
        }
        let flags_without_brokers = self.input_topic.is_some()
            || self.group_id.is_some()
            || self.activity_topic.is_some()
            || self.dlq_topic.is_some();
        let Some(settings) = kafka.as_mut() else {
            if flags_without_brokers {
                bail!(
                    "--input-topic, --group-id, --activity-topic and --dlq-topic need --kafka-brokers (or a [kafka] section)"
                );
            }
            return Ok(());
        };
        for (flag, target) in [
            (&self.input_topic, &mut settings.input_topic),
            (&self.group_id, &mut settings.group_id),
            (&self.activity_topic, &mut settings.activity_topic),
            (&self.dlq_topic, &mut settings.dlq_topic),
        ] {
            if let Some(value) = flag {
                *target = value.clone();
            }
        }
        Ok(())
    }
}

impl RawConfig {
    /// Reads a TOML file.
    pub fn load(path: &Path) -> anyhow::Result<Self> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("reading config {}", path.display()))?;
        toml::from_str(&text).with_context(|| format!("parsing config {}", path.display()))
    }

    fn apply_env(&mut self, env: &dyn Fn(&str) -> Option<String>) {
        if let Some(listen) = env("MM_LISTEN") {
            self.listen = Some(listen);
        }
        if let Some(listen) = env("MM_GRPC_LISTEN") {
            self.grpc_listen = Some(listen);
        }
        if let Some(dir) = env("MM_DATA_DIR") {
            self.data_dir = Some(dir.into());
        }
        if let Some(tokens) = env("MM_AUTH_TOKENS") {
            self.auth.tokens = tokens
                .split(',')
                .map(str::trim)
                .filter(|token| !token.is_empty())
                .map(str::to_owned)
                .collect();
        }
        if let Some(retention) = env("MM_RETENTION") {
            self.storage.retention = Some(retention);
        }
        if let Some(grace) = env("MM_GRACE") {
            self.window.grace = Some(grace);
        }
    }

    /// Applies environment and flag overrides and validates everything.
    pub fn validate(
        mut self,
        overrides: &Overrides,
        env: &dyn Fn(&str) -> Option<String>,
    ) -> anyhow::Result<Config> {
        self.apply_env(env);
        if let Some(listen) = &overrides.listen {
            self.listen = Some(listen.clone());
        }
        if let Some(listen) = &overrides.grpc_listen {
            self.grpc_listen = Some(listen.clone());
        }
        if let Some(dir) = &overrides.data_dir {
            self.data_dir = Some(dir.clone());
        }
        overrides.kafka.apply(&mut self.kafka)?;
        if let Some(kafka) = &self.kafka {
            for (name, value) in [
                ("kafka.brokers", &kafka.brokers),
                ("kafka.input_topic", &kafka.input_topic),
                ("kafka.group_id", &kafka.group_id),
                ("kafka.activity_topic", &kafka.activity_topic),
                ("kafka.dlq_topic", &kafka.dlq_topic),
            ] {
                if value.trim().is_empty() {
                    bail!("{name} must not be empty");
                }
            }
            if kafka.activity_topic == kafka.input_topic || kafka.dlq_topic == kafka.input_topic {
                bail!(
                    "kafka.activity_topic and kafka.dlq_topic must differ from kafka.input_topic"
                );
            }
            kafka.validate().map_err(anyhow::Error::msg)?;
        }
        let listen_text = self.listen.unwrap_or_else(|| "127.0.0.1:8080".into());
        let listen: SocketAddr = listen_text.parse().with_context(|| {
            format!("listen address {listen_text:?} is not HOST:PORT with an IP host")
        })?;
        let data_dir = self.data_dir.unwrap_or_else(|| PathBuf::from("./data"));
        if self.auth.tokens.iter().any(|token| token.trim().len() < 8) {
            bail!("auth tokens must be at least 8 characters long, not counting spaces");
        }
        if self
            .auth
            .tokens
            .iter()
            .any(|token| token.trim() != token || token.chars().any(char::is_whitespace))
        {
            bail!("auth tokens must not contain spaces");
        }
        if self.auth.tokens.is_empty() && !listen.ip().is_loopback() {
            bail!(
                "refusing to listen on {listen} without auth tokens: set [auth] tokens (or MM_AUTH_TOKENS), or listen on 127.0.0.1"
            );
        }
        let grpc_listen: Option<SocketAddr> = match &self.grpc_listen {
            None => None,
            Some(text) => Some(text.parse().with_context(|| {
                format!("grpc_listen address {text:?} is not HOST:PORT with an IP host")
            })?),
        };
        if let Some(grpc) = grpc_listen
            && self.auth.tokens.is_empty()
            && !grpc.ip().is_loopback()
        {
            bail!(
                "refusing to serve gRPC on {grpc} without auth tokens: set [auth] tokens (or MM_AUTH_TOKENS), or listen on 127.0.0.1"
            );
        }
        let grace = duration_or(
            "window.grace",
            self.window.grace.as_deref(),
            Duration::from_secs(180),
        )?;
        let retention = duration_or(
            "storage.retention",
            self.storage.retention.as_deref(),
            Duration::from_secs(30 * 86_400),
        )?;
        if retention < Duration::from_secs(86_400) {
            bail!("storage.retention must be at least 1d");
        }
        if grace >= retention {
            bail!("window.grace must be shorter than storage.retention");
        }
        let checkpoint_interval = duration_or(
            "window.checkpoint_interval",
            self.window.checkpoint_interval.as_deref(),
            Duration::from_secs(2),
        )?;
        if checkpoint_interval.is_zero() || checkpoint_interval > Duration::from_secs(60) {
            bail!("window.checkpoint_interval must be between 1ms and 60s");
        }
        let idempotency_window = duration_or(
            "ingest.idempotency_window",
            self.ingest.idempotency_window.as_deref(),
            Duration::from_secs(86_400),
        )?;
        if idempotency_window < Duration::from_secs(60)
            || idempotency_window > Duration::from_secs(30 * 86_400)
        {
            bail!("ingest.idempotency_window must be between 1m and 30d");
        }
        let positive =
            |name: &str, value: Option<usize>, default: usize| -> anyhow::Result<usize> {
                match value {
                    Some(0) => bail!("{name} must be greater than zero"),
                    Some(value) => Ok(value),
                    None => Ok(default),
                }
            };
        mm_model::mapping::EventParser::new(&self.mapping, false).context("invalid [mapping]")?;
        Ok(Config {
            listen,
            grpc_listen,
            activity_file: self.activity.file.map(|file| {
                if file.is_absolute() {
                    file
                } else {
                    data_dir.join(file)
                }
            }),
            data_dir,
            tokens: self.auth.tokens,
            max_body_bytes: positive(
                "ingest.max_body_bytes",
                self.ingest.max_body_bytes,
                16 * 1024 * 1024,
            )?,
            max_decoded_bytes: positive(
                "ingest.max_decoded_bytes",
                self.ingest.max_decoded_bytes,
                64 * 1024 * 1024,
            )?,
            max_record_bytes: positive(
                "ingest.max_record_bytes",
                self.ingest.max_record_bytes,
                256 * 1024,
            )?,
            max_clock_skew: duration_or(
                "ingest.max_clock_skew",
                self.ingest.max_clock_skew.as_deref(),
                Duration::from_secs(300),
            )?,
            max_inflight_requests: positive(
                "ingest.max_inflight_requests",
                self.ingest.max_inflight_requests,
                64,
            )?,
            max_reported_errors: self.ingest.max_reported_errors.unwrap_or(100),
            idempotency_window,
            http: self.http.validate()?,
            grace,
            idle_timeout: duration_or(
                "window.idle_timeout",
                self.window.idle_timeout.as_deref(),
                Duration::from_secs(10),
            )?,
            checkpoint_interval,
            retention,
            wal_segment_bytes: self
                .storage
                .wal_segment_bytes
                .unwrap_or(64 * 1024 * 1024)
                .max(4096),
            archive_flush_events: positive(
                "storage.archive_flush_events",
                self.storage.archive_flush_events,
                500_000,
            )?,
            archive_flush_age: duration_or(
                "storage.archive_flush_age",
                self.storage.archive_flush_age.as_deref(),
                Duration::from_secs(60),
            )?,
            archive_max_bytes: self.storage.archive_max_bytes,
            ballast_bytes: self.storage.ballast_bytes.unwrap_or(64 * 1024 * 1024),
            mapping: self.mapping,
            kafka: self.kafka,
            telemetry: self.telemetry.validate(env)?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn no_env(_: &str) -> Option<String> {
        None
    }

    #[test]
    fn defaults_are_valid_on_loopback() {
        let config = RawConfig::default()
            .validate(&Overrides::default(), &no_env)
            .expect("valid");
        assert_eq!(config.listen.to_string(), "127.0.0.1:8080");
        assert_eq!(config.grace, Duration::from_secs(180));
        assert_eq!(config.idle_timeout, Duration::from_secs(10));
        assert_eq!(config.max_clock_skew, Duration::from_secs(300));
    }

    #[test]
    fn public_listener_needs_tokens() {
        let overrides = Overrides {
            listen: Some("0.0.0.0:8080".into()),
            ..Overrides::default()
        };
        let error = RawConfig::default()
            .validate(&overrides, &no_env)
            .expect_err("refused");
        assert!(error.to_string().contains("without auth tokens"));
        let env = |name: &str| {
            (name == "MM_AUTH_TOKENS").then(|| "token-one-long, token-two-long".to_owned())
        };
        let config = RawConfig::default()
            .validate(&overrides, &env)
            .expect("valid with tokens");
        assert_eq!(config.tokens, vec!["token-one-long", "token-two-long"]);
    }

    #[test]
    fn file_fields_are_checked() {
        let raw: RawConfig =
            toml::from_str("[window]\ngrace = \"2m\"\n[activity]\nfile = \"out.ndjson\"\n")
                .expect("parses");
        let config = raw.validate(&Overrides::default(), &no_env).expect("valid");
        assert_eq!(config.grace, Duration::from_secs(120));
        assert_eq!(
            config.activity_file,
            Some(PathBuf::from("./data/out.ndjson"))
        );
        assert!(
            toml::from_str::<RawConfig>("[window]\ngrase = \"2m\"\n").is_err(),
            "unknown fields are refused"
        );
        let raw: RawConfig = toml::from_str("[window]\ngrace = \"2 weeks\"\n").expect("parses");
        assert!(raw.validate(&Overrides::default(), &no_env).is_err());
        let raw: RawConfig =
            toml::from_str("[mapping]\nmerchant = \"/a\"\napi = \"/a/b\"\n").expect("parses");
        assert!(raw.validate(&Overrides::default(), &no_env).is_err());
    }

    #[test]
    fn durations_parse() {
        assert_eq!(
            parse_duration("500ms").expect("ms"),
            Duration::from_millis(500)
        );
        assert_eq!(
            parse_duration("30d").expect("days"),
            Duration::from_secs(30 * 86_400)
        );
        assert!(parse_duration("m").is_err());
        assert!(parse_duration("5 fortnights").is_err());
    }

    #[test]
    fn an_aggregation_thread_count_out_of_range_is_refused_by_name() {
        let parse = |threads: usize| {
            let raw: RawConfig = toml::from_str(&format!(
                "[kafka]\nbrokers = \"k1:9092\"\ninput_topic = \"calls\"\ngroup_id = \"mm\"\naggregation_threads = {threads}\n"
            ))
            .expect("parses");
            raw.validate(&Overrides::default(), &no_env)
        };
        let kafka = parse(2).expect("valid").kafka.expect("cluster mode");
        assert_eq!(kafka.aggregation_threads, 2);
        for refused in [0, 65] {
            let error = parse(refused).expect_err("out of range");
            assert!(
                error.to_string().contains("kafka.aggregation_threads"),
                "{error}"
            );
        }
    }

    #[test]
    fn kafka_flags_turn_on_cluster_mode_and_override_the_file() {
        let raw: RawConfig = toml::from_str(
            r#"
            [kafka]
            brokers = "k1:9092"
            input_topic = "calls"
            group_id = "mm"
            input_keyed = true
            [kafka.client]
            "security.protocol" = "SASL_SSL"
            "#,
        )
        .expect("parses");
        let config = raw
            .validate(
                &Overrides {
                    kafka: KafkaOverrides {
                        group_id: Some("mm-blue".into()),
                        dlq_topic: Some("calls-dlq".into()),
                        ..KafkaOverrides::default()
                    },
                    ..Overrides::default()
                },
                &no_env,
            )
            .expect("valid");
        let kafka = config.kafka.expect("cluster mode");
        assert_eq!(kafka.brokers, "k1:9092");
        assert_eq!(kafka.group_id, "mm-blue");
        assert_eq!(kafka.dlq_topic, "calls-dlq");
        assert_eq!(kafka.activity_topic, "merchant-activity");
        assert!(kafka.input_keyed);
        assert_eq!(kafka.client["security.protocol"], "SASL_SSL");

        let from_flags = RawConfig::default()
            .validate(
                &Overrides {
                    kafka: KafkaOverrides {
                        brokers: Some("127.0.0.1:9092".into()),
                        input_topic: Some("calls".into()),
                        ..KafkaOverrides::default()
                    },
                    ..Overrides::default()
                },
                &no_env,
            )
            .expect("valid");
        let kafka = from_flags.kafka.expect("cluster mode");
        assert_eq!(
            (kafka.input_topic.as_str(), kafka.group_id.as_str()),
            ("calls", "merchant-monitor")
        );

        let error = RawConfig::default()
            .validate(
                &Overrides {
                    kafka: KafkaOverrides {
                        input_topic: Some("calls".into()),
                        ..KafkaOverrides::default()
                    },
                    ..Overrides::default()
                },
                &no_env,
            )
            .expect_err("needs brokers");
        assert!(error.to_string().contains("--kafka-brokers"), "{error}");
        assert!(
            RawConfig::default()
                .validate(&Overrides::default(), &no_env)
                .expect("valid")
                .kafka
                .is_none()
        );
    }
}

#[cfg(test)]
mod example_file {
    use super::*;

    #[test]
    fn the_shipped_example_config_is_valid_and_matches_the_defaults() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../merchant-monitor.toml");
        let raw = RawConfig::load(&path).expect("example parses");
        let example = raw
            .validate(&Overrides::default(), &|_| None)
            .expect("example validates");
        let defaults = RawConfig::default()
            .validate(&Overrides::default(), &|_| None)
            .expect("defaults validate");
        assert_eq!(format!("{example:?}"), format!("{defaults:?}"));
    }
}
