//! Push-token rows and bodies, and the checks the push-token tests share.

use axum::http::StatusCode;
use serde_json::Value;

use super::api::{registration, with, FAMILIES};
use super::TestApp;

/// The fields of a push-token body, in the order the API checks them.
pub const FIELDS: [&str; 9] = [
    "push_token",
    "language",
    "dev",
    "bundleid",
    "os",
    "os_token",
    "push_platform",
    "phone_model",
    "id",
];

/// The keys of a listed row, exactly: the body's fields (the `id` is the
/// owner's), its serial and its times.
pub fn row_keys() -> Vec<&'static str> {
    let mut keys = FIELDS.to_vec();
    keys.extend(["serial", "created_at", "updated_at"]);
    keys
}

/// The bundle id of a row when neither the body nor the header gives one.
pub const DEFAULT_BUNDLE_ID: &str = "com.lancens.wxdoorbell";

/// A phone model as the vendor's Android app sends it.
pub const VENDOR_PHONE_MODEL: &str = "phone:Xiaomi_Mi_10/App:钉钉智能_1.0.0/Android_11";

/// `{base}/{serial}`.
pub fn at(base: &str, serial: impl std::fmt::Display) -> String {
    format!("{base}/{serial}")
}

/// `PUT {base}/{serial}` of [`registration(n)`](registration) by the caller
/// whose session is `token`, asserting that it made a new row (201).
pub async fn put_new_row(
    app: &TestApp,
    base: &str,
    serial: impl std::fmt::Display,
    token: &str,
    n: u32,
) {
    app.put(&at(base, serial), token, registration(n))
        .await
        .assert_success(StatusCode::CREATED);
}

/// The caller's rows of a family, asserting a 200 JSON array.
pub async fn rows(app: &TestApp, base: &str, token: &str) -> Vec<Value> {
    let reply = app.get(base, token).await;
    assert_eq!(reply.status, StatusCode::OK, "GET {base}: {}", reply.body);
    reply
        .body
        .as_array()
        .unwrap_or_else(|| panic!("GET {base} is not an array: {}", reply.body))
        .clone()
}

/// The caller's `(serial, push_token)` pairs of a family, in list order.
pub async fn held(app: &TestApp, base: &str, token: &str) -> Vec<(i64, String)> {
    rows(app, base, token)
        .await
        .iter()
        .map(|row| {
            (
                row["serial"].as_i64().expect("serial"),
                row["push_token"].as_str().expect("push_token").to_owned(),
            )
        })
        .collect()
}

/// A reply without its `message`: the row it carries.
pub fn row_of(reply_body: &Value) -> Value {
    let mut row = reply_body.clone();
    row.as_object_mut().expect("object").remove("message");
    row
}

/// The field an error message names.
pub fn field_of(message: &str) -> &str {
    match message.strip_prefix("undefined ") {
        Some(field) => field,
        None => message.split(' ').next().unwrap_or(message),
    }
}

/// Asserts a vendor error with context: this status, this message, and no
/// keys but `message` and (optionally) `field` naming the offending field.
#[track_caller]
pub fn assert_vendor_error(
    what: &str,
    status: StatusCode,
    body: &Value,
    want: StatusCode,
    msg: &str,
) {
    assert_eq!(status, want, "{what}: {body}");
    assert_eq!(body["message"], msg, "{what}: {body}");
    let object = body.as_object().expect("error body is an object");
    for key in object.keys() {
        assert!(
            key == "message" || key == "field",
            "{what}: extra key {key}: {body}"
        );
    }
    if let Some(field) = object.get("field") {
        assert_eq!(field, field_of(msg), "{what}: {body}");
    }
}

/// Sends `body` by `PUT {base}/1` and by `POST {base}` on both families and
/// expects this error from each, with the caller's rows unchanged.
pub async fn expect_rejected(
    app: &TestApp,
    token: &str,
    body: &Value,
    status: StatusCode,
    msg: &str,
) {
    for base in FAMILIES {
        let before = rows(app, base, token).await;
        let reply = app.put(&at(base, 1), token, body.clone()).await;
        assert_vendor_error(
            &format!("PUT {base}/1 {body}"),
            reply.status,
            &reply.body,
            status,
            msg,
        );
        let reply = app.post(base, token, body.clone()).await;
        assert_vendor_error(
            &format!("POST {base} {body}"),
            reply.status,
            &reply.body,
            status,
            msg,
        );
        assert_eq!(rows(app, base, token).await, before, "{body} changed rows");
    }
}

/// Sends `body` by `PUT {base}/1` on both families and expects success; the
/// stored row (as listed) is returned per family after checking that it is
/// what the reply showed.
pub async fn expect_accepted(app: &TestApp, token: &str, body: &Value) -> Vec<Value> {
    let mut stored = Vec::new();
    for base in FAMILIES {
        let reply = app.put(&at(base, 1), token, body.clone()).await;
        assert!(
            reply.status == StatusCode::CREATED || reply.status == StatusCode::OK,
            "PUT {base}/1 {body}: {} {}",
            reply.status,
            reply.body
        );
        assert_eq!(reply.body["message"], "success", "PUT {base}/1 {body}");
        let listed = rows(app, base, token).await;
        let row = listed
            .iter()
            .find(|r| r["serial"] == 1)
            .expect("row at serial 1")
            .clone();
        assert_eq!(row_of(&reply.body), row, "PUT {base}/1 {body}");
        stored.push(row);
    }
    stored
}

/// One field of a push-token body, set on a valid registration and sent by
/// the caller whose session is `token`.
pub struct Field<'a> {
    app: &'a TestApp,
    token: &'a str,
    name: &'a str,
}

impl<'a> Field<'a> {
    pub fn new(app: &'a TestApp, token: &'a str, name: &'a str) -> Self {
        Field { app, token, name }
    }

    /// Each value is refused by `PUT` and `POST` on both families with this
    /// status and message, changing nothing.
    pub async fn refused<V: Into<Value>>(
        &self,
        status: StatusCode,
        message: &str,
        values: impl IntoIterator<Item = V>,
    ) {
        for value in values {
            let body = with(registration(1), self.name, value.into());
            expect_rejected(self.app, self.token, &body, status, message).await;
        }
    }

    /// Each value is accepted by `PUT` on both families and stored as sent.
    pub async fn stored_as_sent<V: Into<Value>>(&self, values: impl IntoIterator<Item = V>) {
        for value in values {
            let value = value.into();
            let body = with(registration(1), self.name, value.clone());
            for row in expect_accepted(self.app, self.token, &body).await {
                assert_eq!(row[self.name], value, "{} is stored as sent", self.name);
            }
        }
    }
}
