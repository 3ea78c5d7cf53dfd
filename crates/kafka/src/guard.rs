//! A guard for Kafka-protocol brokers that hand a consumer less than the log holds.
//!
//! **A broker-compatibility workaround.** Apache Kafka answers a fetch that starts inside a
//! record batch with that batch (the client drops the records before the offset asked for).
//! The test broker, tansu 0.6, answers it with the *next* batch, and a fetch inside a
//! partition's last batch with nothing; it also reports the start of that last batch as the
//! partition's end. A consumer lands inside a batch after every seek, restart from a committed
//! offset or rebalance, so without this guard it would skip records for good. Every consumer of
//! cluster mode reads through a [`FetchGuard`]; `[kafka] fetch_guard = false` turns it off for
//! brokers that answer fetches the Kafka way (a record past the expected offset is then taken
//! as offsets without records, as transaction markers and compaction leave).
//!
//! [`Continuity`] is the decision, pure and unit-tested; [`FetchGuard`] acts on it for one
//! consumer: it seeks back, runs the periodic check for partitions that make no progress, and
//! counts every re-read in `mm_kafka_fetch_gaps`.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use prometheus_client::metrics::counter::Counter;
use rdkafka::consumer::{BaseConsumer, Consumer, ConsumerContext};

/// How often partitions are checked for making no progress.
pub const QUIET: Duration = Duration::from_secs(3);

/// What to do with a record, given the offset its partition's consumer expects next.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Position {
    /// The expected record: process it.
    Next,
    /// Before the expected one (a re-delivery after seeking back): drop it.
    Behind,
    /// Records were skipped: drop this one and seek to the offset given, then read on.
    Reread(i64),
    /// Reading went on from before the expected offset straight to this record: the offsets
    /// between hold no records (transaction markers, compaction). Process it.
    Gap,
}

/// Guards one partition's consumption against skipped records.
///
/// A record past the next offset expected means either that the offsets between hold no
/// records, or that the consumer was handed less than the log holds. The second happens
/// with brokers that answer a fetch starting inside a record batch with the next batch
/// (tansu 0.6 does) — after every seek, restart from a committed offset or rebalance that
/// lands inside a batch — and counting windows or committing input offsets past such a hole
/// would lose its records for good. So the consumer seeks back, further each time (the batch
/// start is not known), and drops what comes before the expected offset; the hole is taken
/// as real only when reads that started before it, three of them each from further back, run
/// straight past it.
///
/// The same answer leaves a consumer with nothing at all when the batch it starts in is the
/// partition's last: a partition that makes no progress is read again the same way
/// ([`Continuity::stalled`]), until a read from before the expected offset comes back with
/// nothing past it.
#[derive(Debug, Default)]
pub struct Continuity {
    suspect: Option<Suspect>,
    /// The expected offset at the last periodic check for progress.
    checked: Option<i64>,
}

#[derive(Debug)]
struct Suspect {
    /// The offset expected when the hole showed.
    expected: i64,
    /// How far before it the last seek went.
    distance: i64,
    /// Whether a record before `expected` came since that seek.
    before: bool,
    /// Reads from before `expected` that went straight past it.
    crossings: u8,
}

impl Continuity {
    /// How far before the expected offset the first seek goes.
    const FIRST_DISTANCE: i64 = 64;
    /// Reads straight across a hole, each from further back, before it is taken as real.
    const CROSSINGS: u8 = 3;

    /// What to do with the record at `offset` when `expected` is due.
    pub fn check(&mut self, expected: i64, offset: i64) -> Position {
        if offset == expected {
            self.suspect = None;
            return Position::Next;
        }
        if offset < expected {
            if let Some(suspect) = &mut self.suspect
                && suspect.expected == expected
            {
                suspect.before = true;
            }
            return Position::Behind;
        }
        match &mut self.suspect {
            // Read straight across the hole: real once it is seen from several starting
            // points. A fetch answer cut just before the expected record looks the same
            // once (the consumer asks for the cut record, inside its batch, and is handed
            // the next batch), but not again from further back, where the cuts fall
            // elsewhere.
            Some(suspect) if suspect.expected == expected && suspect.before => {
                suspect.crossings += 1;
                if suspect.crossings >= Self::CROSSINGS {
                    self.suspect = None;
                    Position::Gap
                } else {
                    Position::Reread(suspect.further())
                }
            }
            // Nothing before the hole is left to read (the log starts after it).
            Some(suspect) if suspect.expected == expected && suspect.distance >= expected => {
                self.suspect = None;
                Position::Gap
            }
            Some(suspect) if suspect.expected == expected => Position::Reread(suspect.further()),
            _ => Position::Reread(self.suspect_from(expected)),
        }
    }

