//! Subscriptions: a consumer group reading event types with cursors it commits.
//!
//! A subscription is (consumer group, event types); asking for the same pair again gives back
//! the same subscription. Its cursors, one per (event type, partition), are the offsets it
//! reads next; they start at the partitions' beginnings or ends (`read_from`) and move only
//! when the consumer commits. A reader that comes back resumes where it committed, and the
//! registry knows who reads each type (the compatibility check names them).
//!
//! Where they are kept is a [`Store`]: the gateway database on one machine
//! ([`embedded`]); in cluster mode a shared table on Kafka, the cursors being the committed
//! offsets of a Kafka consumer group per subscription (`crate::kafka::subscriptions`).

use std::collections::BTreeMap;
use std::sync::Mutex;

use serde::{Deserialize, Serialize};
use thiserror::Error;
use utoipa::ToSchema;

pub mod embedded;

use crate::log::{EventLog, LogError};
use crate::registry::Registry;

/// Where a new subscription starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum ReadFrom {
    /// Every event already published.
    Begin,
    /// Only events published from now on.
    #[default]
    End,
}

/// The body of `POST /v1/subscriptions`.
#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SubscriptionRequest {
    pub consumer_group: String,
    pub event_types: Vec<String>,
    /// [default: `end`]
    #[serde(default)]
    pub read_from: ReadFrom,
}

/// A subscription.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Subscription {
    pub id: String,
    pub consumer_group: String,
    /// Sorted.
    pub event_types: Vec<String>,
    pub read_from: ReadFrom,
    /// RFC 3339.
    pub created_at: String,
}

/// Where a subscription reads next in one partition.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Cursor {
    pub event_type: String,
    pub partition: u32,
    /// The next offset to read.
    pub offset: u64,
}

/// An event read through a subscription: where it is, and its bytes.
pub type ReadEvent = (Cursor, Vec<u8>);

#[derive(Debug, Error)]
pub enum SubscriptionError {
    #[error("subscription {0:?} does not exist")]
    Unknown(String),
    #[error("{0}")]
    Invalid(String),
    #[error("{0}")]
    Log(#[from] LogError),
    #[error("subscription storage: {0}")]
    Storage(String),
}

pub(crate) fn storage(error: impl std::fmt::Display) -> SubscriptionError {
    SubscriptionError::Storage(error.to_string())
}

/// Where subscriptions and their cursors are kept.
pub trait Store: Send + Sync {
    /// The subscription of (group, sorted types), if there is one.
    fn find(
        &self,
        group: &str,
        types: &[String],
    ) -> Result<Option<Subscription>, SubscriptionError>;
    /// The id a new subscription of (group, types) gets.
    fn new_id(&self, group: &str, types: &[String]) -> String;
    /// Stores a new subscription with its first cursors, durably. `Some` when another
    /// instance created the pair's subscription first: that one stands.
    fn create(
        &self,
        subscription: &Subscription,
        cursors: &[Cursor],
    ) -> Result<Option<Subscription>, SubscriptionError>;
    fn get(&self, id: &str) -> Result<Subscription, SubscriptionError>;
    fn list(&self) -> Result<Vec<Subscription>, SubscriptionError>;
    /// The committed cursors.
    fn cursors(&self, subscription: &Subscription) -> Result<Vec<Cursor>, SubscriptionError>;
    /// Commits cursors (checked by the caller), durably.
    fn commit(&self, id: &str, cursors: &[Cursor]) -> Result<(), SubscriptionError>;
}

/// 128 bits in a version 4 UUID's shape.
pub(crate) fn uuid_shape(bits: u128) -> String {
    let hex = format!("{bits:032x}");
    format!(
        "{}-{}-4{}-8{}-{}",
        &hex[0..8],
        &hex[8..12],
        &hex[13..16],
        &hex[17..20],
        &hex[20..32]
    )
}

/// The subscriptions of this deployment.
pub struct Subscriptions {
    store: Box<dyn Store>,
    /// Serialises creation here, so a pair gets one subscription.
    creating: Mutex<()>,
}

impl Subscriptions {
    /// The subscriptions kept in the gateway database.
    pub fn open(database: &fjall::Database) -> Result<Self, SubscriptionError> {
        Ok(Self::with_store(Box::new(embedded::Embedded::open(
            database,
        )?)))
    }

    pub fn with_store(store: Box<dyn Store>) -> Self {
        Self {
            store,
            creating: Mutex::new(()),
        }
    }

