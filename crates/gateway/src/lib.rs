//! The event gateway: event types with versioned JSON Schemas, compatibility checks between
//! versions, and (built on them) validation, partitioning and the event log.

pub mod schema;
