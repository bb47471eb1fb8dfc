//! `POST /v1/api/notify`: whatever knows that the doorbell rang sends an
//! event to a user, with the operator's key.

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::Json;
use serde::Serialize;
use serde_json::{Map, Value};
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::error::{Error, Result};
use crate::http::extract::{bearer, JsonObject};
use crate::http::schema::{BadRequest, ErrorBody, PayloadTooLarge, RequestTimeout, Unavailable};
use crate::http::AppState;
use crate::store::Family;

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(notify))
}

/// The largest event, as JSON text.
const MAX_EVENT: usize = 8 * 1024;
/// The longest an event waits for a disconnected token, in seconds.
const MAX_TTL: i64 = 604_800;

/// An event for a user's phones.
#[derive(ToSchema)]
#[schema(example = json!({
    "user": "alice_1", "family": "ring",
    "event": { "type": "1", "uid": "LANCENS-000123-ABCDE", "message": "Someone is at the door" }
}))]
#[allow(dead_code)]
pub struct NotifyRequest {
    pub user: NotifyUser,
    /// `ring` or `message`.
    #[schema(pattern = "^(ring|message)$")]
    pub family: String,
    pub event: NotifyEvent,
    /// Seconds the event waits for a disconnected phone: 0 to 604800
    /// (default 60 for ring, 86400 for message).
    #[schema(minimum = 0, maximum = 604800)]
    pub ttl: Option<i64>,
}

/// The user: an id (an integer) or a login name (a string: username, email
/// or phone).
#[derive(ToSchema, Serialize)]
#[serde(untagged)]
#[allow(dead_code)]
pub enum NotifyUser {
    Id(i64),
    Login(String),
}

/// The event, at most 8 KiB of JSON: `type` and `uid` at least; every
/// other key is passed on as sent; `id` and `family` are set by the
/// server, `time` added when absent.
#[derive(ToSchema, Serialize)]
#[allow(dead_code)]
pub struct NotifyEvent {
    /// The vendor's event type: `"1"` a doorbell call, `"0"` motion, `"2"`
    /// fingerprint unlock, …
    #[serde(rename = "type")]
    #[schema(min_length = 1, max_length = 16)]
    pub kind: String,
    /// The device's uid.
    #[schema(min_length = 1, max_length = 64)]
    pub uid: String,
}

/// What became of the event.
#[derive(Serialize, ToSchema)]
#[schema(example = json!({ "message": "success", "id": 42, "delivered": 1, "queued": 1, "skipped": 0 }))]
pub struct NotifyResponse {
    #[schema(pattern = "^success$")]
    message: &'static str,
    /// The recorded event's id.
    id: i64,
    /// Push-socket connections (on any instance) it was sent to.
    #[schema(minimum = 0)]
    delivered: u64,
    /// Push-socket tokens it waits for.
    #[schema(minimum = 0)]
    queued: u64,
    /// The user's tokens of the family that nothing reaches.
    #[schema(minimum = 0)]
    skipped: u64,
}

#[utoipa::path(
    post, path = "/v1/api/notify", tag = "delivery", operation_id = "notify",
    summary = "Send an event to every phone of a user that holds a token of the family",
    security(("bearer" = [])),
    request_body = NotifyRequest,
    responses(
        (status = 202, description = "Recorded, and on its way", body = NotifyResponse),
        (status = 400, response = BadRequest),
        (status = 401, description = "No key (`no token`), or a wrong one (`invalid token`)", body = ErrorBody),
        (status = 403, description = "No notify key is configured (`apikey error`)", body = ErrorBody),
        (status = 404, description = "No such user (`no data error`)", body = ErrorBody),
        (status = 408, response = RequestTimeout),
        (status = 413, response = PayloadTooLarge),
        (status = 503, response = Unavailable),
    )
)]
async fn notify(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: Result<JsonObject>,
) -> Result<(StatusCode, Json<NotifyResponse>)> {
    let Some(key) = state.config.notify_key.as_deref() else {
        return Err(Error::Forbidden("apikey"));
    };
    match bearer(&headers) {
        None => return Err(Error::NoToken),
        Some(sent) if !crate::secrets::constant_time_eq(sent, key) => {
            tracing::debug!("notify with a wrong key");
            return Err(Error::InvalidToken);
        }
        Some(_) => {}
    }
    let JsonObject(body) = body?;
    let user_id = match user(&body)? {
        User::Id(id) => state.store.user_exists(id).await?.then_some(id),
        User::Login(name) => state.store.find_credentials(&name).await?.map(|c| c.id),
    }
    .ok_or(Error::NoData)?;
    let family = match body.get("family") {
        None | Some(Value::Null) => return Err(Error::Undefined("family")),
        Some(Value::String(f)) if f == "ring" => Family::Ring,
        Some(Value::String(f)) if f == "message" => Family::Message,
        Some(_) => return Err(Error::Invalid("family")),
    };
    let event = event(&body)?;
    let ttl = match body.get("ttl") {
        None | Some(Value::Null) => match family {
            Family::Ring => 60,
            Family::Message => 86_400,
        },
        Some(value) => match crate::model::json_integer(value) {
            Some(ttl) if (0..=MAX_TTL).contains(&ttl) => ttl,
            Some(_) => return Err(Error::Invalid("ttl")),
            None => return Err(Error::Format("ttl")),
        },
    };
    let delivery = state.push.deliver(user_id, family, event, ttl).await?;
    tracing::info!(
        user_id,
        event_id = delivery.id,
        family = family.as_str(),
        delivered = delivery.delivered,
        queued = delivery.queued,
        skipped = delivery.skipped,
        "event sent"
    );
    Ok((
        StatusCode::ACCEPTED,
        Json(NotifyResponse {
            message: "success",
            id: delivery.id,
            delivered: delivery.delivered,
            queued: delivery.queued,
            skipped: delivery.skipped,
        }),
    ))
}

enum User {
    Id(i64),
    Login(String),
}

/// `user`: an integer is an id, a string a login name.
fn user(body: &Map<String, Value>) -> Result<User> {
    match body.get("user") {
        None | Some(Value::Null) => Err(Error::Undefined("user")),
        Some(Value::String(name)) => Ok(User::Login(name.clone())),
        Some(value) => crate::model::json_integer(value)
            .map(User::Id)
            .ok_or(Error::Format("user")),
    }
}

/// `event`: an object of at most 8 KiB with a `type` and a `uid`.
fn event(body: &Map<String, Value>) -> Result<Map<String, Value>> {
    let event = match body.get("event") {
        None | Some(Value::Null) => return Err(Error::Undefined("event")),
        Some(Value::Object(event)) => event,
        Some(_) => return Err(Error::Format("event")),
    };
    if Value::Object(event.clone()).to_string().len() > MAX_EVENT {
        return Err(Error::Length("event"));
    }
    for (field, longest) in [("type", 16), ("uid", 64)] {
        match event.get(field) {
            None | Some(Value::Null) => return Err(Error::Undefined(field)),
            Some(Value::String(s)) if (1..=longest).contains(&s.chars().count()) => {}
            Some(Value::String(_)) => return Err(Error::Invalid(field)),
            Some(_) => return Err(Error::Format(field)),
        }
    }
    Ok(event.clone())
}
