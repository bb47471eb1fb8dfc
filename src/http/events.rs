//! The event history: the vendor's routes that list a user's recorded
//! events, newest first, a page at a time.

use axum::extract::{Path, RawQuery, State};
use axum::Json;
use serde::Serialize;
use serde_json::{Map, Value};
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::error::{Error, Result};
use crate::http::extract::AuthUser;
use crate::http::schema::{BadRequest, Unauthorized, Unavailable};
use crate::http::AppState;
use crate::store::EventRecord;

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(all_events))
        .routes(routes!(device_events))
}

/// Rows a page holds unless `page_number` says otherwise, and at most.
const PAGE_ROWS: i64 = 20;
const MAX_PAGE_ROWS: i64 = 100;
/// The last page (far past any history; its first row is well within an
/// int64).
const MAX_PAGE: i64 = i32::MAX as i64;

/// A recorded event, with the vendor's defaults for what it did not carry.
#[derive(Serialize, ToSchema)]
pub struct EventRow {
    /// The event's id.
    id: i64,
    /// The vendor's event type (`"1"` a doorbell call, …).
    #[serde(rename = "type")]
    kind: String,
    /// The device's uid.
    uid: String,
    /// The event's own `time`, else when it was recorded (unix seconds).
    time: i64,
    event_guid: String,
    img: String,
    width: i64,
    height: i64,
    starttime: i64,
    endtime: i64,
    video_status: i64,
}

impl EventRow {
    fn of(record: EventRecord) -> Self {
        let body = match serde_json::from_str(&record.body) {
            Ok(Value::Object(body)) => body,
            _ => Map::new(),
        };
        let text = |key: &str| {
            body.get(key)
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_owned()
        };
        let number = |key: &str, default: i64| {
            body.get(key)
                .and_then(crate::model::json_integer)
                .unwrap_or(default)
        };
        Self {
            id: record.id,
            kind: record.kind,
            uid: record.uid,
            time: record.time,
            event_guid: text("event_guid"),
            img: text("img"),
            width: number("width", 1920),
            height: number("height", 1072),
            starttime: number("starttime", 0),
            endtime: number("endtime", 0),
            video_status: number("video_status", 0),
        }
    }
}

#[utoipa::path(
    get, path = "/v1/api/user/deviceses/event_record", tag = "delivery", operation_id = "list_events",
    summary = "The caller's recorded events of every device, newest first",
    security(("token" = []), ("bearer" = [])),
    params(
        ("page" = Option<i64>, Query, minimum = 0, maximum = 2147483647, description = "The page, from 0 (default 0)"),
        ("page_number" = Option<i64>, Query, minimum = 1, maximum = 100, description = "Rows a page (default 20)"),
    ),
    responses(
        (status = 200, description = "A page of events", body = Vec<EventRow>),
        (status = 400, response = BadRequest),
        (status = 401, response = Unauthorized),
        (status = 503, response = Unavailable),
    )
)]
async fn all_events(
    State(state): State<AppState>,
    AuthUser(user): AuthUser,
    RawQuery(query): RawQuery,
) -> Result<Json<Vec<EventRow>>> {
    page(&state, user.user_id, None, query.as_deref()).await
}

#[utoipa::path(
    get, path = "/v1/api/user/event_record/{uid}/devicees", tag = "delivery", operation_id = "list_device_events",
    summary = "The caller's recorded events of one device, newest first",
    security(("token" = []), ("bearer" = [])),
    params(
        ("uid" = String, Path, description = "The device's uid"),
        ("page" = Option<i64>, Query, minimum = 0, maximum = 2147483647, description = "The page, from 0 (default 0)"),
        ("page_number" = Option<i64>, Query, minimum = 1, maximum = 100, description = "Rows a page (default 20)"),
    ),
    responses(
        (status = 200, description = "A page of the device's events", body = Vec<EventRow>),
        (status = 400, response = BadRequest),
        (status = 401, response = Unauthorized),
        (status = 503, response = Unavailable),
    )
)]
async fn device_events(
    State(state): State<AppState>,
    AuthUser(user): AuthUser,
    Path(uid): Path<String>,
    RawQuery(query): RawQuery,
) -> Result<Json<Vec<EventRow>>> {
    page(&state, user.user_id, Some(&uid), query.as_deref()).await
}

async fn page(
    state: &AppState,
    user_id: i64,
    uid: Option<&str>,
    query: Option<&str>,
) -> Result<Json<Vec<EventRow>>> {
    let page = parameter(query, "page", 0, 0, MAX_PAGE)?;
    let rows = parameter(query, "page_number", PAGE_ROWS, 1, MAX_PAGE_ROWS)?;
    let offset = page * rows;
    let records = state.store.events(user_id, uid, offset, rows).await?;
    Ok(Json(records.into_iter().map(EventRow::of).collect()))
}

/// The query parameter `name`: `default` when absent, else a decimal
/// integer (`XXX format error`) from `low` to `high` (`XXX error`).
fn parameter(
    query: Option<&str>,
    name: &'static str,
    default: i64,
    low: i64,
    high: i64,
) -> Result<i64> {
    let value = query
        .unwrap_or_default()
        .split('&')
        .filter_map(|pair| pair.split_once('=').or(Some((pair, ""))))
        .find(|(key, _)| *key == name)
        .map(|(_, value)| value);
    let Some(value) = value else {
        return Ok(default);
    };
    let number: i64 = value.trim().parse().map_err(|_| Error::Format(name))?;
    if (low..=high).contains(&number) {
        Ok(number)
    } else {
        Err(Error::Invalid(name))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn page_parameters_default_and_refuse_with_the_vendor_errors() {
        let page = |q: &str| parameter(Some(q), "page", 0, 0, MAX_PAGE).map_err(|e| e.to_string());
        assert_eq!(page(""), Ok(0));
        assert_eq!(page("page=3&page_number=5"), Ok(3));
        assert_eq!(page("page_number=5&page=007"), Ok(7));
        assert_eq!(page("page=x"), Err("page format error".into()));
        assert_eq!(page("page="), Err("page format error".into()));
        assert_eq!(page("page=1.5"), Err("page format error".into()));
        assert_eq!(page("page=-1"), Err("page error".into()));
        assert_eq!(page("page=2147483647"), Ok(MAX_PAGE));
        assert_eq!(page("page=2147483648"), Err("page error".into()));
        let rows =
            |q: &str| parameter(Some(q), "page_number", 20, 1, 100).map_err(|e| e.to_string());
        assert_eq!(rows("page=1"), Ok(20));
        assert_eq!(rows("page_number=100"), Ok(100));
        assert_eq!(rows("page_number=0"), Err("page_number error".into()));
        assert_eq!(rows("page_number=101"), Err("page_number error".into()));
    }
}
