//! Why a record or a mapping cannot be used: the stable reject reasons and the error types.

use serde::Serialize;
use thiserror::Error;

/// Why a record was rejected: a stable code, also used as a metrics label.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum RejectReason {
    InvalidJson,
    InvalidUtf8,
    NotAnObject,
    MissingField,
    WrongType,
    InvalidValue,
    TooLong,
    TooOld,
    TooFarInFuture,
    RecordTooLarge,
}

impl RejectReason {
    /// Every reason, for metrics pre-registration.
    pub const ALL: [RejectReason; 10] = [
        RejectReason::InvalidJson,
        RejectReason::InvalidUtf8,
        RejectReason::NotAnObject,
        RejectReason::MissingField,
        RejectReason::WrongType,
        RejectReason::InvalidValue,
        RejectReason::TooLong,
        RejectReason::TooOld,
        RejectReason::TooFarInFuture,
        RejectReason::RecordTooLarge,
    ];

    /// The stable code.
    pub fn as_str(self) -> &'static str {
        match self {
            RejectReason::InvalidJson => "invalid_json",
            RejectReason::InvalidUtf8 => "invalid_utf8",
            RejectReason::NotAnObject => "not_an_object",
            RejectReason::MissingField => "missing_field",
            RejectReason::WrongType => "wrong_type",
            RejectReason::InvalidValue => "invalid_value",
            RejectReason::TooLong => "too_long",
            RejectReason::TooOld => "too_old",
            RejectReason::TooFarInFuture => "too_far_in_future",
            RejectReason::RecordTooLarge => "record_too_large",
        }
    }
}

/// A rejected record: which field (as named in the record), why, and a stable code.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[error("{}{message}", field.as_deref().map(|name| format!("{name}: ")).unwrap_or_default())]
pub struct RecordError {
    pub field: Option<String>,
    pub reason: RejectReason,
    pub message: String,
}

impl RecordError {
    pub fn new(field: Option<&str>, reason: RejectReason, message: impl Into<String>) -> Self {
        Self {
            field: field.map(str::to_owned),
            reason,
            message: message.into(),
        }
    }
}

/// A mapping that cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum MappingError {
    #[error("field mapping for {field}: {reason}")]
    Invalid { field: &'static str, reason: String },
}
