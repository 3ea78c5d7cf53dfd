//! The registry: the master list of event types and every version of their schemas.
//!
//! Each event type is one record (its definition and all its schema versions, JSON), written
//! whole on every change through a [`RegistryLog`]: a keyspace of the gateway's embedded
//! database on one machine; in cluster mode a compacted topic keyed by type name, the way
//! Schema Registry keeps `_schemas`, so the same record format serves both. Changes are
//! serialised by one lock; a change is answered only once its record is durable.
//!
//! Evolution rules: a schema change is checked against the versions so far under the type's
//! compatibility mode (409 with every violation when it breaks it) and gets the next semver
//! version from the kind of change ([`crate::schema::change_kind`]); the same schema again is
//! no new version. Partitioning (strategy, key fields, partition count) is fixed at creation.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::{Arc, Mutex, RwLock};

use serde::{Deserialize, Serialize};
use serde_json::Value;
use thiserror::Error;
use utoipa::ToSchema;

use crate::event_type::{
    DEFAULT_PARTITIONS, EventType, EventTypeDefinition, MAX_PARTITIONS, PartitionStrategy,
    check_name, schema_declares,
};
use crate::schema::{self, ChangeKind, CompatibilityMode, InvalidSchema, SchemaVersion, Violation};

/// Errors of the registry; each maps to one HTTP status.
#[derive(Debug, Error)]
pub enum RegistryError {
    #[error("event type {0:?} does not exist")]
    UnknownType(String),
    #[error("event type {name:?} has no schema version {version}")]
    UnknownVersion { name: String, version: String },
    #[error("{0}")]
    InvalidName(String),
    #[error("{field}: {detail}")]
    InvalidDefinition { field: &'static str, detail: String },
    #[error(transparent)]
    InvalidSchema(#[from] InvalidSchema),
    #[error("the schema breaks compatibility mode {mode} of event type {name:?} ({} violations)", violations.len())]
    Incompatible {
        name: String,
        mode: &'static str,
        violations: Vec<Violation>,
    },
    #[error("{field} of event type {name:?} is fixed once it exists ({detail})")]
    Fixed {
        name: String,
        field: &'static str,
        detail: String,
    },
    #[error(
        "event type {0:?} is built in: its schema follows the server's field mapping, and its events arrive through /v1/ingest"
    )]
    BuiltIn(String),
    #[error(
        "event type {0:?} was changed by another instance at the same time, and that change came first; look at the type again and retry"
    )]
    Conflict(String),
    #[error("registry storage: {0}")]
    Storage(String),
    #[error("unreadable registry record {name:?}: {detail}")]
    Corrupt { name: String, detail: String },
}

/// One schema version of a type.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct SchemaRecord {
    #[schema(value_type = String, example = "1.0.0")]
    pub version: SchemaVersion,
    #[schema(value_type = Object)]
    pub schema: Value,
    /// RFC 3339.
    pub created_at: String,
}

/// The stored record of one event type: its definition and its schemas, oldest first.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct TypeRecord {
    /// Counts the type's changes from 1: a change is written as the next revision of the one
    /// it was checked against, so that where several instances write, the first record of
    /// each revision in the log wins ([`RegistryLog`]).
    #[serde(default)]
    revision: u64,
    event_type: EventType,
    schemas: Vec<SchemaRecord>,
}

/// Called with each record another writer adds after [`RegistryLog::load`].
pub type Changed = Box<dyn Fn(&[u8]) + Send + Sync>;

/// Where the registry's records live.
pub trait RegistryLog: Send + Sync {
    /// Every type's latest record; `changed` then hears of every record written later by
    /// anyone (it may hear of this registry's own writes too).
    fn load(&self, changed: Changed) -> Result<Vec<(String, Vec<u8>)>, RegistryError>;
    /// Writes a type's record durably. [`RegistryError::Conflict`] when another writer's
    /// record of the same revision came first.
    fn write(&self, name: &str, record: &[u8]) -> Result<(), RegistryError>;
    /// Waits until every record written anywhere before the call is loaded, so that a change
    /// is checked against the latest versions.
    fn sync(&self) -> Result<(), RegistryError> {
        Ok(())
    }
}

