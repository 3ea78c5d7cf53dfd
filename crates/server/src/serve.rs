//! `serve` and `demo`: configuration, pipeline, HTTP server, graceful shutdown.

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use anyhow::Context;
use mm_ingest::IngestLimits;
use mm_model::mapping::EventParser;
use mm_telemetry::Metrics;
use mm_window::WindowConfig;

use crate::config::{Config, Overrides, RawConfig};
use crate::demo::{self, DemoOptions};
use crate::http::{self, AppState};
use clap::Args;
#[cfg(feature = "kafka")]
use mm_cluster::{Cluster, ClusterOptions};
use mm_engine::{Pipeline, PipelineOptions};
use mm_ingest::{IngestSink, Ingestor};

#[derive(Debug, Args, Clone)]
pub struct ServerArgs {
    /// TOML configuration file (every setting optional).
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Address to listen on [default: 127.0.0.1:8080].
    #[arg(long, value_name = "ADDR")]
    pub listen: Option<String>,
    /// Address the event gateway's gRPC services listen on (HTTP/2) [default: none].
    #[arg(long, value_name = "ADDR")]
    pub grpc_listen: Option<String>,
    /// Directory for the write-ahead log, rollup store and activity file [default: ./data].
    #[arg(long, value_name = "DIR")]
    pub data_dir: Option<PathBuf>,
    /// Log as JSON lines instead of text.
    #[arg(long)]
    pub log_json: bool,
    /// Cluster mode: Kafka bootstrap brokers, HOST:PORT[,…] (or a [kafka] section).
    #[arg(long, value_name = "HOST:PORT[,…]")]
    pub kafka_brokers: Option<String>,
    /// Cluster mode: the topic of API-call logs [default: api-calls].
    #[arg(long, value_name = "TOPIC")]
    pub input_topic: Option<String>,
    /// Cluster mode: the consumer group the instances share [default: merchant-monitor].
    #[arg(long, value_name = "GROUP")]
    pub group_id: Option<String>,
    /// Cluster mode: where closed windows go [default: merchant-activity].
    #[arg(long, value_name = "TOPIC")]
    pub activity_topic: Option<String>,
    /// Cluster mode: where unusable records go [default: merchant-monitor-dlq].
    #[arg(long, value_name = "TOPIC")]
    pub dlq_topic: Option<String>,
}

/// Loads and validates the configuration for `args`.
pub fn load_config(args: &ServerArgs) -> anyhow::Result<Config> {
    let raw = match &args.config {
        Some(path) => RawConfig::load(path)?,
        None => RawConfig::default(),
    };
    let overrides = Overrides {
        listen: args.listen.clone(),
        grpc_listen: args.grpc_listen.clone(),
        data_dir: args.data_dir.clone(),
        kafka: crate::config::KafkaOverrides {
            brokers: args.kafka_brokers.clone(),
            input_topic: args.input_topic.clone(),
            group_id: args.group_id.clone(),
            activity_topic: args.activity_topic.clone(),
            dlq_topic: args.dlq_topic.clone(),
        },
    };
    raw.validate(&overrides, &|name| std::env::var(name).ok())
}

