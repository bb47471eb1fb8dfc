//! `POST /v1/api/notify`: whatever knows that the doorbell rang sends an
//! event to a user, with the operator's key.

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::Json;
use serde::Serialize;
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::error::{Error, Result};
use crate::http::extract::{bearer, JsonObject};
use crate::http::schema::{BadRequest, ErrorBody, PayloadTooLarge, RequestTimeout, Unavailable};
use crate::http::AppState;
use crate::model::{Notify, NotifyRequest, NotifyUser};
use crate::providers::Tallies;
use crate::store::UserKey;

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(notify))
}

/// What became of the event.
#[derive(Serialize, ToSchema)]
#[schema(example = json!({
    "message": "success", "id": 42, "delivered": 1, "queued": 1, "skipped": 0,
    "providers": {
        "apns": { "sent": 0, "failed": 0, "pruned": 0 },
        "fcm": { "sent": 0, "failed": 0, "pruned": 0 },
        "huawei": { "sent": 0, "failed": 0, "pruned": 0 },
        "xiaomi": { "sent": 0, "failed": 0, "pruned": 0 }
    }
}))]
pub struct NotifyResponse {
    #[schema(pattern = "^success$")]
    message: &'static str,
    /// The recorded event's id.
    id: i64,
    /// Push-socket connections (on any instance) it was sent to, and
    /// provider pushes sent.
    #[schema(minimum = 0)]
    delivered: u64,
    /// Push-socket tokens it waits for, and provider pushes still being
    /// tried after 5 s.
    #[schema(minimum = 0)]
    queued: u64,
    /// The user's tokens of the family that nothing reaches: a
    /// disconnected socket token with ttl 0, an unknown `push_platform`, a
    /// provider that is not configured.
    #[schema(minimum = 0)]
    skipped: u64,
    /// Each provider's pushes: sent, failed, and pruned (the provider
    /// called the token dead; its row is deleted).
    providers: Tallies,
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
    let user = Notify::user(&body)?;
    let key = match &user {
        NotifyUser::Id(id) => UserKey::Id(*id),
        NotifyUser::Login(name) => UserKey::Login(name),
    };
    let Notify {
        family, event, ttl, ..
    } = match Notify::parse(&body) {
        Ok(notify) => notify,
        // A user that does not exist is reported before the rest.
        Err(e) => {
            let exists = match key {
                UserKey::Id(id) => state.store.user_exists(id).await?,
                UserKey::Login(name) => state.store.find_credentials(name).await?.is_some(),
            };
            return Err(if exists { e } else { Error::NoData });
        }
    };
    // The user is looked up with their tokens, in one read.
    let delivery = state
        .push
        .deliver(key, family, event, ttl)
        .await?
        .ok_or(Error::NoData)?;
    tracing::info!(
        user_id = delivery.user_id,
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
            providers: delivery.providers,
        }),
    ))
}
