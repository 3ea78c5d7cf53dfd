//! The API-call event, in a borrowed form for the hot path and an owned form for storage.

use std::borrow::Cow;

/// One API call as parsed from a log record, borrowing from the record's text where it can.
#[derive(Debug, Clone, PartialEq)]
pub struct ApiCallRef<'a> {
    /// Event time, µs since the epoch.
    pub ts_us: i64,
    pub merchant: Cow<'a, str>,
    pub api: Cow<'a, str>,
    pub status: u16,
    /// Latency in milliseconds; fractional values are kept.
    pub latency_ms: f64,
    pub corr_id: Cow<'a, str>,
    pub partner: Option<Cow<'a, str>>,
    pub method: Option<Cow<'a, str>>,
    pub path: Option<Cow<'a, str>>,
    pub host: Option<Cow<'a, str>>,
    pub region: Option<Cow<'a, str>>,
    /// The record's unmapped fields as a JSON object text, each value exactly as ingested.
    /// `None` when there were none or when the parser was asked not to keep them.
    pub attributes: Option<Cow<'a, str>>,
}

/// One API call, owning its data.
#[derive(Debug, Clone, PartialEq)]
pub struct ApiCall {
    pub ts_us: i64,
    pub merchant: String,
    pub api: String,
    pub status: u16,
    pub latency_ms: f64,
    pub corr_id: String,
    pub partner: Option<String>,
    pub method: Option<String>,
    pub path: Option<String>,
    pub host: Option<String>,
    pub region: Option<String>,
    pub attributes: Option<String>,
}

impl ApiCallRef<'_> {
    /// Copies the borrowed parts into an owned event.
    pub fn into_owned(self) -> ApiCall {
        ApiCall {
            ts_us: self.ts_us,
            merchant: self.merchant.into_owned(),
            api: self.api.into_owned(),
            status: self.status,
            latency_ms: self.latency_ms,
            corr_id: self.corr_id.into_owned(),
            partner: self.partner.map(Cow::into_owned),
            method: self.method.map(Cow::into_owned),
            path: self.path.map(Cow::into_owned),
            host: self.host.map(Cow::into_owned),
            region: self.region.map(Cow::into_owned),
            attributes: self.attributes.map(Cow::into_owned),
        }
    }
}

impl ApiCall {
    /// Borrows this event as an [`ApiCallRef`].
    pub fn as_ref(&self) -> ApiCallRef<'_> {
        ApiCallRef {
            ts_us: self.ts_us,
            merchant: Cow::Borrowed(&self.merchant),
            api: Cow::Borrowed(&self.api),
            status: self.status,
            latency_ms: self.latency_ms,
            corr_id: Cow::Borrowed(&self.corr_id),
            partner: self.partner.as_deref().map(Cow::Borrowed),
            method: self.method.as_deref().map(Cow::Borrowed),
            path: self.path.as_deref().map(Cow::Borrowed),
            host: self.host.as_deref().map(Cow::Borrowed),
            region: self.region.as_deref().map(Cow::Borrowed),
            attributes: self.attributes.as_deref().map(Cow::Borrowed),
        }
    }
}
