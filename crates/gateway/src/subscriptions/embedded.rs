//! The subscriptions of one machine, in the gateway database.
//!
//! On-disk format: keyspace `subscriptions`, key `s` + id → the subscription (JSON), key `k` +
//! group + NUL + the sorted types joined by NUL → id; keyspace `cursors`, key id + NUL + type +
//! NUL + partition (u32, big-endian) → offset (u64, big-endian). A subscription and its first
//! cursors are written in one batch; every commit is one fsynced batch.

use super::{Cursor, Store, Subscription, SubscriptionError, storage};

/// The subscriptions keyspaces of the gateway database.
pub struct Embedded {
    database: fjall::Database,
    subscriptions: fjall::Keyspace,
    cursors: fjall::Keyspace,
}

fn cursor_key(id: &str, event_type: &str, partition: u32) -> Vec<u8> {
    let mut key = Vec::with_capacity(id.len() + event_type.len() + 6);
    key.extend_from_slice(id.as_bytes());
    key.push(0);
    key.extend_from_slice(event_type.as_bytes());
    key.push(0);
    key.extend_from_slice(&partition.to_be_bytes());
    key
}

fn pair_key(group: &str, types: &[String]) -> Vec<u8> {
    let mut key = b"k".to_vec();
    key.extend_from_slice(group.as_bytes());
    for name in types {
        key.push(0);
        key.extend_from_slice(name.as_bytes());
    }
    key
}

impl Embedded {
    pub fn open(database: &fjall::Database) -> Result<Self, SubscriptionError> {
        let subscriptions = database
            .keyspace("subscriptions", fjall::KeyspaceCreateOptions::default)
            .map_err(storage)?;
        let cursors = database
            .keyspace("cursors", fjall::KeyspaceCreateOptions::default)
            .map_err(storage)?;
        Ok(Self {
            database: database.clone(),
            subscriptions,
            cursors,
        })
    }
}

impl Store for Embedded {
    fn find(
        &self,
        group: &str,
        types: &[String],
    ) -> Result<Option<Subscription>, SubscriptionError> {
        match self
            .subscriptions
            .get(pair_key(group, types))
            .map_err(storage)?
        {
            Some(id) => self.get(&String::from_utf8_lossy(&id)).map(Some),
            None => Ok(None),
        }
    }

    fn new_id(&self, _group: &str, _types: &[String]) -> String {
        super::uuid_shape(fastrand::u128(..))
    }

    fn create(
        &self,
        subscription: &Subscription,
        cursors: &[Cursor],
    ) -> Result<Option<Subscription>, SubscriptionError> {
        let mut batch = self.database.batch();
        for cursor in cursors {
            batch.insert(
                &self.cursors,
                cursor_key(&subscription.id, &cursor.event_type, cursor.partition),
                cursor.offset.to_be_bytes(),
            );
        }
        let record = serde_json::to_vec(subscription).map_err(storage)?;
        batch.insert(
            &self.subscriptions,
            [b"s".as_slice(), subscription.id.as_bytes()].concat(),
            record,
        );
        batch.insert(
            &self.subscriptions,
            pair_key(&subscription.consumer_group, &subscription.event_types),
            subscription.id.as_bytes(),
        );
        batch
            .durability(Some(fjall::PersistMode::SyncData))
            .commit()
            .map_err(storage)?;
        Ok(None)
    }

    fn get(&self, id: &str) -> Result<Subscription, SubscriptionError> {
        let bytes = self
            .subscriptions
            .get([b"s".as_slice(), id.as_bytes()].concat())
            .map_err(storage)?
            .ok_or_else(|| SubscriptionError::Unknown(id.to_owned()))?;
        serde_json::from_slice(&bytes).map_err(storage)
    }

    fn list(&self) -> Result<Vec<Subscription>, SubscriptionError> {
        let mut found = Vec::new();
        for guard in self.subscriptions.prefix(b"s") {
            let (_, value) = guard.into_inner().map_err(storage)?;
            found.push(serde_json::from_slice(&value).map_err(storage)?);
        }
        Ok(found)
    }

    fn cursors(&self, subscription: &Subscription) -> Result<Vec<Cursor>, SubscriptionError> {
        let id = &subscription.id;
        let mut prefix = id.as_bytes().to_vec();
        prefix.push(0);
        let mut cursors = Vec::new();
        for guard in self.cursors.prefix(&prefix) {
            let (key, value) = guard.into_inner().map_err(storage)?;
            let rest = &key[prefix.len()..];
            let Some(split) = rest.iter().position(|byte| *byte == 0) else {
                continue;
            };
            let event_type = String::from_utf8_lossy(&rest[..split]).into_owned();
            let mut partition = [0u8; 4];
            let mut offset = [0u8; 8];
            if rest.len() != split + 5 || value.len() != 8 {
                return Err(storage(format!("a malformed cursor of subscription {id}")));
            }
            partition.copy_from_slice(&rest[split + 1..]);
            offset.copy_from_slice(&value);
            if subscription.event_types.contains(&event_type) {
                cursors.push(Cursor {
                    event_type,
                    partition: u32::from_be_bytes(partition),
                    offset: u64::from_be_bytes(offset),
                });
            }
        }
        Ok(cursors)
    }

    fn commit(&self, id: &str, cursors: &[Cursor]) -> Result<(), SubscriptionError> {
        let mut batch = self.database.batch();
        for cursor in cursors {
            batch.insert(
                &self.cursors,
                cursor_key(id, &cursor.event_type, cursor.partition),
                cursor.offset.to_be_bytes(),
            );
        }
        batch
            .durability(Some(fjall::PersistMode::SyncData))
            .commit()
            .map_err(storage)
    }
}
