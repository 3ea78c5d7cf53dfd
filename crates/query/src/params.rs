//! Query parameters: periods, steps and sort orders, parsed with clear errors.
//!
//! `ActivityParams`, `ApisParams` and `MerchantsParams` are the query strings of the three
//! queries as the HTTP API accepts them: every value arrives as text and is parsed here, so a
//! bad one is answered with a message naming the parameter. With the `openapi` feature they
//! describe themselves (`utoipa::IntoParams`); each field's doc comment is its user
//! documentation.

use mm_model::time::{self, MICROS_PER_MINUTE};
use serde::{Deserialize, Serialize};

use crate::QueryError;

/// A point in time as a query parameter: RFC 3339 or epoch milliseconds.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[cfg_attr(
    feature = "openapi",
    derive(utoipa::ToSchema),
    schema(examples("2026-11-21T15:00:00Z", "1795273200000"))
)]
#[serde(transparent)]
pub struct TimeParam(pub String);

impl TimeParam {
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// The query parameters of `GET /v1/merchants/{merchant}/activity`.
#[derive(Debug, Default, Clone, Deserialize)]
#[cfg_attr(
    feature = "openapi",
    derive(utoipa::IntoParams),
    into_params(parameter_in = Query)
)]
pub struct ActivityParams {
    /// Start of the period, inclusive: RFC 3339 or epoch milliseconds. Default: one hour before `to`.
    #[cfg_attr(feature = "openapi", param(inline))]
    pub from: Option<TimeParam>,
    /// End of the period, exclusive: RFC 3339 or epoch milliseconds. Default: now.
    #[cfg_attr(feature = "openapi", param(inline))]
    pub to: Option<TimeParam>,
    /// Bucket width.
    #[cfg_attr(feature = "openapi", param(value_type = Option<Step>, inline, default = "1m"))]
    pub step: Option<String>,
    /// Only this API.
    pub api: Option<String>,
}

impl ActivityParams {
    /// `from` and `to`; the default period is the hour before `now_us`.
    pub fn period(&self, now_us: i64) -> Result<Period, QueryError> {
        hour_before_by_default(self.from.as_ref(), self.to.as_ref(), now_us)
    }

    pub fn step(&self) -> Result<Step, QueryError> {
        Step::parse(self.step.as_deref())
    }
}

/// The query parameters of `GET /v1/merchants/{merchant}/apis`.
#[derive(Debug, Default, Clone, Deserialize)]
#[cfg_attr(
    feature = "openapi",
    derive(utoipa::IntoParams),
    into_params(parameter_in = Query)
)]
pub struct ApisParams {
    /// Start of the period, inclusive: RFC 3339 or epoch milliseconds. Default: one hour before `to`.
    #[cfg_attr(feature = "openapi", param(inline))]
    pub from: Option<TimeParam>,
    /// End of the period, exclusive: RFC 3339 or epoch milliseconds. Default: now.
    #[cfg_attr(feature = "openapi", param(inline))]
    pub to: Option<TimeParam>,
    /// Order of the rows: most calls, most 5xx, highest 5xx share, slowest p99, or by name.
    #[cfg_attr(feature = "openapi", param(value_type = Option<ApiSort>, inline, default = "calls"))]
    pub sort: Option<String>,
}

impl ApisParams {
    /// `from` and `to`; the default period is the hour before `now_us`.
    pub fn period(&self, now_us: i64) -> Result<Period, QueryError> {
        hour_before_by_default(self.from.as_ref(), self.to.as_ref(), now_us)
    }

    pub fn sort(&self) -> Result<ApiSort, QueryError> {
        ApiSort::parse(self.sort.as_deref())
    }
}

