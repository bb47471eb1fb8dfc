//! The two push-token families, one implementation parameterised by family.

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::routing::{get, put};
use axum::{Extension, Json, Router};
use serde::Serialize;
use serde_json::{json, Map, Value};

use crate::error::{Error, Result};
use crate::http::extract::{AuthUser, JsonObject, Serial};
use crate::http::AppState;
use crate::model::{is_bundle_id, PushTokenInput};
use crate::store::{Family, PushTokenRow, PushTokenWrite, Written};
use crate::unix_now;

pub fn router() -> Router<AppState> {
    family_router("/v1/api/user/token", Family::Ring)
        .merge(family_router("/v1/api/user/message/token", Family::Message))
}

fn family_router(base: &str, family: Family) -> Router<AppState> {
    Router::new()
        .route(base, get(list).post(create).delete(delete_all))
        .route(
            &format!("{base}/{{serial}}"),
            put(put_at).delete(delete_one),
        )
        .layer(Extension(family))
}

/// A row with the vendor's `"message": "success"` beside its fields.
#[derive(Serialize)]
struct Success<T> {
    message: &'static str,
    #[serde(flatten)]
    row: T,
}

fn answer(written: Written) -> (StatusCode, Json<Success<PushTokenRow>>) {
    let (status, row) = match written {
        Written::Created(row) => (StatusCode::CREATED, row),
        Written::Updated(row) => (StatusCode::OK, row),
    };
    (
        status,
        Json(Success {
            message: "success",
            row,
        }),
    )
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

async fn list(
    State(state): State<AppState>,
    Extension(family): Extension<Family>,
    AuthUser(user): AuthUser,
) -> Result<Json<Vec<PushTokenRow>>> {
    Ok(Json(
        state.store.list_push_tokens(family, user.user_id).await?,
    ))
}

async fn create(
    State(state): State<AppState>,
    Extension(family): Extension<Family>,
    AuthUser(user): AuthUser,
    headers: HeaderMap,
    JsonObject(body): JsonObject,
) -> Result<(StatusCode, Json<Success<PushTokenRow>>)> {
    register(&state, family, user.user_id, None, &headers, &body).await
}

async fn put_at(
    State(state): State<AppState>,
    Extension(family): Extension<Family>,
    AuthUser(user): AuthUser,
    Serial(serial): Serial,
    headers: HeaderMap,
    JsonObject(body): JsonObject,
) -> Result<(StatusCode, Json<Success<PushTokenRow>>)> {
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
) -> Result<(StatusCode, Json<Success<PushTokenRow>>)> {
    let input = PushTokenInput::parse(body, user_id)?;
    let default_bundleid = header_bundle_id(headers).unwrap_or(&state.config.bundle_id);
    let write = PushTokenWrite {
        family,
        user_id,
        input: &input,
        default_bundleid,
        now: unix_now(),
    };
    let written = match serial {
        Some(serial) => state.store.put_push_token(&write, serial).await?,
        None => state.store.post_push_token(&write).await?,
    };
    Ok(answer(written))
}

async fn delete_one(
    State(state): State<AppState>,
    Extension(family): Extension<Family>,
    AuthUser(user): AuthUser,
    Serial(serial): Serial,
) -> Result<Json<Value>> {
    if state
        .store
        .delete_push_token(family, user.user_id, serial)
        .await?
    {
        Ok(Json(json!({ "message": "success" })))
    } else {
        Err(Error::NoData)
    }
}

async fn delete_all(
    State(state): State<AppState>,
    Extension(family): Extension<Family>,
    AuthUser(user): AuthUser,
) -> Result<Json<Value>> {
    let deleted = state
        .store
        .delete_all_push_tokens(family, user.user_id)
        .await?;
    Ok(Json(json!({ "message": "success", "deleted": deleted })))
}