    /// Creates the subscription of (group, types), or gives back the one there is: `true` when
    /// created.
    pub fn create(
        &self,
        request: SubscriptionRequest,
        registry: &Registry,
        log: &EventLog,
        now_us: i64,
    ) -> Result<(bool, Subscription), SubscriptionError> {
        if request.consumer_group.trim().is_empty() {
            return Err(SubscriptionError::Invalid(
                "consumer_group: must not be empty".into(),
            ));
        }
        let mut types = request.event_types.clone();
        types.sort();
        types.dedup();
        if types.is_empty() {
            return Err(SubscriptionError::Invalid(
                "event_types: name at least one event type".into(),
            ));
        }
        let mut partitions = Vec::new();
        for name in &types {
            let registered = registry.get(name).map_err(|_| {
                SubscriptionError::Invalid(format!(
                    "event_types: {name:?} is not a registered event type"
                ))
            })?;
            partitions.push((name.clone(), registered.event_type.partitions));
        }
        let _creating = self
            .creating
            .lock()
            .map_err(|_| storage("the subscription lock is poisoned"))?;
        if let Some(existing) = self.store.find(&request.consumer_group, &types)? {
            return Ok((false, existing));
        }
        let subscription = Subscription {
            id: self.store.new_id(&request.consumer_group, &types),
            consumer_group: request.consumer_group,
            event_types: types,
            read_from: request.read_from,
            created_at: mm_model::time::format_rfc3339(now_us),
        };
        let mut cursors = Vec::new();
        for (name, count) in partitions {
            for partition in 0..count {
                let offset = match request.read_from {
                    ReadFrom::Begin => 0,
                    ReadFrom::End => log.end(&name, partition)?,
                };
                cursors.push(Cursor {
                    event_type: name.clone(),
                    partition,
                    offset,
                });
            }
        }
        match self.store.create(&subscription, &cursors)? {
            Some(first) => Ok((false, first)),
            None => Ok((true, subscription)),
        }
    }

    pub fn get(&self, id: &str) -> Result<Subscription, SubscriptionError> {
        self.store.get(id)
    }

    /// Every subscription.
    pub fn list(&self) -> Result<Vec<Subscription>, SubscriptionError> {
        self.store.list()
    }

    /// The subscriptions that read `event_type`, as `group (id)`.
    pub fn readers_of(&self, event_type: &str) -> Result<Vec<String>, SubscriptionError> {
        Ok(self
            .list()?
            .into_iter()
            .filter(|subscription| {
                subscription
                    .event_types
                    .iter()
                    .any(|name| name == event_type)
            })
            .map(|subscription| format!("{} ({})", subscription.consumer_group, subscription.id))
            .collect())
    }

    /// The committed cursors of a subscription.
    pub fn cursors(&self, id: &str) -> Result<Vec<Cursor>, SubscriptionError> {
        let subscription = self.get(id)?;
        self.store.cursors(&subscription)
    }

    /// Up to `limit` events from the committed cursors, and the cursors after them (to commit
    /// once they are processed). Partitions are read in turn, so none starves the others.
    pub fn read(
        &self,
        id: &str,
        log: &EventLog,
        limit: usize,
    ) -> Result<(Vec<ReadEvent>, Vec<Cursor>), SubscriptionError> {
        let mut cursors = self.cursors(id)?;
        let mut events = Vec::new();
        let share = limit.div_ceil(cursors.len().max(1)).max(1);
        let mut progress = true;
        while events.len() < limit && progress {
            progress = false;
            for cursor in &mut cursors {
                let room = (limit - events.len()).min(share);
                if room == 0 {
                    break;
                }
                let (stored, next) =
                    log.read(&cursor.event_type, cursor.partition, cursor.offset, room)?;
                if stored.is_empty() {
                    continue;
                }
                progress = true;
                for (offset, bytes) in stored {
                    events.push((
                        Cursor {
                            event_type: cursor.event_type.clone(),
                            partition: cursor.partition,
                            offset,
                        },
                        bytes,
                    ));
                }
                cursor.offset = next;
            }
        }
        Ok((events, cursors))
    }

