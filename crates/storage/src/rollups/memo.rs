//! What an import knows of the store it writes alone: a key of a day the store did not hold
//! when the import began, and that the import has not written since, is absent, so the read
//! that would find nothing is skipped (most of an import's windows are new).

use std::collections::{BTreeMap, BTreeSet};
use std::hash::{Hash, Hasher};

use rustc_hash::{FxHashSet, FxHasher};

use super::hours::HeldHours;

/// Keys remembered at most (8 bytes each in a set): past this the oldest day is forgotten and
/// its keys are read again, so a long import's memory stays bounded.
const MAX_KEYS: usize = 8 << 20;

/// The keyspace of a day a key belongs to.
#[derive(Debug, Clone, Copy, Hash)]
pub(super) enum Space {
    Rollups,
    Index,
}

/// Built by [`crate::rollups::RollupStore::import_memo`] when an import begins and handed to
/// each of its writes. Valid only while nothing else writes the store (its lock sees to that
/// for a whole process; one memo per import).
#[derive(Debug)]
pub struct ImportMemo {
    /// Days the store held when the import began: their keys are always read.
    held: BTreeSet<i64>,
    /// Per day created by the import, the hashes of the keys it has written there.
    written: BTreeMap<i64, FxHashSet<u64>>,
    /// Days created by the import whose keys were forgotten.
    forgotten: BTreeSet<i64>,
    keys: usize,
    max_keys: usize,
    /// The hour rollups the import holds back (see [`HeldHours`]).
    pub(super) hours: HeldHours,
    /// How many times the database had been reopened when the hours were taken up.
    pub(super) reopens: u64,
}

impl ImportMemo {
    pub(super) fn new(held: impl IntoIterator<Item = i64>) -> Self {
        Self {
            held: held.into_iter().collect(),
            written: BTreeMap::new(),
            forgotten: BTreeSet::new(),
            keys: 0,
            max_keys: MAX_KEYS,
            hours: HeldHours::default(),
            reopens: 0,
        }
    }

    /// Records that `key` of `day` is about to be written; true when it is known to be absent
    /// from the store, so reading it can be skipped. A hash shared with another key only
    /// costs a read.
    pub(super) fn claim(&mut self, day: i64, space: Space, key: &[u8]) -> bool {
        if self.held.contains(&day) || self.forgotten.contains(&day) {
            return false;
        }
        let mut hasher = FxHasher::default();
        (space, key).hash(&mut hasher);
        let new = self.written.entry(day).or_default().insert(hasher.finish());
        if new {
            self.keys += 1;
            if self.keys > self.max_keys {
                self.forget_oldest();
            }
        }
        new
    }

    fn forget_oldest(&mut self) {
        if let Some((day, keys)) = self.written.pop_first() {
            self.keys -= keys.len();
            self.forgotten.insert(day);
        }
    }
}

/// Reads for an update: through the memo when an import writes, else always.
pub(super) type Memo<'m> = Option<&'m mut ImportMemo>;

/// Whether `key` must be read before it is written (and remembers it as written).
pub(super) fn must_read(memo: &mut Memo<'_>, day: i64, space: Space, key: &[u8]) -> bool {
    !memo
        .as_deref_mut()
        .is_some_and(|memo| memo.claim(day, space, key))
}

/// `key` of `keyspace` (a keyspace of `day`) as stored before it is written: read unless the
/// memo knows it is absent (and remembered as written either way).
pub(super) fn read_for_write(
    memo: &mut Memo<'_>,
    day: i64,
    space: Space,
    keyspace: &fjall::Keyspace,
    key: &[u8],
) -> Result<Option<fjall::Slice>, crate::StorageError> {
    if must_read(memo, day, space, key) {
        Ok(keyspace.get(key)?)
    } else {
        Ok(None)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_unwritten_keys_of_days_created_by_the_import_are_known_absent() {
        let mut memo = ImportMemo::new([10]);
        assert!(!memo.claim(10, Space::Rollups, b"a"), "a held day is read");
        assert!(memo.claim(11, Space::Rollups, b"a"), "new day, new key");
        assert!(
            !memo.claim(11, Space::Rollups, b"a"),
            "written once: read it"
        );
        assert!(memo.claim(11, Space::Index, b"a"), "another keyspace");
        assert!(memo.claim(12, Space::Rollups, b"a"), "another day");
    }

    #[test]
    fn past_its_bound_the_memo_forgets_its_oldest_day_and_reads_it_again() {
        let mut memo = ImportMemo::new([]);
        memo.max_keys = 3;
        assert!(memo.claim(5, Space::Rollups, b"a"));
        assert!(memo.claim(5, Space::Rollups, b"b"));
        assert!(memo.claim(6, Space::Rollups, b"a"));
        assert!(
            memo.claim(6, Space::Rollups, b"b"),
            "the fourth key: day 5 forgotten"
        );
        assert!(
            !memo.claim(5, Space::Rollups, b"c"),
            "a forgotten day is read"
        );
        assert!(!memo.claim(6, Space::Rollups, b"b"));
        assert!(memo.claim(6, Space::Rollups, b"c"));
    }
}
