//! The one error type of the HTTP API, rendered as the vendor's JSON errors.

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;

use crate::http::schema::ErrorBody;
use crate::store::StoreError;

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Everything a request can fail with. The `Display` text is the vendor
/// error string sent to the client as `{"message": ...}`.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("undefined {0}")]
    Undefined(&'static str),
    #[error("{0} length error")]
    Length(&'static str),
    #[error("{0} format error")]
    Format(&'static str),
    /// The field's value fails its rule (400).
    #[error("{0} error")]
    Invalid(&'static str),
    /// The field's value names what the caller may not use: another user's
    /// `id`, a wrong registration `apikey` (403).
    #[error("{0} error")]
    Forbidden(&'static str),
    #[error("paramer error")]
    Paramer,
    #[error("no token")]
    NoToken,
    #[error("invalid token")]
    InvalidToken,
    #[error("username or password error")]
    BadCredentials,
    #[error("{0} exist")]
    Exists(&'static str),
    #[error("no data error")]
    NoData,
    #[error("too many requests")]
    TooManyRequests { retry_after_secs: u64 },
    #[error("not found")]
    NotFound,
    #[error("method not allowed")]
    MethodNotAllowed,
    #[error("body too large")]
    BodyTooLarge,
    #[error("server busy")]
    Busy,
    #[error("request timeout")]
    Timeout,
    /// The database failed; the cause is logged, never sent.
    #[error("10001")]
    Database(#[source] sqlx::Error),
    /// A failure of the server itself (not of the client, not of the database).
    #[error("internal error")]
    Internal(#[source] anyhow::Error),
}

impl Error {
    pub fn status(&self) -> StatusCode {
        match self {
            Error::Undefined(_)
            | Error::Length(_)
            | Error::Format(_)
            | Error::Invalid(_)
            | Error::Paramer => StatusCode::BAD_REQUEST,
            Error::Forbidden(_) => StatusCode::FORBIDDEN,
            Error::NoToken | Error::InvalidToken | Error::BadCredentials => {
                StatusCode::UNAUTHORIZED
            }
            Error::Exists(_) => StatusCode::CONFLICT,
            Error::NoData | Error::NotFound => StatusCode::NOT_FOUND,
            Error::TooManyRequests { .. } => StatusCode::TOO_MANY_REQUESTS,
            Error::MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
            Error::BodyTooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            Error::Busy => StatusCode::SERVICE_UNAVAILABLE,
            Error::Timeout => StatusCode::REQUEST_TIMEOUT,
            Error::Database(_) => StatusCode::SERVICE_UNAVAILABLE,
            Error::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    /// The offending field, for the optional `"field"` key of the body.
    pub fn field(&self) -> Option<&'static str> {
        match self {
            Error::Undefined(f)
            | Error::Length(f)
            | Error::Format(f)
            | Error::Invalid(f)
            | Error::Forbidden(f)
            | Error::Exists(f) => Some(f),
            _ => None,
        }
    }
}

impl From<StoreError> for Error {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::Conflict(field) => Error::Exists(field),
            StoreError::Database(e) => Error::Database(e),
        }
    }
}

impl IntoResponse for Error {
    fn into_response(self) -> Response {
        match &self {
            Error::Database(cause) => tracing::error!(error = %cause, "database error"),
            Error::Internal(cause) => {
                tracing::error!(error = format!("{cause:#}"), "internal error")
            }
            _ => {}
        }
        let body = ErrorBody {
            message: self.to_string(),
            field: self.field(),
        };
        let mut response = (self.status(), Json(body)).into_response();
        if let Error::TooManyRequests { retry_after_secs } = self {
            response.headers_mut().insert(
                header::RETRY_AFTER,
                HeaderValue::from(retry_after_secs.max(1)),
            );
        }
        response
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_status_follows_the_variant_not_the_field() {
        for field in ["id", "apikey", "username"] {
            let invalid = Error::Invalid(field);
            let forbidden = Error::Forbidden(field);
            assert_eq!(invalid.status(), StatusCode::BAD_REQUEST);
            assert_eq!(forbidden.status(), StatusCode::FORBIDDEN);
            assert_eq!(invalid.to_string(), forbidden.to_string());
            assert_eq!(forbidden.field(), Some(field));
        }
    }
}
