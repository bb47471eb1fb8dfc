//! Extractors whose rejections are our JSON errors.

use axum::body::Bytes;
use axum::extract::{FromRequest, FromRequestParts, Path, Request};
use axum::http::request::Parts;
use axum::http::{header, HeaderMap, StatusCode};
use serde_json::{Map, Value};

use crate::error::{Error, Result};
use crate::http::AppState;
use crate::secrets::secret_hash;
use crate::store::SessionUser;
use crate::unix_now;

/// A request body that is a JSON object, whatever its `content-type`.
/// Too large: 413; not JSON, or JSON but not an object: 400 `paramer error`.
pub struct JsonObject(pub Map<String, Value>);

impl<S: Send + Sync> FromRequest<S> for JsonObject {
    type Rejection = Error;

    async fn from_request(req: Request, state: &S) -> Result<Self> {
        parse_object(&read_body(req, state).await?).map(JsonObject)
    }
}

/// Like [`JsonObject`], but an empty body reads as `{}`.
pub struct JsonObjectOrEmpty(pub Map<String, Value>);

impl<S: Send + Sync> FromRequest<S> for JsonObjectOrEmpty {
    type Rejection = Error;

    async fn from_request(req: Request, state: &S) -> Result<Self> {
        let bytes = read_body(req, state).await?;
        if bytes.iter().all(u8::is_ascii_whitespace) {
            return Ok(JsonObjectOrEmpty(Map::new()));
        }
        parse_object(&bytes).map(JsonObjectOrEmpty)
    }
}

async fn read_body<S: Send + Sync>(req: Request, state: &S) -> Result<Bytes> {
    Bytes::from_request(req, state).await.map_err(|rejection| {
        if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE {
            Error::BodyTooLarge
        } else {
            Error::Paramer
        }
    })
}

fn parse_object(bytes: &[u8]) -> Result<Map<String, Value>> {
    match serde_json::from_slice(bytes) {
        Ok(Value::Object(object)) => Ok(object),
        _ => Err(Error::Paramer),
    }
}

/// The `{serial}` path segment: a non-negative decimal int64 (leading zeros
/// allowed), else 400 `serial format error`.
pub struct Serial(pub i64);

impl<S: Send + Sync> FromRequestParts<S> for Serial {
    type Rejection = Error;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self> {
        let Path(text) = Path::<String>::from_request_parts(parts, state)
            .await
            .map_err(|_| Error::Format("serial"))?;
        parse_serial(&text)
            .map(Serial)
            .ok_or(Error::Format("serial"))
    }
}

pub fn parse_serial(text: &str) -> Option<i64> {
    if text.is_empty() || !text.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    text.parse().ok()
}

/// The session token of a request: the `token` header (any case), else
/// `Authorization: Bearer`.
pub fn session_token(headers: &HeaderMap) -> Option<&str> {
    let from_token = headers
        .get("token")
        .and_then(|v| v.to_str().ok())
        .map(str::trim);
    from_token
        .filter(|t| !t.is_empty())
        .or_else(|| bearer(headers))
}

/// The credential of `Authorization: Bearer <credential>`, when not empty.
pub fn bearer(headers: &HeaderMap) -> Option<&str> {
    let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?.trim();
    let (scheme, credential) = value.split_once(' ')?;
    scheme
        .eq_ignore_ascii_case("bearer")
        .then(|| credential.trim())
        .filter(|credential| !credential.is_empty())
}

/// Looks a session token up: 401 `invalid token` when unknown or expired.
pub async fn authenticate(state: &AppState, token: &str) -> Result<SessionUser> {
    match state
        .store
        .session_user(&secret_hash(token), unix_now())
        .await?
    {
        Some(user) => Ok(user),
        None => Err(invalid_token()),
    }
}

/// The caller's session: 401 `no token` or `invalid token` otherwise.
pub struct AuthUser(pub SessionUser);

impl FromRequestParts<AppState> for AuthUser {
    type Rejection = Error;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self> {
        let token = required_session_token(&parts.headers)?;
        authenticate(state, token).await.map(AuthUser)
    }
}

/// The hash of the caller's session token, not looked up yet (for a handler
/// that looks the session up together with its data): 401 `no token`
/// without one.
pub struct SessionHash(pub String);

impl<S: Send + Sync> FromRequestParts<S> for SessionHash {
    type Rejection = Error;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self> {
        let token = required_session_token(&parts.headers)?;
        Ok(SessionHash(secret_hash(token)))
    }
}

/// The request's session token, or 401 `no token`.
fn required_session_token(headers: &HeaderMap) -> Result<&str> {
    session_token(headers).ok_or_else(|| {
        tracing::debug!("request without a session token");
        Error::NoToken
    })
}

/// The answer for a session token that matched no unexpired session.
pub fn invalid_token() -> Error {
    tracing::debug!("rejected an unknown or expired session token");
    Error::InvalidToken
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn serials_are_non_negative_decimal_int64() {
        assert_eq!(parse_serial("0"), Some(0));
        assert_eq!(parse_serial("007"), Some(7));
        assert_eq!(parse_serial("9223372036854775807"), Some(i64::MAX));
        for bad in [
            "",
            "-1",
            "+1",
            "1.0",
            "1e3",
            "abc",
            " 1",
            "9223372036854775808",
            "0x10",
        ] {
            assert_eq!(parse_serial(bad), None, "{bad:?}");
        }
    }
}
