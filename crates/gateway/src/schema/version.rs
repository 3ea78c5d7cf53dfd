//! Schema versions: `major.minor.patch`, assigned by the registry from the kind of change.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// A schema version, `1.0.0` for a type's first schema.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct SchemaVersion {
    pub major: u32,
    pub minor: u32,
    pub patch: u32,
}

/// How a schema changed from the latest version.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChangeKind {
    /// The same schema: no new version.
    None,
    /// Descriptions, titles, examples and other keywords that do not validate.
    Patch,
    /// Events written under the latest version still validate.
    Minor,
    /// Events written under the latest version may fail.
    Major,
}

impl SchemaVersion {
    pub const FIRST: SchemaVersion = SchemaVersion {
        major: 1,
        minor: 0,
        patch: 0,
    };

    /// The version after this one for a change of `kind`.
    pub fn next(self, kind: ChangeKind) -> SchemaVersion {
        match kind {
            ChangeKind::None => self,
            ChangeKind::Patch => SchemaVersion {
                patch: self.patch + 1,
                ..self
            },
            ChangeKind::Minor => SchemaVersion {
                minor: self.minor + 1,
                patch: 0,
                ..self
            },
            ChangeKind::Major => SchemaVersion {
                major: self.major + 1,
                minor: 0,
                patch: 0,
            },
        }
    }
}

impl fmt::Display for SchemaVersion {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(formatter, "{}.{}.{}", self.major, self.minor, self.patch)
    }
}

impl FromStr for SchemaVersion {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let parts: Vec<&str> = text.split('.').collect();
        let number = |part: &str| {
            part.parse::<u32>()
                .map_err(|_| format!("{text:?} is not a version like 1.2.0"))
        };
        match parts.as_slice() {
            [major, minor, patch] => Ok(SchemaVersion {
                major: number(major)?,
                minor: number(minor)?,
                patch: number(patch)?,
            }),
            _ => Err(format!("{text:?} is not a version like 1.2.0")),
        }
    }
}

impl Serialize for SchemaVersion {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for SchemaVersion {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        text.parse().map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_count_up_by_the_kind_of_change_and_read_back() {
        let version = SchemaVersion::FIRST;
        assert_eq!(version.next(ChangeKind::Patch).to_string(), "1.0.1");
        assert_eq!(
            version
                .next(ChangeKind::Patch)
                .next(ChangeKind::Minor)
                .to_string(),
            "1.1.0"
        );
        assert_eq!(
            version
                .next(ChangeKind::Minor)
                .next(ChangeKind::Major)
                .to_string(),
            "2.0.0"
        );
        assert_eq!(version.next(ChangeKind::None), version);
        assert_eq!(
            "2.10.3".parse::<SchemaVersion>(),
            Ok(SchemaVersion {
                major: 2,
                minor: 10,
                patch: 3
            })
        );
        assert!("2.1".parse::<SchemaVersion>().is_err());
        assert!(SchemaVersion::FIRST < "1.0.1".parse().expect("a version"));
    }
}