/// The query parameters of `GET /v1/merchants`.
#[derive(Debug, Default, Clone, Deserialize)]
#[cfg_attr(
    feature = "openapi",
    derive(utoipa::IntoParams),
    into_params(parameter_in = Query)
)]
pub struct MerchantsParams {
    /// Start of the period, inclusive: RFC 3339 or epoch milliseconds. Default: one hour before `to`.
    #[cfg_attr(feature = "openapi", param(inline))]
    pub from: Option<TimeParam>,
    /// End of the period, exclusive: RFC 3339 or epoch milliseconds. Default: now.
    #[cfg_attr(feature = "openapi", param(inline))]
    pub to: Option<TimeParam>,
    /// Order of the ranking: most calls, most 5xx, or highest 5xx share.
    #[cfg_attr(feature = "openapi", param(value_type = Option<MerchantSort>, inline, default = "calls"))]
    pub sort: Option<String>,
    /// How many merchants, from 1 to 1000.
    #[cfg_attr(
        feature = "openapi",
        param(value_type = Option<u32>, minimum = 1, maximum = 1000, default = 50)
    )]
    pub limit: Option<String>,
}

impl MerchantsParams {
    /// `from` and `to`; the default period is the hour before `now_us`.
    pub fn period(&self, now_us: i64) -> Result<Period, QueryError> {
        hour_before_by_default(self.from.as_ref(), self.to.as_ref(), now_us)
    }

    pub fn sort(&self) -> Result<MerchantSort, QueryError> {
        MerchantSort::parse(self.sort.as_deref())
    }

    pub fn limit(&self) -> Result<usize, QueryError> {
        parse_limit(self.limit.as_deref(), 50)
    }
}

/// A `limit` parameter: 1 to 1000, `default` when absent.
pub fn parse_limit(text: Option<&str>, default: usize) -> Result<usize, QueryError> {
    let Some(text) = text else {
        return Ok(default);
    };
    match text.parse::<usize>() {
        Ok(limit) if (1..=1000).contains(&limit) => Ok(limit),
        _ => Err(QueryError::InvalidParameter(format!(
            "limit {text:?} must be a whole number from 1 to 1000"
        ))),
    }
}

/// A half-open period `[from_us, to_us)`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Period {
    pub from_us: i64,
    pub to_us: i64,
}

/// The longest period one query may cover.
pub const MAX_PERIOD_DAYS: i64 = 400;

impl Period {
    /// Reads `from` and `to` (RFC 3339 or epoch ms). `to` defaults to `now_us`, `from` to
    /// `default_span_us` before `to`.
    pub fn parse(
        from: Option<&str>,
        to: Option<&str>,
        now_us: i64,
        default_span_us: i64,
    ) -> Result<Self, QueryError> {
        let parse = |name: &str, text: &str| {
            time::parse_param(text)
                .map_err(|error| QueryError::InvalidParameter(format!("{name}: {error}")))
        };
        let to_us = match to {
            Some(text) => parse("to", text)?,
            None => now_us,
        };
        let from_us = match from {
            Some(text) => parse("from", text)?,
            None => to_us - default_span_us,
        };
        // `from == to` is the empty period: a valid question with an empty answer.
        if from_us > to_us {
            return Err(QueryError::InvalidParameter(
                "from must not be after to".into(),
            ));
        }
        if to_us - from_us > MAX_PERIOD_DAYS * 1440 * MICROS_PER_MINUTE {
            return Err(QueryError::InvalidParameter(format!(
                "period is longer than {MAX_PERIOD_DAYS} days"
            )));
        }
        Ok(Self { from_us, to_us })
    }

    /// First minute touched by the period.
    pub fn from_minute(&self) -> i64 {
        time::minute_of(self.from_us)
    }

    /// One past the last minute touched by the period (the first minute when it is empty).
    pub fn to_minute_exclusive(&self) -> i64 {
        if self.is_empty() {
            return self.from_minute();
        }
        time::minute_of(self.to_us - 1) + 1
    }

    /// True when `from == to`: no instant is in the period.
    pub fn is_empty(&self) -> bool {
        self.from_us == self.to_us
    }
}