/// Runs `config` until SIGTERM or Ctrl-C, then drains and checkpoints.
pub async fn run(config: Config, demo_options: Option<DemoOptions>) -> anyhow::Result<()> {
    let metrics = Arc::new(Metrics::new());
    let parser = EventParser::new(&config.mapping, true).context("compiling field mapping")?;
    if let (Some(options), None) = (demo_options, &config.kafka) {
        let config = config.clone();
        tokio::task::spawn_blocking(move || demo::backfill(&config, options))
            .await
            .context("demo backfill")??;
    }
    let backend = match &config.kafka {
        None => Backend::Embedded(start_embedded(&config, metrics.clone()).await?),
        #[cfg(feature = "kafka")]
        Some(settings) => start_cluster(&config, settings, metrics.clone()).await?,
        #[cfg(not(feature = "kafka"))]
        Some(_) => anyhow::bail!(
            "cluster mode ([kafka] or --kafka-brokers) needs a build with the `kafka` feature; this one runs embedded only"
        ),
    };
    let sink = match &backend {
        Backend::Embedded(pipeline) => IngestSink::Wal {
            wal: pipeline.wal.clone(),
            archive: pipeline.archive.clone(),
            health: pipeline.health.clone(),
            requests: pipeline.requests.clone(),
        },
        #[cfg(feature = "kafka")]
        Backend::Cluster(cluster, _) => IngestSink::Kafka {
            producer: cluster.ingest_producer.clone(),
            topic: cluster.settings.input_topic.clone(),
        },
    };
    let budget = mm_http::MemoryBudget::new(config.http.max_request_memory_bytes);
    let ingestor = Arc::new(Ingestor::new(
        parser,
        sink,
        metrics.clone(),
        IngestLimits {
            max_decoded_bytes: config.max_decoded_bytes,
            max_record_bytes: config.max_record_bytes,
            max_reported_errors: config.max_reported_errors,
        },
        config.retention,
        config.max_clock_skew,
        config.max_inflight_requests,
    ));
    let (gateway, gateway_unavailable) = match &config.kafka {
        None => (
            Some(Arc::new(open_gateway(&config.data_dir, &config.mapping)?)),
            None,
        ),
        // The gateway's topics are not the core's: without them ingest and aggregation go on,
        // and the gateway's routes say why it is missing.
        #[cfg(feature = "kafka")]
        Some(settings) => match open_cluster_gateway(settings, &config.mapping).await {
            Ok(gateway) => (Some(Arc::new(gateway)), None),
            Err(error) => {
                let reason = format!("{error:#}");
                tracing::error!(%reason, "the event gateway is not available on this instance");
                (None, Some(reason))
            }
        },
        #[cfg(not(feature = "kafka"))]
        Some(_) => unreachable!("refused above"),
    };
    let state = Arc::new(match &backend {
        Backend::Embedded(pipeline) => AppState {
            ingestor,
            budget: budget.clone(),
            body_limits: config.http.body,
            storage: Some(pipeline.health.clone()),
            store: pipeline.store.clone(),
            archive: Some(pipeline.archive.clone()),
            cluster: None,
            metrics: metrics.clone(),
            tokens: config.tokens.clone(),
            max_body_bytes: config.max_body_bytes,
            healthy: pipeline.healthy(),
            ready: AtomicBool::new(true),
            activity: pipeline.activity.clone(),
            shutdown: tokio::sync::watch::Sender::new(false),
            ui: crate::http::Ui::from_env(),
            gateway: gateway.clone(),
            gateway_unavailable: gateway_unavailable.clone(),
            max_decoded_bytes: config.max_decoded_bytes,
        },
        #[cfg(feature = "kafka")]
        Backend::Cluster(cluster, activity) => AppState {
            ingestor,
            budget: budget.clone(),
            body_limits: config.http.body,
            storage: Some(cluster.health.clone()),
            store: cluster.store.clone(),
            archive: None,
            cluster: Some(cluster.status.clone()),
            metrics: metrics.clone(),
            tokens: config.tokens.clone(),
            max_body_bytes: config.max_body_bytes,
            healthy: cluster.healthy(),
            ready: AtomicBool::new(true),
            activity: activity.clone(),
            shutdown: tokio::sync::watch::Sender::new(false),
            ui: crate::http::Ui::from_env(),
            gateway: gateway.clone(),
            gateway_unavailable: gateway_unavailable.clone(),
            max_decoded_bytes: config.max_decoded_bytes,
        },
    });
    if let Some(gateway) = &state.gateway {
        metrics
            .gateway_event_types
            .set(gateway.registry.len() as i64);
    }
    // Listening for SIGTERM and Ctrl-C starts before the address is announced: a signal sent
    // as soon as the server answers must drain it, not kill it (the default action).
    let stop_requested = shutdown_signal()?;
    let listener = tokio::net::TcpListener::bind(config.listen)
        .await
        .with_context(|| format!("binding {}", config.listen))?;
    let address = listener.local_addr().context("reading the bound address")?;
    if config.tokens.is_empty() {
        tracing::warn!(%address, "no auth tokens configured: accepting unauthenticated requests on loopback only");
    }
    let generator = demo_options.map(|options| {
        tracing::info!(
            rate = options.rate,
            merchants = options.merchants,
            "demo traffic generator running"
        );
        tokio::spawn(demo::generate(state.clone(), options))
    });
    // Where to reach the server, on stdout; a closed stdout (a supervisor that read the first
    // line and went away) is not a reason to stop serving.
    {
        use std::io::Write as _;
        let mut stdout = std::io::stdout().lock();
        let _ = writeln!(
            stdout,
            "merchant-monitor listening on http://{address}  (data in {})",
            config.data_dir.display()
        );
        let _ = writeln!(
            stdout,
            "  try: curl 'http://{address}/v1/merchants?sort=calls&limit=10'"
        );
        let _ = stdout.flush();
    }
    // The event log keeps what the store and the archive keep: `storage.retention`.
    let expiry = state.gateway.clone().map(|gateway| {
        let retention = config.retention;
        let mut stopping = state.shutdown.subscribe();
        tokio::spawn(async move {
            let mut every = tokio::time::interval(std::time::Duration::from_secs(60));
            loop {
                tokio::select! {
                    _ = every.tick() => {}
                    _ = stopping.wait_for(|stopping| *stopping) => return,
                }
                let gateway = gateway.clone();
                let expired = tokio::task::spawn_blocking(move || {
                    gateway.expire(retention, mm_model::time::now_us())
                })
                .await;
                match expired {
                    Ok(Ok(0)) => {}
                    Ok(Ok(removed)) => tracing::info!(removed, "event log: expired events removed"),
                    Ok(Err(error)) => {
                        tracing::warn!(%error, "event log: expiry failed; trying again later")
                    }
                    Err(error) => tracing::warn!(%error, "event log: expiry task failed"),
                }
            }
        })
    });
    let grpc = match (config.grpc_listen, &state.gateway) {
        (Some(grpc_address), Some(gateway)) => {
            let listener = tokio::net::TcpListener::bind(grpc_address)
                .await
                .with_context(|| format!("binding {grpc_address} for gRPC"))?;
            let bound = listener.local_addr().context("reading the gRPC address")?;
            {
                use std::io::Write as _;
                let mut stdout = std::io::stdout().lock();
                let _ = writeln!(stdout, "  gRPC (event gateway) on {bound}");
                let _ = stdout.flush();
            }
            let grpc_state = mm_grpc::GrpcState {
                gateway: gateway.clone(),
                metrics: metrics.clone(),
                tokens: Arc::new(config.tokens.clone()),
            };
            let mut stopping = state.shutdown.subscribe();
            Some(tokio::spawn(async move {
                let shutdown = async move {
                    let _ = stopping.wait_for(|stopping| *stopping).await;
                };
                if let Err(error) = mm_grpc::serve(listener, grpc_state, shutdown).await {
                    tracing::error!(%error, "the gRPC server stopped");
                }
            }))
        }
        (_, None) | (None, _) => None,
    };
    let app = http::router(state.clone());
    let shutdown_state = state.clone();
    mm_http::serve(listener, app, config.http, metrics.clone(), async move {
        stop_requested.await;
        shutdown_state.ready.store(false, Ordering::Release);
        shutdown_state.shutdown.send_replace(true);
        tracing::info!("shutting down: finishing requests, draining the pipeline");
    })
    .await;
    if let Some(grpc) = grpc {
        let _ = grpc.await;
    }
    if let Some(expiry) = expiry {
        let _ = expiry.await;
    }
    if let Some(generator) = generator {
        generator.abort();
        let _ = generator.await;
    }
    // The last references to the WAL writer go with the state; then the pipeline drains.
    drop(state);
    tokio::task::spawn_blocking(move || match backend {
        Backend::Embedded(pipeline) => pipeline.shutdown().context("stopping the pipeline"),
        #[cfg(feature = "kafka")]
        Backend::Cluster(cluster, _) => cluster.shutdown().context("stopping cluster mode"),
    })
    .await
    .context("shutdown task")??;
    tracing::info!("stopped cleanly");
    Ok(())
}

