//! Event-type schemas: checking that a schema is valid JSON Schema (draft 2020-12), compiling
//! it for validation, comparing versions under a compatibility mode and naming the next
//! version.

pub mod compat;
pub mod fast;
mod version;

pub use compat::{Direction, Violation};
pub use version::{ChangeKind, SchemaVersion};

use serde::{Deserialize, Serialize};
use serde_json::Value;

/// How a new schema must relate to the earlier ones (Confluent Schema Registry's modes).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum CompatibilityMode {
    /// Any change; a change that breaks backward reading is a new major version.
    None,
    /// Consumers on the new schema read events written under the latest one.
    Backward,
    /// Consumers on the latest schema read events written under the new one.
    Forward,
    /// Both.
    Full,
    /// Backward against every earlier version.
    #[default]
    BackwardTransitive,
    /// Forward against every earlier version.
    ForwardTransitive,
    /// Both, against every earlier version.
    FullTransitive,
}

impl CompatibilityMode {
    /// The directions a change must keep.
    pub fn directions(self) -> &'static [Direction] {
        match self {
            CompatibilityMode::None => &[],
            CompatibilityMode::Backward | CompatibilityMode::BackwardTransitive => {
                &[Direction::Backward]
            }
            CompatibilityMode::Forward | CompatibilityMode::ForwardTransitive => {
                &[Direction::Forward]
            }
            CompatibilityMode::Full | CompatibilityMode::FullTransitive => {
                &[Direction::Backward, Direction::Forward]
            }
        }
    }

    /// Whether every earlier version counts, not only the latest.
    pub fn transitive(self) -> bool {
        matches!(
            self,
            CompatibilityMode::BackwardTransitive
                | CompatibilityMode::ForwardTransitive
                | CompatibilityMode::FullTransitive
        )
    }

    pub fn as_str(self) -> &'static str {
        match self {
            CompatibilityMode::None => "none",
            CompatibilityMode::Backward => "backward",
            CompatibilityMode::Forward => "forward",
            CompatibilityMode::Full => "full",
            CompatibilityMode::BackwardTransitive => "backward_transitive",
            CompatibilityMode::ForwardTransitive => "forward_transitive",
            CompatibilityMode::FullTransitive => "full_transitive",
        }
    }
}

/// A schema that is not valid JSON Schema.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("the schema is not valid JSON Schema (draft 2020-12) at {location}: {detail}")]
pub struct InvalidSchema {
    /// JSON pointer (as a URI fragment) of the problem in the schema document.
    pub location: String,
    pub detail: String,
}

/// Checks `schema` against the draft 2020-12 meta-schema and compiles it for validation.
pub fn compile(schema: &Value) -> Result<jsonschema::Validator, InvalidSchema> {
    if let Err(error) = jsonschema::draft202012::meta::validate(schema) {
        return Err(InvalidSchema {
            location: format!("#{}", error.instance_path().as_str()),
            detail: error.to_string(),
        });
    }
    jsonschema::draft202012::new(schema).map_err(|error| InvalidSchema {
        location: format!("#{}", error.instance_path().as_str()),
        detail: error.to_string(),
    })
}

/// The violations of `candidate` under `mode` against the versions so far (oldest first, with
/// their versions); the transitive modes check every one, the others the latest.
pub fn violations(
    mode: CompatibilityMode,
    history: &[(SchemaVersion, &Value)],
    candidate: &Value,
) -> Vec<Violation> {
    let against: &[(SchemaVersion, &Value)] = if mode.transitive() {
        history
    } else {
        history.last().map_or(&[], std::slice::from_ref)
    };
    let latest = history.last().map(|(version, _)| *version);
    let mut found: Vec<Violation> = Vec::new();
    for (version, earlier) in against.iter().rev() {
        for direction in mode.directions() {
            for mut violation in compat::check(earlier, candidate, *direction) {
                if Some(*version) != latest {
                    violation.message = format!("against version {version}: {}", violation.message);
                }
                let seen = found
                    .iter()
                    .any(|known| known.path == violation.path && known.rule == violation.rule);
                if !seen {
                    found.push(violation);
                }
            }
        }
    }
    found
}

/// What kind of change `candidate` is to `latest`: `None` when they are the same schema,
/// `Patch` when only annotations differ, `Major` when it breaks `mode` (with `none`: when
/// events written under `latest` may fail it), `Minor` otherwise. (`violations` decides whether
/// a change is allowed; this names its version.)
pub fn change_kind(latest: &Value, candidate: &Value, mode: CompatibilityMode) -> ChangeKind {
    if latest == candidate {
        return ChangeKind::None;
    }
    if compat::without_annotations(latest) == compat::without_annotations(candidate) {
        return ChangeKind::Patch;
    }
    let directions = match mode.directions() {
        [] => &[Direction::Backward][..],
        directions => directions,
    };
    let breaks = directions
        .iter()
        .any(|direction| !compat::check(latest, candidate, *direction).is_empty());
    if breaks {
        ChangeKind::Major
    } else {
        ChangeKind::Minor
    }
}

#[cfg(test)]
mod tests;
