//! Requests answered once (`Idempotency-Key`), kept in the store for the idempotency window:
//! keyspace `requests` maps a scoped key to its record, `requests-by-time` orders the keys by
//! arrival so expired ones are dropped by a range scan. Written with the checkpoint that
//! covers the WAL batch that recorded them, so a record is never lost between the log and the
//! store.

use std::sync::Arc;

use fjall::OwnedWriteBatch;

use super::{Store, sortable};
use crate::StorageError;
use crate::codec::Reader;
use crate::wal::RequestRecord;

/// A request's record: what a retry with its key is answered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredRequest {
    pub key: String,
    pub fingerprint: u64,
    pub at_us: i64,
    pub status: u16,
    pub reply: Arc<[u8]>,
}

impl StoredRequest {
    pub fn from_record(record: &RequestRecord<'_>) -> Self {
        Self {
            key: record.key.to_owned(),
            fingerprint: record.fingerprint,
            at_us: record.at_us,
            status: record.status,
            reply: Arc::from(record.reply),
        }
    }

    /// The form a WAL batch carries.
    pub fn as_record(&self) -> RequestRecord<'_> {
        RequestRecord {
            key: &self.key,
            fingerprint: self.fingerprint,
            at_us: self.at_us,
            status: self.status,
            reply: &self.reply,
        }
    }

    fn encode(&self) -> Vec<u8> {
        let mut value = Vec::with_capacity(18 + self.reply.len());
        value.extend_from_slice(&self.fingerprint.to_le_bytes());
        value.extend_from_slice(&self.at_us.to_le_bytes());
        value.extend_from_slice(&self.status.to_le_bytes());
        value.extend_from_slice(&self.reply);
        value
    }

    fn decode(key: &str, value: &[u8]) -> Result<Self, StorageError> {
        let mut reader = Reader::new(value);
        let corrupt = |error: crate::codec::CodecError| StorageError::Codec {
            what: "stored request",
            source: error,
        };
        let fingerprint = reader.u64_le("fingerprint").map_err(corrupt)?;
        let at_us = reader.i64_le("arrival").map_err(corrupt)?;
        let status = reader.u16_le("status").map_err(corrupt)?;
        Ok(Self {
            key: key.to_owned(),
            fingerprint,
            at_us,
            status,
            reply: Arc::from(&value[18..]),
        })
    }
}

fn by_time_key(at_us: i64, key: &str) -> Vec<u8> {
    let mut bytes = sortable(at_us).to_vec();
    bytes.extend_from_slice(key.as_bytes());
    bytes
}

impl Store {
    /// The stored record of a scoped key, if any (expired or not).
    pub fn request(&self, key: &str) -> Result<Option<StoredRequest>, StorageError> {
        match self.requests.get(key.as_bytes())? {
            Some(value) => Ok(Some(StoredRequest::decode(key, &value)?)),
            None => Ok(None),
        }
    }

    /// Adds request records to a checkpoint's write batch.
    pub(super) fn write_requests(&self, write: &mut OwnedWriteBatch, requests: &[StoredRequest]) {
        for request in requests {
            write.insert(&self.requests, request.key.as_bytes(), request.encode());
            write.insert(
                &self.requests_by_time,
                by_time_key(request.at_us, &request.key),
                [],
            );
        }
    }

    /// Drops the records of requests that arrived before `cutoff_us`; returns how many.
    pub fn expire_requests(&self, cutoff_us: i64) -> Result<usize, StorageError> {
        let mut write = self.db.batch();
        let mut dropped = 0;
        let end = sortable(cutoff_us);
        for guard in self.requests_by_time.range(..end.as_slice()) {
            let (time_key, _) = guard.into_inner()?;
            let key = &time_key[8..];
            // A key used again later has a newer record: keep it.
            if let Some(value) = self.requests.get(key)?
                && let Ok(stored) = StoredRequest::decode("", &value)
                && stored.at_us >= cutoff_us
            {
                write.remove(&self.requests_by_time, time_key.to_vec());
                continue;
            }
            write.remove(&self.requests, key.to_vec());
            write.remove(&self.requests_by_time, time_key.to_vec());
            dropped += 1;
        }
        if dropped > 0 {
            write.commit()?;
        }
        Ok(dropped)
    }
}
