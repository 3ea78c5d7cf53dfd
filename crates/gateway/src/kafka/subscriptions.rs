//! Subscriptions in cluster mode: the subscriptions in a [`Table`] on
//! `<group_id>.subscriptions`, their cursors the committed offsets of one Kafka consumer group
//! per subscription (`<group_id>.subscription.<id>`) on the event types' topics.
//!
//! A subscription's id is derived from (consumer group, types), so instances that create the
//! same pair at once make the same id, and the table keeps the first record. Committing
//! cursors commits the group's offsets; Kafka's own tools then show each subscription's lag.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use mm_kafka::KafkaSettings;
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer};
use rdkafka::{Offset, TopicPartitionList};
use serde::{Deserialize, Serialize};

use super::table::Table;
use super::{event_topic, subscription_group};
use crate::subscriptions::{Cursor, Store, Subscription, SubscriptionError, storage, uuid_shape};

/// Consumers kept for committing and reading offsets, one per subscription.
const GROUP_CLIENTS: usize = 64;

/// A subscription as the table keeps it.
#[derive(Serialize, Deserialize)]
struct Entry {
    revision: u64,
    subscription: Subscription,
    /// The partitions it reads: (type, partition count) when it was created.
    partitions: Vec<(String, u32)>,
}

pub struct KafkaSubscriptions {
    settings: KafkaSettings,
    table: Table,
    groups: Mutex<HashMap<String, Arc<BaseConsumer>>>,
}

impl KafkaSubscriptions {
    pub fn new(settings: &KafkaSettings, table: Table) -> Self {
        Self {
            settings: settings.clone(),
            table,
            groups: Mutex::new(HashMap::new()),
        }
    }

    fn entry(&self, id: &str) -> Result<Option<Entry>, SubscriptionError> {
        match self.table.get(id) {
            Some((_, bytes)) => serde_json::from_slice(&bytes).map(Some).map_err(storage),
            None => Ok(None),
        }
    }

    /// A client of the subscription's consumer group (it never joins: it only commits and
    /// reads committed offsets).
    fn group(&self, id: &str) -> Result<Arc<BaseConsumer>, SubscriptionError> {
        let mut groups = self
            .groups
            .lock()
            .map_err(|_| storage("the subscription clients' lock is poisoned"))?;
        if let Some(client) = groups.get(id) {
            return Ok(client.clone());
        }
        let mut config = self.settings.reader("merchant-monitor-subscription");
        config.set("group.id", subscription_group(&self.settings, id));
        let client: BaseConsumer = config.create().map_err(storage)?;
        let client = Arc::new(client);
        if groups.len() >= GROUP_CLIENTS {
            groups.clear();
        }
        groups.insert(id.to_owned(), client.clone());
        Ok(client)
    }

    fn offsets(&self, cursors: &[Cursor]) -> Result<TopicPartitionList, SubscriptionError> {
        let mut list = TopicPartitionList::new();
        for cursor in cursors {
            list.add_partition_offset(
                &event_topic(&self.settings, &cursor.event_type),
                cursor.partition as i32,
                Offset::Offset(cursor.offset as i64),
            )
            .map_err(storage)?;
        }
        Ok(list)
    }
}

/// FNV-1a, 64 bits, from `basis`.
fn fnv(basis: u64, bytes: &[u8]) -> u64 {
    bytes.iter().fold(basis, |hash, byte| {
        (hash ^ u64::from(*byte)).wrapping_mul(0x0000_0100_0000_01b3)
    })
}

/// The id of (group, sorted types): the same on every instance.
fn pair_id(group: &str, types: &[String]) -> String {
    let mut text = group.as_bytes().to_vec();
    for name in types {
        text.push(0);
        text.extend_from_slice(name.as_bytes());
    }
    let high = fnv(0xcbf2_9ce4_8422_2325, &text);
    let low = fnv(0x6c62_272e_07bb_0142, &text);
    uuid_shape((u128::from(high) << 64) | u128::from(low))
}