/// What runs behind the HTTP API.
enum Backend {
    /// One machine: WAL, aggregator, rollup store and archive in the data directory.
    Embedded(Pipeline),
    /// Many instances on Kafka, with the local replica of the activity topic.
    #[cfg(feature = "kafka")]
    Cluster(
        Cluster,
        tokio::sync::broadcast::Sender<Arc<mm_model::activity::ActivityRecord>>,
    ),
}

#[cfg(feature = "kafka")]
async fn start_cluster(
    config: &Config,
    settings: &mm_kafka::KafkaSettings,
    metrics: Arc<Metrics>,
) -> anyhow::Result<Backend> {
    mm_cluster::create_topics(settings).await?;
    mm_cluster::ensure_checkpoint_topic(settings).await?;
    let options = ClusterOptions {
        settings: settings.clone(),
        data_dir: config.data_dir.clone(),
        window: window_config(config),
        checkpoint_interval: config.checkpoint_interval,
        retention: config.retention,
        max_clock_skew: config.max_clock_skew,
        parser: Arc::new(
            EventParser::new(&config.mapping, false).context("compiling field mapping")?,
        ),
        max_in_flight: 100_000,
    };
    let (activity, _) = tokio::sync::broadcast::channel(4096);
    let cluster = tokio::task::spawn_blocking({
        let activity = activity.clone();
        move || Cluster::start(options, metrics, activity)
    })
    .await
    .context("start-up task")??;
    tracing::info!(
        brokers = %settings.brokers,
        input = %settings.input_topic,
        group = %settings.group_id,
        activity = %settings.activity_topic,
        "cluster mode"
    );
    Ok(Backend::Cluster(cluster, activity))
}

