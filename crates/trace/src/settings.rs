//! The `[telemetry]` section.

use anyhow::bail;
use serde::Deserialize;

/// `[telemetry]` as written.
#[derive(Debug, Default, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawTelemetry {
    /// The OTLP collector's base URL (`http://127.0.0.1:4318` for HTTP, `:4317` for gRPC);
    /// traces are off without it. `MM_OTLP_ENDPOINT` overrides it (empty: off).
    pub otlp_endpoint: Option<String>,
    /// `http` (protobuf over HTTP, the default) or `grpc`.
    pub otlp_protocol: Option<String>,
    /// Share of new traces recorded, 0.0 to 1.0 (default 1.0); a request that arrives with a
    /// `traceparent` follows its caller's decision.
    pub sampling_ratio: Option<f64>,
    /// `service.name` of the exported spans (default `merchant-monitor`).
    pub service_name: Option<String>,
}

/// How spans travel to the collector.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum OtlpProtocol {
    #[default]
    Http,
    Grpc,
}

impl OtlpProtocol {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Http => "http",
            Self::Grpc => "grpc",
        }
    }
}

/// Validated `[telemetry]`.
#[derive(Debug, Clone, PartialEq)]
pub struct TelemetrySettings {
    /// Traces are exported only when set.
    pub otlp_endpoint: Option<String>,
    pub otlp_protocol: OtlpProtocol,
    pub sampling_ratio: f64,
    pub service_name: String,
}

impl Default for TelemetrySettings {
    fn default() -> Self {
        Self {
            otlp_endpoint: None,
            otlp_protocol: OtlpProtocol::Http,
            sampling_ratio: 1.0,
            service_name: "merchant-monitor".into(),
        }
    }
}

impl RawTelemetry {
    /// Checks every field; `env` reads `MM_OTLP_ENDPOINT`.
    pub fn validate(
        &self,
        env: &dyn Fn(&str) -> Option<String>,
    ) -> anyhow::Result<TelemetrySettings> {
        let endpoint = match env("MM_OTLP_ENDPOINT") {
            Some(value) => Some(value),
            None => self.otlp_endpoint.clone(),
        }
        .map(|value| value.trim().to_owned())
        .filter(|value| !value.is_empty());
        if let Some(endpoint) = &endpoint
            && !(endpoint.starts_with("http://") || endpoint.starts_with("https://"))
        {
            bail!(
                "telemetry.otlp_endpoint: {endpoint:?} is not a URL; give the collector's base URL, e.g. http://127.0.0.1:4318"
            );
        }
        let otlp_protocol = match self.otlp_protocol.as_deref() {
            None | Some("http") => OtlpProtocol::Http,
            Some("grpc") => OtlpProtocol::Grpc,
            Some(other) => {
                bail!("telemetry.otlp_protocol: {other:?} is neither \"http\" nor \"grpc\"")
            }
        };
        let sampling_ratio = self.sampling_ratio.unwrap_or(1.0);
        if !(0.0..=1.0).contains(&sampling_ratio) {
            bail!("telemetry.sampling_ratio: {sampling_ratio} is not between 0.0 and 1.0");
        }
        let service_name = self
            .service_name
            .clone()
            .unwrap_or_else(|| "merchant-monitor".into());
        if service_name.trim().is_empty() {
            bail!("telemetry.service_name: empty");
        }
        Ok(TelemetrySettings {
            otlp_endpoint: endpoint,
            otlp_protocol,
            sampling_ratio,
            service_name,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn no_env(_: &str) -> Option<String> {
        None
    }

    #[test]
    fn without_an_endpoint_traces_are_off_and_the_defaults_apply() {
        let settings = RawTelemetry::default().validate(&no_env).expect("valid");
        assert_eq!(settings, TelemetrySettings::default());
    }

    #[test]
    fn the_environment_overrides_the_endpoint_and_empty_turns_it_off() {
        let raw = RawTelemetry {
            otlp_endpoint: Some("http://collector:4318".into()),
            ..RawTelemetry::default()
        };
        let set = |value: &'static str| {
            move |name: &str| (name == "MM_OTLP_ENDPOINT").then(|| value.to_owned())
        };
        let settings = raw.validate(&set("http://other:4318")).expect("valid");
        assert_eq!(settings.otlp_endpoint.as_deref(), Some("http://other:4318"));
        let settings = raw.validate(&set("")).expect("valid");
        assert_eq!(settings.otlp_endpoint, None);
        let settings = raw.validate(&no_env).expect("valid");
        assert_eq!(
            settings.otlp_endpoint.as_deref(),
            Some("http://collector:4318")
        );
    }

    #[test]
    fn bad_values_are_named() {
        let cases = [
            (
                RawTelemetry {
                    otlp_endpoint: Some("collector:4318".into()),
                    ..RawTelemetry::default()
                },
                "not a URL",
            ),
            (
                RawTelemetry {
                    otlp_protocol: Some("udp".into()),
                    ..RawTelemetry::default()
                },
                "otlp_protocol",
            ),
            (
                RawTelemetry {
                    sampling_ratio: Some(1.5),
                    ..RawTelemetry::default()
                },
                "sampling_ratio",
            ),
        ];
        for (raw, expected) in cases {
            let error = raw.validate(&no_env).expect_err("invalid").to_string();
            assert!(error.contains(expected), "{error}");
        }
    }
}
