//! The registry of cluster mode: its records in a [`Table`] on `<group_id>.event-types`.
//!
//! Every instance loads the types from the topic at start and follows it, so a type created
//! or evolved on one instance is served by all. A change waits until the table has caught up
//! before it is checked ([`RegistryLog::sync`]), and one that another instance's record of the
//! same revision beat is answered [`RegistryError::Conflict`].

use super::table::Table;
use crate::registry::{Changed, RegistryError, RegistryLog};

impl RegistryLog for Table {
    fn load(&self, changed: Changed) -> Result<Vec<(String, Vec<u8>)>, RegistryError> {
        Table::load(self, changed).map_err(RegistryError::Storage)
    }

    fn write(&self, name: &str, record: &[u8]) -> Result<(), RegistryError> {
        match Table::write(self, name, record) {
            Ok(true) => Ok(()),
            Ok(false) => Err(RegistryError::Conflict(name.to_owned())),
            Err(detail) => Err(RegistryError::Storage(detail)),
        }
    }

    fn sync(&self) -> Result<(), RegistryError> {
        Table::sync(self).map_err(RegistryError::Storage)
    }
}
