//! The generator: draws calls in event-time order and releases them in arrival order.
//!
//! Calls are drawn one at a time on a Poisson clock, so event times never decrease. Each call
//! gets an arrival time at or after its event time and waits in an [`ArrivalQueue`] (min-heaps
//! keyed by `(arrival, sequence)`). Since every later call has an event time, and so an
//! arrival, at or after the newest event time, a queued call whose arrival is at or before
//! that time can be released: nothing still to come can arrive before it. The queue therefore
//! holds only the calls of the last `max(jitter_us, max_lateness_us)` of event time.

use fastrand::Rng;

use crate::arrival_queue::ArrivalQueue;
use crate::behaviour::{BurstSchedule, BurstSettings, sample_latency_us, sample_status};
use crate::catalog::{APIS, HOSTS, HOSTS_PER_REGION, MerchantTable, PARTNERS, REGIONS, SDKS};
use crate::config::TrafficConfig;
use crate::event::{GeneratedEvent, hex_digits, write_hex_u128};
use crate::sampling::{WeightedIndex, exponential};

/// Chance that a call uses another client than the merchant's usual SDK (a script, a test).
const OTHER_SDK_CHANCE: f64 = 0.05;
/// Chance that a POST carries an idempotency key.
const IDEMPOTENCY_KEY_CHANCE: f64 = 0.5;
/// Length of the random part of object ids in paths (`pay_k3j9x0q2m8zt`).
const OBJECT_ID_CHARS: usize = 12;

/// A drawn call waiting for its arrival: only what must be decided at event time (the
/// burst state, hence status and latency) and what orders the queue. Small and `Copy`, so
/// the queue stays compact.
#[derive(Debug, Clone, Copy)]
pub(crate) struct PendingEvent {
    pub arrival_us: i64,
    /// Draw order: breaks ties between equal arrivals, so the order is total and seeded.
    pub sequence: u64,
    pub ts_us: i64,
    pub merchant: u32,
    pub latency_us: u32,
    pub status: u16,
    pub api: u8,
    /// Whether the call was drawn as late (its delay may still be short).
    pub late: bool,
    /// Whether the call fell into an error burst (kept for tests; not part of the output).
    #[cfg_attr(
        not(test),
        expect(dead_code, reason = "only tests look behind the output")
    )]
    pub in_burst: bool,
}

/// A released call with the attributes that need not wait in the queue, drawn on release
/// from their own random stream.
#[derive(Debug, Clone, Copy)]
pub(crate) struct ReleasedCall {
    pub pending: PendingEvent,
    pub corr_id: u128,
    pub idempotency_key: Option<u128>,
    /// Random id of the object the path addresses (unused by routes without `{id}`).
    pub object_id: u64,
    /// Index into [`HOSTS`].
    pub host: u8,
    /// Index into [`SDKS`].
    pub sdk: u8,
}

/// An endless, seeded stream of API calls in arrival order. See the crate docs.
#[derive(Debug)]
pub struct TrafficGenerator {
    config: TrafficConfig,
    merchants: MerchantTable,
    merchant_volume: WeightedIndex,
    api_share: WeightedIndex,
    bursts: BurstSchedule,
    /// Draws calls in event-time order.
    rng: Rng,
    /// Draws the attributes of released calls, in arrival order.
    release_rng: Rng,
    /// Mean event-time gap between calls.
    mean_gap_us: f64,
    /// Event time elapsed since `start_ts_us` on the Poisson clock, fractional so that
    /// rounding never drifts the rate.
    elapsed_us: f64,
    /// Event time of the newest drawn call: nothing drawn later arrives before it.
    newest_ts_us: i64,
    next_sequence: u64,
    queue: ArrivalQueue,
}

impl TrafficGenerator {
    /// Builds the merchant table and the samplers.
    ///
    /// # Panics
    ///
    /// When a setting is out of range: no merchants, a rate that is not positive and finite,
    /// a late fraction outside `0.0..=1.0`, a negative delay or a negative Zipf exponent.
    pub fn new(config: TrafficConfig) -> Self {
        config.assert_valid();
        let mut rng = Rng::with_seed(config.seed);
        let merchants = MerchantTable::generate(config.merchants, &mut rng);
        let merchant_volume = WeightedIndex::zipf(config.merchants, config.zipf_exponent);
        let api_share = WeightedIndex::new(APIS.iter().map(|profile| profile.share));
        let bursts = BurstSchedule::new(
            BurstSettings::default(),
            config.merchants,
            config.zipf_exponent,
            config.start_ts_us,
            &mut rng,
        );
        let release_rng = Rng::with_seed(rng.u64(..));
        TrafficGenerator {
            mean_gap_us: 1_000_000.0 / config.events_per_second,
            elapsed_us: 0.0,
            newest_ts_us: config.start_ts_us,
            next_sequence: 0,
            queue: ArrivalQueue::default(),
            config,
            merchants,
            merchant_volume,
            api_share,
            bursts,
            rng,
            release_rng,
        }
    }

