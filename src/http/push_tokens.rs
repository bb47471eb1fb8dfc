//! The two push-token families, one implementation parameterised by family.

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::Json;
use serde_json::{Map, Value};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::error::{Error, Result};
use crate::http::extract::{invalid_token, AuthUser, JsonObject, Serial, SessionHash};
use crate::http::schema::{
    BadRequest, DeletedResponse, ErrorBody, PayloadTooLarge, PushTokenResponse, RequestTimeout,
    Success, Unauthorized, Unavailable,
};
use crate::http::AppState;
use crate::model::{is_bundle_id, PushTokenInput, PushTokenRequest};
use crate::store::{Family, PushTokenRow, PushTokenWrite, Rows, Written};
use crate::unix_now;

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(ring::list, ring::create, ring::delete_all))
        .routes(routes!(ring::put_at, ring::delete_one))
        .routes(routes!(message::list, message::create, message::delete_all))
        .routes(routes!(message::put_at, message::delete_one))
}

/// The documented routes of one family, each a thin wrapper that calls the
/// shared handler with the family.
macro_rules! family_routes {
    ($module:ident, $family:expr, $base:literal, $item:literal, $tag:literal, $what:literal) => {
        mod $module {
            use super::*;

            #[utoipa::path(
                get, path = $base, tag = $tag, operation_id = concat!("list_", stringify!($module), "_tokens"),
                summary = concat!("List the caller's ", $what, " tokens, ordered by serial"),
                security(("token" = []), ("bearer" = [])),
                responses(
                    (status = 200, description = "The caller's rows", body = Vec<PushTokenRow>),
                    (status = 401, response = Unauthorized),
                    (status = 503, response = Unavailable),
                )
            )]
            pub async fn list(state: State<AppState>, session: SessionHash) -> Result<Json<Rows>> {
                super::list(state, $family, session).await
            }

            #[utoipa::path(
                post, path = $base, tag = $tag, operation_id = concat!("register_", stringify!($module), "_token"),
                summary = concat!("Register a ", $what, " token at the next serial, or update the caller's row that holds it"),
                security(("token" = []), ("bearer" = [])),
                params(("bundleid" = Option<String>, Header, description = "Bundle id for a created row whose body has none")),
                request_body = PushTokenRequest,
                responses(
                    (status = 201, description = "Created at the next serial", body = PushTokenResponse),
                    (status = 200, description = "The caller already held the token: that row was updated", body = PushTokenResponse),
                    (status = 400, response = BadRequest),
                    (status = 401, response = Unauthorized),
                    (status = 403, description = "`id` is another user's (`id error`)", body = ErrorBody),
                    (status = 409, description = "No serial left (`serial exist`)", body = ErrorBody),
                    (status = 408, response = RequestTimeout),
                    (status = 413, response = PayloadTooLarge),
                    (status = 503, response = Unavailable),
                )
            )]
            pub async fn create(
                state: State<AppState>,
                user: AuthUser,
                headers: HeaderMap,
                body: JsonObject,
            ) -> Result<(StatusCode, Json<PushTokenResponse>)> {
                super::create(state, $family, user, headers, body).await
            }

            #[utoipa::path(
                delete, path = $base, tag = $tag, operation_id = concat!("delete_all_", stringify!($module), "_tokens"),
                summary = concat!("Delete all of the caller's ", $what, " tokens"),
                security(("token" = []), ("bearer" = [])),
                responses(
                    (status = 200, description = "Deleted", body = DeletedResponse),
                    (status = 401, response = Unauthorized),
                    (status = 503, response = Unavailable),
                )
            )]
            pub async fn delete_all(state: State<AppState>, user: AuthUser) -> Result<Json<DeletedResponse>> {
                super::delete_all(state, $family, user).await
            }

            #[utoipa::path(
                put, path = $item, tag = $tag, operation_id = concat!("put_", stringify!($module), "_token"),
                summary = concat!("Create (201) or update (200) the caller's ", $what, " token at a serial"),
                security(("token" = []), ("bearer" = [])),
                params(
                    ("serial" = i64, Path, minimum = 0, description = "The row's serial: a non-negative decimal int64"),
                    ("bundleid" = Option<String>, Header, description = "Bundle id for a created row whose body has none"),
                ),
                request_body = PushTokenRequest,
                responses(
                    (status = 201, description = "Created at this serial", body = PushTokenResponse),
                    (status = 200, description = "Updated; absent optional fields kept", body = PushTokenResponse),
                    (status = 400, response = BadRequest),
                    (status = 401, response = Unauthorized),
                    (status = 403, description = "`id` is another user's (`id error`)", body = ErrorBody),
                    (status = 408, response = RequestTimeout),
                    (status = 413, response = PayloadTooLarge),
                    (status = 503, response = Unavailable),
                )
            )]
            pub async fn put_at(
                state: State<AppState>,
                user: AuthUser,
                serial: Serial,
                headers: HeaderMap,
                body: JsonObject,
            ) -> Result<(StatusCode, Json<PushTokenResponse>)> {
                super::put_at(state, $family, user, serial, headers, body).await
            }

            #[utoipa::path(
                delete, path = $item, tag = $tag, operation_id = concat!("delete_", stringify!($module), "_token"),
                summary = concat!("Delete the caller's ", $what, " token at a serial"),
                security(("token" = []), ("bearer" = [])),
                params(("serial" = i64, Path, minimum = 0, description = "The row's serial: a non-negative decimal int64")),
                responses(
                    (status = 200, description = "Deleted", body = Success),
                    (status = 400, response = BadRequest),
                    (status = 401, response = Unauthorized),
                    (status = 404, description = "The caller has no such row (`no data error`)", body = ErrorBody),
                    (status = 503, response = Unavailable),
                )
            )]
            pub async fn delete_one(state: State<AppState>, user: AuthUser, serial: Serial) -> Result<Json<Success>> {
                super::delete_one(state, $family, user, serial).await
            }
        }
    };
}

