//! Both push-token families: listing, registration, update, delete, the
//! one-token-one-row rule and isolation between users.

use axum::http::{Method, StatusCode};
use serde_json::{json, Value};

use crate::support::api::{push_token, registration, with, FAMILIES, MESSAGE, RING};
use crate::support::{every_backend, TestApp};

/// The keys of a row, exactly.
const ROW_KEYS: [&str; 12] = [
    "id",
    "serial",
    "push_token",
    "language",
    "dev",
    "bundleid",
    "os",
    "os_token",
    "push_platform",
    "phone_model",
    "created_at",
    "updated_at",
];

const DEFAULT_BUNDLE_ID: &str = "com.lancens.wxdoorbell";
const VENDOR_PHONE_MODEL: &str = "phone:Xiaomi_Mi_10/App:钉钉智能_1.0.0/Android_11";

// ---------------------------------------------------------------- helpers

/// `{base}/{serial}`.
fn at(base: &str, serial: impl std::fmt::Display) -> String {
    format!("{base}/{serial}")
}

/// The caller's rows of a family, asserting a 200 JSON array.
async fn rows(app: &TestApp, base: &str, token: &str) -> Vec<Value> {
    let reply = app.get(base, token).await;
    assert_eq!(reply.status, StatusCode::OK, "GET {base}: {}", reply.body);
    reply
        .body
        .as_array()
        .unwrap_or_else(|| panic!("GET {base} is not an array: {}", reply.body))
        .clone()
}