    /// All merchant account names; index 0 is the busiest, volume falls off by Zipf's law.
    pub fn merchant_names(&self) -> &[String] {
        &self.merchants.names
    }

    /// The settings this generator was built with.
    pub fn config(&self) -> &TrafficConfig {
        &self.config
    }

    /// Replaces the burst schedule (tests use frequent bursts to see many in little time).
    #[cfg(test)]
    pub(crate) fn set_burst_settings(&mut self, settings: BurstSettings) {
        self.bursts = BurstSchedule::new(
            settings,
            self.config.merchants,
            self.config.zipf_exponent,
            self.newest_ts_us,
            &mut self.rng,
        );
    }

    #[cfg(test)]
    pub(crate) fn bursts_started(&self) -> u64 {
        self.bursts.started()
    }

    #[cfg(test)]
    pub(crate) fn queued(&self) -> usize {
        self.queue.len()
    }

    /// The next call in arrival order, not yet rendered.
    pub(crate) fn next_call(&mut self) -> ReleasedCall {
        let pending = loop {
            if let Some(pending) = self.queue.pop_arrived_by(self.newest_ts_us) {
                break pending;
            }
            let pending = self.draw();
            self.queue.push(pending, pending.late);
        };
        let rng = &mut self.release_rng;
        let merchant_index = pending.merchant as usize;
        let profile = &APIS[usize::from(pending.api)];
        let region = usize::from(self.merchants.regions[merchant_index]);
        let host = (region * HOSTS_PER_REGION + rng.usize(..HOSTS_PER_REGION)) as u8;
        let sdk = if rng.f64() < OTHER_SDK_CHANCE {
            rng.u8(..SDKS.len() as u8)
        } else {
            self.merchants.sdks[merchant_index]
        };
        let corr_id = rng.u128(..);
        let object_id = if profile.addresses_object() {
            rng.u64(..)
        } else {
            0
        };
        let idempotency_key =
            (profile.method == "POST" && rng.f64() < IDEMPOTENCY_KEY_CHANCE).then(|| rng.u128(..));
        ReleasedCall {
            pending,
            corr_id,
            idempotency_key,
            object_id,
            host,
            sdk,
        }
    }

    /// Draws the next call in event-time order.
    fn draw(&mut self) -> PendingEvent {
        let ts_us = self.config.start_ts_us + self.elapsed_us as i64;
        self.elapsed_us += exponential(self.mean_gap_us, &mut self.rng);
        self.newest_ts_us = ts_us;
        self.bursts.advance(ts_us, &self.api_share, &mut self.rng);

        let rng = &mut self.rng;
        let merchant = self.merchant_volume.sample(rng) as u32;
        let api = self.api_share.sample(rng) as u8;
        let profile = &APIS[usize::from(api)];
        let burst = self.bursts.find(merchant, api);
        let status = sample_status(profile, burst, rng);
        let latency_us = sample_latency_us(profile, status, burst, rng);
        let late = rng.f64() < self.config.late_fraction;
        let delay_us = if late {
            rng.i64(0..=self.config.max_lateness_us)
        } else if self.config.jitter_us > 0 {
            rng.i64(0..self.config.jitter_us)
        } else {
            0
        };

        let sequence = self.next_sequence;
        self.next_sequence += 1;
        PendingEvent {
            arrival_us: ts_us + delay_us,
            sequence,
            ts_us,
            merchant,
            latency_us,
            status,
            api,
            late,
            in_burst: burst.is_some(),
        }
    }

    /// Renders `call` into `event`, reusing the event's string buffers.
    pub(crate) fn render(&self, call: &ReleasedCall, event: &mut GeneratedEvent) {
        let pending = &call.pending;
        let merchant_index = pending.merchant as usize;
        let profile = &APIS[usize::from(pending.api)];
        let host = usize::from(call.host);

        event.ts_us = pending.ts_us;
        event.arrival_us = pending.arrival_us;
        event.merchant.clear();
        event
            .merchant
            .push_str(&self.merchants.names[merchant_index]);
        event.api = profile.route;
        event.method = profile.method;
        event.path.clear();
        event.path.push_str(profile.path_head);
        if profile.addresses_object() {
            event.path.push_str(profile.id_prefix);
            push_base36(call.object_id, OBJECT_ID_CHARS, &mut event.path);
        }
        event.path.push_str(profile.path_tail);
        event.status = pending.status;
        event.latency_ms = f64::from(pending.latency_us) / 1_000.0;
        event.corr_id.clear();
        write_hex_u128(call.corr_id, &mut event.corr_id);
        match self.merchants.partners[merchant_index] {
            Some(partner) => {
                let name = PARTNERS[usize::from(partner)];
                let buffer = event.partner.get_or_insert_with(String::new);
                buffer.clear();
                buffer.push_str(name);
            }
            None => event.partner = None,
        }
        event.host = HOSTS[host];
        event.region = REGIONS[host / HOSTS_PER_REGION];
        event.sdk = SDKS[usize::from(call.sdk)];
        match call.idempotency_key {
            Some(key) => {
                let buffer = event.idempotency_key.get_or_insert_with(String::new);
                buffer.clear();
                write_uuid_v4(key, buffer);
            }
            None => event.idempotency_key = None,
        }
    }
}