fn window_config(config: &Config) -> WindowConfig {
    WindowConfig {
        grace_us: config.grace.as_micros() as i64,
        idle_timeout_us: config.idle_timeout.as_micros() as i64,
    }
}

async fn start_embedded(config: &Config, metrics: Arc<Metrics>) -> anyhow::Result<Pipeline> {
    let options = PipelineOptions {
        data_dir: config.data_dir.clone(),
        window: window_config(config),
        checkpoint_interval: config.checkpoint_interval,
        retention: config.retention,
        wal_segment_bytes: config.wal_segment_bytes,
        wal_queue_capacity: 256,
        activity_file: config.activity_file.clone(),
        archive: mm_archive::ArchiveConfig {
            flush_max_events: config.archive_flush_events,
            flush_max_age: config.archive_flush_age,
            // Room for the next flush to fill while one is being written.
            max_backlog_events: config.archive_flush_events.saturating_mul(2),
        },
        archive_max_bytes: config.archive_max_bytes,
        ballast_bytes: config.ballast_bytes,
        idempotency_window: config.idempotency_window,
    };
    let pipeline = tokio::task::spawn_blocking(move || Pipeline::start(options, metrics))
        .await
        .context("start-up task")?
        .context("starting the pipeline")?;
    let recovery = &pipeline.recovery;
    tracing::info!(
        checkpoint_lsn = recovery.checkpoint_lsn,
        open_windows = recovery.open_windows,
        replayed_batches = recovery.replayed_batches,
        replayed_events = recovery.replayed_events,
        truncated_bytes = recovery.truncated_bytes,
        "recovered"
    );
    Ok(pipeline)
}

/// Resolves on SIGTERM or Ctrl-C (SIGINT); listening starts when this is called.
fn shutdown_signal() -> anyhow::Result<impl std::future::Future<Output = ()>> {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        // Both are registered here, when this is called, not when the future is first polled.
        let mut terminate = signal(SignalKind::terminate()).context("listening for SIGTERM")?;
        let mut interrupt = signal(SignalKind::interrupt()).context("listening for SIGINT")?;
        Ok(async move {
            tokio::select! {
                _ = interrupt.recv() => {}
                _ = terminate.recv() => {}
            }
        })
    }
    #[cfg(not(unix))]
    {
        Ok(async {
            let _ = tokio::signal::ctrl_c().await;
        })
    }
}

/// The event gateway (registry, event log, subscriptions), in the data directory's `gateway`
/// database, with the built-in `merchant.api-call` type following the field mapping.
fn open_gateway(
    data_dir: &std::path::Path,
    mapping: &mm_model::mapping::FieldMapping,
) -> anyhow::Result<mm_gateway::Gateway> {
    let dir = data_dir.join("gateway");
    let gateway = mm_gateway::Gateway::open_embedded(&dir)
        .with_context(|| format!("opening the event gateway in {}", dir.display()))?;
    ensure_api_call_type(&gateway, mapping)?;
    Ok(gateway)
}

/// The event gateway of cluster mode: the registry on the `<group_id>.event-types` topic,
/// one topic per event type.
#[cfg(feature = "kafka")]
async fn open_cluster_gateway(
    settings: &mm_kafka::KafkaSettings,
    mapping: &mm_model::mapping::FieldMapping,
) -> anyhow::Result<mm_gateway::Gateway> {
    let (settings, mapping) = (settings.clone(), mapping.clone());
    let runtime = tokio::runtime::Handle::current();
    tokio::task::spawn_blocking(move || {
        let gateway = mm_gateway::Gateway::open_kafka(&settings, &runtime)
            .context("opening the event gateway on Kafka")?;
        ensure_api_call_type(&gateway, &mapping)?;
        Ok(gateway)
    })
    .await
    .context("opening the event gateway")?
}

/// Registers the built-in `merchant.api-call` type, or brings it up to the field mapping.
fn ensure_api_call_type(
    gateway: &mm_gateway::Gateway,
    mapping: &mm_model::mapping::FieldMapping,
) -> anyhow::Result<()> {
    gateway
        .registry
        .ensure_built_in(
            mm_gateway::event_type::API_CALL_TYPE,
            mm_gateway::event_type::api_call_definition(mapping.json_schema()),
            mm_model::time::now_us(),
        )
        .context("registering the built-in merchant.api-call event type")?;
    Ok(())
}