    /// Commits cursors: each must be one of the subscription's partitions and not beyond its
    /// end. All are written together, durably.
    pub fn commit(
        &self,
        id: &str,
        cursors: &[Cursor],
        log: &EventLog,
    ) -> Result<(), SubscriptionError> {
        let known: BTreeMap<(String, u32), u64> = self
            .cursors(id)?
            .into_iter()
            .map(|cursor| ((cursor.event_type, cursor.partition), cursor.offset))
            .collect();
        for cursor in cursors {
            if !known.contains_key(&(cursor.event_type.clone(), cursor.partition)) {
                return Err(SubscriptionError::Invalid(format!(
                    "cursors: {:?} partition {} is not read by subscription {id}",
                    cursor.event_type, cursor.partition
                )));
            }
            let end = log.end(&cursor.event_type, cursor.partition)?;
            if cursor.offset > end {
                return Err(SubscriptionError::Invalid(format!(
                    "cursors: offset {} of {:?} partition {} is beyond its end ({end})",
                    cursor.offset, cursor.event_type, cursor.partition
                )));
            }
        }
        self.store.commit(id, cursors)
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::Gateway;

    fn definition() -> crate::EventTypeDefinition {
        serde_json::from_value(json!({
            "owning_application": "refunds",
            "category": "business",
            "schema": {"type": "object", "properties": {"order_id": {"type": "string"}}},
            "partition_key_fields": ["/order_id"],
            "partitions": 2
        }))
        .expect("a definition")
    }

    /// Appends `count` events to partition 0 of `name`.
    fn append(gateway: &Gateway, name: &str, count: usize) {
        let records = (0..count)
            .map(|index| crate::Record {
                partition: 0,
                key: None,
                eid: String::new(),
                occurred_at: String::new(),
                bytes: format!("{{\"n\":{index}}}").into_bytes(),
            })
            .collect();
        let registered = gateway.registry.get(name).expect("registered");
        crate::block_on(gateway.log.append(
            &registered.event_type,
            records,
            &crate::BatchContext::default(),
        ))
        .expect("durable");
    }

    fn request(read_from: ReadFrom) -> SubscriptionRequest {
        SubscriptionRequest {
            consumer_group: "billing".into(),
            event_types: vec!["order.paid".into()],
            read_from,
        }
    }

    #[test]
    fn a_reader_resumes_where_it_committed_and_the_pair_keeps_one_subscription() {
        let dir = tempfile::tempdir().expect("a directory");
        let id = {
            let gateway = Gateway::open_embedded(dir.path()).expect("the gateway");
            gateway
                .registry
                .put("order.paid", definition(), 1)
                .expect("registered");
            append(&gateway, "order.paid", 5);
            let (created, subscription) = gateway
                .subscriptions
                .create(request(ReadFrom::Begin), &gateway.registry, &gateway.log, 1)
                .expect("created");
            assert!(created);
            let (again, same) = gateway
                .subscriptions
                .create(request(ReadFrom::End), &gateway.registry, &gateway.log, 2)
                .expect("found");
            assert!(!again);
            assert_eq!(same, subscription);
            let (events, cursors) = gateway
                .subscriptions
                .read(&subscription.id, &gateway.log, 3)
                .expect("read");
            assert_eq!(events.len(), 3);
            assert_eq!(
                events
                    .iter()
                    .map(|(cursor, _)| cursor.offset)
                    .collect::<Vec<_>>(),
                [0, 1, 2]
            );
            gateway
                .subscriptions
                .commit(&subscription.id, &cursors, &gateway.log)
                .expect("committed");
            // Beyond the end, or a partition it does not read: refused.
            let beyond = Cursor {
                event_type: "order.paid".into(),
                partition: 0,
                offset: 6,
            };
            assert!(matches!(
                gateway
                    .subscriptions
                    .commit(&subscription.id, &[beyond], &gateway.log),
                Err(SubscriptionError::Invalid(_))
            ));
            let other = Cursor {
                event_type: "order.paid".into(),
                partition: 7,
                offset: 0,
            };
            assert!(matches!(
                gateway
                    .subscriptions
                    .commit(&subscription.id, &[other], &gateway.log),
                Err(SubscriptionError::Invalid(_))
            ));
            assert_eq!(
                gateway
                    .subscriptions
                    .readers_of("order.paid")
                    .expect("readers"),
                [format!("billing ({})", subscription.id)]
            );
            subscription.id
        };
        let gateway = Gateway::open_embedded(dir.path()).expect("the gateway again");
        let (events, _) = gateway
            .subscriptions
            .read(&id, &gateway.log, 100)
            .expect("read");
        assert_eq!(
            events
                .iter()
                .map(|(cursor, _)| cursor.offset)
                .collect::<Vec<_>>(),
            [3, 4]
        );
        assert!(matches!(
            gateway.subscriptions.get("nope"),
            Err(SubscriptionError::Unknown(_))
        ));
    }

    #[test]
    fn a_subscription_from_the_end_sees_only_later_events_and_unknown_types_are_refused() {
        let (_dir, gateway) = {
            let dir = tempfile::tempdir().expect("a directory");
            let gateway = Gateway::open_embedded(dir.path()).expect("the gateway");
            (dir, gateway)
        };
        gateway
            .registry
            .put("order.paid", definition(), 1)
            .expect("registered");
        append(&gateway, "order.paid", 4);
        let (_, subscription) = gateway
            .subscriptions
            .create(request(ReadFrom::End), &gateway.registry, &gateway.log, 1)
            .expect("created");
        assert!(
            gateway
                .subscriptions
                .read(&subscription.id, &gateway.log, 10)
                .expect("read")
                .0
                .is_empty()
        );
        append(&gateway, "order.paid", 1);
        let (events, _) = gateway
            .subscriptions
            .read(&subscription.id, &gateway.log, 10)
            .expect("read");
        assert_eq!(
            events
                .iter()
                .map(|(cursor, _)| cursor.offset)
                .collect::<Vec<_>>(),
            [4]
        );
        let mut unknown = request(ReadFrom::Begin);
        unknown.event_types = vec!["order.none".into()];
        assert!(matches!(
            gateway
                .subscriptions
                .create(unknown, &gateway.registry, &gateway.log, 1),
            Err(SubscriptionError::Invalid(_))
        ));
    }
}