impl Iterator for TrafficGenerator {
    type Item = GeneratedEvent;

    /// Never returns `None`: the stream is endless.
    fn next(&mut self) -> Option<GeneratedEvent> {
        let call = self.next_call();
        let mut event = GeneratedEvent::empty();
        self.render(&call, &mut event);
        Some(event)
    }
}

/// Appends `count` lowercase base-36 characters drawn from `value`.
fn push_base36(mut value: u64, count: usize, out: &mut String) {
    const DIGITS: &[u8; 36] = b"0123456789abcdefghijklmnopqrstuvwxyz";
    for _ in 0..count {
        out.push(char::from(DIGITS[(value % 36) as usize]));
        value /= 36;
    }
}

/// Appends `value` as a version-4 UUID (`8-4-4-4-12` lowercase hex), as clients send them.
fn write_uuid_v4(value: u128, out: &mut String) {
    let with_version_and_variant =
        (value & !(0xf_u128 << 76) & !(0x3_u128 << 62)) | (0x4_u128 << 76) | (0x2_u128 << 62);
    let hex = hex_digits(with_version_and_variant);
    let mut uuid = [b'-'; 36];
    for (from, to, length) in [(0, 0, 8), (8, 9, 4), (12, 14, 4), (16, 19, 4), (20, 24, 12)] {
        uuid[to..to + length].copy_from_slice(&hex[from..from + length]);
    }
    out.push_str(std::str::from_utf8(&uuid).expect("hex digits and dashes are ASCII"));
}

#[cfg(test)]
mod tests {
    use super::*;
    use mm_model::time::{MICROS_PER_MINUTE, MICROS_PER_SECOND};
    use std::collections::HashMap;

    #[test]
    fn uuids_and_object_ids_look_right() {
        let mut uuid = String::new();
        write_uuid_v4(u128::MAX, &mut uuid);
        assert_eq!(uuid, "ffffffff-ffff-4fff-bfff-ffffffffffff");
        let mut id = String::new();
        push_base36(35, 3, &mut id);
        assert_eq!(id, "z00");
    }

    #[test]
    fn queue_holds_only_the_lateness_window() {
        let config = TrafficConfig {
            max_lateness_us: 5 * MICROS_PER_SECOND,
            ..TrafficConfig::default()
        };
        let window_events = config.events_per_second * 5.0;
        let mut generator = TrafficGenerator::new(config);
        let mut largest = 0;
        for _ in 0..300_000 {
            generator.next_call();
            largest = largest.max(generator.queued());
        }
        assert!(largest as f64 <= window_events * 1.1, "{largest} queued");
    }

    #[test]
    fn bursts_raise_server_errors_of_their_pair() {
        let config = TrafficConfig {
            merchants: 200,
            events_per_second: 2_000.0,
            ..TrafficConfig::default()
        };
        let mut generator = TrafficGenerator::new(config);
        generator.set_burst_settings(BurstSettings {
            mean_interval_us: 5.0 * MICROS_PER_SECOND as f64,
            ..BurstSettings::default()
        });
        let (mut burst_calls, mut burst_errors) = (0u32, 0u32);
        let (mut calm_calls, mut calm_errors) = (0u32, 0u32);
        // Calls and 5xx per (merchant, api, minute), to see the bursts from the outside too.
        let mut per_pair_minute: HashMap<(u32, u8, i64), (u32, u32)> = HashMap::new();
        for _ in 0..200_000 {
            let event = generator.next_call().pending;
            let server_error = u32::from(event.status >= 500);
            if event.in_burst {
                burst_calls += 1;
                burst_errors += server_error;
            } else {
                calm_calls += 1;
                calm_errors += server_error;
            }
            let key = (
                event.merchant,
                event.api,
                event.ts_us.div_euclid(MICROS_PER_MINUTE),
            );
            let counts = per_pair_minute.entry(key).or_default();
            counts.0 += 1;
            counts.1 += server_error;
        }
        assert!(
            generator.bursts_started() >= 5,
            "{} bursts",
            generator.bursts_started()
        );
        assert!(burst_calls >= 500, "{burst_calls} calls in bursts");
        let burst_share = f64::from(burst_errors) / f64::from(burst_calls);
        let calm_share = f64::from(calm_errors) / f64::from(calm_calls);
        assert!((0.25..0.65).contains(&burst_share), "{burst_share}");
        assert!((0.001..0.006).contains(&calm_share), "{calm_share}");
        let troubled = per_pair_minute
            .values()
            .filter(|(calls, errors)| {
                *calls >= 20 && f64::from(*errors) >= 0.25 * f64::from(*calls)
            })
            .count();
        assert!(troubled >= 1, "no (merchant, api, minute) with many 5xx");
    }
}
