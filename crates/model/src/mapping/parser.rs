//! The compiled parser: [`EventParser`] reads a record through the fast scanner or the serde
//! path into slots, then checks each field and builds the event.

use std::borrow::Cow;

use serde::de::DeserializeSeed;

use super::serde_path::ObjectSeed;
use super::tree::{insert_path, split_pointer};
use super::{
    Entry, FIELD_COUNT, Field, FieldMapping, MAX_ATTRIBUTES_BYTES, MAX_ID_BYTES, MAX_LATENCY_MS,
    MAX_TEXT_BYTES, MappingError, Node, RecordError, RejectReason, Scalar, Slots, TimeBounds, fast,
};
use crate::event::ApiCallRef;
use crate::time;

/// Parses records with one compiled [`FieldMapping`]. Cheap to share between threads.
#[derive(Debug)]
pub struct EventParser {
    pub(super) root: Node,
    /// How each field is named in error messages: its pointer without the leading slash.
    display_names: [String; FIELD_COUNT],
    keep_attributes: bool,
    /// Every field maps to a top-level key: the fast scanner applies.
    flat: bool,
}

impl EventParser {
    /// Compiles `mapping`. With `keep_attributes`, unmapped top-level fields are kept, raw, in
    /// [`ApiCallRef::attributes`]; without, they are skipped (faster).
    pub fn new(mapping: &FieldMapping, keep_attributes: bool) -> Result<Self, MappingError> {
        let fields: [(&'static str, &str, Field); FIELD_COUNT] = [
            ("ts", &mapping.ts, Field::Ts),
            ("merchant", &mapping.merchant, Field::Merchant),
            ("api", &mapping.api, Field::Api),
            ("status", &mapping.status, Field::Status),
            ("latency_ms", &mapping.latency_ms, Field::Latency),
            ("corr_id", &mapping.corr_id, Field::CorrId),
            ("partner", &mapping.partner, Field::Partner),
            ("method", &mapping.method, Field::Method),
            ("path", &mapping.path, Field::Path),
            ("host", &mapping.host, Field::Host),
            ("region", &mapping.region, Field::Region),
        ];
        let mut root = Node::default();
        let mut display_names: [String; FIELD_COUNT] = Default::default();
        for (name, pointer, field) in fields {
            let segments = split_pointer(name, pointer)?;
            display_names[field as usize] = segments.join("/");
            insert_path(&mut root, &segments, field).map_err(|reason| MappingError::Invalid {
                field: name,
                reason,
            })?;
        }
        let flat = root
            .entries
            .iter()
            .all(|(_, entry)| matches!(entry, Entry::Leaf(_)));
        Ok(Self {
            root,
            display_names,
            keep_attributes,
            flat,
        })
    }

    fn name(&self, field: Field) -> &str {
        &self.display_names[field as usize]
    }

    /// Parses one record (a JSON object) and validates it against `bounds`.
    pub fn parse<'a>(
        &self,
        record: &'a [u8],
        bounds: TimeBounds,
    ) -> Result<ApiCallRef<'a>, RecordError> {
        if self.flat
            && let Ok(text) = std::str::from_utf8(record)
            && let Some(slots) = fast::scan(text, &self.root, self.keep_attributes)
        {
            return self.build(slots, bounds);
        }
        // Strings that are kept (mapped fields, raw attributes) are checked for UTF-8 as they
        // are read; only when the record fails is the whole of it checked, to say why.
        let reader = serde_json::de::SliceRead::new(record);
        self.parse_from(reader, bounds)
            .map_err(|error| match std::str::from_utf8(record) {
                Err(utf8) if error.reason == RejectReason::InvalidJson => RecordError::new(
                    None,
                    RejectReason::InvalidUtf8,
                    format!("record is not valid UTF-8 (at byte {})", utf8.valid_up_to()),
                ),
                _ => error,
            })
    }

    /// Parses one record given as text; see [`EventParser::parse`].
    pub fn parse_str<'a>(
        &self,
        text: &'a str,
        bounds: TimeBounds,
    ) -> Result<ApiCallRef<'a>, RecordError> {
        if self.flat
            && let Some(slots) = fast::scan(text, &self.root, self.keep_attributes)
        {
            return self.build(slots, bounds);
        }
        self.parse_from(serde_json::de::StrRead::new(text), bounds)
    }

    /// The serde path alone, for checking the fast scanner against it.
    #[cfg(test)]
    pub(super) fn parse_without_fast_path<'a>(
        &self,
        record: &'a [u8],
        bounds: TimeBounds,
    ) -> Result<ApiCallRef<'a>, RecordError> {
        self.parse_from(serde_json::de::SliceRead::new(record), bounds)
    }

    fn parse_from<'a, R: serde_json::de::Read<'a>>(
        &self,
        reader: R,
        bounds: TimeBounds,
    ) -> Result<ApiCallRef<'a>, RecordError> {
        let mut slots = Slots::default();
        let mut deserializer = serde_json::Deserializer::new(reader);
        let seed = ObjectSeed {
            node: &self.root,
            slots: &mut slots,
            keep_attributes: self.keep_attributes,
            top: true,
        };
        let is_object = seed.deserialize(&mut deserializer).map_err(json_error)?;
        deserializer.end().map_err(json_error)?;
        if !is_object {
            return Err(RecordError::new(
                None,
                RejectReason::NotAnObject,
                "record is not a JSON object",
            ));
        }
        self.build(slots, bounds)
    }

    fn build<'a>(
        &self,
        mut slots: Slots<'a>,
        bounds: TimeBounds,
    ) -> Result<ApiCallRef<'a>, RecordError> {
        let ts_us = self.timestamp(slots.take(Field::Ts))?;
        if ts_us < bounds.min_ts_us {
            return Err(RecordError::new(
                Some(self.name(Field::Ts)),
                RejectReason::TooOld,
                "event is older than the rollup retention",
            ));
        }
        if ts_us > bounds.max_ts_us {
            return Err(RecordError::new(
                Some(self.name(Field::Ts)),
                RejectReason::TooFarInFuture,
                "event is further in the future than the allowed clock skew",
            ));
        }
        let merchant = self.identifier(Field::Merchant, slots.take(Field::Merchant))?;
        let api = self.identifier(Field::Api, slots.take(Field::Api))?;
        let status = self.status(slots.take(Field::Status))?;
        let latency_ms = self.latency(slots.take(Field::Latency))?;
        let corr_id = self.identifier(Field::CorrId, slots.take(Field::CorrId))?;
        let attributes = match slots.attributes.take() {
            Some(text) if text.len() > MAX_ATTRIBUTES_BYTES => {
                return Err(RecordError::new(
                    None,
                    RejectReason::TooLong,
                    format!("unmapped attributes exceed {MAX_ATTRIBUTES_BYTES} bytes"),
                ));
            }
            other => other.map(Cow::Owned),
        };
        Ok(ApiCallRef {
            ts_us,
            merchant,
            api,
            status,
            latency_ms,
            corr_id,
            partner: self.optional_text(Field::Partner, slots.take(Field::Partner))?,
            method: self.optional_text(Field::Method, slots.take(Field::Method))?,
            path: self.optional_text(Field::Path, slots.take(Field::Path))?,
            host: self.optional_text(Field::Host, slots.take(Field::Host))?,
            region: self.optional_text(Field::Region, slots.take(Field::Region))?,
            attributes,
        })
    }

    fn missing(&self, field: Field) -> RecordError {
        RecordError::new(
            Some(self.name(field)),
            RejectReason::MissingField,
            "required field is missing",
        )
    }

    fn wrong_type(&self, field: Field, expected: &str, found: &Scalar<'_>) -> RecordError {
        RecordError::new(
            Some(self.name(field)),
            RejectReason::WrongType,
            format!("expected {expected}, found {}", found.kind()),
        )
    }

    fn invalid(&self, field: Field, message: impl Into<String>) -> RecordError {
        RecordError::new(Some(self.name(field)), RejectReason::InvalidValue, message)
    }

    fn timestamp(&self, value: Scalar<'_>) -> Result<i64, RecordError> {
        let parsed = match &value {
            Scalar::Missing | Scalar::Null => return Err(self.missing(Field::Ts)),
            Scalar::Str(text)
                if text.bytes().all(|byte| byte.is_ascii_digit()) && !text.is_empty() =>
            {
                text.parse::<i64>()
                    .map_err(|_| time::TimeError::OutOfRange)
                    .and_then(time::from_epoch_number)
            }
            Scalar::Str(text) => time::parse_rfc3339(text),
            Scalar::Int(number) => time::from_epoch_number(*number),
            Scalar::UInt(number) => i64::try_from(*number)
                .map_err(|_| time::TimeError::OutOfRange)
                .and_then(time::from_epoch_number),
            Scalar::Float(number) => time::from_epoch_float(*number),
            other => {
                return Err(self.wrong_type(
                    Field::Ts,
                    "an RFC 3339 string or epoch number",
                    other,
                ));
            }
        };
        parsed.map_err(|error| self.invalid(Field::Ts, error.to_string()))
    }

    fn identifier<'a>(&self, field: Field, value: Scalar<'a>) -> Result<Cow<'a, str>, RecordError> {
        let text = match value {
            Scalar::Missing | Scalar::Null => return Err(self.missing(field)),
            Scalar::Str(text) => text,
            Scalar::Int(number) if field != Field::Api => Cow::Owned(number.to_string()),
            Scalar::UInt(number) if field != Field::Api => Cow::Owned(number.to_string()),
            other => return Err(self.wrong_type(field, "a string", &other)),
        };
        if text.is_empty() {
            return Err(self.invalid(field, "must not be empty"));
        }
        if text.len() > MAX_ID_BYTES {
            return Err(RecordError::new(
                Some(self.name(field)),
                RejectReason::TooLong,
                format!("longer than {MAX_ID_BYTES} bytes ({} bytes)", text.len()),
            ));
        }
        if has_control_character(&text) {
            return Err(self.invalid(field, "must not contain control characters"));
        }
        Ok(text)
    }

    fn optional_text<'a>(
        &self,
        field: Field,
        value: Scalar<'a>,
    ) -> Result<Option<Cow<'a, str>>, RecordError> {
        match value {
            Scalar::Missing | Scalar::Null => Ok(None),
            Scalar::Str(text) if text.len() > MAX_TEXT_BYTES => Err(RecordError::new(
                Some(self.name(field)),
                RejectReason::TooLong,
                format!("longer than {MAX_TEXT_BYTES} bytes ({} bytes)", text.len()),
            )),
            Scalar::Str(text) => Ok(Some(text)),
            other => Err(self.wrong_type(field, "a string", &other)),
        }
    }

    fn status(&self, value: Scalar<'_>) -> Result<u16, RecordError> {
        let number: i64 = match &value {
            Scalar::Missing | Scalar::Null => return Err(self.missing(Field::Status)),
            Scalar::Int(number) => *number,
            Scalar::UInt(number) => i64::try_from(*number).unwrap_or(i64::MAX),
            Scalar::Str(text) => text
                .trim()
                .parse()
                .map_err(|_| self.invalid(Field::Status, format!("not a status code: {text:?}")))?,
            Scalar::Float(number) if number.fract() == 0.0 && number.abs() < 1e6 => *number as i64,
            other => return Err(self.wrong_type(Field::Status, "an integer status code", other)),
        };
        if !(100..=599).contains(&number) {
            return Err(self.invalid(
                Field::Status,
                format!("status {number} is not in 100..=599"),
            ));
        }
        Ok(number as u16)
    }

    fn latency(&self, value: Scalar<'_>) -> Result<f64, RecordError> {
        let number = match &value {
            Scalar::Missing | Scalar::Null => return Err(self.missing(Field::Latency)),
            Scalar::Int(number) => *number as f64,
            Scalar::UInt(number) => *number as f64,
            Scalar::Float(number) => *number,
            Scalar::Str(text) => text
                .trim()
                .parse::<f64>()
                .map_err(|_| self.invalid(Field::Latency, format!("not a number: {text:?}")))?,
            other => {
                return Err(self.wrong_type(Field::Latency, "a number of milliseconds", other));
            }
        };
        if !number.is_finite() || number < 0.0 {
            return Err(self.invalid(
                Field::Latency,
                format!("latency {number} must be a non-negative number"),
            ));
        }
        if number > MAX_LATENCY_MS {
            return Err(self.invalid(
                Field::Latency,
                format!("latency {number} ms is longer than a day"),
            ));
        }
        Ok(number)
    }
}

/// Whether `text` holds a Unicode control character (C0, DEL or C1), checked on the bytes:
/// C1 controls are the two-byte sequences `C2 80`..`C2 9F`.
pub(super) fn has_control_character(text: &str) -> bool {
    let bytes = text.as_bytes();
    let c0_or_delete = bytes.iter().fold(false, |found, byte| {
        found | (*byte < 0x20) | (*byte == 0x7f)
    });
    c0_or_delete
        || (!bytes.is_ascii()
            && bytes
                .windows(2)
                .any(|pair| pair[0] == 0xc2 && (0x80..=0x9f).contains(&pair[1])))
}

fn json_error(error: serde_json::Error) -> RecordError {
    RecordError::new(
        None,
        RejectReason::InvalidJson,
        format!("invalid JSON: {error}"),
    )
}