family_routes!(
    ring,
    Family::Ring,
    "/v1/api/user/token",
    "/v1/api/user/token/{serial}",
    "ring tokens",
    "ring"
);
family_routes!(
    message,
    Family::Message,
    "/v1/api/user/message/token",
    "/v1/api/user/message/token/{serial}",
    "message tokens",
    "message"
);

fn answer(written: Written) -> (StatusCode, Json<PushTokenResponse>) {
    let (status, row) = match written {
        Written::Created(row) => (StatusCode::CREATED, row),
        Written::Updated(row) => (StatusCode::OK, row),
    };
    (status, Json(PushTokenResponse::new(row)))
}

/// The `bundleid` request header, when it is a valid bundle id.
fn header_bundle_id(headers: &HeaderMap) -> Option<&str> {
    let value = headers.get("bundleid")?.to_str().ok()?.trim();
    if is_bundle_id(value) {
        Some(value)
    } else {
        tracing::debug!("ignored an invalid bundleid header");
        None
    }
}

/// The session's rows: kept in memory, else read (see `store/cache.rs`).
async fn list(
    State(state): State<AppState>,
    family: Family,
    SessionHash(hash): SessionHash,
) -> Result<Json<Rows>> {
    match state
        .store
        .session_push_tokens(family, &hash, unix_now())
        .await?
    {
        Some(rows) => Ok(Json(rows)),
        None => Err(invalid_token()),
    }
}

async fn create(
    State(state): State<AppState>,
    family: Family,
    AuthUser(user): AuthUser,
    headers: HeaderMap,
    JsonObject(body): JsonObject,
) -> Result<(StatusCode, Json<PushTokenResponse>)> {
    register(&state, family, user.user_id, None, &headers, &body).await
}

async fn put_at(
    State(state): State<AppState>,
    family: Family,
    AuthUser(user): AuthUser,
    Serial(serial): Serial,
    headers: HeaderMap,
    JsonObject(body): JsonObject,
) -> Result<(StatusCode, Json<PushTokenResponse>)> {
    register(&state, family, user.user_id, Some(serial), &headers, &body).await
}

/// Validates a registration and stores it at `serial` (`PUT`) or by token
/// (`POST`).
async fn register(
    state: &AppState,
    family: Family,
    user_id: i64,
    serial: Option<i64>,
    headers: &HeaderMap,
    body: &Map<String, Value>,
) -> Result<(StatusCode, Json<PushTokenResponse>)> {
    let input = PushTokenInput::parse(body, user_id)?;
    let default_bundleid = header_bundle_id(headers).unwrap_or(&state.config.bundle_id);
    let write = PushTokenWrite {
        family,
        user_id,
        input,
        default_bundleid: default_bundleid.to_owned(),
        now: unix_now(),
    };
    let written = match serial {
        Some(serial) => state.store.put_push_token(write, serial).await?,
        None => state.store.post_push_token(write).await?,
    };
    Ok(answer(written))
}

async fn delete_one(
    State(state): State<AppState>,
    family: Family,
    AuthUser(user): AuthUser,
    Serial(serial): Serial,
) -> Result<Json<Success>> {
    if state
        .store
        .delete_push_token(family, user.user_id, serial)
        .await?
    {
        Ok(Json(Success::default()))
    } else {
        Err(Error::NoData)
    }
}

async fn delete_all(
    State(state): State<AppState>,
    family: Family,
    AuthUser(user): AuthUser,
) -> Result<Json<DeletedResponse>> {
    let deleted = state
        .store
        .delete_all_push_tokens(family, user.user_id)
        .await?;
    Ok(Json(DeletedResponse::new(deleted)))
}