    /// The partition made no progress at `expected`: where to read from again, or `None` when
    /// a read from before `expected` already found nothing past it (or there is nothing
    /// before it).
    pub fn stalled(&mut self, expected: i64) -> Option<i64> {
        match &mut self.suspect {
            Some(suspect) if suspect.expected == expected => {
                (!suspect.before && suspect.distance < expected).then(|| suspect.further())
            }
            _ => Some(self.suspect_from(expected)),
        }
    }

    /// For a check every [`QUIET`]: whether the partition still expects what it expected at
    /// the last check.
    pub fn made_no_progress(&mut self, expected: i64) -> bool {
        self.checked.replace(expected) == Some(expected)
    }

    /// Starts suspecting a hole at `expected`; returns where to read from.
    fn suspect_from(&mut self, expected: i64) -> i64 {
        self.suspect = Some(Suspect {
            expected,
            distance: Self::FIRST_DISTANCE,
            before: false,
            crossings: 0,
        });
        (expected - Self::FIRST_DISTANCE).max(0)
    }
}

impl Suspect {
    /// Twice as far back as the last seek; returns where to read from.
    fn further(&mut self) -> i64 {
        self.distance = self.distance.saturating_mul(2);
        self.before = false;
        (self.expected - self.distance).max(0)
    }
}

/// One consumer's guard (see the module documentation).
#[derive(Debug)]
pub struct FetchGuard {
    topic: String,
    enabled: bool,
    partitions: BTreeMap<i32, Continuity>,
    next_quiet_check: Instant,
    gaps: Counter,
}

impl FetchGuard {
    /// A guard for a consumer of `topic`; `enabled` from `[kafka] fetch_guard`; `gaps` counts
    /// the re-reads.
    pub fn new(topic: &str, enabled: bool, gaps: Counter) -> Self {
        Self {
            topic: topic.to_owned(),
            enabled,
            partitions: BTreeMap::new(),
            next_quiet_check: Instant::now() + QUIET,
            gaps,
        }
    }

    /// Whether to process the record at `offset` of `partition`, whose consumer expects
    /// `expected` next; seeks back itself when records were skipped.
    pub fn admit<C: ConsumerContext>(
        &mut self,
        consumer: &BaseConsumer<C>,
        partition: i32,
        expected: i64,
        offset: i64,
    ) -> bool {
        if !self.enabled {
            return offset >= expected;
        }
        let continuity = self.partitions.entry(partition).or_default();
        match continuity.check(expected, offset) {
            Position::Next => true,
            Position::Gap => {
                tracing::info!(
                    topic = %self.topic,
                    partition,
                    from = expected,
                    to = offset,
                    "offsets without records"
                );
                true
            }
            Position::Behind => false,
            Position::Reread(to) => {
                self.reread(consumer, partition, (expected, Some(offset), to));
                false
            }
        }
    }

    /// At most every [`QUIET`]: every partition of `expected` (partition, next offset) that
    /// made no progress since the last check is read again from before its expected offset,
    /// until a read from before it finds nothing past it.
    pub fn check_quiet<C: ConsumerContext>(
        &mut self,
        consumer: &BaseConsumer<C>,
        expected: impl IntoIterator<Item = (i32, i64)>,
    ) {
        if !self.enabled || Instant::now() < self.next_quiet_check {
            return;
        }
        self.next_quiet_check = Instant::now() + QUIET;
        for (partition, next) in expected {
            let continuity = self.partitions.entry(partition).or_default();
            if !continuity.made_no_progress(next) {
                continue;
            }
            if let Some(to) = continuity.stalled(next) {
                self.reread(consumer, partition, (next, None, to));
            }
        }
    }

    /// For a reader waiting for `expected` of `partition` that heard nothing for a while:
    /// reads again from before it and returns `true`, or returns `false` when a read from
    /// before it already found nothing past it (the records are gone, or never were).
    pub fn stalled<C: ConsumerContext>(
        &mut self,
        consumer: &BaseConsumer<C>,
        partition: i32,
        expected: i64,
    ) -> bool {
        if !self.enabled {
            return false;
        }
        match self
            .partitions
            .entry(partition)
            .or_default()
            .stalled(expected)
        {
            Some(to) => {
                self.reread(consumer, partition, (expected, None, to));
                true
            }
            None => false,
        }
    }

    /// Whether the guard acts (`[kafka] fetch_guard`).
    pub fn enabled(&self) -> bool {
        self.enabled
    }

    /// Forgets a partition the consumer no longer reads.
    pub fn forget(&mut self, partition: i32) {
        self.partitions.remove(&partition);
    }

