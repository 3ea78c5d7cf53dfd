//! The gateway in cluster mode: the registry on a Kafka topic every instance reads, and the
//! event log as one Kafka topic per event type.
//!
//! Topics (named after the deployment's `kafka.group_id`, so that deployments sharing a
//! cluster stay apart):
//! - `<group_id>.event-types`: the registry, one partition, `cleanup.policy=compact`
//!   ([`registry`], on a [`table::Table`]);
//! - `<group_id>.events.<event type>`: a type's events, as many partitions as the type has,
//!   created when the type is ([`events`]);
//! - `<group_id>.subscriptions`: the subscriptions, like the registry ([`subscriptions`]);
//!   their cursors are the committed offsets of the consumer group
//!   `<group_id>.subscription.<id>`, so Kafka's own tools show each subscription's lag.

pub mod events;
pub mod registry;
pub mod subscriptions;
pub mod table;

use std::time::Duration;

use mm_kafka::KafkaSettings;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::types::RDKafkaErrorCode;

use crate::log::LogError;

/// The registry's topic.
pub fn registry_topic(settings: &KafkaSettings) -> String {
    format!("{}.event-types", settings.group_id)
}

/// The subscriptions' topic.
pub fn subscriptions_topic(settings: &KafkaSettings) -> String {
    format!("{}.subscriptions", settings.group_id)
}

/// The Kafka consumer group whose committed offsets are a subscription's cursors.
pub fn subscription_group(settings: &KafkaSettings, id: &str) -> String {
    format!("{}.subscription.{id}", settings.group_id)
}

/// The topic of an event type's events.
pub fn event_topic(settings: &KafkaSettings, event_type: &str) -> String {
    format!("{}.events.{event_type}", settings.group_id)
}

/// Creates `topic` with `partitions` partitions and `config` unless it exists.
pub(crate) async fn create_topic(
    settings: &KafkaSettings,
    topic: &str,
    partitions: u32,
    config: &[(&str, &str)],
) -> Result<(), LogError> {
    let admin: AdminClient<DefaultClientContext> = settings
        .producer("merchant-monitor-gateway-admin")
        .create()
        .map_err(|error| LogError::Storage(format!("creating the admin client: {error}")))?;
    let mut new_topic = NewTopic::new(
        topic,
        partitions as i32,
        TopicReplication::Fixed(settings.replication_factor),
    );
    for (key, value) in config {
        new_topic = new_topic.set(key, value);
    }
    let results = admin
        .create_topics(
            [&new_topic],
            &AdminOptions::new().operation_timeout(Some(Duration::from_secs(10))),
        )
        .await
        .map_err(|error| LogError::Storage(format!("creating topic {topic}: {error}")))?;
    for result in results {
        match result {
            Ok(name) => tracing::info!(topic = %name, partitions, "topic created"),
            Err((_, RDKafkaErrorCode::TopicAlreadyExists)) => {}
            Err((name, code)) => {
                return Err(LogError::Storage(format!(
                    "topic {name} could not be created: {code}"
                )));
            }
        }
    }
    Ok(())
}
