//! Kafka adapters for cluster mode: client settings, the Java-compatible murmur2 partitioner,
//! the partition checkpoint record (written to the checkpoint topic), header and window
//! formats, dead-letter records, and — with the `client` feature — the librdkafka client
//! configurations and a delivery-tracking producer. The consumers themselves live in
//! `mm-cluster`.

pub mod checkpoint;
pub mod dead_letter;
#[cfg(feature = "client")]
pub mod delivery;
#[cfg(feature = "client")]
pub mod guard;
pub mod murmur2;
pub mod settings;
#[cfg(feature = "client")]
pub mod trace;

pub use checkpoint::{CheckpointError, PartitionCheckpoint};
pub use dead_letter::DeadLetter;
#[cfg(feature = "client")]
pub use delivery::{DeliveryError, DeliveryTracker, TrackedProducer};
pub use murmur2::{murmur2, partition_for};
pub use settings::KafkaSettings;

/// Header names of the records Merchant Monitor writes.
pub mod header {
    /// Activity records: the same for every delivery of the same record.
    pub const DEDUPE_KEY: &str = "dedupe_key";
    /// Activity records: the window's rollup in the store's binary encoding (sketch included).
    pub const ROLLUP: &str = "mm.rollup";
    /// Activity records: `partition:offset` of the aggregation topic the rollup covers.
    pub const COVERS: &str = "mm.covers";
    /// Activity records and open-window snapshots: the window, binary (see
    /// [`super::encode_window`]), so a replica need not parse the JSON value.
    pub const WINDOW: &str = "mm.window";
    /// Repartitioned records: where the record was read from.
    pub const SOURCE_PARTITION: &str = "mm.source.partition";
    pub const SOURCE_OFFSET: &str = "mm.source.offset";
    /// Repartitioned records: the value's format, [`EVENT_V1`] (the call as the repartitioner
    /// parsed it, in the store's binary event encoding); absent for JSON.
    pub const FORMAT: &str = "mm.format";
    pub const EVENT_V1: &str = "event-v1";
    /// Records of the event gateway's topics: the event's metadata, as text.
    pub const EVENT_EID: &str = "mm.eid";
    pub const EVENT_TYPE: &str = "mm.event_type";
    pub const EVENT_VERSION: &str = "mm.version";
    pub const EVENT_OCCURRED_AT: &str = "mm.occurred_at";
    pub const EVENT_RECEIVED_AT: &str = "mm.received_at";
    pub const EVENT_FLOW_ID: &str = "mm.flow_id";
}

/// The [`header::WINDOW`] value: merchant and API, each as a little-endian `u16` length and
/// the UTF-8 bytes, then the minute as a little-endian `i64`.
pub fn encode_window(merchant: &str, api: &str, minute: i64) -> Vec<u8> {
    let mut out = Vec::with_capacity(merchant.len() + api.len() + 12);
    for text in [merchant, api] {
        let length = u16::try_from(text.len()).unwrap_or(u16::MAX);
        out.extend_from_slice(&length.to_le_bytes());
        out.extend_from_slice(&text.as_bytes()[..usize::from(length)]);
    }
    out.extend_from_slice(&minute.to_le_bytes());
    out
}

/// Reads a [`header::WINDOW`] value: `(merchant, api, minute)`.
pub fn decode_window(value: &[u8]) -> Option<(&str, &str, i64)> {
    let mut rest = value;
    let mut text = || -> Option<&str> {
        let (length, tail) = rest.split_first_chunk::<2>()?;
        let length = usize::from(u16::from_le_bytes(*length));
        let (bytes, tail) = tail.split_at_checked(length)?;
        rest = tail;
        std::str::from_utf8(bytes).ok()
    };
    let merchant = text()?;
    let api = text()?;
    let minute = i64::from_le_bytes(rest.try_into().ok()?);
    Some((merchant, api, minute))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn windows_round_trip_and_cut_values_are_refused() {
        let encoded = encode_window("Müller|GmbH", "/v1/payments", -27_000_000);
        assert_eq!(
            decode_window(&encoded),
            Some(("Müller|GmbH", "/v1/payments", -27_000_000))
        );
        assert_eq!(decode_window(&encoded[..encoded.len() - 1]), None);
        assert_eq!(decode_window(&[]), None);
        let empty_api = encode_window("M", "", 5);
        assert_eq!(decode_window(&empty_api), Some(("M", "", 5)));
    }
}
