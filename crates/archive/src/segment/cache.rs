//! The in-memory metadata of segments: parsed footers with their page indexes, and the
//! correlation-id bloom filters of their row groups, both bounded.

use std::fs::File;
use std::path::Path;
use std::sync::Arc;

use parquet::arrow::arrow_reader::{
    ArrowReaderMetadata, ArrowReaderOptions, ParquetRecordBatchReaderBuilder,
};
use parquet::bloom_filter::Sbbf;
use parquet::file::metadata::PageIndexPolicy;

use crate::ArchiveError;

/// Footers (and page indexes) of recently read segments, so a lookup does not parse them
/// again, and the correlation-id bloom filters of their row groups, so a lookup does not read
/// them again. Bounded: past [`METADATA_CACHE_ENTRIES`] footers the footers start over; past
/// [`BLOOM_CACHE_BYTES`] of bloom filters the segments cached first are dropped.
#[derive(Debug, Default)]
pub struct MetadataCache {
    entries: std::sync::Mutex<std::collections::HashMap<std::path::PathBuf, ArrowReaderMetadata>>,
    blooms: std::sync::Mutex<BloomCache>,
}

/// Bloom filters by segment, then row group (`None` inside: read, and the row group has none).
/// Past its budget the segment cached first goes first.
#[derive(Debug, Default)]
struct BloomCache {
    segments: std::collections::HashMap<std::path::PathBuf, Vec<Option<Option<Arc<Sbbf>>>>>,
    order: std::collections::VecDeque<std::path::PathBuf>,
    bytes: usize,
}

impl BloomCache {
    fn segment_bytes(slots: &[Option<Option<Arc<Sbbf>>>]) -> usize {
        slots
            .iter()
            .flatten()
            .flatten()
            .map(|bloom| bloom_bytes(bloom))
            .sum()
    }

    fn remove(&mut self, path: &Path) {
        if let Some(removed) = self.segments.remove(path) {
            self.bytes = self.bytes.saturating_sub(Self::segment_bytes(&removed));
            self.order.retain(|cached| cached != path);
        }
    }

    fn make_room(&mut self, size: usize) {
        while self.bytes + size > BLOOM_CACHE_BYTES {
            let Some(oldest) = self.order.pop_front() else {
                break;
            };
            if let Some(removed) = self.segments.remove(&oldest) {
                self.bytes = self.bytes.saturating_sub(Self::segment_bytes(&removed));
            }
        }
    }
}

const METADATA_CACHE_ENTRIES: usize = 512;
/// A day of 50 million events has about 100 MB of correlation-id bloom filters.
const BLOOM_CACHE_BYTES: usize = 256 * 1024 * 1024;

impl MetadataCache {
    pub(super) fn get(&self, path: &Path) -> Option<ArrowReaderMetadata> {
        self.entries.lock().ok()?.get(path).cloned()
    }

    pub(super) fn insert(&self, path: &Path, metadata: ArrowReaderMetadata) {
        if let Ok(mut entries) = self.entries.lock() {
            if entries.len() >= METADATA_CACHE_ENTRIES {
                entries.clear();
            }
            entries.insert(path.to_owned(), metadata);
        }
    }

    /// Parses and keeps a segment's footer, page index and correlation-id bloom filters
    /// ahead of the first lookup.
    pub fn preload(&self, path: &Path) -> Result<(), ArchiveError> {
        let corrupt = |error: parquet::errors::ParquetError| ArchiveError::Corrupt {
            path: path.to_owned(),
            detail: error.to_string(),
        };
        let file =
            File::open(path).map_err(|source| ArchiveError::io("open segment", path, source))?;
        let options = ArrowReaderOptions::new().with_page_index_policy(PageIndexPolicy::Optional);
        let loaded = ArrowReaderMetadata::load(&file, options).map_err(corrupt)?;
        self.insert(path, loaded.clone());
        let builder = ParquetRecordBatchReaderBuilder::new_with_metadata(file, loaded);
        let row_groups = builder.metadata().num_row_groups();
        let Some(corr_column) = builder
            .parquet_schema()
            .columns()
            .iter()
            .position(|column| column.name() == "corr_id")
        else {
            return Ok(());
        };
        for row_group in 0..row_groups {
            self.bloom_or_load(&builder, path, row_group, corr_column)
                .map_err(corrupt)?;
        }
        Ok(())
    }

    /// The correlation-id bloom filter of a row group, from memory or else read from the file
    /// and kept.
    pub(super) fn bloom_or_load(
        &self,
        builder: &ParquetRecordBatchReaderBuilder<File>,
        path: &Path,
        row_group: usize,
        corr_column: usize,
    ) -> Result<Option<Arc<Sbbf>>, parquet::errors::ParquetError> {
        if let Some(cached) = self.bloom(path, row_group) {
            return Ok(cached);
        }
        let loaded = builder
            .get_row_group_column_bloom_filter(row_group, corr_column)?
            .map(Arc::new);
        let row_groups = builder.metadata().num_row_groups();
        self.insert_bloom(path, row_group, row_groups, loaded.clone());
        Ok(loaded)
    }

    /// Forgets a segment that is gone or replaced.
    pub fn remove(&self, path: &Path) {
        if let Ok(mut entries) = self.entries.lock() {
            entries.remove(path);
        }
        if let Ok(mut blooms) = self.blooms.lock() {
            blooms.remove(path);
        }
    }

    /// The bloom filter of a row group, if it was read before: `Some(None)` when the row
    /// group has none.
    fn bloom(&self, path: &Path, row_group: usize) -> Option<Option<Arc<Sbbf>>> {
        self.blooms
            .lock()
            .ok()?
            .segments
            .get(path)?
            .get(row_group)?
            .clone()
    }

    fn insert_bloom(
        &self,
        path: &Path,
        row_group: usize,
        row_groups: usize,
        bloom: Option<Arc<Sbbf>>,
    ) {
        let Ok(mut blooms) = self.blooms.lock() else {
            return;
        };
        let size = bloom.as_deref().map_or(0, bloom_bytes);
        blooms.make_room(size);
        if !blooms.segments.contains_key(path) {
            blooms.order.push_back(path.to_owned());
        }
        let slots = blooms
            .segments
            .entry(path.to_owned())
            .or_insert_with(|| vec![None; row_groups]);
        if let Some(slot) = slots.get_mut(row_group)
            && slot.is_none()
        {
            *slot = Some(bloom);
            blooms.bytes += size;
        }
    }
}

fn bloom_bytes(bloom: &Sbbf) -> usize {
    // A block is eight 32-bit words.
    bloom.num_blocks() * 32
}