/// The registry log of one machine: a keyspace of the gateway's embedded database.
pub struct EmbeddedLog {
    database: fjall::Database,
    types: fjall::Keyspace,
}

impl EmbeddedLog {
    /// The registry's keyspace in the gateway database.
    pub fn new(database: &fjall::Database) -> Result<Self, RegistryError> {
        let types = database
            .keyspace("event-types", fjall::KeyspaceCreateOptions::default)
            .map_err(|error| RegistryError::Storage(error.to_string()))?;
        Ok(Self {
            database: database.clone(),
            types,
        })
    }
}

/// Opens (or creates) the gateway database in `dir`: the registry and the event log.
pub fn open_database(dir: &Path) -> Result<fjall::Database, RegistryError> {
    std::fs::create_dir_all(dir)
        .map_err(|error| RegistryError::Storage(format!("creating {}: {error}", dir.display())))?;
    // The journal uncompressed, like the event blobs (see `log/embedded.rs`).
    fjall::Database::builder(dir)
        .journal_compression(fjall::CompressionType::None)
        .open()
        .map_err(|error| RegistryError::Storage(error.to_string()))
}

impl RegistryLog for EmbeddedLog {
    fn load(&self, _: Changed) -> Result<Vec<(String, Vec<u8>)>, RegistryError> {
        let mut records = Vec::new();
        for guard in self.types.iter() {
            let (key, value) = guard
                .into_inner()
                .map_err(|error| RegistryError::Storage(error.to_string()))?;
            records.push((String::from_utf8_lossy(&key).into_owned(), value.to_vec()));
        }
        Ok(records)
    }

    fn write(&self, name: &str, record: &[u8]) -> Result<(), RegistryError> {
        let storage = |error: fjall::Error| RegistryError::Storage(error.to_string());
        self.types.insert(name, record).map_err(storage)?;
        self.database
            .persist(fjall::PersistMode::SyncAll)
            .map_err(storage)
    }
}

/// A registered type, ready for publishing: its record and its compiled current schema.
pub struct Registered {
    /// The change count of the type ([`TypeRecord::revision`]).
    pub revision: u64,
    pub event_type: EventType,
    /// Oldest first.
    pub schemas: Vec<SchemaRecord>,
    pub validator: jsonschema::Validator,
    /// The current schema for the fast path (`None`: it has references).
    pub fast: Option<schema::fast::FastSchema>,
}

/// What `PUT` did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PutOutcome {
    Created,
    /// A new schema version.
    Evolved,
    /// The same schema; other fields may have changed.
    Unchanged,
}

/// The answer of a dry-run compatibility check.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct CompatibilityReport {
    pub compatible: bool,
    /// The version the candidate would get (`null` when it would be refused).
    #[schema(value_type = Option<String>, example = "1.1.0")]
    pub next_version: Option<SchemaVersion>,
    /// The mode the check used.
    pub compatibility_mode: CompatibilityMode,
    pub violations: Vec<Violation>,
    /// The subscriptions that read the type: whom a change reaches.
    pub consumers: Vec<String>,
}

type Types = RwLock<BTreeMap<String, Arc<Registered>>>;

/// The registry of event types.
pub struct Registry {
    log: Box<dyn RegistryLog>,
    types: Arc<Types>,
    /// Serialises changes, so a check and its write see the same versions.
    changing: Mutex<()>,
}

