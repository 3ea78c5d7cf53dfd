//! Query parameters: periods, steps and sort orders, parsed with clear errors.

use mm_model::time::{self, MICROS_PER_MINUTE};

use crate::QueryError;

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
        if from_us >= to_us {
            return Err(QueryError::InvalidParameter(
                "from must be before to".into(),
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

    /// One past the last minute touched by the period.
    pub fn to_minute_exclusive(&self) -> i64 {
        time::minute_of(self.to_us - 1) + 1
    }
}

/// Bucket width of an activity series.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    OneMinute,
    FiveMinutes,
    OneHour,
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

/// Order of the per-API table.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
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
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
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