    /// Seeks `partition` to `to`, before `expected` (`handed`: the record that came instead).
    fn reread<C: ConsumerContext>(
        &self,
        consumer: &BaseConsumer<C>,
        partition: i32,
        (expected, handed, to): (i64, Option<i64>, i64),
    ) {
        self.gaps.inc();
        tracing::debug!(
            topic = %self.topic,
            partition,
            expected,
            ?handed,
            to,
            "reading again from before the expected offset"
        );
        if let Err(error) = consumer.seek(
            &self.topic,
            partition,
            rdkafka::Offset::Offset(to),
            Duration::from_secs(5),
        ) {
            // The next record past the hole asks again.
            tracing::warn!(topic = %self.topic, partition, %error, "seeking back");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::{Continuity, Position};

    #[test]
    fn records_in_order_are_processed_and_re_deliveries_dropped() {
        let mut continuity = Continuity::default();
        assert_eq!(continuity.check(5, 5), Position::Next);
        assert_eq!(continuity.check(6, 4), Position::Behind);
        assert_eq!(continuity.check(6, 6), Position::Next);
    }

    #[test]
    fn a_hole_is_read_again_from_further_back_until_the_expected_record_comes() {
        let mut continuity = Continuity::default();
        // Handed the next batch: seek back before the expected offset.
        assert_eq!(continuity.check(1000, 1300), Position::Reread(936));
        // The broker answers with the same batch again (the expected one starts earlier).
        assert_eq!(continuity.check(1000, 1300), Position::Reread(872));
        // Now the batch holding 1000 comes: what precedes 1000 is dropped.
        assert_eq!(continuity.check(1000, 900), Position::Behind);
        assert_eq!(continuity.check(1000, 999), Position::Behind);
        assert_eq!(continuity.check(1000, 1000), Position::Next);
        assert_eq!(continuity.check(1001, 1001), Position::Next);
    }

    #[test]
    fn a_hole_read_straight_across_from_three_starting_points_is_real() {
        let mut continuity = Continuity::default();
        assert_eq!(continuity.check(500, 502), Position::Reread(436));
        assert_eq!(continuity.check(500, 499), Position::Behind);
        assert_eq!(continuity.check(500, 502), Position::Reread(372));
        assert_eq!(continuity.check(500, 499), Position::Behind);
        assert_eq!(continuity.check(500, 502), Position::Reread(244));
        assert_eq!(continuity.check(500, 499), Position::Behind);
        assert_eq!(continuity.check(500, 502), Position::Gap);
        // A new hole starts over.
        assert_eq!(continuity.check(503, 600), Position::Reread(439));
    }

    #[test]
    fn a_record_skipped_once_by_a_cut_fetch_is_read_again_not_taken_for_a_hole() {
        // A fetch answer cut inside the batch ending at 4729: the consumer asks for 4729 and
        // is handed the next batch, although records before 4729 came since the seek.
        let mut continuity = Continuity::default();
        assert_eq!(continuity.check(4729, 5873), Position::Reread(4665));
        assert_eq!(continuity.check(4729, 4700), Position::Behind);
        assert_eq!(continuity.check(4729, 4730), Position::Reread(4601));
        // Read from further back, the answer is cut elsewhere: 4729 comes.
        assert_eq!(continuity.check(4729, 4650), Position::Behind);
        assert_eq!(continuity.check(4729, 4729), Position::Next);
    }

    #[test]
    fn a_quiet_partition_is_read_again_until_a_read_from_before_finds_nothing_past() {
        let mut continuity = Continuity::default();
        assert_eq!(continuity.stalled(1000), Some(936));
        // Still nothing: further back.
        assert_eq!(continuity.stalled(1000), Some(872));
        // Records before 1000 came, then nothing: the broker has nothing readable past it.
        assert_eq!(continuity.check(1000, 990), Position::Behind);
        assert_eq!(continuity.stalled(1000), None);
        assert_eq!(continuity.stalled(1000), None);
        // The expected record after all (the batch holding it came).
        assert_eq!(continuity.check(1000, 1000), Position::Next);
        assert_eq!(continuity.stalled(1001), Some(937));
        // Nothing before offset 10 to read but offset 0 onwards, once.
        let mut continuity = Continuity::default();
        assert_eq!(continuity.stalled(10), Some(0));
        assert_eq!(continuity.stalled(10), None);
    }

    #[test]
    fn no_progress_means_the_same_expected_offset_at_two_checks_in_a_row() {
        let mut continuity = Continuity::default();
        assert!(!continuity.made_no_progress(10));
        assert!(continuity.made_no_progress(10));
        assert!(!continuity.made_no_progress(12));
        assert!(continuity.made_no_progress(12));
    }

    #[test]
    fn a_hole_at_the_start_of_the_log_is_real_once_there_is_nothing_before_it() {
        // Retention deleted everything before 500: the first record is 500.
        let mut continuity = Continuity::default();
        assert_eq!(continuity.check(10, 500), Position::Reread(0));
        assert_eq!(continuity.check(10, 500), Position::Gap);
        let mut continuity = Continuity::default();
        assert_eq!(continuity.check(0, 500), Position::Reread(0));
        assert_eq!(continuity.check(0, 500), Position::Gap);
    }
}