impl Store for KafkaSubscriptions {
    fn find(
        &self,
        group: &str,
        types: &[String],
    ) -> Result<Option<Subscription>, SubscriptionError> {
        self.table.sync().map_err(storage)?;
        Ok(self
            .entry(&pair_id(group, types))?
            .map(|entry| entry.subscription))
    }

    fn new_id(&self, group: &str, types: &[String]) -> String {
        pair_id(group, types)
    }

    fn create(
        &self,
        subscription: &Subscription,
        cursors: &[Cursor],
    ) -> Result<Option<Subscription>, SubscriptionError> {
        // The first cursors go first: a subscription that is visible has them.
        self.commit(&subscription.id, cursors)?;
        let mut partitions: Vec<(String, u32)> = Vec::new();
        for cursor in cursors {
            match partitions.last_mut() {
                Some((name, count)) if *name == cursor.event_type => {
                    *count = (*count).max(cursor.partition + 1);
                }
                _ => partitions.push((cursor.event_type.clone(), cursor.partition + 1)),
            }
        }
        let entry = Entry {
            revision: 1,
            subscription: subscription.clone(),
            partitions,
        };
        let bytes = serde_json::to_vec(&entry).map_err(storage)?;
        if self
            .table
            .write(&subscription.id, &bytes)
            .map_err(storage)?
        {
            return Ok(None);
        }
        self.entry(&subscription.id)?
            .map(|entry| Some(entry.subscription))
            .ok_or_else(|| storage("a subscription lost its creation race and is not there"))
    }

    fn get(&self, id: &str) -> Result<Subscription, SubscriptionError> {
        if let Some(entry) = self.entry(id)? {
            return Ok(entry.subscription);
        }
        // Perhaps created on another instance a moment ago.
        self.table.sync().map_err(storage)?;
        self.entry(id)?
            .map(|entry| entry.subscription)
            .ok_or_else(|| SubscriptionError::Unknown(id.to_owned()))
    }

    fn list(&self) -> Result<Vec<Subscription>, SubscriptionError> {
        self.table
            .entries()
            .into_iter()
            .map(|(_, bytes)| {
                serde_json::from_slice::<Entry>(&bytes)
                    .map(|entry| entry.subscription)
                    .map_err(storage)
            })
            .collect()
    }

    fn cursors(&self, subscription: &Subscription) -> Result<Vec<Cursor>, SubscriptionError> {
        let entry = self
            .entry(&subscription.id)?
            .ok_or_else(|| SubscriptionError::Unknown(subscription.id.clone()))?;
        let mut cursors = Vec::new();
        for (event_type, count) in &entry.partitions {
            for partition in 0..*count {
                cursors.push(Cursor {
                    event_type: event_type.clone(),
                    partition,
                    offset: 0,
                });
            }
        }
        let client = self.group(&subscription.id)?;
        let committed = client
            .committed_offsets(self.offsets(&cursors)?, Duration::from_secs(10))
            .map_err(storage)?;
        for cursor in &mut cursors {
            let topic = event_topic(&self.settings, &cursor.event_type);
            if let Some(Offset::Offset(offset)) = committed
                .find_partition(&topic, cursor.partition as i32)
                .map(|element| element.offset())
            {
                cursor.offset = offset.max(0) as u64;
            }
        }
        Ok(cursors)
    }

    fn commit(&self, id: &str, cursors: &[Cursor]) -> Result<(), SubscriptionError> {
        if cursors.is_empty() {
            return Ok(());
        }
        let client = self.group(id)?;
        client
            .commit(&self.offsets(cursors)?, CommitMode::Sync)
            .map_err(storage)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_pair_has_one_id_everywhere_and_pairs_differ() {
        let types = vec!["order.paid".to_owned(), "order.shipped".to_owned()];
        let id = pair_id("billing", &types);
        assert_eq!(id, pair_id("billing", &types));
        assert_eq!(id.len(), 36);
        assert_ne!(id, pair_id("billing", &types[..1]));
        assert_ne!(id, pair_id("shipping", &types));
        // The separator keeps ("ab", ["c"]) and ("a", ["bc"]) apart.
        assert_ne!(
            pair_id("ab", &["c".to_owned()]),
            pair_id("a", &["bc".to_owned()])
        );
    }
}