/// The caller's `(serial, push_token)` pairs of a family, in list order.
async fn held(app: &TestApp, base: &str, token: &str) -> Vec<(i64, String)> {
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
fn row_of(reply_body: &Value) -> Value {
    let mut row = reply_body.clone();
    row.as_object_mut().expect("object").remove("message");
    row
}

/// The field an error message names.
fn field_of(message: &str) -> &str {
    match message.strip_prefix("undefined ") {
        Some(field) => field,
        None => message.split(' ').next().unwrap_or(message),
    }
}

/// Asserts a vendor error with context: this status, this message, and no
/// keys but `message` and (optionally) `field` naming the offending field.
#[track_caller]
fn assert_vendor_error(what: &str, status: StatusCode, body: &Value, want: StatusCode, msg: &str) {
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
async fn expect_rejected(app: &TestApp, token: &str, body: &Value, status: StatusCode, msg: &str) {
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
async fn expect_accepted(app: &TestApp, token: &str, body: &Value) -> Vec<Value> {
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

// ---------------------------------------------------------------- GET

#[every_backend]
async fn post_creates_row_at_serial_one_with_defaults(app: TestApp) {
    let user = app.user("alice_1").await;
    for base in FAMILIES {
        let reply = app.post(base, &user.token, registration(1)).await;
        reply.assert_success(StatusCode::CREATED);
        assert_eq!(reply.body["serial"], 1);
        assert_eq!(reply.body["id"], user.id);
        assert_eq!(reply.body["push_token"], push_token(1));
        assert_eq!(reply.body["dev"], 0);
        assert_eq!(reply.body["bundleid"], "com.lancens.wxdoorbell");
        for field in ["os", "os_token", "push_platform", "phone_model"] {
            assert_eq!(reply.body[field], "", "{field}");
        }
    }
}

#[every_backend]
async fn get_lists_an_empty_array_for_a_new_user(app: TestApp) {
    let user = app.user("alice_1").await;
    for base in FAMILIES {
        let reply = app.get(base, &user.token).await;
        assert_eq!(reply.status, StatusCode::OK, "{}", reply.body);
        assert_eq!(reply.body, json!([]));
    }
}

#[every_backend]
async fn get_lists_rows_ordered_by_serial(app: TestApp) {
    let user = app.user("alice_1").await;
    for base in FAMILIES {
        for serial in [7u32, 2, 5] {
            app.put(&at(base, serial), &user.token, registration(serial))
                .await
                .assert_success(StatusCode::CREATED);
        }
        assert_eq!(
            held(&app, base, &user.token).await,
            vec![(2, push_token(2)), (5, push_token(5)), (7, push_token(7))]
        );
    }
}

#[every_backend]
async fn get_rows_have_exactly_the_vendor_keys(app: TestApp) {
    let user = app.user("alice_1").await;
    for base in FAMILIES {
        let before = pushtoken::unix_now();
        app.put(&at(base, 3), &user.token, registration(3))
            .await
            .assert_success(StatusCode::CREATED);
        let after = pushtoken::unix_now();
        let listed = rows(&app, base, &user.token).await;
        assert_eq!(listed.len(), 1);
        let row = listed[0].as_object().expect("row is an object");
        let mut keys: Vec<&str> = row.keys().map(String::as_str).collect();
        keys.sort_unstable();
        let mut want = ROW_KEYS.to_vec();
        want.sort_unstable();
        assert_eq!(keys, want, "{base}");
        assert_eq!(row["id"], user.id);
        assert_eq!(row["serial"], 3);
        assert_eq!(row["push_token"], push_token(3));
        assert_eq!(row["language"], "en");
        assert_eq!(row["dev"], 0);
        assert_eq!(row["bundleid"], DEFAULT_BUNDLE_ID);
        for field in ["os", "os_token", "push_platform", "phone_model"] {
            assert_eq!(row[field], "", "{base} {field} must be \"\", never null");
        }
        for field in ["created_at", "updated_at"] {
            let t = row[field].as_i64().unwrap_or_else(|| panic!("{field}"));
            assert!((before..=after).contains(&t), "{field} {t} is unix seconds");
        }
    }
}

#[every_backend]
async fn families_hold_separate_data(app: TestApp) {
    let user = app.user("alice_1").await;
    app.put(&at(RING, 1), &user.token, registration(1))
        .await
        .assert_success(StatusCode::CREATED);
    assert_eq!(held(&app, MESSAGE, &user.token).await, vec![]);
    // The same serial in the other family is a row of its own (a create).
    app.put(&at(MESSAGE, 1), &user.token, registration(2))
        .await
        .assert_success(StatusCode::CREATED);
    app.post(MESSAGE, &user.token, registration(3))
        .await
        .assert_success(StatusCode::CREATED);
    assert_eq!(
        held(&app, RING, &user.token).await,
        vec![(1, push_token(1))]
    );
    assert_eq!(
        held(&app, MESSAGE, &user.token).await,
        vec![(1, push_token(2)), (2, push_token(3))]
    );
    // Deleting in one family leaves the other.
    app.delete(&at(RING, 1), &user.token)
        .await
        .assert_success(StatusCode::OK);
    assert_eq!(held(&app, MESSAGE, &user.token).await.len(), 2);
    let reply = app.delete(MESSAGE, &user.token).await;
    assert_eq!(reply.body, json!({"message": "success", "deleted": 2}));
    app.put(&at(RING, 4), &user.token, registration(4))
        .await
        .assert_success(StatusCode::CREATED);
    let reply = app.delete(MESSAGE, &user.token).await;
    assert_eq!(reply.body, json!({"message": "success", "deleted": 0}));
    assert_eq!(
        held(&app, RING, &user.token).await,
        vec![(4, push_token(4))]
    );
}

#[every_backend]
async fn push_token_routes_require_a_session(app: TestApp) {
    let user = app.user("alice_1").await;
    for base in FAMILIES {
        app.put(&at(base, 1), &user.token, registration(1))
            .await
            .assert_success(StatusCode::CREATED);
        let routes = [
            (Method::GET, base.to_owned(), None),
            (Method::POST, base.to_owned(), Some(registration(2))),
            (Method::DELETE, base.to_owned(), None),
            (Method::PUT, at(base, 1), Some(registration(3))),
            (Method::DELETE, at(base, 1), None),
        ];
        for (method, uri, body) in routes {
            let reply = app.request(method.clone(), &uri, &[], body.clone()).await;
            reply.assert_error(StatusCode::UNAUTHORIZED, "no token");
            let reply = app
                .request(method.clone(), &uri, &[("token", "not-a-session")], body)
                .await;
            reply.assert_error(StatusCode::UNAUTHORIZED, "invalid token");
        }
        assert_eq!(
            held(&app, base, &user.token).await,
            vec![(1, push_token(1))]
        );
    }
}

#[every_backend]
async fn push_token_routes_answer_405_for_wrong_methods(app: TestApp) {
    let user = app.user("alice_1").await;
    for base in FAMILIES {
        for (method, uri) in [
            (Method::PUT, base.to_owned()),
            (Method::PATCH, base.to_owned()),
            (Method::GET, at(base, 1)),
            (Method::POST, at(base, 1)),
        ] {
            let reply = app
                .request(
                    method,
                    &uri,
                    &[("token", &user.token)],
                    Some(registration(1)),
                )
                .await;
            reply.assert_error(StatusCode::METHOD_NOT_ALLOWED, "method not allowed");
        }
        assert_eq!(held(&app, base, &user.token).await, vec![]);
    }
}

// ---------------------------------------------------------------- POST

#[every_backend]
async fn post_serial_is_one_more_than_the_callers_highest(app: TestApp) {
    let alice = app.user("alice_1").await;
    let bob = app.user("bob_22").await;
    for base in FAMILIES {
        let reply = app.post(base, &alice.token, registration(1)).await;
        reply.assert_success(StatusCode::CREATED);
        assert_eq!(reply.body["serial"], 1);
        let reply = app.post(base, &alice.token, registration(2)).await;
        assert_eq!(reply.body["serial"], 2);
        app.put(&at(base, 10), &alice.token, registration(10))
            .await
            .assert_success(StatusCode::CREATED);
        let reply = app.post(base, &alice.token, registration(11)).await;
        reply.assert_success(StatusCode::CREATED);
        assert_eq!(reply.body["serial"], 11);
        // The highest is what counts, not the count of rows nor a gap.
        app.delete(&at(base, 11), &alice.token)
            .await
            .assert_success(StatusCode::OK);
        let reply = app.post(base, &alice.token, registration(12)).await;
        assert_eq!(reply.body["serial"], 11);
        // Another user's serials do not count.
        let reply = app.post(base, &bob.token, registration(20)).await;
        reply.assert_success(StatusCode::CREATED);
        assert_eq!(reply.body["serial"], 1);
        assert_eq!(reply.body["id"], bob.id);
    }
}

#[every_backend]
async fn post_serial_counts_only_that_family(app: TestApp) {
    let user = app.user("alice_1").await;
    app.put(&at(RING, 40), &user.token, registration(1))
        .await
        .assert_success(StatusCode::CREATED);
    let reply = app.post(MESSAGE, &user.token, registration(2)).await;
    reply.assert_success(StatusCode::CREATED);
    assert_eq!(reply.body["serial"], 1);
    let reply = app.post(RING, &user.token, registration(3)).await;
    assert_eq!(reply.body["serial"], 41);
}

#[every_backend]
async fn post_after_serial_zero_only_is_serial_one(app: TestApp) {
    let user = app.user("alice_1").await;
    for base in FAMILIES {
        app.put(&at(base, 0), &user.token, registration(1))
            .await
            .assert_success(StatusCode::CREATED);
        let reply = app.post(base, &user.token, registration(2)).await;
        reply.assert_success(StatusCode::CREATED);
        assert_eq!(reply.body["serial"], 1);
    }
}

#[every_backend]
async fn post_answers_success_with_the_stored_row(app: TestApp) {
    let user = app.user("alice_1").await;
    for base in FAMILIES {
        let body = json!({
            "push_token": push_token(9), "language": "zh-Hans", "dev": 1,
            "bundleid": "com.example.app", "os": "Huawei", "os_token": "abc:DEF-123_x",
            "push_platform": "HUAWEI", "phone_model": "xiaomi6",
        });
        let reply = app.post(base, &user.token, body.clone()).await;
        reply.assert_success(StatusCode::CREATED);
        let row = row_of(&reply.body);
        for (key, value) in body.as_object().unwrap() {
            assert_eq!(&row[key], value, "{base} {key}");
        }
        assert_eq!(rows(&app, base, &user.token).await, vec![row]);
    }
}

#[every_backend]
async fn post_of_a_token_already_held_updates_that_row_with_200(app: TestApp) {
    let user = app.user("alice_1").await;
    for base in FAMILIES {
        let created = app
            .put(
                &at(base, 4),
                &user.token,
                json!({"push_token": push_token(1), "language": "en", "os": "Android", "dev": 1}),
            )
            .await;
        created.assert_success(StatusCode::CREATED);
        app.put(&at(base, 8), &user.token, registration(2))
            .await
            .assert_success(StatusCode::CREATED);
        let reply = app
            .post(
                base,
                &user.token,
                json!({"push_token": push_token(1), "language": "fr", "push_platform": "FCM"}),
            )
            .await;
        reply.assert_success(StatusCode::OK);
        assert_eq!(reply.body["serial"], 4);
        assert_eq!(reply.body["language"], "fr");
        assert_eq!(reply.body["push_platform"], "FCM");
        // An update: absent optional fields keep their stored values.
        assert_eq!(reply.body["os"], "Android");
        assert_eq!(reply.body["dev"], 1);
        assert_eq!(reply.body["created_at"], created.body["created_at"]);
        assert_eq!(
            held(&app, base, &user.token).await,
            vec![(4, push_token(1)), (8, push_token(2))]
        );
    }
}

#[every_backend]
async fn post_accepts_the_vendor_android_client_unchanged(app: TestApp) {
    let user = app.user("alice_1").await;
    for (n, base) in (1..).zip(FAMILIES) {
        let body = json!({
            "push_token": push_token(n),
            "push_platform": "android",
            "language": "zh",
            "os_token": "",
            "os": "Android",
            "os_push_version": 1,
            "bundleid": "com.lancens.wxdoorbell",
            "phone_model": VENDOR_PHONE_MODEL,
        });
        let reply = app
            .request(
                Method::POST,
                base,
                &[
                    ("Token", &user.token),
                    ("bundleid", "com.lancens.wxdoorbell"),
                    ("Content-Type", "application/json; charset=UTF-8"),
                ],
                Some(body),
            )
            .await;
        reply.assert_success(StatusCode::CREATED);
        assert_eq!(reply.body["serial"], 1);
        assert_eq!(reply.body["id"], user.id);
        assert!(
            reply.body.get("os_push_version").is_none(),
            "{}",
            reply.body
        );
        let listed = rows(&app, base, &user.token).await;
        assert_eq!(listed, vec![row_of(&reply.body)]);
        let row = &listed[0];
        assert_eq!(row["push_token"], push_token(n));
        assert_eq!(row["push_platform"], "android");
        assert_eq!(row["language"], "zh");
        assert_eq!(row["os_token"], "");
        assert_eq!(row["os"], "Android");
        assert_eq!(row["bundleid"], "com.lancens.wxdoorbell");
        assert_eq!(row["phone_model"], VENDOR_PHONE_MODEL);
        assert_eq!(row["dev"], 0);
    }
}

#[every_backend]
async fn post_accepts_a_bearer_token_and_no_content_type(app: TestApp) {
    let user = app.user("alice_1").await;
    let bearer = format!("Bearer {}", user.token);
    for (n, base) in (1..).zip(FAMILIES) {
        let body = json!({
            "push_token": push_token(n),
            "push_platform": "android",
            "language": "zh",
            "os_token": "",
            "os": "Android",
            "os_push_version": 1,
            "bundleid": "com.lancens.wxdoorbell",
            "phone_model": VENDOR_PHONE_MODEL,
        });
        let reply = app
            .request(
                Method::POST,
                base,
                &[("Authorization", &bearer)],
                Some(body),
            )
            .await;
        reply.assert_success(StatusCode::CREATED);
        assert_eq!(reply.body["id"], user.id);
        assert_eq!(reply.body["phone_model"], VENDOR_PHONE_MODEL);
        let reply = app
            .request(Method::GET, base, &[("Authorization", &bearer)], None)
            .await;
        assert_eq!(reply.status, StatusCode::OK, "{}", reply.body);
        assert_eq!(reply.body.as_array().map(Vec::len), Some(1));
        // The other routes take the bearer token too.
        let reply = app
            .request(
                Method::PUT,
                &at(base, 1),
                &[("Authorization", &bearer)],
                Some(json!({"push_token": push_token(n), "language": "en"})),
            )
            .await;
        reply.assert_success(StatusCode::OK);
        assert_eq!(reply.body["language"], "en");
        let reply = app
            .request(
                Method::DELETE,
                &at(base, 1),
                &[("Authorization", &bearer)],
                None,
            )
            .await;
        reply.assert_success(StatusCode::OK);
        assert_eq!(held(&app, base, &user.token).await, vec![]);
    }
}

// ---------------------------------------------------------------- PUT

#[every_backend]
async fn put_creates_with_201_then_updates_with_200(app: TestApp) {
    let user = app.user("alice_1").await;
    for base in FAMILIES {
        let reply = app.put(&at(base, 3), &user.token, registration(1)).await;
        reply.assert_success(StatusCode::CREATED);
        assert_eq!(reply.body["serial"], 3);
        assert_eq!(reply.body["id"], user.id);
        let created = row_of(&reply.body);
        assert_eq!(rows(&app, base, &user.token).await, vec![created.clone()]);
        let reply = app
            .put(
                &at(base, 3),
                &user.token,
                json!({"push_token": push_token(2), "language": "de"}),
            )
            .await;
        reply.assert_success(StatusCode::OK);
        assert_eq!(reply.body["serial"], 3);
        assert_eq!(reply.body["push_token"], push_token(2));
        assert_eq!(reply.body["language"], "de");
        assert_eq!(reply.body["created_at"], created["created_at"]);
        assert!(reply.body["updated_at"].as_i64() >= created["updated_at"].as_i64());
        assert_eq!(
            rows(&app, base, &user.token).await,
            vec![row_of(&reply.body)]
        );
        // The same body again is still an update.
        let reply = app
            .put(
                &at(base, 3),
                &user.token,
                json!({"push_token": push_token(2), "language": "de"}),
            )
            .await;
        reply.assert_success(StatusCode::OK);
        assert_eq!(
            held(&app, base, &user.token).await,
            vec![(3, push_token(2))]
        );
    }
}

#[every_backend]
async fn put_update_keeps_absent_optional_fields_and_changes_present_ones(app: TestApp) {
    let user = app.user("alice_1").await;
    let full = json!({
        "push_token": push_token(1), "language": "en", "dev": 1,
        "bundleid": "com.example.first", "os": "Huawei", "os_token": "first-os-token",
        "push_platform": "HUAWEI", "phone_model": "first model",
    });
    for base in FAMILIES {
        app.put(&at(base, 5), &user.token, full.clone())
            .await
            .assert_success(StatusCode::CREATED);
        // Only os and push_platform change; the header must not matter either.
        let reply = app
            .request(
                Method::PUT,
                &at(base, 5),
                &[("token", &user.token), ("bundleid", "com.example.header")],
                Some(json!({
                    "push_token": push_token(1), "language": "fr",
                    "os": "Xiaomi", "push_platform": "XIAOMI",
                })),
            )
            .await;
        reply.assert_success(StatusCode::OK);
        let want = json!({
            "push_token": push_token(1), "language": "fr", "dev": 1,
            "bundleid": "com.example.first", "os": "Xiaomi", "os_token": "first-os-token",
            "push_platform": "XIAOMI", "phone_model": "first model",
        });
        let listed = rows(&app, base, &user.token).await;
        assert_eq!(listed, vec![row_of(&reply.body)]);
        for (key, value) in want.as_object().unwrap() {
            assert_eq!(&listed[0][key], value, "{base} {key}");
        }
        // Present values change, including to "" and 0.
        let reply = app
            .put(
                &at(base, 5),
                &user.token,
                json!({
                    "push_token": push_token(1), "language": "fr", "dev": 0,
                    "bundleid": "a", "os": "", "os_token": "", "push_platform": "",
                    "phone_model": "",
                }),
            )
            .await;
        reply.assert_success(StatusCode::OK);
        let row = &rows(&app, base, &user.token).await[0];
        assert_eq!(row["dev"], 0);
        assert_eq!(row["bundleid"], "a");
        for field in ["os", "os_token", "push_platform", "phone_model"] {
            assert_eq!(row[field], "", "{base} {field}");
        }
    }
}

#[every_backend]
async fn put_create_gives_absent_optional_fields_their_defaults(app: TestApp) {
    let user = app.user("alice_1").await;
    for base in FAMILIES {
        let reply = app
            .put(
                &at(base, 2),
                &user.token,
                json!({"push_token": push_token(2), "language": "en_US"}),
            )
            .await;
        reply.assert_success(StatusCode::CREATED);
        let row = &rows(&app, base, &user.token).await[0];
        assert_eq!(row["language"], "en_US");
        assert_eq!(row["dev"], 0);
        assert_eq!(row["bundleid"], DEFAULT_BUNDLE_ID);
        for field in ["os", "os_token", "push_platform", "phone_model"] {
            assert_eq!(row[field], "", "{base} {field}");
        }
    }
}

#[every_backend]
async fn put_requires_push_token_and_language_on_create_and_update(app: TestApp) {
    let user = app.user("alice_1").await;
    // Nothing stored: a create.
    expect_rejected(
        &app,
        &user.token,
        &json!({"language": "en"}),
        StatusCode::BAD_REQUEST,
        "undefined push_token",
    )
    .await;
    expect_rejected(
        &app,
        &user.token,
        &json!({"push_token": push_token(1)}),
        StatusCode::BAD_REQUEST,
        "undefined language",
    )
    .await;
    expect_rejected(
        &app,
        &user.token,
        &json!({}),
        StatusCode::BAD_REQUEST,
        "undefined push_token",
    )
    .await;
    // A row at serial 1 with that token: an update needs them too.
    for base in FAMILIES {
        app.put(&at(base, 1), &user.token, registration(1))
            .await
            .assert_success(StatusCode::CREATED);
    }
    expect_rejected(
        &app,
        &user.token,
        &json!({"language": "fr", "os": "Android"}),
        StatusCode::BAD_REQUEST,
        "undefined push_token",
    )
    .await;
    expect_rejected(
        &app,
        &user.token,
        &json!({"push_token": push_token(1), "os": "Android"}),
        StatusCode::BAD_REQUEST,
        "undefined language",
    )
    .await;
}

#[every_backend]
async fn put_accepts_serial_zero_and_leading_zeros(app: TestApp) {
    let user = app.user("alice_1").await;
    for base in FAMILIES {
        let reply = app.put(&at(base, "0"), &user.token, registration(1)).await;
        reply.assert_success(StatusCode::CREATED);
        assert_eq!(reply.body["serial"], 0);
        let reply = app
            .put(&at(base, "007"), &user.token, registration(7))
            .await;
        reply.assert_success(StatusCode::CREATED);
        assert_eq!(reply.body["serial"], 7);
        // `07` is the same row as `007`.
        let reply = app.put(&at(base, "07"), &user.token, registration(7)).await;
        reply.assert_success(StatusCode::OK);
        assert_eq!(reply.body["serial"], 7);
        let reply = app
            .put(&at(base, "000"), &user.token, registration(1))
            .await;
        reply.assert_success(StatusCode::OK);
        assert_eq!(reply.body["serial"], 0);
        assert_eq!(
            held(&app, base, &user.token).await,
            vec![(0, push_token(1)), (7, push_token(7))]
        );
        app.delete(&at(base, "0007"), &user.token)
            .await
            .assert_success(StatusCode::OK);
        app.delete(&at(base, "00"), &user.token)
            .await
            .assert_success(StatusCode::OK);
        assert_eq!(held(&app, base, &user.token).await, vec![]);
    }
}

#[every_backend]
async fn serial_that_is_not_a_non_negative_int64_is_serial_format_error(app: TestApp) {
    let user = app.user("alice_1").await;
    let bad_serials = [
        "-1",
        "-0",
        "abc",
        "1.5",
        "1.0",
        "9223372036854775808",
        "99999999999999999999",
        "+1",
        "1e3",
        "0x10",
        "1a",
        "%201",
        "1%20",
        "%EF%BC%91", // a full-width digit one
    ];
    for base in FAMILIES {
        app.put(&at(base, 1), &user.token, registration(1))
            .await
            .assert_success(StatusCode::CREATED);
        for serial in bad_serials {
            let reply = app
                .put(&at(base, serial), &user.token, registration(2))
                .await;
            assert_vendor_error(
                &format!("PUT {base}/{serial}"),
                reply.status,
                &reply.body,
                StatusCode::BAD_REQUEST,
                "serial format error",
            );
            let reply = app.delete(&at(base, serial), &user.token).await;
            assert_vendor_error(
                &format!("DELETE {base}/{serial}"),
                reply.status,
                &reply.body,
                StatusCode::BAD_REQUEST,
                "serial format error",
            );
        }
        assert_eq!(
            held(&app, base, &user.token).await,
            vec![(1, push_token(1))]
        );
    }
}

#[every_backend]
async fn put_accepts_the_largest_int64_serial(app: TestApp) {
    let user = app.user("alice_1").await;
    for base in FAMILIES {
        let reply = app
            .put(&at(base, i64::MAX), &user.token, registration(1))
            .await;
        reply.assert_success(StatusCode::CREATED);
        assert_eq!(reply.body["serial"], i64::MAX);
        assert_eq!(
            held(&app, base, &user.token).await,
            vec![(i64::MAX, push_token(1))]
        );
        let reply = app
            .put(
                &at(base, "09223372036854775807"),
                &user.token,
                registration(2),
            )
            .await;
        reply.assert_success(StatusCode::OK);
        app.delete(&at(base, i64::MAX), &user.token)
            .await
            .assert_success(StatusCode::OK);
        assert_eq!(held(&app, base, &user.token).await, vec![]);
    }
}

#[every_backend]
async fn requests_are_checked_token_then_serial_then_body(app: TestApp) {
    let user = app.user("alice_1").await;
    let huge =
        json!({"push_token": push_token(1), "language": "en", "phone_model": "x".repeat(20_000)});
    for base in FAMILIES {
        // No token beats a bad serial and a bad body.
        let reply = app
            .request(Method::PUT, &at(base, "abc"), &[], Some(json!("not json")))
            .await;
        reply.assert_error(StatusCode::UNAUTHORIZED, "no token");
        let reply = app
            .request(
                Method::DELETE,
                &at(base, "-1"),
                &[("token", "not-a-session")],
                None,
            )
            .await;
        reply.assert_error(StatusCode::UNAUTHORIZED, "invalid token");
        // A bad serial beats a bad or oversized body.
        let reply = app
            .put(&at(base, "abc"), &user.token, json!("not json"))
            .await;
        reply.assert_error(StatusCode::BAD_REQUEST, "serial format error");
        let reply = app.put(&at(base, "abc"), &user.token, huge.clone()).await;
        reply.assert_error(StatusCode::BAD_REQUEST, "serial format error");
        let reply = app.put(&at(base, "-1"), &user.token, json!({})).await;
        reply.assert_error(StatusCode::BAD_REQUEST, "serial format error");
        // Then the body.
        let reply = app.put(&at(base, 1), &user.token, huge.clone()).await;
        reply.assert_error(StatusCode::PAYLOAD_TOO_LARGE, "body too large");
        let reply = app.post(base, &user.token, huge.clone()).await;
        reply.assert_error(StatusCode::PAYLOAD_TOO_LARGE, "body too large");
        assert_eq!(held(&app, base, &user.token).await, vec![]);
    }
}

#[every_backend]
async fn body_that_is_not_a_json_object_is_paramer_error(app: TestApp) {
    let user = app.user("alice_1").await;
    for base in FAMILIES {
        for raw in [
            "",
            "not json",
            "[]",
            "[1,2]",
            "\"text\"",
            "42",
            "null",
            "{\"push_token\":",
        ] {
            let reply = app
                .put(&at(base, 1), &user.token, Value::String(raw.to_owned()))
                .await;
            assert_vendor_error(
                &format!("PUT {base}/1 {raw:?}"),
                reply.status,
                &reply.body,
                StatusCode::BAD_REQUEST,
                "paramer error",
            );
            let reply = app
                .post(base, &user.token, Value::String(raw.to_owned()))
                .await;
            assert_vendor_error(
                &format!("POST {base} {raw:?}"),
                reply.status,
                &reply.body,
                StatusCode::BAD_REQUEST,
                "paramer error",
            );
        }
        assert_eq!(held(&app, base, &user.token).await, vec![]);
    }
}

// ---------------------------------------------------------------- DELETE

#[every_backend]
async fn delete_one_answers_success_and_the_row_is_gone(app: TestApp) {
    let user = app.user("alice_1").await;
    for base in FAMILIES {
        for serial in [1u32, 2, 3] {
            app.put(&at(base, serial), &user.token, registration(serial))
                .await
                .assert_success(StatusCode::CREATED);
        }
        let reply = app.delete(&at(base, 2), &user.token).await;
        assert_eq!(reply.status, StatusCode::OK);
        assert_eq!(reply.body, json!({"message": "success"}));
        assert_eq!(
            held(&app, base, &user.token).await,
            vec![(1, push_token(1)), (3, push_token(3))]
        );
        // Deleting it again: it is gone.
        app.delete(&at(base, 2), &user.token)
            .await
            .assert_error(StatusCode::NOT_FOUND, "no data error");
        // The freed token can be registered again at a new serial.
        let reply = app.post(base, &user.token, registration(2)).await;
        reply.assert_success(StatusCode::CREATED);
        assert_eq!(reply.body["serial"], 4);
    }
}

#[every_backend]
async fn delete_of_a_missing_serial_is_no_data_error(app: TestApp) {
    let user = app.user("alice_1").await;
    for base in FAMILIES {
        app.delete(&at(base, 1), &user.token)
            .await
            .assert_error(StatusCode::NOT_FOUND, "no data error");
        app.put(&at(base, 1), &user.token, registration(1))
            .await
            .assert_success(StatusCode::CREATED);
        for serial in ["0", "2", "10", "9223372036854775807"] {
            let reply = app.delete(&at(base, serial), &user.token).await;
            assert_vendor_error(
                &format!("DELETE {base}/{serial}"),
                reply.status,
                &reply.body,
                StatusCode::NOT_FOUND,
                "no data error",
            );
        }
        assert_eq!(
            held(&app, base, &user.token).await,
            vec![(1, push_token(1))]
        );
    }
}

#[every_backend]
async fn delete_of_another_users_serial_is_no_data_error_and_their_row_survives(app: TestApp) {
    let alice = app.user("alice_1").await;
    let bob = app.user("bob_22").await;
    for base in FAMILIES {
        app.put(&at(base, 6), &bob.token, registration(6))
            .await
            .assert_success(StatusCode::CREATED);
        app.delete(&at(base, 6), &alice.token)
            .await
            .assert_error(StatusCode::NOT_FOUND, "no data error");
        assert_eq!(held(&app, base, &bob.token).await, vec![(6, push_token(6))]);
        // Even when alice has a row at the same serial, only hers goes.
        app.put(&at(base, 6), &alice.token, registration(7))
            .await
            .assert_success(StatusCode::CREATED);
        app.delete(&at(base, 6), &alice.token)
            .await
            .assert_success(StatusCode::OK);
        assert_eq!(held(&app, base, &bob.token).await, vec![(6, push_token(6))]);
        assert_eq!(held(&app, base, &alice.token).await, vec![]);
    }
}

#[every_backend]
async fn delete_all_answers_the_count_of_deleted_rows(app: TestApp) {
    let user = app.user("alice_1").await;
    for base in FAMILIES {
        let reply = app.delete(base, &user.token).await;
        assert_eq!(reply.status, StatusCode::OK);
        assert_eq!(reply.body, json!({"message": "success", "deleted": 0}));
        for serial in [3u32, 1, 2] {
            app.put(&at(base, serial), &user.token, registration(serial))
                .await
                .assert_success(StatusCode::CREATED);
        }
        let reply = app.delete(base, &user.token).await;
        assert_eq!(reply.status, StatusCode::OK);
        assert_eq!(reply.body, json!({"message": "success", "deleted": 3}));
        assert_eq!(held(&app, base, &user.token).await, vec![]);
        let reply = app.delete(base, &user.token).await;
        assert_eq!(reply.body, json!({"message": "success", "deleted": 0}));
        // Serials start again from one.
        let reply = app.post(base, &user.token, registration(1)).await;
        assert_eq!(reply.body["serial"], 1);
    }
}

#[every_backend]
async fn delete_all_clears_only_that_family_and_only_the_callers_rows(app: TestApp) {
    let alice = app.user("alice_1").await;
    let bob = app.user("bob_22").await;
    for (user, offset) in [(&alice, 0u32), (&bob, 100)] {
        for base in FAMILIES {
            for serial in [1u32, 2] {
                app.put(
                    &at(base, serial),
                    &user.token,
                    registration(offset + serial),
                )
                .await
                .assert_success(StatusCode::CREATED);
            }
        }
    }
    let reply = app.delete(RING, &alice.token).await;
    assert_eq!(reply.body, json!({"message": "success", "deleted": 2}));
    assert_eq!(held(&app, RING, &alice.token).await, vec![]);
    assert_eq!(
        held(&app, MESSAGE, &alice.token).await,
        vec![(1, push_token(1)), (2, push_token(2))]
    );
    for base in FAMILIES {
        assert_eq!(
            held(&app, base, &bob.token).await,
            vec![(1, push_token(101)), (2, push_token(102))]
        );
    }
    let reply = app.delete(MESSAGE, &alice.token).await;
    assert_eq!(reply.body, json!({"message": "success", "deleted": 2}));
    for base in FAMILIES {
        assert_eq!(held(&app, base, &bob.token).await.len(), 2, "{base}");
    }
}

// ---------------------------------------------------------------- fields

#[every_backend]
async fn push_token_must_be_exactly_64_characters(app: TestApp) {
    let user = app.user("alice_1").await;
    for len in [0usize, 1, 32, 63, 65, 128, 200] {
        expect_rejected(
            &app,
            &user.token,
            &json!({"push_token": "a".repeat(len), "language": "en"}),
            StatusCode::BAD_REQUEST,
            "push_token length error",
        )
        .await;
    }
    // 64 characters, hex or not (the vendor's own socket token).
    for token in [push_token(1), "A".repeat(64), "!~".repeat(32)] {
        let stored = expect_accepted(
            &app,
            &user.token,
            &json!({"push_token": token, "language": "en"}),
        )
        .await;
        for row in stored {
            assert_eq!(row["push_token"], token.as_str());
        }
    }
}

#[every_backend]
async fn push_token_must_be_printable_ascii_without_spaces(app: TestApp) {
    let user = app.user("alice_1").await;
    let at_64 = |c: &str| format!("{}{c}", "a".repeat(63));
    for bad in [
        at_64(" "),
        format!(" {}", "a".repeat(63)),
        at_64("\t"),
        at_64("\n"),
        at_64("\u{7f}"),
        at_64("\u{0}"),
        at_64("é"),
        at_64("钉"),
        "ａ".repeat(64),
    ] {
        assert_eq!(bad.chars().count(), 64, "{bad:?}");
        expect_rejected(
            &app,
            &user.token,
            &json!({"push_token": bad, "language": "en"}),
            StatusCode::BAD_REQUEST,
            "push_token error",
        )
        .await;
    }
}

#[every_backend]
async fn language_must_be_2_to_11_word_or_dash_characters(app: TestApp) {
    let user = app.user("alice_1").await;
    for bad in ["", "e", "abcdefghijkl", "zh-Hans-CN-x"] {
        expect_rejected(
            &app,
            &user.token,
            &json!({"push_token": push_token(1), "language": bad}),
            StatusCode::BAD_REQUEST,
            "language length error",
        )
        .await;
    }
    for bad in ["en us", "en.US", "en/US", "中文", "ен", "en\n", "e!"] {
        expect_rejected(
            &app,
            &user.token,
            &json!({"push_token": push_token(1), "language": bad}),
            StatusCode::BAD_REQUEST,
            "language error",
        )
        .await;
    }
    for good in ["zh", "en", "en_US", "zh-Hans", "abcdefghijk", "12", "A_-z9"] {
        let stored = expect_accepted(
            &app,
            &user.token,
            &json!({"push_token": push_token(1), "language": good}),
        )
        .await;
        for row in stored {
            assert_eq!(row["language"], good);
        }
    }
}

#[every_backend]
async fn dev_must_be_the_integer_0_or_1(app: TestApp) {
    let user = app.user("alice_1").await;
    for bad in [json!(2), json!(-1), json!(100), json!(i64::MAX)] {
        expect_rejected(
            &app,
            &user.token,
            &with(registration(1), "dev", bad),
            StatusCode::BAD_REQUEST,
            "dev error",
        )
        .await;
    }
    for bad in [
        json!("0"),
        json!("1"),
        json!(0.5),
        json!(1.5),
        json!(true),
        json!([0]),
        json!({"dev": 1}),
    ] {
        expect_rejected(
            &app,
            &user.token,
            &with(registration(1), "dev", bad),
            StatusCode::BAD_REQUEST,
            "dev format error",
        )
        .await;
    }
    for good in [1, 0] {
        let stored = expect_accepted(
            &app,
            &user.token,
            &with(registration(1), "dev", json!(good)),
        )
        .await;
        for row in stored {
            assert_eq!(row["dev"], good);
        }
    }
}

#[every_backend]
async fn bundleid_must_be_1_to_155_of_its_characters(app: TestApp) {
    let user = app.user("alice_1").await;
    for bad in [String::new(), "a".repeat(156), "a".repeat(300)] {
        expect_rejected(
            &app,
            &user.token,
            &with(registration(1), "bundleid", json!(bad)),
            StatusCode::BAD_REQUEST,
            "bundleid length error",
        )
        .await;
    }
    for bad in [
        "com lancens",
        "com/lancens",
        "com.lancens!",
        "com.é",
        "com\tx",
        "钉钉",
    ] {
        expect_rejected(
            &app,
            &user.token,
            &with(registration(1), "bundleid", json!(bad)),
            StatusCode::BAD_REQUEST,
            "bundleid error",
        )
        .await;
    }
    for good in [
        "a".to_owned(),
        "com.lancens.wxdoorbell".to_owned(),
        "Com.Example-app_2".to_owned(),
        "b".repeat(155),
    ] {
        let stored = expect_accepted(
            &app,
            &user.token,
            &with(registration(1), "bundleid", json!(good)),
        )
        .await;
        for row in stored {
            assert_eq!(row["bundleid"], good.as_str());
        }
    }
}

#[every_backend]
async fn os_is_at_most_32_characters_without_control_characters(app: TestApp) {
    let user = app.user("alice_1").await;
    for bad in ["a".repeat(33), "x".repeat(100)] {
        expect_rejected(
            &app,
            &user.token,
            &with(registration(1), "os", json!(bad)),
            StatusCode::BAD_REQUEST,
            "os length error",
        )
        .await;
    }
    for bad in ["And\nroid", "\t", "Android\u{0}", "x\u{7f}", "x\u{85}"] {
        expect_rejected(
            &app,
            &user.token,
            &with(registration(1), "os", json!(bad)),
            StatusCode::BAD_REQUEST,
            "os error",
        )
        .await;
    }
    for good in [
        "ANDROID".to_owned(),
        "Huawei".to_owned(),
        "iOS 17.2".to_owned(),
        "华为".repeat(16),
        "o".repeat(32),
        String::new(),
    ] {
        let stored =
            expect_accepted(&app, &user.token, &with(registration(1), "os", json!(good))).await;
        for row in stored {
            assert_eq!(row["os"], good.as_str());
        }
    }
}

#[every_backend]
async fn os_token_is_at_most_4096_printable_ascii_without_spaces(app: TestApp) {
    let user = app.user("alice_1").await;
    for bad in ["a".repeat(4097), "a".repeat(5000)] {
        expect_rejected(
            &app,
            &user.token,
            &with(registration(1), "os_token", json!(bad)),
            StatusCode::BAD_REQUEST,
            "os_token length error",
        )
        .await;
    }
    for bad in ["abc def", " abc", "abc\n", "é", "abc\u{7f}", "钉钉"] {
        expect_rejected(
            &app,
            &user.token,
            &with(registration(1), "os_token", json!(bad)),
            StatusCode::BAD_REQUEST,
            "os_token error",
        )
        .await;
    }
    // An FCM-like token of 350 characters, and the limits.
    let fcm = format!("cXbDq0Z1RkS:APA91b{}", "Hk-_7xQ9".repeat(42))
        .chars()
        .take(350)
        .collect::<String>();
    assert_eq!(fcm.len(), 350);
    for good in [fcm, "t".repeat(4096), String::new(), "!~:/_-.".to_owned()] {
        let stored = expect_accepted(
            &app,
            &user.token,
            &with(registration(1), "os_token", json!(good)),
        )
        .await;
        for row in stored {
            assert_eq!(row["os_token"], good.as_str());
        }
    }
}

#[every_backend]
async fn push_platform_is_at_most_32_word_or_dash_characters_kept_as_sent(app: TestApp) {
    let user = app.user("alice_1").await;
    for bad in ["a".repeat(33), "F".repeat(64)] {
        expect_rejected(
            &app,
            &user.token,
            &with(registration(1), "push_platform", json!(bad)),
            StatusCode::BAD_REQUEST,
            "push_platform length error",
        )
        .await;
    }
    for bad in ["FC M", "FCM.", "huawei/hms", "华为", "FCM\n"] {
        expect_rejected(
            &app,
            &user.token,
            &with(registration(1), "push_platform", json!(bad)),
            StatusCode::BAD_REQUEST,
            "push_platform error",
        )
        .await;
    }
    for good in [
        "FCM".to_owned(),
        "HUAWEI".to_owned(),
        "XIAOMI".to_owned(),
        "OPPO".to_owned(),
        "android".to_owned(),
        "Vivo_push-2".to_owned(),
        "p".repeat(32),
        String::new(),
    ] {
        let stored = expect_accepted(
            &app,
            &user.token,
            &with(registration(1), "push_platform", json!(good)),
        )
        .await;
        for row in stored {
            assert_eq!(row["push_platform"], good.as_str(), "kept as sent");
        }
    }
}

#[every_backend]
async fn phone_model_is_at_most_128_characters_without_control_characters(app: TestApp) {
    let user = app.user("alice_1").await;
    for bad in ["a".repeat(129), "钉".repeat(129)] {
        expect_rejected(
            &app,
            &user.token,
            &with(registration(1), "phone_model", json!(bad)),
            StatusCode::BAD_REQUEST,
            "phone_model length error",
        )
        .await;
    }
    for bad in ["xiaomi\n6", "\u{1}", "model\u{7f}", "a\rb"] {
        expect_rejected(
            &app,
            &user.token,
            &with(registration(1), "phone_model", json!(bad)),
            StatusCode::BAD_REQUEST,
            "phone_model error",
        )
        .await;
    }
    // Non-ASCII is fine, and the limit counts characters, not bytes.
    for good in [
        "xiaomi6".to_owned(),
        VENDOR_PHONE_MODEL.to_owned(),
        "钉".repeat(128),
        "m".repeat(128),
        "Pixel 8 Pro (😀)".to_owned(),
        String::new(),
    ] {
        let stored = expect_accepted(
            &app,
            &user.token,
            &with(registration(1), "phone_model", json!(good)),
        )
        .await;
        for row in stored {
            assert_eq!(row["phone_model"], good.as_str());
        }
    }
}

#[every_backend]
async fn id_may_be_absent_zero_or_the_callers_own_and_nothing_else(app: TestApp) {
    let alice = app.user("alice_1").await;
    let bob = app.user("bob_22").await;
    for bad in [bob.id, alice.id + 1000, -1, i64::MAX] {
        expect_rejected(
            &app,
            &alice.token,
            &with(registration(1), "id", json!(bad)),
            StatusCode::FORBIDDEN,
            "id error",
        )
        .await;
    }
    for bad in [
        json!("1"),
        json!(alice.id.to_string()),
        json!(1.5),
        json!(true),
    ] {
        expect_rejected(
            &app,
            &alice.token,
            &with(registration(1), "id", bad),
            StatusCode::BAD_REQUEST,
            "id format error",
        )
        .await;
    }
    for good in [json!(0), json!(alice.id), Value::Null] {
        let stored = expect_accepted(&app, &alice.token, &with(registration(1), "id", good)).await;
        for row in stored {
            assert_eq!(row["id"], alice.id, "the row is always the caller's");
        }
    }
    for base in FAMILIES {
        assert_eq!(held(&app, base, &bob.token).await, vec![]);
    }
}

#[every_backend]
async fn wrong_json_types_are_format_errors(app: TestApp) {
    let user = app.user("alice_1").await;
    let cases = [
        ("push_token", json!(1234)),
        ("push_token", json!(["a"])),
        ("language", json!(42)),
        ("language", json!({"en": true})),
        ("dev", json!("0")),
        ("bundleid", json!(5)),
        ("os", json!(true)),
        ("os_token", json!({})),
        ("push_platform", json!(1)),
        ("phone_model", json!([])),
        ("id", json!("1")),
    ];
    for (field, value) in cases {
        expect_rejected(
            &app,
            &user.token,
            &with(registration(1), field, value),
            StatusCode::BAD_REQUEST,
            &format!("{field} format error"),
        )
        .await;
    }
}

#[every_backend]
async fn null_counts_as_absent(app: TestApp) {
    let user = app.user("alice_1").await;
    expect_rejected(
        &app,
        &user.token,
        &json!({"push_token": null, "language": "en"}),
        StatusCode::BAD_REQUEST,
        "undefined push_token",
    )
    .await;
    expect_rejected(
        &app,
        &user.token,
        &json!({"push_token": push_token(1), "language": null}),
        StatusCode::BAD_REQUEST,
        "undefined language",
    )
    .await;
    let nulls = json!({
        "push_token": push_token(1), "language": "en", "dev": null, "bundleid": null,
        "os": null, "os_token": null, "push_platform": null, "phone_model": null, "id": null,
    });
    // On create: the defaults, never null.
    for row in expect_accepted(&app, &user.token, &nulls).await {
        assert_eq!(row["dev"], 0);
        assert_eq!(row["bundleid"], DEFAULT_BUNDLE_ID);
        for field in ["os", "os_token", "push_platform", "phone_model"] {
            assert_eq!(row[field], "", "{field}");
        }
    }
    // On update: the stored values stay.
    let full = json!({
        "push_token": push_token(1), "language": "en", "dev": 1, "bundleid": "com.example.x",
        "os": "Huawei", "os_token": "ot", "push_platform": "HUAWEI", "phone_model": "p40",
    });
    expect_accepted(&app, &user.token, &full).await;
    for row in expect_accepted(&app, &user.token, &nulls).await {
        for (key, value) in full.as_object().unwrap() {
            assert_eq!(&row[key], value, "{key}");
        }
    }
}

#[every_backend]
async fn first_failing_field_in_the_listed_order_is_reported(app: TestApp) {
    let alice = app.user("alice_1").await;
    let bob = app.user("bob_22").await;
    // In the order of the API: a bad value, a value of a wrong type, and
    // what each one is reported as.
    let fields = [
        (
            "push_token",
            json!("short"),
            "push_token length error",
            json!(1),
        ),
        ("language", json!("e"), "language length error", json!(1)),
        ("dev", json!(2), "dev error", json!("0")),
        ("bundleid", json!(""), "bundleid length error", json!(1)),
        ("os", json!("a\nb"), "os error", json!(1)),
        ("os_token", json!("a b"), "os_token error", json!(1)),
        (
            "push_platform",
            json!("a.b"),
            "push_platform error",
            json!(1),
        ),
        (
            "phone_model",
            json!("a\u{1}b"),
            "phone_model error",
            json!(1),
        ),
        ("id", json!(bob.id), "id error", json!("1")),
    ];
    let status = |msg: &str| {
        if msg == "id error" {
            StatusCode::FORBIDDEN
        } else {
            StatusCode::BAD_REQUEST
        }
    };
    for i in 0..fields.len() {
        let (name, bad, msg, wrong_type) = &fields[i];
        // Every field from i on is invalid: field i is reported.
        let mut body = registration(1);
        for (later, later_bad, _, _) in &fields[i..] {
            body[*later] = later_bad.clone();
        }
        expect_rejected(&app, &alice.token, &body, status(msg), msg).await;
        // Field i invalid, later ones of the wrong type: still field i.
        let mut body = with(registration(1), name, bad.clone());
        for (later, _, _, later_wrong) in &fields[i + 1..] {
            body[*later] = later_wrong.clone();
        }
        expect_rejected(&app, &alice.token, &body, status(msg), msg).await;
        // Field i of the wrong type, later ones invalid: field i's format error.
        let mut body = with(registration(1), name, wrong_type.clone());
        for (later, later_bad, _, _) in &fields[i + 1..] {
            body[*later] = later_bad.clone();
        }
        expect_rejected(
            &app,
            &alice.token,
            &body,
            StatusCode::BAD_REQUEST,
            &format!("{name} format error"),
        )
        .await;
    }
    // A missing push_token is reported before a bad language.
    expect_rejected(
        &app,
        &alice.token,
        &json!({"language": "e", "dev": 5}),
        StatusCode::BAD_REQUEST,
        "undefined push_token",
    )
    .await;
    // A bad push_token is reported before a missing language.
    expect_rejected(
        &app,
        &alice.token,
        &json!({"push_token": "a b"}),
        StatusCode::BAD_REQUEST,
        "push_token length error",
    )
    .await;
    // Keys in the body in another order change nothing.
    let reversed = json!("{\"id\":999999,\"dev\":9,\"language\":\"e\",\"push_token\":\"x\"}");
    expect_rejected(
        &app,
        &alice.token,
        &reversed,
        StatusCode::BAD_REQUEST,
        "push_token length error",
    )
    .await;
}

#[every_backend]
async fn unknown_fields_are_ignored(app: TestApp) {
    let user = app.user("alice_1").await;
    for base in FAMILIES {
        let body = json!({
            "push_token": push_token(1), "language": "en", "os_push_version": 1,
            "serial": 99, "user_id": 12345, "created_at": 1, "message": "hello",
            "extra": {"nested": [1, 2, null]}, "PUSH_TOKEN": "ignored",
        });
        let reply = app.post(base, &user.token, body.clone()).await;
        reply.assert_success(StatusCode::CREATED);
        assert_eq!(reply.body["serial"], 1, "a body serial is not a field");
        assert_eq!(reply.body["push_token"], push_token(1));
        assert_ne!(reply.body["created_at"], 1);
        // The same token at another serial: a move, so a create there.
        let reply = app.put(&at(base, 5), &user.token, body).await;
        reply.assert_success(StatusCode::CREATED);
        assert_eq!(reply.body["serial"], 5);
        let listed = rows(&app, base, &user.token).await;
        assert_eq!(listed, vec![row_of(&reply.body)]);
        let keys: Vec<&str> = listed[0]
            .as_object()
            .unwrap()
            .keys()
            .map(String::as_str)
            .collect();
        assert_eq!(keys.len(), ROW_KEYS.len(), "{keys:?}");
    }
}

#[every_backend]
async fn a_rejected_request_changes_nothing(app: TestApp) {
    let alice = app.user("alice_1").await;
    let bob = app.user("bob_22").await;
    for base in FAMILIES {
        app.put(
            &at(base, 1),
            &alice.token,
            json!({"push_token": push_token(1), "language": "en", "os": "Huawei"}),
        )
        .await
        .assert_success(StatusCode::CREATED);
        app.put(&at(base, 2), &alice.token, registration(2))
            .await
            .assert_success(StatusCode::CREATED);
        app.put(&at(base, 3), &bob.token, registration(3))
            .await
            .assert_success(StatusCode::CREATED);
    }
    let before_alice: Vec<_> = [
        rows(&app, RING, &alice.token).await,
        rows(&app, MESSAGE, &alice.token).await,
    ]
    .into();
    let before_bob: Vec<_> = [
        rows(&app, RING, &bob.token).await,
        rows(&app, MESSAGE, &bob.token).await,
    ]
    .into();
    for base in FAMILIES {
        let attempts = [
            // An update of serial 1 with one bad field after good changes.
            (
                Method::PUT,
                at(base, 1),
                json!({"push_token": push_token(1), "language": "fr", "os": "Xiaomi", "phone_model": "a\nb"}),
            ),
            // A move of serial 1's token to serial 9, with a bad language.
            (
                Method::PUT,
                at(base, 9),
                json!({"push_token": push_token(1), "language": "x"}),
            ),
            // A move of serial 2's token onto serial 1, with a bad dev.
            (
                Method::PUT,
                at(base, 1),
                json!({"push_token": push_token(2), "language": "en", "dev": 7}),
            ),
            // A takeover of bob's token, with a foreign id.
            (
                Method::PUT,
                at(base, 4),
                json!({"push_token": push_token(3), "language": "en", "id": bob.id}),
            ),
            (
                Method::POST,
                base.to_owned(),
                json!({"push_token": push_token(3), "language": "en", "os_token": "a b"}),
            ),
            // A POST update of a held token, with a bad bundleid.
            (
                Method::POST,
                base.to_owned(),
                json!({"push_token": push_token(1), "language": "de", "bundleid": "a b"}),
            ),
        ];
        for (method, uri, body) in attempts {
            let reply = app
                .request(
                    method.clone(),
                    &uri,
                    &[("token", &alice.token)],
                    Some(body.clone()),
                )
                .await;
            assert!(
                reply.status.is_client_error(),
                "{method} {uri} {body}: {} {}",
                reply.status,
                reply.body
            );
        }
    }
    let after_alice: Vec<_> = [
        rows(&app, RING, &alice.token).await,
        rows(&app, MESSAGE, &alice.token).await,
    ]
    .into();
    let after_bob: Vec<_> = [
        rows(&app, RING, &bob.token).await,
        rows(&app, MESSAGE, &bob.token).await,
    ]
    .into();
    assert_eq!(after_alice, before_alice);
    assert_eq!(after_bob, before_bob);
}

// ---------------------------------------------------------------- bundleid header

#[every_backend]
async fn bundleid_header_is_the_default_on_create(app: TestApp) {
    let user = app.user("alice_1").await;
    for base in FAMILIES {
        let headers = [
            ("token", user.token.as_str()),
            ("bundleid", "com.example.header"),
        ];
        let reply = app
            .request(Method::PUT, &at(base, 1), &headers, Some(registration(1)))
            .await;
        reply.assert_success(StatusCode::CREATED);
        assert_eq!(reply.body["bundleid"], "com.example.header");
        let reply = app
            .request(Method::POST, base, &headers, Some(registration(2)))
            .await;
        reply.assert_success(StatusCode::CREATED);
        assert_eq!(reply.body["bundleid"], "com.example.header");
        // Header names are case-insensitive.
        let reply = app
            .request(
                Method::POST,
                base,
                &[
                    ("token", user.token.as_str()),
                    ("BundleID", "com.example.other"),
                ],
                Some(registration(3)),
            )
            .await;
        reply.assert_success(StatusCode::CREATED);
        assert_eq!(reply.body["bundleid"], "com.example.other");
        // Without the header: the configured default.
        let reply = app.put(&at(base, 4), &user.token, registration(4)).await;
        reply.assert_success(StatusCode::CREATED);
        assert_eq!(reply.body["bundleid"], DEFAULT_BUNDLE_ID);
        let bundles: Vec<Value> = rows(&app, base, &user.token)
            .await
            .iter()
            .map(|r| r["bundleid"].clone())
            .collect();
        assert_eq!(
            bundles,
            vec![
                json!("com.example.header"),
                json!("com.example.header"),
                json!("com.example.other"),
                json!(DEFAULT_BUNDLE_ID)
            ]
        );
    }
}

#[every_backend]
async fn body_bundleid_wins_over_the_header(app: TestApp) {
    let user = app.user("alice_1").await;
    for base in FAMILIES {
        let headers = [
            ("token", user.token.as_str()),
            ("bundleid", "com.example.header"),
        ];
        let body = with(registration(1), "bundleid", json!("com.example.body"));
        let reply = app
            .request(Method::PUT, &at(base, 1), &headers, Some(body))
            .await;
        reply.assert_success(StatusCode::CREATED);
        assert_eq!(reply.body["bundleid"], "com.example.body");
        let body = with(registration(2), "bundleid", json!("com.example.body2"));
        let reply = app.request(Method::POST, base, &headers, Some(body)).await;
        reply.assert_success(StatusCode::CREATED);
        assert_eq!(reply.body["bundleid"], "com.example.body2");
        // And on update, a body bundleid changes the stored one.
        let body = with(registration(1), "bundleid", json!("com.example.body3"));
        let reply = app
            .request(Method::PUT, &at(base, 1), &headers, Some(body))
            .await;
        reply.assert_success(StatusCode::OK);
        assert_eq!(reply.body["bundleid"], "com.example.body3");
    }
}

#[every_backend]
async fn bundleid_header_does_not_change_the_stored_bundleid_on_update(app: TestApp) {
    let user = app.user("alice_1").await;
    for base in FAMILIES {
        app.put(&at(base, 1), &user.token, registration(1))
            .await
            .assert_success(StatusCode::CREATED);
        let headers = [
            ("token", user.token.as_str()),
            ("bundleid", "com.example.header"),
        ];
        let reply = app
            .request(Method::PUT, &at(base, 1), &headers, Some(registration(1)))
            .await;
        reply.assert_success(StatusCode::OK);
        assert_eq!(reply.body["bundleid"], DEFAULT_BUNDLE_ID);
        // A POST of the held token is an update too.
        let reply = app
            .request(Method::POST, base, &headers, Some(registration(1)))
            .await;
        reply.assert_success(StatusCode::OK);
        assert_eq!(reply.body["serial"], 1);
        assert_eq!(reply.body["bundleid"], DEFAULT_BUNDLE_ID);
        // A PUT with a new token at the same serial is still an update.
        let reply = app
            .request(Method::PUT, &at(base, 1), &headers, Some(registration(2)))
            .await;
        reply.assert_success(StatusCode::OK);
        assert_eq!(reply.body["bundleid"], DEFAULT_BUNDLE_ID);
        assert_eq!(
            rows(&app, base, &user.token).await[0]["bundleid"],
            DEFAULT_BUNDLE_ID
        );
    }
}

// ---------------------------------------------------------------- one token, one row

#[every_backend]
async fn put_of_a_token_held_at_another_serial_moves_it(app: TestApp) {
    let user = app.user("alice_1").await;
    for base in FAMILIES {
        app.put(&at(base, 3), &user.token, registration(1))
            .await
            .assert_success(StatusCode::CREATED);
        let reply = app.put(&at(base, 5), &user.token, registration(1)).await;
        reply.assert_success(StatusCode::CREATED);
        assert_eq!(reply.body["serial"], 5);
        assert_eq!(
            held(&app, base, &user.token).await,
            vec![(5, push_token(1))]
        );
        app.delete(&at(base, 3), &user.token)
            .await
            .assert_error(StatusCode::NOT_FOUND, "no data error");
        // Onto a serial holding another token: that row is updated, the old
        // serial goes.
        app.put(&at(base, 8), &user.token, registration(2))
            .await
            .assert_success(StatusCode::CREATED);
        let reply = app.put(&at(base, 8), &user.token, registration(1)).await;
        reply.assert_success(StatusCode::OK);
        assert_eq!(
            held(&app, base, &user.token).await,
            vec![(8, push_token(1))]
        );
    }
}

#[every_backend]
async fn put_of_a_token_another_user_holds_takes_it_over(app: TestApp) {
    let alice = app.user("alice_1").await;
    let bob = app.user("bob_22").await;
    for base in FAMILIES {
        app.put(&at(base, 3), &alice.token, registration(1))
            .await
            .assert_success(StatusCode::CREATED);
        app.put(&at(base, 4), &alice.token, registration(2))
            .await
            .assert_success(StatusCode::CREATED);
        let reply = app.put(&at(base, 3), &bob.token, registration(1)).await;
        reply.assert_success(StatusCode::CREATED);
        assert_eq!(reply.body["id"], bob.id);
        assert_eq!(
            held(&app, base, &alice.token).await,
            vec![(4, push_token(2))]
        );
        assert_eq!(held(&app, base, &bob.token).await, vec![(3, push_token(1))]);
        app.delete(&at(base, 3), &alice.token)
            .await
            .assert_error(StatusCode::NOT_FOUND, "no data error");
    }
}

#[every_backend]
async fn post_of_a_token_another_user_holds_takes_it_over(app: TestApp) {
    let alice = app.user("alice_1").await;
    let bob = app.user("bob_22").await;
    for base in FAMILIES {
        app.put(&at(base, 6), &alice.token, registration(1))
            .await
            .assert_success(StatusCode::CREATED);
        app.put(&at(base, 2), &bob.token, registration(2))
            .await
            .assert_success(StatusCode::CREATED);
        let reply = app.post(base, &bob.token, registration(1)).await;
        reply.assert_success(StatusCode::CREATED);
        assert_eq!(reply.body["serial"], 3, "a new row for bob");
        assert_eq!(reply.body["id"], bob.id);
        assert_eq!(held(&app, base, &alice.token).await, vec![]);
        assert_eq!(
            held(&app, base, &bob.token).await,
            vec![(2, push_token(2)), (3, push_token(1))]
        );
        // And back again.
        let reply = app.post(base, &alice.token, registration(1)).await;
        reply.assert_success(StatusCode::CREATED);
        assert_eq!(reply.body["serial"], 1);
        assert_eq!(held(&app, base, &bob.token).await, vec![(2, push_token(2))]);
        assert_eq!(
            held(&app, base, &alice.token).await,
            vec![(1, push_token(1))]
        );
    }
}

#[every_backend]
async fn one_token_one_row_holds_per_family(app: TestApp) {
    let alice = app.user("alice_1").await;
    let bob = app.user("bob_22").await;
    app.put(&at(MESSAGE, 1), &alice.token, registration(1))
        .await
        .assert_success(StatusCode::CREATED);
    // Bob registers the same phone token as a ring token: alice's message
    // row stays.
    app.put(&at(RING, 1), &bob.token, registration(1))
        .await
        .assert_success(StatusCode::CREATED);
    app.post(RING, &bob.token, registration(1))
        .await
        .assert_success(StatusCode::OK);
    assert_eq!(
        held(&app, MESSAGE, &alice.token).await,
        vec![(1, push_token(1))]
    );
    assert_eq!(held(&app, RING, &bob.token).await, vec![(1, push_token(1))]);
    // One user may hold the same token in both families.
    app.post(MESSAGE, &bob.token, registration(2))
        .await
        .assert_success(StatusCode::CREATED);
    app.post(RING, &bob.token, registration(2))
        .await
        .assert_success(StatusCode::CREATED);
    assert_eq!(
        held(&app, MESSAGE, &bob.token).await,
        vec![(1, push_token(2))]
    );
    assert_eq!(
        held(&app, RING, &bob.token).await,
        vec![(1, push_token(1)), (2, push_token(2))]
    );
    // A move in one family leaves the other family's row alone.
    app.put(&at(RING, 9), &bob.token, registration(2))
        .await
        .assert_success(StatusCode::CREATED);
    assert_eq!(
        held(&app, MESSAGE, &bob.token).await,
        vec![(1, push_token(2))]
    );
    assert_eq!(
        held(&app, RING, &bob.token).await,
        vec![(1, push_token(1)), (9, push_token(2))]
    );
}

// ---------------------------------------------------------------- isolation

#[every_backend]
async fn another_users_get_never_shows_my_rows(app: TestApp) {
    let alice = app.user("alice_1").await;
    let bob = app.user("bob_22").await;
    for base in FAMILIES {
        for serial in [1u32, 2] {
            app.put(&at(base, serial), &alice.token, registration(serial))
                .await
                .assert_success(StatusCode::CREATED);
        }
        let reply = app.get(base, &bob.token).await;
        assert_eq!(reply.status, StatusCode::OK);
        assert_eq!(reply.body, json!([]));
        app.put(&at(base, 1), &bob.token, registration(11))
            .await
            .assert_success(StatusCode::CREATED);
        let bobs = rows(&app, base, &bob.token).await;
        assert_eq!(bobs.len(), 1);
        assert_eq!(bobs[0]["id"], bob.id);
        assert_eq!(bobs[0]["push_token"], push_token(11));
        for row in rows(&app, base, &alice.token).await {
            assert_eq!(row["id"], alice.id);
        }
    }
}

#[every_backend]
async fn another_users_put_at_the_same_serial_creates_their_own_row(app: TestApp) {
    let alice = app.user("alice_1").await;
    let bob = app.user("bob_22").await;
    for base in FAMILIES {
        let mine = app
            .put(
                &at(base, 1),
                &alice.token,
                json!({"push_token": push_token(1), "language": "en", "os": "Huawei", "dev": 1}),
            )
            .await;
        mine.assert_success(StatusCode::CREATED);
        let reply = app
            .put(
                &at(base, 1),
                &bob.token,
                json!({"push_token": push_token(2), "language": "fr"}),
            )
            .await;
        reply.assert_success(StatusCode::CREATED);
        assert_eq!(reply.body["id"], bob.id);
        assert_eq!(reply.body["os"], "", "nothing of alice's row");
        assert_eq!(reply.body["dev"], 0, "nothing of alice's row");
        assert_eq!(
            rows(&app, base, &alice.token).await,
            vec![row_of(&mine.body)]
        );
        // Bob's POST numbers from his own rows.
        let reply = app.post(base, &bob.token, registration(3)).await;
        assert_eq!(reply.body["serial"], 2);
        // Bob deleting serial 1 deletes his, not alice's.
        app.delete(&at(base, 1), &bob.token)
            .await
            .assert_success(StatusCode::OK);
        assert_eq!(
            rows(&app, base, &alice.token).await,
            vec![row_of(&mine.body)]
        );
    }
}

#[every_backend]
async fn another_users_delete_all_leaves_my_rows(app: TestApp) {
    let alice = app.user("alice_1").await;
    let bob = app.user("bob_22").await;
    for base in FAMILIES {
        app.put(&at(base, 1), &alice.token, registration(1))
            .await
            .assert_success(StatusCode::CREATED);
        app.put(&at(base, 1), &bob.token, registration(2))
            .await
            .assert_success(StatusCode::CREATED);
        let reply = app.delete(base, &bob.token).await;
        assert_eq!(reply.body, json!({"message": "success", "deleted": 1}));
        let reply = app.delete(base, &bob.token).await;
        assert_eq!(reply.body, json!({"message": "success", "deleted": 0}));
        assert_eq!(
            held(&app, base, &alice.token).await,
            vec![(1, push_token(1))]
        );
    }
}

// ---------------------------------------------------------------- restart

#[every_backend]
async fn rows_survive_a_restart_and_the_session_still_works(app: TestApp) {
    let user = app.user("alice_1").await;
    for base in FAMILIES {
        app.post(
            base,
            &user.token,
            json!({
                "push_token": push_token(1), "language": "zh", "dev": 1, "os": "Android",
                "os_token": "fcm:abc", "push_platform": "FCM", "phone_model": VENDOR_PHONE_MODEL,
            }),
        )
        .await
        .assert_success(StatusCode::CREATED);
        app.put(&at(base, 7), &user.token, registration(7))
            .await
            .assert_success(StatusCode::CREATED);
    }
    let before = [
        rows(&app, RING, &user.token).await,
        rows(&app, MESSAGE, &user.token).await,
    ];
    let app = app.restart().await;
    let after = [
        rows(&app, RING, &user.token).await,
        rows(&app, MESSAGE, &user.token).await,
    ];
    assert_eq!(after, before);
    assert_eq!(after[0].len(), 2);
    for base in FAMILIES {
        let reply = app.post(base, &user.token, registration(8)).await;
        reply.assert_success(StatusCode::CREATED);
        assert_eq!(reply.body["serial"], 8);
        let reply = app.put(&at(base, 1), &user.token, registration(1)).await;
        reply.assert_success(StatusCode::OK);
        assert_eq!(reply.body["phone_model"], VENDOR_PHONE_MODEL);
    }
}

#[every_backend]
async fn integral_json_numbers_count_as_integers(app: TestApp) {
    let user = app.user("alice_1").await;
    for base in FAMILIES {
        let body = json!({ "push_token": push_token(1), "language": "en", "dev": 1.0, "id": -3872874502856994.0 });
        let reply = app.put(&format!("{base}/1"), &user.token, body).await;
        reply.assert_error(StatusCode::FORBIDDEN, "id error");
        let body = json!({ "push_token": push_token(1), "language": "en", "dev": 1.0, "id": user.id as f64 });
        let reply = app.put(&format!("{base}/1"), &user.token, body).await;
        reply.assert_success(StatusCode::CREATED);
        assert_eq!(reply.body["dev"], 1);
    }
}
