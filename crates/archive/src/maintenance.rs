//! Keeping the segments sound and bounded: checking them when the archive opens, removing
//! leftovers of an interrupted flush, compaction and retention.

use std::path::PathBuf;
use std::time::Instant;

use mm_model::ApiCall;

use crate::{
    Archive, ArchiveError, RETIRED_GRACE, RowQuery, SegmentInfo, hour_directory, poisoned, segment,
    sync_directory,
};

impl Archive {
    /// Checks every listed segment's CRC; a torn or corrupt one is moved to `quarantine/`,
    /// dropped from the manifest and reported, and the rest keeps serving.
    pub(super) fn verify_segments(&self) -> Result<(), ArchiveError> {
        let mut state = self.state.write().map_err(|_| poisoned())?;
        let mut kept = Vec::with_capacity(state.manifest.segments.len());
        let mut quarantined = Vec::new();
        for segment in &state.manifest.segments {
            let path = self.segment_path(segment);
            match segment::file_crc32(&path) {
                Ok((crc32, bytes)) if crc32 == segment.crc32 && bytes == segment.bytes => {
                    // Lookups after a restart find the footers parsed already.
                    if let Err(error) = self.metadata.preload(&path) {
                        tracing::warn!(%error, "could not preload a segment footer");
                    }
                    kept.push(segment.clone());
                }
                Ok((crc32, bytes)) => quarantined.push((
                    segment.clone(),
                    format!(
                        "crc {crc32:08x} and {bytes} bytes, expected {:08x} and {}",
                        segment.crc32, segment.bytes
                    ),
                )),
                Err(error) => quarantined.push((segment.clone(), error.to_string())),
            }
        }
        if quarantined.is_empty() {
            return Ok(());
        }
        let quarantine = self.dir.join("quarantine");
        std::fs::create_dir_all(&quarantine)
            .map_err(|source| ArchiveError::io("create quarantine", &quarantine, source))?;
        for (segment, reason) in &quarantined {
            let from = self.segment_path(segment);
            let to = quarantine.join(format!("{}-{}", hour_directory(segment.hour), segment.file));
            tracing::error!(segment = %from.display(), moved_to = %to.display(), rows = segment.rows, reason, "corrupt archive segment quarantined");
            let _ = std::fs::rename(&from, &to);
        }
        let mut manifest = state.manifest.clone();
        manifest.segments = kept;
        self.write_manifest(&manifest)?;
        state.manifest = manifest;
        state.quarantined += quarantined.len();
        Ok(())
    }

