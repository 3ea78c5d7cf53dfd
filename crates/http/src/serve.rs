//! The accept loop: a cap on open connections (a connection beyond it gets a 503 and is
//! closed), the connection timeouts of [`crate::conn`], and a graceful shutdown that stops
//! accepting, lets requests in progress finish and closes idle connections.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use mm_telemetry::{KindLabel, Metrics};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;

use crate::conn::{Activity, TimedIo, Timeouts, TrackRequests};
use crate::settings::HttpSettings;

/// Refusals being written at once; connections beyond it are closed without an answer.
const MAX_REFUSALS_IN_PROGRESS: usize = 256;
/// Longest wait at shutdown for requests in progress.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(30);

/// Serves `router` on `listener` until `shutdown` resolves, then shuts down gracefully.
pub async fn serve(
    listener: TcpListener,
    router: axum::Router,
    settings: HttpSettings,
    metrics: Arc<Metrics>,
    shutdown: impl Future<Output = ()> + Send,
) {
    let slots = Arc::new(Semaphore::new(settings.max_connections));
    let refusals = Arc::new(Semaphore::new(MAX_REFUSALS_IN_PROGRESS));
    let graceful = GracefulShutdown::new();
    let mut builder = hyper::server::conn::http1::Builder::new();
    // The connection's own header and idle deadlines replace hyper's single header timeout.
    // A client that sends a whole request and closes its side (half-close) still has it
    // handled: an ingest body read whole is stored and counted even if nobody reads the answer.
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(None)
        .half_close(true)
        .keep_alive(true);
    let timeouts = Timeouts {
        header: settings.header_read_timeout,
        idle: settings.idle_timeout,
    };
    let on_timeout: Arc<dyn Fn(&'static str) + Send + Sync> = {
        let metrics = metrics.clone();
        Arc::new(move |phase| {
            metrics
                .http_connections_timed_out
                .get_or_create(&KindLabel { kind: phase })
                .inc();
        })
    };
    let mut shutdown = std::pin::pin!(shutdown);
    loop {
        let stream = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, _peer)) => stream,
                Err(error) => {
                    // Out of descriptors or a connection reset before accept: not fatal.
                    tracing::warn!(%error, "accepting a connection failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        let Ok(slot) = slots.clone().try_acquire_owned() else {
            metrics.http_connections_refused.inc();
            if let Ok(writing) = refusals.clone().try_acquire_owned() {
                let limit = settings.max_connections;
                tokio::spawn(async move {
                    refuse(stream, limit).await;
                    drop(writing);
                });
            }
            continue;
        };
        let _ = stream.set_nodelay(true);
        let activity = Activity::new();
        let io = TimedIo::new(stream, activity.clone(), timeouts, on_timeout.clone());
        let service = TowerToHyperService::new(TrackRequests {
            router: router.clone(),
            activity,
        });
        let connection = graceful.watch(builder.serve_connection(TokioIo::new(io), service));
        let open = metrics.http_connections_open.clone();
        tokio::spawn(async move {
            open.inc();
            if let Err(error) = connection.await {
                tracing::debug!(%error, "connection closed with an error");
            }
            open.dec();
            drop(slot);
        });
    }
    drop(listener);
    if tokio::time::timeout(SHUTDOWN_GRACE, graceful.shutdown())
        .await
        .is_err()
    {
        tracing::warn!(
            seconds = SHUTDOWN_GRACE.as_secs(),
            "requests still in progress at shutdown were cut off"
        );
    }
}

/// Answers a connection beyond the cap with a 503 and closes it, reading what the client
/// sent first so the close does not reset the connection before the answer is read.
async fn refuse(mut stream: TcpStream, limit: usize) {
    let body = format!(
        "{{\"error\":{{\"code\":\"too_many_connections\",\"message\":\"the server has {limit} connections open, its limit; retry shortly\"}}}}"
    );
    let answer = format!(
        "HTTP/1.1 503 Service Unavailable\r\ncontent-type: application/json\r\nretry-after: 1\r\nconnection: close\r\ncontent-length: {}\r\n\r\n{body}",
        body.len()
    );
    let exchange = async {
        stream.write_all(answer.as_bytes()).await?;
        stream.shutdown().await?;
        let mut sink = [0u8; 4096];
        let mut drained = 0;
        while drained < 64 * 1024 {
            let read = stream.read(&mut sink).await?;
            if read == 0 {
                break;
            }
            drained += read;
        }
        Ok::<(), std::io::Error>(())
    };
    let _ = tokio::time::timeout(Duration::from_secs(2), exchange).await;
}
