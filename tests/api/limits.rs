//! Abuse limits: failed logins per account, admission to password hashing,
//! sign-up/login/refresh per client address, requests in flight and the
//! request timeout.

use std::time::{Duration, Instant};

use axum::http::{Method, Request, StatusCode};
use serde_json::json;
use tower::ServiceExt;

use crate::support::accounts::sign_up;
use crate::support::api::{
    full_sign_up_body, login_body, registration, sign_up_body, LOGIN, PASSWORD, REFRESH, RING,
    SIGN_UP,
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
async fn failed_logins_count_per_account(app: TestApp) {
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

/// Sends `times` logins of `login` with `password` at once; their answers.
async fn simultaneous_logins(
    app: &TestApp,
    login: &str,
    password: &str,
    times: usize,
) -> Vec<Reply> {
    let logins = (0..times).map(|_| app.login(login, password));
    futures_util::future::join_all(logins).await
}

fn count(replies: &[Reply], status: StatusCode) -> usize {
    replies.iter().filter(|r| r.status == status).count()
}

#[every_backend]
async fn a_hundred_simultaneous_wrong_passwords_get_at_most_ten_401s(app: TestApp) {
    app.sign_up("alice_1").await;
    let replies = simultaneous_logins(&app, "alice_1", "wrong_pass1", 100).await;
    assert_eq!(count(&replies, StatusCode::UNAUTHORIZED), 10);
    assert_eq!(count(&replies, StatusCode::TOO_MANY_REQUESTS), 90);
    assert_locked(&app, "alice_1").await;
}

#[every_backend]
async fn the_username_email_and_phone_of_one_account_share_one_count(app: TestApp) {
    let body = full_sign_up_body("alice_1", 1);
    sign_up(&app, body.clone())
        .await
        .assert_success(StatusCode::CREATED);
    let email = body["email"].as_str().unwrap();
    let phone = body["phone"].as_str().unwrap();
    fail_logins(&app, "alice_1", 4).await;
    fail_logins(&app, email, 3).await;
    fail_logins(&app, phone, 3).await;
    for name in ["alice_1", email, phone] {
        assert_locked(&app, name).await;
    }
}

#[every_backend]
async fn an_unknown_login_name_is_counted_on_its_own(app: TestApp) {
    app.sign_up("alice_1").await;
    fail_logins(&app, "nobody_at_all", 10).await;
    assert_locked(&app, "nobody_at_all").await;
    fail_logins(&app, "nobody_else", 1).await;
    assert_logs_in(&app, "alice_1").await;
}

#[every_backend]
async fn a_login_name_over_64_characters_is_400_before_the_account_is_looked_at(app: TestApp) {
    app.sign_up("alice_1").await;
    let long = "a".repeat(65);
    for _ in 0..12 {
        app.login(&long, PASSWORD)
            .await
            .assert_error(StatusCode::BAD_REQUEST, "username length error");
    }
    let longest = format!("{}@example.com", "a".repeat(52));
    assert_eq!(longest.len(), 64);
    fail_logins(&app, &longest, 1).await;
}

#[every_backend]
async fn a_login_flood_beyond_the_hash_queue_gets_503_uncounted_while_token_routes_answer(
    app: TestApp,
) {
    // Hashes slow enough that the flood finds both places taken (one
    // waiting, one hashing).
    let app = app
        .with_password_cost(32 * 1024, 2, &["--hash-queue", "1"])
        .await;
    let alice = app.user("alice_1").await;
    let flood = simultaneous_logins(&app, "alice_1", "wrong_pass1", 40);
    let reads = async {
        let mut answers = Vec::new();
        for _ in 0..5 {
            answers.push(app.get(RING, &alice.token).await.status);
        }
        answers
    };
    let (replies, reads) = tokio::join!(flood, reads);
    assert!(reads.iter().all(|s| *s == StatusCode::OK), "{reads:?}");
    let busy = count(&replies, StatusCode::SERVICE_UNAVAILABLE);
    let refused = count(&replies, StatusCode::UNAUTHORIZED);
    assert!(busy >= 1, "the flood exceeds the hash queue");
    assert!(refused <= 10);
    for reply in replies
        .iter()
        .filter(|r| r.status == StatusCode::SERVICE_UNAVAILABLE)
    {
        reply.assert_error(StatusCode::SERVICE_UNAVAILABLE, "server busy");
    }
    assert_eq!(
        busy + refused + count(&replies, StatusCode::TOO_MANY_REQUESTS),
        40
    );
    // Only the attempts whose password was checked were counted.
    fail_logins(&app, "alice_1", 10 - refused).await;
    assert_locked(&app, "alice_1").await;
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