impl Registry {
    /// Loads every type from `log`, and follows the changes other writers make to it.
    pub fn open(log: Box<dyn RegistryLog>) -> Result<Self, RegistryError> {
        let types: Arc<Types> = Arc::default();
        let changed: Changed = {
            let types = types.clone();
            Box::new(move |bytes: &[u8]| {
                let applied = serde_json::from_slice::<TypeRecord>(bytes)
                    .map_err(|error| error.to_string())
                    .and_then(|record| registered(record).map_err(|error| error.to_string()));
                match applied {
                    Ok(registered) => install(&types, Arc::new(registered)),
                    Err(detail) => {
                        tracing::warn!(%detail, "an event-type record from another instance is unreadable; ignored")
                    }
                }
            })
        };
        let loaded = log.load(changed)?;
        for (name, bytes) in loaded {
            let record: TypeRecord =
                serde_json::from_slice(&bytes).map_err(|error| RegistryError::Corrupt {
                    name: name.clone(),
                    detail: error.to_string(),
                })?;
            install(&types, Arc::new(registered(record)?));
        }
        Ok(Self {
            log,
            types,
            changing: Mutex::new(()),
        })
    }

    /// The types, by name.
    pub fn list(&self) -> Vec<EventType> {
        self.read()
            .values()
            .map(|registered| registered.event_type.clone())
            .collect()
    }