    /// Merges the segments of every hour before `before_hour` that has at least `min_segments`
    /// of them (and at most `max_rows` rows in all) into one segment. The merged segment is
    /// written and fsynced before the manifest switches to it; the replaced files are deleted
    /// a while later, so lookups already reading them finish. Returns the hours compacted.
    pub fn compact(
        &self,
        before_hour: i64,
        min_segments: usize,
        max_rows: u64,
    ) -> Result<usize, ArchiveError> {
        let _serial = self.flush_lock.lock().map_err(|_| poisoned())?;
        self.delete_retired();
        let snapshot = self
            .state
            .read()
            .map_err(|_| poisoned())?
            .manifest
            .segments
            .clone();
        let mut by_hour: std::collections::BTreeMap<i64, Vec<SegmentInfo>> =
            std::collections::BTreeMap::new();
        for segment in snapshot {
            by_hour.entry(segment.hour).or_default().push(segment);
        }
        let mut compacted = 0;
        for (hour, segments) in by_hour.range(..before_hour) {
            let rows: u64 = segments.iter().map(|segment| segment.rows).sum();
            if segments.len() < min_segments.max(2) || rows > max_rows {
                continue;
            }
            let mut events = Vec::with_capacity(rows as usize);
            for segment in segments {
                let everything = RowQuery {
                    corr_id: None,
                    merchant: None,
                    from_us: i64::MIN,
                    to_us: i64::MAX,
                };
                events.extend(segment::read(
                    &self.segment_path(segment),
                    &everything,
                    &self.metadata,
                )?);
            }
            let borrowed: Vec<mm_model::ApiCallRef<'_>> =
                events.iter().map(ApiCall::as_ref).collect();
            let order = segment::segment_order(borrowed.as_slice());
            let directory = self.dir.join(hour_directory(*hour));
            let stamp = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |elapsed| elapsed.as_micros());
            let path = directory.join(format!("seg-c{stamp:020}.parquet"));
            let merged = segment::write(&path, *hour, borrowed.as_slice(), &order, 1)?;
            sync_directory(&directory);
            if let Err(error) = self.metadata.preload(&path) {
                tracing::warn!(%error, "could not preload a compacted segment's footer");
            }
            let replaced: std::collections::BTreeSet<&str> = segments
                .iter()
                .map(|segment| segment.file.as_str())
                .collect();
            let mut state = self.state.write().map_err(|_| poisoned())?;
            let mut manifest = state.manifest.clone();
            manifest.segments.retain(|segment| {
                segment.hour != *hour || !replaced.contains(segment.file.as_str())
            });
            manifest.segments.push(merged);
            self.write_manifest(&manifest)?;
            state.manifest = manifest;
            let retire_at = Instant::now();
            state.retired.extend(
                segments
                    .iter()
                    .map(|segment| (retire_at, self.segment_path(segment))),
            );
            compacted += 1;
        }
        Ok(compacted)
    }

    /// Deletes replaced segment files once no lookup can still be reading them.
    fn delete_retired(&self) {
        let Ok(mut state) = self.state.write() else {
            return;
        };
        let (due, waiting): (Vec<_>, Vec<_>) = std::mem::take(&mut state.retired)
            .into_iter()
            .partition(|(retired_at, _)| retired_at.elapsed() >= RETIRED_GRACE);
        state.retired = waiting;
        drop(state);
        for (_, path) in due {
            self.metadata.remove(&path);
            if let Err(error) = std::fs::remove_file(&path) {
                tracing::warn!(%error, segment = %path.display(), "could not delete a replaced segment");
            }
        }
    }

    /// Segments quarantined since the archive opened.
    pub fn quarantined(&self) -> usize {
        self.state
            .read()
            .map(|state| state.quarantined)
            .unwrap_or(0)
    }

    /// Drops whole segments: every one whose events are all older than `oldest_kept_us`, then
    /// the oldest ones while the archive is larger than `max_bytes`. The manifest stops listing
    /// them before their files are deleted. Returns how many were dropped.
    pub fn enforce_retention(
        &self,
        oldest_kept_us: i64,
        max_bytes: Option<u64>,
    ) -> Result<usize, ArchiveError> {
        let _serial = self.flush_lock.lock().map_err(|_| poisoned())?;
        let mut state = self.state.write().map_err(|_| poisoned())?;
        let mut segments = state.manifest.segments.clone();
        segments.sort_by_key(|segment| (segment.max_ts_us, segment.file.clone()));
        let mut total: u64 = segments.iter().map(|segment| segment.bytes).sum();
        let mut dropped = Vec::new();
        let mut kept = Vec::new();
        for segment in segments {
            let too_old = segment.max_ts_us < oldest_kept_us;
            let too_big = max_bytes.is_some_and(|limit| total > limit);
            if too_old || too_big {
                total -= segment.bytes;
                dropped.push(segment);
            } else {
                kept.push(segment);
            }
        }
        if dropped.is_empty() {
            return Ok(0);
        }
        let mut manifest = state.manifest.clone();
        manifest.segments = kept;
        self.write_manifest(&manifest)?;
        state.manifest = manifest;
        drop(state);
        for segment in &dropped {
            let path = self.segment_path(segment);
            self.metadata.remove(&path);
            if let Err(error) = std::fs::remove_file(&path) {
                tracing::warn!(%error, segment = %path.display(), "could not delete a segment past retention");
            }
        }
        Ok(dropped.len())
    }

    pub(super) fn remove_orphans(&self) -> Result<(), ArchiveError> {
        let state = self.state.read().map_err(|_| poisoned())?;
        let listed: std::collections::BTreeSet<PathBuf> = state
            .manifest
            .segments
            .iter()
            .map(|segment| {
                self.dir
                    .join(hour_directory(segment.hour))
                    .join(&segment.file)
            })
            .collect();
        let entries = std::fs::read_dir(&self.dir)
            .map_err(|source| ArchiveError::io("list archive", &self.dir, source))?;
        for entry in entries.flatten() {
            let path = entry.path();
            if !path.is_dir() || path.file_name().is_some_and(|name| name == "quarantine") {
                continue;
            }
            for file in std::fs::read_dir(&path).into_iter().flatten().flatten() {
                let file_path = file.path();
                if !listed.contains(&file_path) {
                    tracing::warn!(file = %file_path.display(), "removing an archive file no manifest lists (interrupted flush)");
                    let _ = std::fs::remove_file(&file_path);
                }
            }
        }
        Ok(())
    }
}
