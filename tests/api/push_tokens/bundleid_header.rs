//! The `bundleid` header: the default bundle id of a new row, below the
//! body's own, and never a change to a stored row.

use axum::http::{Method, StatusCode};
use serde_json::{json, Value};

use crate::support::api::{registration, with, FAMILIES};
use crate::support::push_tokens::{at, put_new_row, rows, DEFAULT_BUNDLE_ID};
use crate::support::{every_backend, TestApp};

/// The bundle id the `bundleid` header carries.
const HEADER: &str = "com.example.header";

/// The caller's session and a `bundleid` header of [`HEADER`].
fn session_and_header(token: &str) -> [(&str, &str); 2] {
    [("token", token), ("bundleid", HEADER)]
}

#[every_backend]
async fn bundleid_header_is_the_default_on_create(app: TestApp) {
    let user = app.user("alice_1").await;
    for base in FAMILIES {
        let headers = session_and_header(&user.token);
        let reply = app
            .request(Method::PUT, &at(base, 1), &headers, Some(registration(1)))
            .await;
        reply.assert_success(StatusCode::CREATED);
        assert_eq!(reply.body["bundleid"], HEADER);
        let reply = app
            .request(Method::POST, base, &headers, Some(registration(2)))
            .await;
        reply.assert_success(StatusCode::CREATED);
        assert_eq!(reply.body["bundleid"], HEADER);
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
                json!(HEADER),
                json!(HEADER),
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
        let headers = session_and_header(&user.token);
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
        put_new_row(&app, base, 1, &user.token, 1).await;
        let headers = session_and_header(&user.token);
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