/// Bucket width of an activity series.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub enum Step {
    #[serde(rename = "1m")]
    OneMinute,
    #[serde(rename = "5m")]
    FiveMinutes,
    #[serde(rename = "1h")]
    OneHour,
    #[serde(rename = "1d")]
    OneDay,
}

impl Step {
    pub fn parse(text: Option<&str>) -> Result<Self, QueryError> {
        match text.unwrap_or("1m") {
            "1m" => Ok(Step::OneMinute),
            "5m" => Ok(Step::FiveMinutes),
            "1h" => Ok(Step::OneHour),
            "1d" => Ok(Step::OneDay),
            other => Err(QueryError::InvalidParameter(format!(
                "step {other:?} is not one of 1m, 5m, 1h, 1d"
            ))),
        }
    }

    pub fn minutes(self) -> i64 {
        match self {
            Step::OneMinute => 1,
            Step::FiveMinutes => 5,
            Step::OneHour => 60,
            Step::OneDay => 1440,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Step::OneMinute => "1m",
            Step::FiveMinutes => "5m",
            Step::OneHour => "1h",
            Step::OneDay => "1d",
        }
    }
}

/// Order of the per-API table (`p99_ms` is also accepted for `p99`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum ApiSort {
    Calls,
    Errors,
    ErrorRate,
    P99,
    Api,
}

impl ApiSort {
    pub fn parse(text: Option<&str>) -> Result<Self, QueryError> {
        match text.unwrap_or("calls") {
            "calls" => Ok(ApiSort::Calls),
            "errors" => Ok(ApiSort::Errors),
            "error_rate" => Ok(ApiSort::ErrorRate),
            "p99" | "p99_ms" => Ok(ApiSort::P99),
            "api" => Ok(ApiSort::Api),
            other => Err(QueryError::InvalidParameter(format!(
                "sort {other:?} is not one of calls, errors, error_rate, p99, api"
            ))),
        }
    }
}

/// Order of the merchant ranking.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum MerchantSort {
    Calls,
    Errors,
    ErrorRate,
}

impl MerchantSort {
    pub fn parse(text: Option<&str>) -> Result<Self, QueryError> {
        match text.unwrap_or("calls") {
            "calls" => Ok(MerchantSort::Calls),
            "errors" => Ok(MerchantSort::Errors),
            "error_rate" => Ok(MerchantSort::ErrorRate),
            other => Err(QueryError::InvalidParameter(format!(
                "sort {other:?} is not one of calls, errors, error_rate"
            ))),
        }
    }
}

/// The period of `from` and `to`; the default period is the hour before `now_us`.
fn hour_before_by_default(
    from: Option<&TimeParam>,
    to: Option<&TimeParam>,
    now_us: i64,
) -> Result<Period, QueryError> {
    Period::parse(
        from.map(TimeParam::as_str),
        to.map(TimeParam::as_str),
        now_us,
        60 * MICROS_PER_MINUTE,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The names the API shows (and documents) are the names `parse` reads.
    #[test]
    fn every_choice_parses_from_its_serialized_name() {
        fn name(value: impl Serialize) -> String {
            let value = serde_json::to_value(value).expect("serializes");
            value
                .as_str()
                .expect("a unit variant is a string")
                .to_owned()
        }
        for step in [
            Step::OneMinute,
            Step::FiveMinutes,
            Step::OneHour,
            Step::OneDay,
        ] {
            assert_eq!(Step::parse(Some(&name(step))).ok(), Some(step));
            assert_eq!(step.as_str(), name(step));
        }
        for sort in [
            ApiSort::Calls,
            ApiSort::Errors,
            ApiSort::ErrorRate,
            ApiSort::P99,
            ApiSort::Api,
        ] {
            assert_eq!(ApiSort::parse(Some(&name(sort))).ok(), Some(sort));
        }
        for sort in [
            MerchantSort::Calls,
            MerchantSort::Errors,
            MerchantSort::ErrorRate,
        ] {
            assert_eq!(MerchantSort::parse(Some(&name(sort))).ok(), Some(sort));
        }
    }
}
