//! The event gateway: event types with versioned JSON Schemas, compatibility checks between
//! versions, and (built on them) validation, partitioning and the event log.
//!
//! - [`schema`]: JSON Schema checks, the compatibility checker (our own: which changes keep
//!   old events readable, or old consumers working), modes and semver versions.
//! - [`event_type`]: what a producer registers.
//! - [`registry`]: the master list of types and their versions, persisted through a
//!   [`registry::RegistryLog`].

pub mod event_type;
pub mod registry;
pub mod schema;

pub use event_type::{Category, EventType, EventTypeDefinition, PartitionStrategy};
pub use registry::{
    CompatibilityReport, EmbeddedLog, PutOutcome, Registry, RegistryError, SchemaRecord,
};
pub use schema::{CompatibilityMode, SchemaVersion, Violation};
