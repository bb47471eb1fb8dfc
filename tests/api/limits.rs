//! Abuse limits: failed logins per username, sign-up/login/refresh per
//! client address, requests in flight and the request timeout.

use std::time::{Duration, Instant};

use axum::http::{Method, Request, StatusCode};
use serde_json::json;
use tower::ServiceExt;

use crate::support::api::{
    login_body, registration, sign_up_body, LOGIN, PASSWORD, REFRESH, RING, SIGN_UP,
};
use crate::support::app::stalled_body;
use crate::support::{every_backend, Reply, TestApp};

fn retry_after(reply: &Reply) -> u64 {
    reply.headers["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap()
}

/// `times` logins of `username` with a wrong password, each refused as such.
async fn fail_logins(app: &TestApp, username: &str, times: usize) {
    for _ in 0..times {
        app.login(username, "wrong_pass1")
            .await
            .assert_error(StatusCode::UNAUTHORIZED, "username or password error");
    }
}

/// Asserts that `username` can log in with the right password.
async fn assert_logs_in(app: &TestApp, username: &str) {
    app.login(username, PASSWORD)
        .await
        .assert_success(StatusCode::CREATED);
}

/// Asserts that `username` is locked out, the right password too.
async fn assert_locked(app: &TestApp, username: &str) {
    app.login(username, PASSWORD)
        .await
        .assert_error(StatusCode::TOO_MANY_REQUESTS, "too many requests");
}

#[every_backend]
async fn ten_failed_logins_lock_the_username_with_429_and_retry_after(app: TestApp) {
    app.sign_up("alice_1").await;
    fail_logins(&app, "alice_1", 10).await;
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

#[every_backend]
async fn failed_logins_count_per_username(app: TestApp) {
    app.sign_up("alice_1").await;
    app.sign_up("bob_2222").await;
    fail_logins(&app, "alice_1", 10).await;
    assert_locked(&app, "alice_1").await;
    assert_logs_in(&app, "bob_2222").await;
}

#[every_backend]
async fn a_successful_login_resets_the_failure_count(app: TestApp) {
    app.sign_up("alice_1").await;
    fail_logins(&app, "alice_1", 9).await;
    assert_logs_in(&app, "alice_1").await;
    fail_logins(&app, "alice_1", 9).await;
    assert_logs_in(&app, "alice_1").await;
}

#[every_backend]
async fn the_failure_limit_is_a_setting(app: TestApp) {
    let app = app.with_flags(&["--login-max-failures", "3"]).await;
    app.sign_up("alice_1").await;
    fail_logins(&app, "alice_1", 3).await;
    assert_locked(&app, "alice_1").await;
    let app = app.with_flags(&["--login-max-failures", "0"]).await;
    fail_logins(&app, "alice_1", 15).await;
    assert_logs_in(&app, "alice_1").await;
}

#[every_backend]
async fn sign_up_login_and_refresh_from_one_address_share_one_rate(app: TestApp) {
    let app = app.with_flags(&["--auth-rate-per-minute", "4"]).await;
    let user = app.user("alice_1").await; // sign-up and login: 2 of 4
    let reply = app
        .post_anonymous(REFRESH, json!({ "reflash_key": user.reflash_key }))
        .await;
    reply.assert_success(StatusCode::CREATED);
    let token = reply.body["token"].as_str().unwrap().to_owned();
    assert_logs_in(&app, "alice_1").await;
    for (path, body) in [
        (LOGIN, login_body("alice_1", PASSWORD)),
        (SIGN_UP, sign_up_body("bob_2222")),
        (REFRESH, json!({ "reflash_key": "anything" })),
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

#[every_backend]
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

#[every_backend]
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
