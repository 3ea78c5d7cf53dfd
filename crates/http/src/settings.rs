//! `[http]`: how the server treats connections and request bodies.

use std::time::Duration;

use mm_model::time::parse_duration;
use serde::Deserialize;

/// The `[http]` section as written by users; every field is optional.
#[derive(Debug, Default, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawHttpSettings {
    /// Most connections open at once; a connection beyond it is answered 503 and closed.
    /// Default 4096.
    pub max_connections: Option<usize>,
    /// Longest time from a connection's start, or from the first byte of a request, until its
    /// headers are complete. Default `10s`.
    pub header_read_timeout: Option<String>,
    /// Longest time a keep-alive connection may sit idle between requests. Default `60s`.
    pub idle_timeout: Option<String>,
    /// Longest pause while a request body arrives (answered 408). Default `10s`.
    pub body_idle_timeout: Option<String>,
    /// Slowest average rate a request body may arrive at, judged from 5 s after its first
    /// byte (answered 408). Default 4096 bytes/s.
    pub body_min_bytes_per_second: Option<u64>,
    /// Memory every request in flight may hold together for bodies (as received and
    /// decompressed) and their parsed form; a request that would go beyond it is answered 503
    /// with `Retry-After`. Default 512 MiB.
    pub max_request_memory_bytes: Option<usize>,
}

/// Validated `[http]` settings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HttpSettings {
    pub max_connections: usize,
    pub header_read_timeout: Duration,
    pub idle_timeout: Duration,
    pub body: BodyLimits,
    pub max_request_memory_bytes: usize,
}

/// How a request body must arrive.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BodyLimits {
    /// Longest pause between two parts of the body.
    pub idle_timeout: Duration,
    /// Slowest average rate, judged from [`BodyLimits::RATE_GRACE`] after the first byte.
    pub min_bytes_per_second: u64,
}

impl BodyLimits {
    /// How long a body may arrive below the minimum rate before the rate is judged.
    pub const RATE_GRACE: Duration = Duration::from_secs(5);
}

impl Default for HttpSettings {
    fn default() -> Self {
        Self {
            max_connections: 4096,
            header_read_timeout: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(60),
            body: BodyLimits {
                idle_timeout: Duration::from_secs(10),
                min_bytes_per_second: 4096,
            },
            max_request_memory_bytes: 512 * 1024 * 1024,
        }
    }
}

/// An `[http]` field that is out of range.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("http.{field}: {message}")]
pub struct SettingsError {
    pub field: &'static str,
    pub message: String,
}

impl RawHttpSettings {
    /// Checks every field and fills in the defaults.
    pub fn validate(&self) -> Result<HttpSettings, SettingsError> {
        let defaults = HttpSettings::default();
        let duration = |field: &'static str, text: &Option<String>, default: Duration| {
            let Some(text) = text else {
                return Ok(default);
            };
            let value = parse_duration(text).map_err(|error| SettingsError {
                field,
                message: error.to_string(),
            })?;
            if value < Duration::from_millis(100) || value > Duration::from_secs(3600) {
                return Err(SettingsError {
                    field,
                    message: format!("{text:?} must be between 100ms and 1h"),
                });
            }
            Ok(value)
        };
        let max_connections = self.max_connections.unwrap_or(defaults.max_connections);
        if max_connections == 0 {
            return Err(SettingsError {
                field: "max_connections",
                message: "must be greater than zero".into(),
            });
        }
        let max_request_memory_bytes = self
            .max_request_memory_bytes
            .unwrap_or(defaults.max_request_memory_bytes);
        if max_request_memory_bytes < 1024 * 1024 {
            return Err(SettingsError {
                field: "max_request_memory_bytes",
                message: "must be at least 1 MiB (1048576)".into(),
            });
        }
        Ok(HttpSettings {
            max_connections,
            header_read_timeout: duration(
                "header_read_timeout",
                &self.header_read_timeout,
                defaults.header_read_timeout,
            )?,
            idle_timeout: duration("idle_timeout", &self.idle_timeout, defaults.idle_timeout)?,
            body: BodyLimits {
                idle_timeout: duration(
                    "body_idle_timeout",
                    &self.body_idle_timeout,
                    defaults.body.idle_timeout,
                )?,
                min_bytes_per_second: self
                    .body_min_bytes_per_second
                    .unwrap_or(defaults.body.min_bytes_per_second),
            },
            max_request_memory_bytes,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_apply_and_bad_values_name_their_field() {
        assert_eq!(
            RawHttpSettings::default().validate(),
            Ok(HttpSettings::default())
        );
        let raw = RawHttpSettings {
            idle_timeout: Some("2m".into()),
            body_min_bytes_per_second: Some(0),
            ..RawHttpSettings::default()
        };
        let settings = raw.validate().expect("valid");
        assert_eq!(settings.idle_timeout, Duration::from_secs(120));
        assert_eq!(settings.body.min_bytes_per_second, 0);
        for (raw, field) in [
            (
                RawHttpSettings {
                    max_connections: Some(0),
                    ..RawHttpSettings::default()
                },
                "max_connections",
            ),
            (
                RawHttpSettings {
                    header_read_timeout: Some("0s".into()),
                    ..RawHttpSettings::default()
                },
                "header_read_timeout",
            ),
            (
                RawHttpSettings {
                    body_idle_timeout: Some("soon".into()),
                    ..RawHttpSettings::default()
                },
                "body_idle_timeout",
            ),
            (
                RawHttpSettings {
                    max_request_memory_bytes: Some(10),
                    ..RawHttpSettings::default()
                },
                "max_request_memory_bytes",
            ),
        ] {
            assert_eq!(raw.validate().map_err(|error| error.field), Err(field));
        }
    }
}
