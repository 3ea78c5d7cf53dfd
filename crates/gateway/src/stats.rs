//! What the dashboard shows of each event type's traffic: publish and reject rates over the
//! last minute, totals since the server started, and the latest rejected events with their
//! reasons. Kept in memory (the Prometheus counters are the durable record of the totals).

use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;

use serde::Serialize;
use utoipa::ToSchema;

use crate::publish::{PublishItem, PublishingStatus};

/// Rejected events kept per type.
pub const LATEST_REJECTS: usize = 20;
/// Seconds the rates average over.
const RATE_SECONDS: i64 = 60;

/// One rejected (failed or aborted) event.
#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
pub struct Reject {
    pub eid: String,
    /// The step that failed (`validating`, `partitioning`, ...; `none` for an aborted one).
    pub step: String,
    /// A schema keyword, `metadata`, `not_json`, `aborted`, ...
    pub reason: String,
    pub detail: String,
    /// RFC 3339.
    pub at: String,
}

/// An event type's traffic.
#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
pub struct TypeStats {
    /// Events published since the server started.
    pub published: u64,
    /// Events not published since the server started.
    pub rejected: u64,
    /// Published events per second over the last minute.
    pub publish_rate: f64,
    /// Rejected events per second over the last minute.
    pub reject_rate: f64,
    /// Newest first.
    pub latest_rejects: Vec<Reject>,
}

#[derive(Debug, Default)]
struct Counts {
    published: u64,
    rejected: u64,
    /// (second, published, rejected), oldest first, the last minute only.
    seconds: VecDeque<(i64, u64, u64)>,
    latest: VecDeque<Reject>,
}

/// Traffic of every type.
#[derive(Debug, Default)]
pub struct Stats {
    types: Mutex<HashMap<String, Counts>>,
}

impl Stats {
    /// Records the answer of one publish request at `now_us`.
    pub fn record(&self, event_type: &str, items: &[PublishItem], now_us: i64) {
        let Ok(mut types) = self.types.lock() else {
            return;
        };
        let counts = types.entry(event_type.to_owned()).or_default();
        let second = now_us.div_euclid(1_000_000);
        let at = mm_model::time::format_rfc3339(now_us);
        let mut published = 0;
        let mut rejected = 0;
        for item in items {
            if item.publishing_status == PublishingStatus::Submitted {
                published += 1;
                continue;
            }
            rejected += 1;
            if counts.latest.len() == LATEST_REJECTS {
                counts.latest.pop_back();
            }
            counts.latest.push_front(Reject {
                eid: item.eid.clone(),
                step: item.step.as_str().to_owned(),
                reason: item.reason.to_owned(),
                detail: item.detail.clone(),
                at: at.clone(),
            });
        }
        counts.published += published;
        counts.rejected += rejected;
        match counts.seconds.back_mut() {
            Some(last) if last.0 == second => {
                last.1 += published;
                last.2 += rejected;
            }
            _ => counts.seconds.push_back((second, published, rejected)),
        }
        while counts
            .seconds
            .front()
            .is_some_and(|first| first.0 <= second - RATE_SECONDS)
        {
            counts.seconds.pop_front();
        }
    }

    /// A type's traffic as of `now_us` (zeros for a type nothing was published to).
    pub fn of(&self, event_type: &str, now_us: i64) -> TypeStats {
        let second = now_us.div_euclid(1_000_000);
        let types = self.types.lock().ok();
        let Some(counts) = types.as_ref().and_then(|types| types.get(event_type)) else {
            return TypeStats {
                published: 0,
                rejected: 0,
                publish_rate: 0.0,
                reject_rate: 0.0,
                latest_rejects: Vec::new(),
            };
        };
        let (published, rejected) = counts
            .seconds
            .iter()
            .filter(|bucket| bucket.0 > second - RATE_SECONDS)
            .fold((0, 0), |(published, rejected), bucket| {
                (published + bucket.1, rejected + bucket.2)
            });
        TypeStats {
            published: counts.published,
            rejected: counts.rejected,
            publish_rate: published as f64 / RATE_SECONDS as f64,
            reject_rate: rejected as f64 / RATE_SECONDS as f64,
            latest_rejects: counts.latest.iter().cloned().collect(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::publish::Step;

    fn item(status: PublishingStatus, eid: &str) -> PublishItem {
        PublishItem {
            eid: eid.into(),
            publishing_status: status,
            step: if status == PublishingStatus::Submitted {
                Step::None
            } else {
                Step::Validating
            },
            detail: "/amount: -1 is less than the minimum of 0".into(),
            reason: "minimum",
        }
    }

    #[test]
    fn rates_cover_the_last_minute_and_the_latest_rejects_come_first() {
        let stats = Stats::default();
        let second = 1_000_000;
        let batch: Vec<PublishItem> = (0..30)
            .map(|index| {
                let status = if index % 3 == 0 {
                    PublishingStatus::Failed
                } else {
                    PublishingStatus::Submitted
                };
                item(status, &format!("e{index}"))
            })
            .collect();
        stats.record("order.paid", &batch, 10 * second);
        stats.record("order.paid", &batch, 40 * second);
        let now = stats.of("order.paid", 41 * second);
        assert_eq!((now.published, now.rejected), (40, 20));
        assert!((now.publish_rate - 40.0 / 60.0).abs() < 1e-9);
        assert!((now.reject_rate - 20.0 / 60.0).abs() < 1e-9);
        assert_eq!(now.latest_rejects.len(), LATEST_REJECTS);
        assert_eq!(now.latest_rejects[0].eid, "e27", "the newest first");
        assert_eq!(now.latest_rejects[0].reason, "minimum");
        // A minute after the first batch only the second counts in the rates.
        let later = stats.of("order.paid", 75 * second);
        assert!((later.publish_rate - 20.0 / 60.0).abs() < 1e-9);
        assert_eq!(later.published, 40);
        assert_eq!(stats.of("order.none", 75 * second).published, 0);
    }
}
