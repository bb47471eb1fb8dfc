//! Sign-up, login, logout, refresh and session handling.

use axum::http::StatusCode;
use serde_json::json;

use crate::common::{TestApp, API_KEY, PASSWORD, RING};
use crate::on_every_backend;

async fn sign_up_returns_201_with_the_new_id(app: TestApp) {
    let reply = app
        .post_anonymous(
            "/v1/api/user",
            json!({ "username": "alice_1", "password": PASSWORD, "apikey": API_KEY }),
        )
        .await;
    reply.assert_success(StatusCode::CREATED);
    assert!(reply.body["id"].as_i64().unwrap() > 0);
}

async fn login_returns_the_five_vendor_keys_and_success(app: TestApp) {
    let id = app.sign_up("alice_1").await;
    let reply = app.login("alice_1", PASSWORD).await;
    reply.assert_success(StatusCode::CREATED);
    assert_eq!(reply.body["id"], id);
    assert!(reply.body["token"].as_str().unwrap().len() >= 32);
    assert!(reply.body["reflash_key"].as_str().unwrap().len() >= 32);
    assert!(reply.body["time"].as_i64().unwrap() > pushtoken::unix_now());
    assert_eq!(reply.body["logout_status"], 0);
    let token = reply.body["token"].as_str().unwrap();
    app.get(RING, token).await;
}

on_every_backend!(
    sign_up_returns_201_with_the_new_id,
    login_returns_the_five_vendor_keys_and_success
);
