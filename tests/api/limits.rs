//! Abuse limits: failed logins per username, sign-up/login/refresh per
//! client address, requests in flight and the request timeout.

use std::time::{Duration, Instant};

use axum::body::Body;
use axum::http::{Method, Request, StatusCode};
use serde_json::json;
use tower::ServiceExt;

use crate::common::{registration, TestApp, API_KEY, PASSWORD, RING};
use crate::on_every_backend;

fn retry_after(reply: &crate::common::Reply) -> u64 {
    reply.headers["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap()
}

async fn ten_failed_logins_lock_the_username_with_429_and_retry_after(app: TestApp) {
    app.sign_up("alice_1").await;
    for _ in 0..10 {
        app.login("alice_1", "wrong_pass1")
            .await
            .assert_error(StatusCode::UNAUTHORIZED, "username or password error");
    }
    for password in ["wrong_pass1", PASSWORD] {
        let reply = app.login("alice_1", password).await;
        reply.assert_error(StatusCode::TOO_MANY_REQUESTS, "too many requests");
        let wait = retry_after(&reply);
        assert!(
            (14 * 60..=15 * 60 + 1).contains(&wait),
            "Retry-After {wait}"
        );
    }
}

async fn failed_logins_count_per_username(app: TestApp) {
    app.sign_up("alice_1").await;
    app.sign_up("bob_2222").await;
    for _ in 0..10 {
        app.login("alice_1", "wrong_pass1").await;
    }
    app.login("alice_1", PASSWORD)
        .await
        .assert_error(StatusCode::TOO_MANY_REQUESTS, "too many requests");
    app.login("bob_2222", PASSWORD)
        .await
        .assert_success(StatusCode::CREATED);
}

async fn a_successful_login_resets_the_failure_count(app: TestApp) {
    app.sign_up("alice_1").await;
    for _ in 0..9 {
        app.login("alice_1", "wrong_pass1").await;
    }
    app.login("alice_1", PASSWORD)
        .await
        .assert_success(StatusCode::CREATED);
    for _ in 0..9 {
        app.login("alice_1", "wrong_pass1")
            .await
            .assert_error(StatusCode::UNAUTHORIZED, "username or password error");
    }
    app.login("alice_1", PASSWORD)
        .await
        .assert_success(StatusCode::CREATED);
}

async fn the_failure_limit_is_a_setting(app: TestApp) {
    let app = app.with_flags(&["--login-max-failures", "3"]).await;
    app.sign_up("alice_1").await;
    for _ in 0..3 {
        app.login("alice_1", "wrong_pass1").await;
    }
    app.login("alice_1", PASSWORD)
        .await
        .assert_error(StatusCode::TOO_MANY_REQUESTS, "too many requests");
    let app = app.with_flags(&["--login-max-failures", "0"]).await;
    for _ in 0..15 {
        app.login("alice_1", "wrong_pass1")
            .await
            .assert_error(StatusCode::UNAUTHORIZED, "username or password error");
    }
    app.login("alice_1", PASSWORD)
        .await
        .assert_success(StatusCode::CREATED);
}

async fn sign_up_login_and_refresh_from_one_address_share_one_rate(app: TestApp) {
    let app = app.with_flags(&["--auth-rate-per-minute", "4"]).await;
    let user = app.user("alice_1").await; // sign-up and login: 2 of 4
    let reply = app
        .post_anonymous(
            "/v1/api/user/refresh",
            json!({ "reflash_key": user.reflash_key }),
        )
        .await;
    reply.assert_success(StatusCode::CREATED);
    let token = reply.body["token"].as_str().unwrap().to_owned();
    app.login("alice_1", PASSWORD)
        .await
        .assert_success(StatusCode::CREATED);
    for (path, body) in [
        (
            "/v1/api/user/login",
            json!({ "username": "alice_1", "password": PASSWORD }),
        ),
        (
            "/v1/api/user",
            json!({ "username": "bob_2222", "password": PASSWORD, "apikey": API_KEY }),
        ),
        ("/v1/api/user/refresh", json!({ "reflash_key": "anything" })),
    ] {
        let reply = app.post_anonymous(path, body).await;
        reply.assert_error(StatusCode::TOO_MANY_REQUESTS, "too many requests");
        assert!(retry_after(&reply) >= 1);
    }
    // Other routes are not limited.
    app.put(&format!("{RING}/1"), &token, registration(1))
        .await
        .assert_success(StatusCode::CREATED);
}

/// A body that never arrives.
fn stalled_body() -> Body {
    Body::from_stream(futures_util::stream::pending::<
        Result<Vec<u8>, std::io::Error>,
    >())
}

async fn a_request_over_the_timeout_is_408_request_timeout(app: TestApp) {
    let app = app.with_flags(&["--request-timeout", "1s"]).await;
    let user = app.user("alice_1").await;
    let request = Request::post(RING)
        .header("token", &user.token)
        .body(stalled_body())
        .unwrap();
    let started = Instant::now();
    let response = tokio::time::timeout(Duration::from_secs(10), app.router().oneshot(request))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(response.status(), StatusCode::REQUEST_TIMEOUT);
    assert!(started.elapsed() < Duration::from_secs(5));
    // The server goes on answering.
    app.get(RING, &user.token).await.assert_success_list();
}

async fn requests_over_the_in_flight_cap_get_503_server_busy_at_once(app: TestApp) {
    let app = app
        .with_flags(&["--max-in-flight", "1", "--request-timeout", "1s"])
        .await;
    let user = app.user("alice_1").await;
    let holder = Request::post(RING)
        .header("token", &user.token)
        .body(stalled_body())
        .unwrap();
    let holding = tokio::spawn(app.router().oneshot(holder));
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert!(!holding.is_finished(), "the stalled request holds its slot");
    let started = Instant::now();
    let reply = app
        .request(Method::GET, RING, &[("token", &user.token)], None)
        .await;
    reply.assert_error(StatusCode::SERVICE_UNAVAILABLE, "server busy");
    assert!(
        started.elapsed() < Duration::from_millis(500),
        "shed at once, not queued"
    );
    let probe = app.request(Method::GET, "/healthz", &[], None).await;
    assert_eq!(probe.status, StatusCode::OK, "health probes pass the cap");
    assert_eq!(
        holding.await.unwrap().unwrap().status(),
        StatusCode::REQUEST_TIMEOUT
    );
    app.get(RING, &user.token).await.assert_success_list();
}

on_every_backend!(
    ten_failed_logins_lock_the_username_with_429_and_retry_after,
    failed_logins_count_per_username,
    a_successful_login_resets_the_failure_count,
    the_failure_limit_is_a_setting,
    sign_up_login_and_refresh_from_one_address_share_one_rate,
    a_request_over_the_timeout_is_408_request_timeout,
    requests_over_the_in_flight_cap_get_503_server_busy_at_once,
);
