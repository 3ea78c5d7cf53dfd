//! One error shape for every endpoint: `{"error":{"code":"...","message":"..."}}`.

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;

/// The body of every error answer.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct ErrorBody {
    pub error: ErrorDetail,
}

/// What went wrong.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct ErrorDetail {
    /// Stable code to act on: `bad_request`, `unauthorized`, `unknown_merchant`,
    /// `payload_too_large`, `overloaded`, ...
    pub code: &'static str,
    /// What is wrong, in words for a person.
    pub message: String,
    /// Where in the request body the problem is, as a JSON pointer in URI-fragment form
    /// (`#/properties/amount/type`), when it is in one place.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub location: Option<String>,
    /// Every way a schema change breaks the event type's compatibility mode
    /// (`incompatible_schema`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub violations: Option<Vec<mm_gateway::Violation>>,
}

/// An error answered to a client as an [`ErrorBody`]. Internal details are logged, never sent.
#[derive(Debug)]
pub struct ApiError {
    pub status: StatusCode,
    pub code: &'static str,
    pub message: String,
    pub retry_after_seconds: Option<u32>,
    pub location: Option<String>,
    pub violations: Option<Vec<mm_gateway::Violation>>,
}

impl ApiError {
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        Self {
            status,
            code,
            message: message.into(),
            retry_after_seconds: None,
            location: None,
            violations: None,
        }
    }

    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "bad_request", message)
    }

    pub fn internal(context: &str, error: impl std::fmt::Display) -> Self {
        tracing::error!(%error, context, "internal error");
        Self::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal",
            "internal error; see the server log",
        )
    }

    pub fn retry_after(mut self, seconds: u32) -> Self {
        self.retry_after_seconds = Some(seconds);
        self
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = ErrorBody {
            error: ErrorDetail {
                code: self.code,
                message: self.message,
                location: self.location,
                violations: self.violations,
            },
        };
        let mut response = (self.status, axum::Json(body)).into_response();
        if let Some(seconds) = self.retry_after_seconds
            && let Ok(value) = HeaderValue::from_str(&seconds.to_string())
        {
            response.headers_mut().insert(header::RETRY_AFTER, value);
        }
        response
    }
}

impl From<mm_query::QueryError> for ApiError {
    fn from(error: mm_query::QueryError) -> Self {
        match error {
            mm_query::QueryError::InvalidParameter(message) => ApiError::bad_request(message),
            mm_query::QueryError::Storage(error) => ApiError::internal("query", error),
        }
    }
}

/// The request memory budget is full, whichever step (reading the body, decompressing it,
/// encoding its batch) asked for more.
impl From<mm_http::BudgetExhausted> for ApiError {
    fn from(exhausted: mm_http::BudgetExhausted) -> Self {
        ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "memory_bound",
            exhausted.to_string(),
        )
        .retry_after(1)
    }
}
