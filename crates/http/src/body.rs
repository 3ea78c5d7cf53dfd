//! Reading a request body whole, within a size limit, the request memory budget, an idle
//! timeout and a minimum rate.
//!
//! Memory is reserved before the buffer grows (geometrically, up to the declared
//! `Content-Length` or the limit), so a reservation always covers what the buffer has
//! allocated. A client that pauses longer than the idle timeout, or whose average rate from
//! [`BodyLimits::RATE_GRACE`] after the start is below the minimum, is cut off with an error
//! the handler answers as 408.

use std::time::Duration;

use bytes::Bytes;
use http_body_util::BodyExt;
use tokio::time::Instant;

use crate::budget::{BudgetExhausted, Reservation};
use crate::settings::BodyLimits;

/// The first allocation for a body of unknown or large size.
const FIRST_CAPACITY: usize = 64 * 1024;

/// Why a body was not read whole.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BodyReadError {
    #[error("request body is larger than {limit} bytes; send smaller batches")]
    TooLarge { limit: usize },
    #[error("no part of the request body arrived for {} s", .0.as_secs())]
    Stalled(Duration),
    #[error("the request body arrived at {rate} bytes/s, below the minimum of {minimum} bytes/s")]
    TooSlow { rate: u64, minimum: u64 },
    #[error(transparent)]
    Memory(#[from] BudgetExhausted),
    #[error("the request body could not be read: {0}")]
    Client(String),
}