    /// Number of registered types.
    pub fn len(&self) -> usize {
        self.read().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub fn get(&self, name: &str) -> Result<Arc<Registered>, RegistryError> {
        self.read()
            .get(name)
            .cloned()
            .ok_or_else(|| RegistryError::UnknownType(name.to_owned()))
    }

    /// A type's schemas, newest first.
    pub fn schemas(&self, name: &str) -> Result<Vec<SchemaRecord>, RegistryError> {
        let registered = self.get(name)?;
        Ok(registered.schemas.iter().rev().cloned().collect())
    }

    /// One schema version of a type.
    pub fn schema(&self, name: &str, version: &str) -> Result<SchemaRecord, RegistryError> {
        let registered = self.get(name)?;
        let unknown = || RegistryError::UnknownVersion {
            name: name.to_owned(),
            version: version.to_owned(),
        };
        let wanted: SchemaVersion = version.parse().map_err(|_| unknown())?;
        registered
            .schemas
            .iter()
            .find(|record| record.version == wanted)
            .cloned()
            .ok_or_else(unknown)
    }

    /// Checks `candidate` against the type's versions under `mode` (the type's own when
    /// `None`) without changing anything.
    pub fn compatibility(
        &self,
        name: &str,
        candidate: &Value,
        mode: Option<CompatibilityMode>,
    ) -> Result<CompatibilityReport, RegistryError> {
        schema::compile(candidate)?;
        let registered = self.get(name)?;
        let mode = mode.unwrap_or(registered.event_type.compatibility_mode);
        let (violations, next_version) = next_version(&registered, candidate, mode);
        Ok(CompatibilityReport {
            compatible: violations.is_empty(),
            next_version: violations.is_empty().then_some(next_version),
            compatibility_mode: mode,
            violations,
            consumers: Vec::new(),
        })
    }

    /// Creates or evolves `name` (`now_us` stamps it).
    pub fn put(
        &self,
        name: &str,
        definition: EventTypeDefinition,
        now_us: i64,
    ) -> Result<(PutOutcome, EventType), RegistryError> {
        check_name(name).map_err(RegistryError::InvalidName)?;
        if self
            .read()
            .get(name)
            .is_some_and(|registered| registered.event_type.built_in)
        {
            return Err(RegistryError::BuiltIn(name.to_owned()));
        }
        self.write_type(name, definition, now_us, false)
    }

    /// Registers a type the server owns (`merchant.api-call`), or brings its schema up to
    /// `definition` as a new version whatever the change; producers cannot change it.
    pub fn ensure_built_in(
        &self,
        name: &str,
        definition: EventTypeDefinition,
        now_us: i64,
    ) -> Result<EventType, RegistryError> {
        let definition = EventTypeDefinition {
            compatibility_mode: Some(CompatibilityMode::None),
            ..definition
        };
        // Instances starting together all bring the type up to date: one wins, the others
        // find it done.
        let mut attempts = 0;
        loop {
            self.log.sync()?;
            if let Ok(registered) = self.get(name)
                && registered.event_type.built_in
                && registered.event_type.schema == definition.schema
            {
                return Ok(registered.event_type.clone());
            }
            match self.write_type(name, definition.clone(), now_us, true) {
                Err(RegistryError::Conflict(_)) if attempts < 5 => attempts += 1,
                result => return result.map(|(_, event_type)| event_type),
            }
        }
    }

    fn write_type(
        &self,
        name: &str,
        definition: EventTypeDefinition,
        now_us: i64,
        built_in: bool,
    ) -> Result<(PutOutcome, EventType), RegistryError> {
        if definition.owning_application.trim().is_empty() {
            return Err(RegistryError::InvalidDefinition {
                field: "owning_application",
                detail: "must not be empty".into(),
            });
        }
        schema::compile(&definition.schema)?;
        let _changing = self
            .changing
            .lock()
            .map_err(|_| RegistryError::Storage("the registry lock is poisoned".into()))?;
        self.log.sync()?;
        let now = mm_model::time::format_rfc3339(now_us);
        let existing = self.read().get(name).cloned();
        let revision = existing
            .as_ref()
            .map_or(0, |registered| registered.revision)
            + 1;
        let (outcome, mut record) = match existing {
            None => (PutOutcome::Created, create(name, definition, &now)?),
            Some(registered) => evolve(&registered, definition, &now)?,
        };
        record.event_type.built_in = built_in;
        record.revision = revision;
        let bytes = serde_json::to_vec(&record)
            .map_err(|error| RegistryError::Storage(error.to_string()))?;
        let event_type = record.event_type.clone();
        let registered = Arc::new(registered(record)?);
        self.log.write(name, &bytes)?;
        install(&self.types, registered);
        Ok((outcome, event_type))
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, BTreeMap<String, Arc<Registered>>> {
        // A panic while holding the map's lock cannot leave it half-changed (inserts are
        // single calls), so a poisoned lock is still consistent.
        self.types
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

/// Puts `registered` in the map unless the map holds a later revision already (a change
/// heard from the log and the writer's own install may come in either order).
fn install(types: &Types, registered: Arc<Registered>) {
    let mut types = types
        .write()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    let name = registered.event_type.name.clone();
    if types
        .get(&name)
        .is_none_or(|known| known.revision < registered.revision || registered.revision == 0)
    {
        types.insert(name, registered);
    }
}

fn registered(record: TypeRecord) -> Result<Registered, RegistryError> {
    let validator = schema::compile(&record.event_type.schema)?;
    let fast = schema::fast::FastSchema::compile(&record.event_type.schema);
    Ok(Registered {
        fast,
        revision: record.revision,
        event_type: record.event_type,
        schemas: record.schemas,
        validator,
    })
}

/// The violations of `candidate` and the version it would get.
fn next_version(
    registered: &Registered,
    candidate: &Value,
    mode: CompatibilityMode,
) -> (Vec<Violation>, SchemaVersion) {
    let history: Vec<(SchemaVersion, &Value)> = registered
        .schemas
        .iter()
        .map(|record| (record.version, &record.schema))
        .collect();
    let violations = schema::violations(mode, &history, candidate);
    let current = registered.event_type.version;
    let kind = schema::change_kind(&registered.event_type.schema, candidate, mode);
    (violations, current.next(kind))
}

/// The partitioning a definition asks for, checked.
fn partitioning(
    definition: &EventTypeDefinition,
) -> Result<(PartitionStrategy, u32), RegistryError> {
    let strategy =
        definition
            .partition_strategy
            .unwrap_or(if definition.partition_key_fields.is_empty() {
                PartitionStrategy::Random
            } else {
                PartitionStrategy::Hash
            });
    if strategy == PartitionStrategy::Hash && definition.partition_key_fields.is_empty() {
        return Err(RegistryError::InvalidDefinition {
            field: "partition_key_fields",
            detail:
                "the hash strategy needs at least one key field (a JSON pointer such as /order_id)"
                    .into(),
        });
    }
    for field in &definition.partition_key_fields {
        if !schema_declares(&definition.schema, field) {
            return Err(RegistryError::InvalidDefinition {
                field: "partition_key_fields",
                detail: format!(
                    "{field:?} is not a property the schema declares (key fields are JSON pointers through `properties`, such as /order_id)"
                ),
            });
        }
    }
    let partitions = definition.partitions.unwrap_or(DEFAULT_PARTITIONS);
    if !(1..=MAX_PARTITIONS).contains(&partitions) {
        return Err(RegistryError::InvalidDefinition {
            field: "partitions",
            detail: format!("{partitions} is not between 1 and {MAX_PARTITIONS}"),
        });
    }
    Ok((strategy, partitions))
}

fn create(
    name: &str,
    definition: EventTypeDefinition,
    now: &str,
) -> Result<TypeRecord, RegistryError> {
    let (partition_strategy, partitions) = partitioning(&definition)?;
    let event_type = EventType {
        name: name.to_owned(),
        owning_application: definition.owning_application,
        category: definition.category,
        schema: definition.schema.clone(),
        compatibility_mode: definition.compatibility_mode.unwrap_or_default(),
        partition_strategy,
        partition_key_fields: definition.partition_key_fields,
        partitions,
        version: SchemaVersion::FIRST,
        created_at: now.to_owned(),
        updated_at: now.to_owned(),
        built_in: false,
    };
    Ok(TypeRecord {
        revision: 0,
        schemas: vec![SchemaRecord {
            version: SchemaVersion::FIRST,
            schema: definition.schema,
            created_at: now.to_owned(),
        }],
        event_type,
    })
}

fn evolve(
    registered: &Registered,
    definition: EventTypeDefinition,
    now: &str,
) -> Result<(PutOutcome, TypeRecord), RegistryError> {
    let current = &registered.event_type;
    let (strategy, partitions) = partitioning(&definition)?;
    let fixed = |field: &'static str, detail: String| RegistryError::Fixed {
        name: current.name.clone(),
        field,
        detail,
    };
    if strategy != current.partition_strategy {
        return Err(fixed(
            "partition_strategy",
            format!("it is {:?}", current.partition_strategy),
        ));
    }
    if definition.partition_key_fields != current.partition_key_fields {
        return Err(fixed(
            "partition_key_fields",
            format!("they are {:?}", current.partition_key_fields),
        ));
    }
    if partitions != current.partitions {
        return Err(fixed("partitions", format!("it is {}", current.partitions)));
    }
    let mode = definition
        .compatibility_mode
        .unwrap_or(current.compatibility_mode);
    let (violations, version) = next_version(registered, &definition.schema, mode);
    if !violations.is_empty() {
        return Err(RegistryError::Incompatible {
            name: current.name.clone(),
            mode: mode.as_str(),
            violations,
        });
    }
    let kind = schema::change_kind(&current.schema, &definition.schema, mode);
    let mut schemas = registered.schemas.clone();
    if kind != ChangeKind::None {
        schemas.push(SchemaRecord {
            version,
            schema: definition.schema.clone(),
            created_at: now.to_owned(),
        });
    }
    let event_type = EventType {
        owning_application: definition.owning_application,
        category: definition.category,
        schema: definition.schema,
        compatibility_mode: mode,
        version,
        updated_at: now.to_owned(),
        ..current.clone()
    };
    let outcome = if kind == ChangeKind::None {
        PutOutcome::Unchanged
    } else {
        PutOutcome::Evolved
    };
    Ok((
        outcome,
        TypeRecord {
            revision: 0,
            event_type,
            schemas,
        },
    ))
}

#[cfg(test)]
mod tests;
