//! Registering a push token: `POST` at the next serial, `PUT` at a given
//! one; creates (201) and updates (200), defaults, required fields, and the
//! vendor's Android client as it sends.

use axum::http::{Method, StatusCode};
use serde_json::{json, Value};

use crate::support::api::{push_token, registration, FAMILIES};
use crate::support::push_tokens::{
    at, expect_rejected, held, put_new_row, row_of, rows, DEFAULT_BUNDLE_ID, VENDOR_PHONE_MODEL,
};
use crate::support::{every_backend, TestApp};

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
        let body =
            json!({"push_token": push_token(1), "language": "en", "os": "Android", "dev": 1});
        let created = app.put(&at(base, 4), &user.token, body).await;
        created.assert_success(StatusCode::CREATED);
        put_new_row(&app, base, 8, &user.token, 2).await;
        let body = json!({"push_token": push_token(1), "language": "fr", "push_platform": "FCM"});
        let reply = app.post(base, &user.token, body).await;
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
        let body = vendor_android_body(n);
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
        let body = vendor_android_body(n);
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
        let body = json!({"push_token": push_token(2), "language": "de"});
        let reply = app.put(&at(base, 3), &user.token, body).await;
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
        let body = json!({"push_token": push_token(2), "language": "de"});
        let reply = app.put(&at(base, 3), &user.token, body).await;
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
        let body = json!({
            "push_token": push_token(1), "language": "fr", "dev": 0,
            "bundleid": "a", "os": "", "os_token": "", "push_platform": "",
            "phone_model": "",
        });
        let reply = app.put(&at(base, 5), &user.token, body).await;
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
        let body = json!({"push_token": push_token(2), "language": "en_US"});
        let reply = app.put(&at(base, 2), &user.token, body).await;
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
    for (body, message) in [
        (json!({"language": "en"}), "undefined push_token"),
        (json!({"push_token": push_token(1)}), "undefined language"),
        (json!({}), "undefined push_token"),
    ] {
        expect_rejected(&app, &user.token, &body, StatusCode::BAD_REQUEST, message).await;
    }
    // A row at serial 1 with that token: an update needs them too.
    for base in FAMILIES {
        put_new_row(&app, base, 1, &user.token, 1).await;
    }
    for (body, message) in [
        (
            json!({"language": "fr", "os": "Android"}),
            "undefined push_token",
        ),
        (
            json!({"push_token": push_token(1), "os": "Android"}),
            "undefined language",
        ),
    ] {
        expect_rejected(&app, &user.token, &body, StatusCode::BAD_REQUEST, message).await;
    }
}

/// A registration of push token `n` as the vendor's Android app sends it.
fn vendor_android_body(n: u32) -> Value {
    json!({
        "push_token": push_token(n),
        "push_platform": "android",
        "language": "zh",
        "os_token": "",
        "os": "Android",
        "os_push_version": 1,
        "bundleid": "com.lancens.wxdoorbell",
        "phone_model": VENDOR_PHONE_MODEL,
    })
}