/// Reads `body` whole. `declared` is its `Content-Length`, if any.
pub async fn read_body(
    body: axum::body::Body,
    max_bytes: usize,
    declared: Option<usize>,
    limits: &BodyLimits,
    reservation: &mut Reservation,
) -> Result<Bytes, BodyReadError> {
    if declared.is_some_and(|length| length > max_bytes) {
        return Err(BodyReadError::TooLarge { limit: max_bytes });
    }
    let ceiling = declared.unwrap_or(max_bytes).min(max_bytes);
    let mut body = body;
    let mut buffer: Vec<u8> = Vec::new();
    let started = Instant::now();
    loop {
        let received = buffer.len() as u64;
        let idle_deadline = Instant::now() + limits.idle_timeout;
        // The moment the average rate would fall below the minimum if nothing more came.
        let rate_deadline = if limits.min_bytes_per_second == 0 {
            None
        } else {
            let judged_from =
                Duration::from_secs_f64(received as f64 / limits.min_bytes_per_second as f64)
                    .max(BodyLimits::RATE_GRACE);
            Some(started + judged_from)
        };
        let deadline = rate_deadline.map_or(idle_deadline, |rate| rate.min(idle_deadline));
        let frame = match tokio::time::timeout_at(deadline, body.frame()).await {
            Ok(Some(Ok(frame))) => frame,
            Ok(Some(Err(error))) => return Err(BodyReadError::Client(error.to_string())),
            Ok(None) => break,
            Err(_) if Some(deadline) == rate_deadline && deadline < idle_deadline => {
                let elapsed = started.elapsed().as_secs_f64().max(f64::EPSILON);
                return Err(BodyReadError::TooSlow {
                    rate: (received as f64 / elapsed) as u64,
                    minimum: limits.min_bytes_per_second,
                });
            }
            Err(_) => return Err(BodyReadError::Stalled(limits.idle_timeout)),
        };
        let Ok(data) = frame.into_data() else {
            continue; // trailers carry nothing we read
        };
        let needed = buffer.len() + data.len();
        if needed > max_bytes {
            return Err(BodyReadError::TooLarge { limit: max_bytes });
        }
        if needed > buffer.capacity() {
            let target = needed
                .max((buffer.capacity() * 2).min(ceiling))
                .max(FIRST_CAPACITY.min(ceiling));
            reservation.grow(target - buffer.capacity())?;
            buffer.reserve_exact(target - buffer.len());
        }
        buffer.extend_from_slice(&data);
    }
    Ok(Bytes::from(buffer))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::budget::MemoryBudget;
    use bytes::Bytes;
    use std::convert::Infallible;

    fn limits() -> BodyLimits {
        BodyLimits {
            idle_timeout: Duration::from_secs(10),
            min_bytes_per_second: 1000,
        }
    }

    /// A body whose parts arrive at the given moments after the start.
    fn timed_body(parts: Vec<(Duration, &'static [u8])>) -> axum::body::Body {
        let stream = futures_stream(parts);
        axum::body::Body::from_stream(stream)
    }

    fn futures_stream(
        parts: Vec<(Duration, &'static [u8])>,
    ) -> impl futures_util::Stream<Item = Result<Bytes, Infallible>> + Send {
        let (sender, receiver) = tokio::sync::mpsc::channel(16);
        tokio::spawn(async move {
            let start = Instant::now();
            for (at, bytes) in parts {
                tokio::time::sleep_until(start + at).await;
                if sender.send(Ok(Bytes::from_static(bytes))).await.is_err() {
                    return;
                }
            }
        });
        tokio_stream_from(receiver)
    }

    fn tokio_stream_from(
        mut receiver: tokio::sync::mpsc::Receiver<Result<Bytes, Infallible>>,
    ) -> impl futures_util::Stream<Item = Result<Bytes, Infallible>> + Send {
        futures_util::stream::poll_fn(move |context| receiver.poll_recv(context))
    }

    #[tokio::test(start_paused = true)]
    async fn a_whole_body_is_read_and_reserved_for() {
        let budget = MemoryBudget::new(1 << 20);
        let mut reservation = budget.reservation();
        let body = timed_body(vec![
            (Duration::ZERO, b"hello "),
            (Duration::from_millis(10), b"world"),
        ]);
        let read = read_body(body, 1000, Some(11), &limits(), &mut reservation)
            .await
            .expect("read");
        assert_eq!(read.as_ref(), b"hello world");
        assert!(reservation.bytes() >= 11, "the buffer is reserved for");
        assert_eq!(budget.used(), reservation.bytes());
    }

    #[tokio::test(start_paused = true)]
    async fn a_pause_longer_than_the_idle_timeout_is_stalled() {
        let budget = MemoryBudget::new(1 << 20);
        let limits = BodyLimits {
            idle_timeout: Duration::from_secs(2),
            min_bytes_per_second: 0,
        };
        let body = timed_body(vec![(Duration::ZERO, b"x"), (Duration::from_secs(5), b"y")]);
        let result = read_body(body, 1000, None, &limits, &mut budget.reservation()).await;
        assert_eq!(result, Err(BodyReadError::Stalled(Duration::from_secs(2))));
    }

    #[tokio::test(start_paused = true)]
    async fn a_trickle_below_the_minimum_rate_is_cut_after_the_grace() {
        let budget = MemoryBudget::new(1 << 20);
        // One byte every second: never idle for long, far below 1000 bytes/s.
        let parts = (0..30)
            .map(|second| (Duration::from_secs(second), b"z".as_slice()))
            .collect();
        let started = Instant::now();
        let result = read_body(
            timed_body(parts),
            1000,
            None,
            &limits(),
            &mut budget.reservation(),
        )
        .await;
        assert!(
            matches!(result, Err(BodyReadError::TooSlow { minimum: 1000, .. })),
            "{result:?}"
        );
        let cut_after = started.elapsed();
        assert!(
            cut_after >= BodyLimits::RATE_GRACE && cut_after < Duration::from_secs(7),
            "cut after {cut_after:?}"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn bodies_beyond_the_limit_or_the_budget_are_refused() {
        let budget = MemoryBudget::new(1 << 20);
        let declared_too_large = read_body(
            timed_body(vec![]),
            10,
            Some(11),
            &limits(),
            &mut budget.reservation(),
        )
        .await;
        assert_eq!(
            declared_too_large,
            Err(BodyReadError::TooLarge { limit: 10 })
        );
        let sent_too_large = read_body(
            timed_body(vec![(Duration::ZERO, b"0123456789ab")]),
            10,
            None,
            &limits(),
            &mut budget.reservation(),
        )
        .await;
        assert_eq!(sent_too_large, Err(BodyReadError::TooLarge { limit: 10 }));
        let small = MemoryBudget::new(8);
        let over_budget = read_body(
            timed_body(vec![(Duration::ZERO, b"0123456789")]),
            1000,
            None,
            &limits(),
            &mut small.reservation(),
        )
        .await;
        assert_eq!(
            over_budget,
            Err(BodyReadError::Memory(BudgetExhausted { limit: 8 }))
        );
        assert_eq!(small.used(), 0, "a refused body gives everything back");
        assert_eq!(budget.used(), 0);
    }
}
