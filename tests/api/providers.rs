//! Phones without a socket: rows routed to the phone makers' services, here
//! Xiaomi MiPush against a stand-in on loopback. What the service receives,
//! its verdicts (a dead regid deletes the row), retries while the ttl lasts,
//! and a hanging service that delays nothing else.

use std::time::{Duration, Instant};

use axum::http::{Method, StatusCode};
use serde_json::{json, Value};

use crate::support::api::{MESSAGE, RING};
use crate::support::push::{PushClient, Read, EVENT, PROMPTLY};
use crate::support::standin::{Answer, Relay, StandIn};
use crate::support::{every_backend, Reply, TestApp, TestUser};

const KEY: &str = "operator-notify-key";
const SECRET: &str = "xiaomi-app-secret-0123";
const REGID: &str = "mi-regid-0123456789";

fn ok() -> Answer {
    Answer::json(
        200,
        json!({ "result": "ok", "code": 0, "data": { "id": "msg-1" } }),
    )
}

/// The app with a notify key and Xiaomi pointed at `standin`.
async fn with_xiaomi(app: TestApp, standin: &StandIn, extra: &[&str]) -> TestApp {
    let mut flags = vec![
        "--notify-key",
        KEY,
        "--xiaomi-app-secret",
        SECRET,
        "--xiaomi-url",
        standin.url.as_str(),
    ];
    flags.extend_from_slice(extra);
    app.with_flags(&flags).await
}

/// A row of `user` at serial 1 of the family at `base`, for `platform`.
/// Stores `body` as the user's row 1 at `base`.
async fn store_row(app: &TestApp, user: &TestUser, base: &str, body: Value) {
    let reply = app.put(&format!("{base}/1"), &user.token, body).await;
    assert!(reply.status.is_success(), "{}", reply.body);
}

async fn android_row(app: &TestApp, user: &TestUser, base: &str, platform: &str) {
    let body = json!({
        "push_token": "a".repeat(64), "language": "zh", "os_token": REGID,
        "push_platform": platform, "bundleid": "com.example.doorbell",
    });
    store_row(app, user, base, body).await;
}

async fn notify(app: &TestApp, body: Value) -> Reply {
    let bearer = format!("Bearer {KEY}");
    app.request(
        Method::POST,
        "/v1/api/notify",
        &[("authorization", bearer.as_str())],
        Some(body),
    )
    .await
}

fn event(user: &TestUser, family: &str, ttl: Option<i64>) -> Value {
    let mut body = json!({ "user": user.id, "family": family,
                           "event": { "type": "0", "uid": "DEV-1", "message": "Motion" } });
    if let Some(ttl) = ttl {
        body["ttl"] = ttl.into();
    }
    body
}

fn tally(reply: &Reply, provider: &str) -> (u64, u64, u64) {
    let t = &reply.body["providers"][provider];
    let n = |k: &str| {
        t[k].as_u64()
            .unwrap_or_else(|| panic!("{k} in {}", reply.body))
    };
    (n("sent"), n("failed"), n("pruned"))
}

fn counts(reply: &Reply) -> (u64, u64, u64) {
    let n = |k: &str| reply.body[k].as_u64().unwrap();
    (n("delivered"), n("queued"), n("skipped"))
}

#[every_backend]
async fn an_event_reaches_a_xiaomi_row_as_a_pass_through_message_with_the_frame_json(app: TestApp) {
    let standin = StandIn::start(ok()).await;
    let app = with_xiaomi(app, &standin, &[]).await;
    let alice = app.user("alice_1").await;
    android_row(&app, &alice, MESSAGE, "xiaomi").await;
    let reply = notify(&app, event(&alice, "message", None)).await;
    reply.assert_success(StatusCode::ACCEPTED);
    assert_eq!(counts(&reply), (1, 0, 0), "{}", reply.body);
    assert_eq!(tally(&reply, "xiaomi"), (1, 0, 0));
    for other in ["apns", "fcm", "huawei"] {
        assert_eq!(tally(&reply, other), (0, 0, 0));
    }
    let seen = standin.wait_for(1).await;
    let request = &seen[0];
    assert_eq!(
        (request.method.as_str(), request.path.as_str()),
        ("POST", "/v3/message/regid")
    );
    assert_eq!(
        request.header("authorization"),
        Some(format!("key={SECRET}").as_str())
    );
    assert_eq!(request.field("registration_id").as_deref(), Some(REGID));
    assert_eq!(request.field("pass_through").as_deref(), Some("1"));
    assert_eq!(
        request.field("restricted_package_name").as_deref(),
        Some("com.example.doorbell")
    );
    assert_eq!(request.field("time_to_live").as_deref(), Some("86400000"));
    let payload: Value = serde_json::from_str(&request.field("payload").unwrap()).unwrap();
    assert_eq!(payload["id"], reply.body["id"]);
    assert_eq!(payload["family"], "message");
    assert_eq!(
        (&payload["type"], &payload["uid"]),
        (&json!("0"), &json!("DEV-1"))
    );
    assert_eq!(payload["message"], "Motion");
    assert!(payload["time"].as_i64().unwrap() > 0);
}

#[every_backend]
async fn a_row_no_configured_provider_takes_is_skipped(app: TestApp) {
    let app = app.with_flags(&["--notify-key", KEY]).await;
    let alice = app.user("alice_1").await;
    android_row(&app, &alice, RING, "XIAOMI").await;
    let reply = notify(&app, event(&alice, "ring", None)).await;
    assert_eq!(counts(&reply), (0, 0, 1), "{}", reply.body);
    assert_eq!(tally(&reply, "xiaomi"), (0, 0, 0));

    // Configured, but the row names a platform nobody serves.
    let standin = StandIn::start(ok()).await;
    let app = with_xiaomi(app, &standin, &[]).await;
    android_row(&app, &alice, RING, "OPPO").await;
    let reply = notify(&app, event(&alice, "ring", None)).await;
    assert_eq!(counts(&reply), (0, 0, 1), "{}", reply.body);
    assert!(standin.seen().is_empty());
}

#[every_backend]
async fn a_regid_the_service_calls_bad_deletes_its_row(app: TestApp) {
    let standin = StandIn::start(ok()).await;
    let app = with_xiaomi(app, &standin, &[]).await;
    let alice = app.user("alice_1").await;
    for dead in [
        Answer::json(
            200,
            json!({ "result": "ok", "code": 0, "data": { "bad_regids": format!("other,{REGID}") } }),
        ),
        Answer::json(
            200,
            json!({ "result": "error", "code": 20301, "reason": "invalid regid" }),
        ),
    ] {
        android_row(&app, &alice, MESSAGE, "XIAOMI").await;
        standin.then(dead);
        let reply = notify(&app, event(&alice, "message", None)).await;
        assert_eq!(tally(&reply, "xiaomi"), (0, 0, 1), "{}", reply.body);
        assert_eq!(app.get(MESSAGE, &alice.token).await.body, json!([]));
    }
    // Another refusal keeps the row.
    android_row(&app, &alice, MESSAGE, "XIAOMI").await;
    standin.then(Answer::json(
        200,
        json!({ "result": "error", "code": 22001, "reason": "quota" }),
    ));
    let reply = notify(&app, event(&alice, "message", None)).await;
    assert_eq!(tally(&reply, "xiaomi"), (0, 1, 0), "{}", reply.body);
    assert_eq!(
        app.get(MESSAGE, &alice.token)
            .await
            .body
            .as_array()
            .map(Vec::len),
        Some(1)
    );
}

#[every_backend]
async fn a_transient_failure_is_retried_after_the_services_retry_after(app: TestApp) {
    let standin = StandIn::start(ok()).await;
    let app = with_xiaomi(app, &standin, &[]).await;
    let alice = app.user("alice_1").await;
    android_row(&app, &alice, MESSAGE, "XIAOMI").await;
    standin.then(Answer::retry_after(503, 1));
    let reply = notify(&app, event(&alice, "message", None)).await;
    assert_eq!(tally(&reply, "xiaomi"), (1, 0, 0), "{}", reply.body);
    let seen = standin.wait_for(2).await;
    assert_eq!(seen.len(), 2);
    let waited = seen[1].at - seen[0].at;
    assert!(
        waited >= Duration::from_millis(950),
        "retried after {waited:?}"
    );
}

#[every_backend]
async fn a_push_that_cannot_get_through_before_its_ttl_runs_out_fails(app: TestApp) {
    let standin = StandIn::start(Answer::retry_after(429, 2)).await;
    let app = with_xiaomi(app, &standin, &[]).await;
    let alice = app.user("alice_1").await;
    android_row(&app, &alice, RING, "XIAOMI").await;
    let reply = notify(&app, event(&alice, "ring", Some(1))).await;
    assert_eq!(tally(&reply, "xiaomi"), (0, 1, 0), "{}", reply.body);
    // ttl 0: one attempt only.
    let reply = notify(&app, event(&alice, "ring", Some(0))).await;
    assert_eq!(tally(&reply, "xiaomi"), (0, 1, 0), "{}", reply.body);
    assert_eq!(standin.seen().len(), 2);
    // The row stays: a busy service says nothing of the token.
    assert_eq!(
        app.get(RING, &alice.token)
            .await
            .body
            .as_array()
            .map(Vec::len),
        Some(1)
    );
}

#[every_backend]
async fn a_hanging_service_delays_no_socket_frame_and_counts_as_queued(app: TestApp) {
    let standin = StandIn::start(Answer::Hang).await;
    let app = with_xiaomi(app, &standin, &[]).await;
    let address = app.push_socket().await;
    let alice = app.user("alice_1").await;
    android_row(&app, &alice, RING, "XIAOMI").await;
    let mut phone = PushClient::connect(address).await;
    let token = phone.register("imei-1", None).await;
    let body = json!({ "push_token": token, "language": "en" });
    app.put(&format!("{RING}/2"), &alice.token, body)
        .await
        .assert_success(StatusCode::CREATED);

    let started = Instant::now();
    let sent = notify(&app, event(&alice, "ring", None));
    let read = async {
        let read = phone.read_skipping_heartbeats(PROMPTLY).await;
        (read, started.elapsed())
    };
    let (reply, (read, frame_after)) = tokio::join!(sent, read);
    let Read::Frame(EVENT, payload) = read else {
        panic!("expected the event, got {read:?}");
    };
    let frame: Value = serde_json::from_slice(&payload).unwrap();
    assert_eq!(frame["id"], reply.body["id"]);
    // The answer waits up to 5 s for the service; the frame did not.
    let answered_after = started.elapsed();
    assert!(
        frame_after < answered_after && frame_after < Duration::from_secs(4),
        "frame after {frame_after:?}, answer after {answered_after:?}"
    );
    assert_eq!(counts(&reply), (1, 1, 0), "{}", reply.body);
    assert_eq!(tally(&reply, "xiaomi"), (0, 0, 0));
    // The REST routes answer meanwhile.
    app.get(RING, &alice.token).await.assert_success_list();
}

#[every_backend]
async fn over_https_the_service_is_trusted_through_the_provider_ca_file(app: TestApp) {
    let standin = StandIn::start_tls(ok()).await;
    let ca = standin.ca_file.clone().unwrap();
    let app = with_xiaomi(app, &standin, &["--provider-ca-file", ca.to_str().unwrap()]).await;
    let alice = app.user("alice_1").await;
    android_row(&app, &alice, MESSAGE, "XIAOMI").await;
    let reply = notify(&app, event(&alice, "message", None)).await;
    assert_eq!(tally(&reply, "xiaomi"), (1, 0, 0), "{}", reply.body);
    // Without the CA, the stand-in's certificate is not trusted: nothing
    // gets through, and a ttl of 0 allows one attempt.
    let app = with_xiaomi(app, &standin, &[]).await;
    let reply = notify(&app, event(&alice, "message", Some(0))).await;
    assert_eq!(tally(&reply, "xiaomi"), (0, 1, 0), "{}", reply.body);
    assert_eq!(standin.seen().len(), 1);
}

// FCM HTTP v1, with its OAuth token endpoint, both on one stand-in.

const FCM_TOKEN: &str = "fcm-registration-token-0123456789";
const PROJECT: &str = "doorbell-test";
const FCM_KEY: &str = include_str!("fixtures/fcm-service-account-key.pem");
const FCM_PUBLIC_KEY: &str = include_str!("fixtures/fcm-service-account-key.pub.pem");

fn access_token(n: u32) -> Answer {
    Answer::json(
        200,
        json!({ "access_token": format!("access-{n}"), "expires_in": 3600, "token_type": "Bearer" }),
    )
}

/// The app with FCM pointed at `standin` (its token endpoint at `/token`),
/// through a service-account file in `dir`.
async fn with_fcm(app: TestApp, standin: &StandIn, dir: &std::path::Path) -> TestApp {
    with_fcm_at(app, &standin.url, &standin.url, None, dir).await
}

/// FCM at `url`, its access tokens from `token_url`, the CA of `ca` (PEM)
/// trusted.
async fn with_fcm_at(
    app: TestApp,
    url: &str,
    token_url: &str,
    ca: Option<&std::path::Path>,
    dir: &std::path::Path,
) -> TestApp {
    let credentials = dir.join("service-account.json");
    let account = json!({
        "type": "service_account", "project_id": PROJECT, "private_key_id": "key-1",
        "private_key": FCM_KEY, "client_email": "pushtoken@doorbell-test.iam.gserviceaccount.com",
        "token_uri": format!("{token_url}/token"),
    });
    std::fs::write(&credentials, account.to_string()).unwrap();
    let mut flags = vec![
        "--notify-key",
        KEY,
        "--fcm-credentials",
        credentials.to_str().unwrap(),
        "--fcm-url",
        url,
    ];
    if let Some(ca) = ca {
        flags.extend(["--provider-ca-file", ca.to_str().unwrap()]);
    }
    app.with_flags(&flags).await
}

async fn fcm_row(app: &TestApp, user: &TestUser, base: &str) {
    let body = json!({
        "push_token": "b".repeat(64), "language": "en", "os_token": FCM_TOKEN,
        "push_platform": "FCM", "os": "ANDROID",
    });
    store_row(app, user, base, body).await;
}

#[every_backend]
async fn an_event_reaches_an_fcm_row_as_a_data_message_with_a_service_account_token(app: TestApp) {
    let standin = StandIn::start(Answer::json(
        200,
        json!({ "name": "projects/p/messages/1" }),
    ))
    .await;
    standin.then(access_token(1));
    let dir = tempfile::tempdir().unwrap();
    let app = with_fcm(app, &standin, dir.path()).await;
    let alice = app.user("alice_1").await;
    fcm_row(&app, &alice, RING).await;
    let body = json!({ "user": "alice_1", "family": "ring", "ttl": 30,
        "event": { "type": "1", "uid": "DEV-1", "message": "At the door", "width": 1920 } });
    let reply = notify(&app, body).await;
    assert_eq!(tally(&reply, "fcm"), (1, 0, 0), "{}", reply.body);
    assert_eq!(counts(&reply), (1, 0, 0));

    let seen = standin.wait_for(2).await;
    // The token request: a JWT signed with the account's key.
    let (token, send) = (&seen[0], &seen[1]);
    assert_eq!(token.path, "/token");
    assert_eq!(
        token.field("grant_type").as_deref(),
        Some("urn:ietf:params:oauth:grant-type:jwt-bearer")
    );
    let assertion = token.field("assertion").unwrap();
    let key = jsonwebtoken::DecodingKey::from_rsa_pem(FCM_PUBLIC_KEY.as_bytes()).unwrap();
    let mut validation = jsonwebtoken::Validation::new(jsonwebtoken::Algorithm::RS256);
    validation.set_audience(&[format!("{}/token", standin.url)]);
    let claims = jsonwebtoken::decode::<Value>(&assertion, &key, &validation).unwrap();
    assert_eq!(claims.header.kid.as_deref(), Some("key-1"));
    assert_eq!(
        claims.claims["iss"],
        "pushtoken@doorbell-test.iam.gserviceaccount.com"
    );
    assert_eq!(
        claims.claims["scope"],
        "https://www.googleapis.com/auth/firebase.messaging"
    );

    // The send: the project's path, the access token, a data message.
    assert_eq!(send.path, format!("/v1/projects/{PROJECT}/messages:send"));
    assert_eq!(send.header("authorization"), Some("Bearer access-1"));
    let message: Value = serde_json::from_slice(&send.body).unwrap();
    let message = &message["message"];
    assert_eq!(message["token"], FCM_TOKEN);
    assert_eq!(
        message["android"],
        json!({ "priority": "high", "ttl": "30s" })
    );
    let data = message["data"].as_object().unwrap();
    assert!(data.values().all(Value::is_string), "{data:?}");
    assert_eq!(data["id"], reply.body["id"].to_string());
    assert_eq!(
        (&data["family"], &data["type"]),
        (&json!("ring"), &json!("1"))
    );
    assert_eq!(
        (&data["message"], &data["width"]),
        (&json!("At the door"), &json!("1920"))
    );

    // The access token is reused; a message goes at normal priority.
    fcm_row(&app, &alice, MESSAGE).await;
    notify(&app, event(&alice, "message", None)).await;
    let seen = standin.wait_for(3).await;
    assert_eq!(seen.len(), 3, "no second token request");
    assert_eq!(seen[2].header("authorization"), Some("Bearer access-1"));
    let message: Value = serde_json::from_slice(&seen[2].body).unwrap();
    assert_eq!(message["message"]["android"]["priority"], "normal");
}

#[every_backend]
async fn fcm_fetches_a_new_access_token_once_after_a_401(app: TestApp) {
    let standin = StandIn::start(Answer::json(200, json!({ "name": "m" }))).await;
    standin.then(access_token(1));
    standin.then(Answer::json(
        401,
        json!({ "error": { "code": 401, "status": "UNAUTHENTICATED" } }),
    ));
    standin.then(access_token(2));
    let dir = tempfile::tempdir().unwrap();
    let app = with_fcm(app, &standin, dir.path()).await;
    let alice = app.user("alice_1").await;
    fcm_row(&app, &alice, RING).await;
    let reply = notify(&app, event(&alice, "ring", None)).await;
    assert_eq!(tally(&reply, "fcm"), (1, 0, 0), "{}", reply.body);
    let seen = standin.wait_for(4).await;
    let paths: Vec<&str> = seen.iter().map(|s| s.path.as_str()).collect();
    assert_eq!(paths[0], "/token");
    assert_eq!(paths[2], "/token");
    assert_eq!(seen[3].header("authorization"), Some("Bearer access-2"));
}

#[every_backend]
async fn fcm_unregistered_and_an_invalid_token_delete_the_row(app: TestApp) {
    let standin = StandIn::start(Answer::json(200, json!({ "name": "m" }))).await;
    standin.then(access_token(1));
    let dir = tempfile::tempdir().unwrap();
    let app = with_fcm(app, &standin, dir.path()).await;
    let alice = app.user("alice_1").await;
    for dead in [
        Answer::json(
            404,
            json!({ "error": { "code": 404, "status": "NOT_FOUND",
            "details": [{ "errorCode": "UNREGISTERED" }] } }),
        ),
        Answer::json(
            400,
            json!({ "error": { "code": 400, "status": "INVALID_ARGUMENT",
            "details": [{ "fieldViolations": [{ "field": "message.token" }] }] } }),
        ),
    ] {
        fcm_row(&app, &alice, RING).await;
        standin.then(dead);
        let reply = notify(&app, event(&alice, "ring", None)).await;
        assert_eq!(tally(&reply, "fcm"), (0, 0, 1), "{}", reply.body);
        assert_eq!(app.get(RING, &alice.token).await.body, json!([]));
    }
}

#[tokio::test]
async fn an_unreadable_fcm_credentials_file_stops_startup_with_one_line() {
    use clap::Parser;
    let dir = tempfile::tempdir().unwrap();
    let broken = dir.path().join("broken.json");
    std::fs::write(&broken, "{\"project_id\": \"p\"}").unwrap();
    for path in [dir.path().join("missing.json"), broken] {
        let cli = pushtoken::config::Cli::try_parse_from([
            "pushtoken",
            "--fcm-credentials",
            path.to_str().unwrap(),
        ])
        .unwrap();
        let reason = pushtoken::Config::from_settings(&cli.settings)
            .err()
            .unwrap();
        assert!(reason.contains("PUSHTOKEN_FCM_CREDENTIALS"), "{reason}");
        assert!(!reason.contains('\n'), "{reason}");
    }
}

// Huawei Push Kit, with its OAuth token endpoint, both on one stand-in.

const HUAWEI_APP: &str = "104512345";
const HUAWEI_SECRET: &str = "huawei-app-secret-0123";
const HUAWEI_TOKEN: &str = "huawei-push-token-0123456789";

fn push_kit(code: &str, msg: &str) -> Answer {
    Answer::json(200, json!({ "code": code, "msg": msg, "requestId": "r-1" }))
}

async fn with_huawei(app: TestApp, standin: &StandIn) -> TestApp {
    let token_url = format!("{}/oauth2/v3/token", standin.url);
    let flags = [
        "--notify-key",
        KEY,
        "--huawei-app-id",
        HUAWEI_APP,
        "--huawei-app-secret",
        HUAWEI_SECRET,
        "--huawei-url",
        standin.url.as_str(),
        "--huawei-token-url",
        token_url.as_str(),
    ];
    app.with_flags(&flags).await
}

async fn huawei_row(app: &TestApp, user: &TestUser, base: &str) {
    let body = json!({
        "push_token": "c".repeat(64), "language": "zh", "os_token": HUAWEI_TOKEN,
        "push_platform": "HUAWEI", "os": "Huawei",
    });
    store_row(app, user, base, body).await;
}

#[every_backend]
async fn an_event_reaches_a_huawei_row_with_a_client_credentials_token(app: TestApp) {
    let standin = StandIn::start(push_kit("80000000", "Success")).await;
    standin.then(access_token(1));
    let app = with_huawei(app, &standin).await;
    let alice = app.user("alice_1").await;
    huawei_row(&app, &alice, RING).await;
    let reply = notify(&app, event(&alice, "ring", Some(45))).await;
    assert_eq!(tally(&reply, "huawei"), (1, 0, 0), "{}", reply.body);

    let seen = standin.wait_for(2).await;
    let (token, send) = (&seen[0], &seen[1]);
    assert_eq!(token.path, "/oauth2/v3/token");
    assert_eq!(
        token.field("grant_type").as_deref(),
        Some("client_credentials")
    );
    assert_eq!(token.field("client_id").as_deref(), Some(HUAWEI_APP));
    assert_eq!(token.field("client_secret").as_deref(), Some(HUAWEI_SECRET));
    assert_eq!(send.path, format!("/v1/{HUAWEI_APP}/messages:send"));
    assert_eq!(send.header("authorization"), Some("Bearer access-1"));
    let body: Value = serde_json::from_slice(&send.body).unwrap();
    let message = &body["message"];
    assert_eq!(message["token"], json!([HUAWEI_TOKEN]));
    assert_eq!(
        message["android"],
        json!({ "urgency": "HIGH", "ttl": "45s" })
    );
    let data: Value = serde_json::from_str(message["data"].as_str().unwrap()).unwrap();
    assert_eq!(
        (&data["id"], &data["family"]),
        (&reply.body["id"], &json!("ring"))
    );
}

#[every_backend]
async fn push_kit_invalid_tokens_delete_the_row_and_an_expired_access_token_is_fetched_again(
    app: TestApp,
) {
    let standin = StandIn::start(push_kit("80000000", "Success")).await;
    standin.then(access_token(1));
    let app = with_huawei(app, &standin).await;
    let alice = app.user("alice_1").await;
    let partly = format!(r#"{{"success":0,"failure":1,"illegal_tokens":["{HUAWEI_TOKEN}"]}}"#);
    for dead in [
        push_kit("80300007", "All the tokens are invalid"),
        push_kit("80100000", &partly),
    ] {
        huawei_row(&app, &alice, MESSAGE).await;
        standin.then(dead);
        let reply = notify(&app, event(&alice, "message", None)).await;
        assert_eq!(tally(&reply, "huawei"), (0, 0, 1), "{}", reply.body);
        assert_eq!(app.get(MESSAGE, &alice.token).await.body, json!([]));
    }
    // The access token expired: one new one, then the push goes.
    huawei_row(&app, &alice, MESSAGE).await;
    standin.then(push_kit("80200003", "OAuth token expired"));
    standin.then(access_token(2));
    let reply = notify(&app, event(&alice, "message", None)).await;
    assert_eq!(tally(&reply, "huawei"), (1, 0, 0), "{}", reply.body);
    let seen = standin.seen();
    assert_eq!(
        seen.last().unwrap().header("authorization"),
        Some("Bearer access-2")
    );
}

#[tokio::test]
async fn a_huawei_app_id_without_its_secret_stops_startup_with_one_line() {
    use clap::Parser;
    for args in [
        &["pushtoken", "--huawei-app-id", HUAWEI_APP][..],
        &["pushtoken", "--huawei-app-secret", HUAWEI_SECRET],
    ] {
        let cli = pushtoken::config::Cli::try_parse_from(args).unwrap();
        let reason = pushtoken::Config::from_settings(&cli.settings)
            .err()
            .unwrap();
        assert!(reason.contains("PUSHTOKEN_HUAWEI_APP"), "{reason}");
        assert!(!reason.contains('\n'), "{reason}");
    }
}

// APNs over HTTP/2 and TLS, against a stand-in whose CA the server trusts.

const DEVICE: &str = "0f1e2d3c4b5a69788796a5b4c3d2e1f00f1e2d3c4b5a69788796a5b4c3d2e1f0";

/// The app with APNs (a fresh .p8 key in `dir`) pointed at `standin` for
/// both environments; the key's public half, to check the JWT.
async fn with_apns(app: TestApp, standin: &StandIn, dir: &std::path::Path) -> (TestApp, String) {
    with_apns_at(app, &standin.url, standin, dir).await
}

/// The same, with APNs at `url` (a relay in front of `standin`).
async fn with_apns_at(
    app: TestApp,
    url: &str,
    standin: &StandIn,
    dir: &std::path::Path,
) -> (TestApp, String) {
    let key = rcgen::KeyPair::generate().unwrap();
    let p8 = dir.join("AuthKey_KEY123.p8");
    std::fs::write(&p8, key.serialize_pem()).unwrap();
    let ca = standin.ca_file.clone().unwrap();
    let flags = [
        "--notify-key",
        KEY,
        "--apns-key-file",
        p8.to_str().unwrap(),
        "--apns-key-id",
        "KEY123",
        "--apns-team-id",
        "TEAM456",
        "--apns-url",
        url,
        "--provider-ca-file",
        ca.to_str().unwrap(),
    ];
    (app.with_flags(&flags).await, key.public_key_pem())
}

async fn iphone_row(app: &TestApp, user: &TestUser, base: &str, dev: i64) {
    let body = json!({ "push_token": DEVICE, "language": "en", "dev": dev,
                       "bundleid": "com.lancens.wxdoorbell" });
    store_row(app, user, base, body).await;
}

#[every_backend]
async fn a_ring_reaches_an_iphone_as_a_voip_push_over_http2_with_a_team_jwt(app: TestApp) {
    let standin = StandIn::start_tls(Answer::json(200, json!({}))).await;
    let dir = tempfile::tempdir().unwrap();
    let (app, public_key) = with_apns(app, &standin, dir.path()).await;
    let alice = app.user("alice_1").await;
    iphone_row(&app, &alice, RING, 0).await;
    let body = json!({ "user": alice.id, "family": "ring", "ttl": 30,
        "event": { "type": "1", "uid": "LANCENS-000123-ABCDE", "message": "Someone is at the door" } });
    let before = pushtoken::unix_now();
    let reply = notify(&app, body).await;
    assert_eq!(tally(&reply, "apns"), (1, 0, 0), "{}", reply.body);
    assert_eq!(counts(&reply), (1, 0, 0));

    let push = &standin.wait_for(1).await[0];
    assert_eq!(push.version, "HTTP/2.0");
    assert_eq!(push.path, format!("/3/device/{DEVICE}"));
    assert_eq!(
        push.header("apns-topic"),
        Some("com.lancens.wxdoorbell.voip")
    );
    assert_eq!(push.header("apns-push-type"), Some("voip"));
    assert_eq!(push.header("apns-priority"), Some("10"));
    assert_eq!(
        push.header("apns-collapse-id"),
        Some("LANCENS-000123-ABCDE")
    );
    let expiration: i64 = push.header("apns-expiration").unwrap().parse().unwrap();
    assert!(
        (before + 30..=before + 32).contains(&expiration),
        "{expiration}"
    );
    let jwt = push
        .header("authorization")
        .unwrap()
        .strip_prefix("bearer ")
        .unwrap();
    let key = jsonwebtoken::DecodingKey::from_ec_pem(public_key.as_bytes()).unwrap();
    let mut validation = jsonwebtoken::Validation::new(jsonwebtoken::Algorithm::ES256);
    validation.required_spec_claims.clear();
    validation.validate_exp = false;
    let token = jsonwebtoken::decode::<Value>(jwt, &key, &validation).unwrap();
    assert_eq!(token.header.kid.as_deref(), Some("KEY123"));
    assert_eq!(token.claims["iss"], "TEAM456");
    assert!(token.claims["iat"].as_i64().unwrap() >= before - 1);
    let payload: Value = serde_json::from_slice(&push.body).unwrap();
    assert_eq!(payload["aps"], json!({ "alert": "Someone is at the door" }));
    assert_eq!(
        (&payload["id"], &payload["family"]),
        (&reply.body["id"], &json!("ring"))
    );
    assert_eq!(payload["uid"], "LANCENS-000123-ABCDE");
}

#[every_backend]
async fn pushes_sent_together_to_one_apns_environment_share_one_connection(app: TestApp) {
    let standin = StandIn::start_tls(Answer::json(200, json!({}))).await;
    // The first handshake takes half a second: every push below is on its
    // way before it ends.
    let relay = Relay::before(&standin, Duration::from_millis(500)).await;
    let dir = tempfile::tempdir().unwrap();
    let (app, _) = with_apns_at(app, &relay.url, &standin, dir.path()).await;
    let alice = app.user("alice_1").await;
    iphone_row(&app, &alice, RING, 0).await;
    sixteen_rings_over_one_connection(&app, &alice, "apns", &standin, &relay).await;
}

/// Sends 16 rings to `user` at once: each is sent by `provider`, reaches
/// `standin`, and all of them go through one connection of `relay`.
async fn sixteen_rings_over_one_connection(
    app: &TestApp,
    user: &TestUser,
    provider: &str,
    standin: &StandIn,
    relay: &Relay,
) {
    let body = json!({ "user": user.id, "family": "ring", "ttl": 30,
                       "event": { "type": "1", "uid": "DEV-1", "message": "Ring" } });
    let replies = futures_util::future::join_all((0..16).map(|_| notify(app, body.clone()))).await;
    for reply in &replies {
        assert_eq!(tally(reply, provider), (1, 0, 0), "{}", reply.body);
    }
    assert_eq!(standin.seen().len(), 16);
    assert_eq!(
        relay.connections(),
        1,
        "one HTTP/2 connection to {provider}, not one per push"
    );
}

#[every_backend]
async fn pushes_sent_together_to_fcm_over_https_share_one_connection(app: TestApp) {
    let fcm = StandIn::start_tls(Answer::json(
        200,
        json!({ "name": "projects/p/messages/1" }),
    ))
    .await;
    // The first handshake takes half a second: every push below is on its
    // way before it ends.
    let relay = Relay::before(&fcm, Duration::from_millis(500)).await;
    let oauth = StandIn::start(access_token(1)).await;
    let dir = tempfile::tempdir().unwrap();
    let ca = fcm.ca_file.clone().unwrap();
    let app = with_fcm_at(app, &relay.url, &oauth.url, Some(&ca), dir.path()).await;
    let alice = app.user("alice_1").await;
    fcm_row(&app, &alice, RING).await;
    sixteen_rings_over_one_connection(&app, &alice, "fcm", &fcm, &relay).await;
}

#[every_backend]
async fn a_message_is_an_alert_push_that_keeps_the_events_own_aps(app: TestApp) {
    let standin = StandIn::start_tls(Answer::json(200, json!({}))).await;
    let dir = tempfile::tempdir().unwrap();
    let (app, _) = with_apns(app, &standin, dir.path()).await;
    let alice = app.user("alice_1").await;
    iphone_row(&app, &alice, MESSAGE, 1).await;
    let body = json!({ "user": alice.id, "family": "message", "ttl": 0,
        "event": { "type": "0", "uid": "DEV-1", "alert": "Motion", "message": "other",
                   "aps": { "sound": "default", "badge": 2 } } });
    let reply = notify(&app, body).await;
    assert_eq!(tally(&reply, "apns"), (1, 0, 0), "{}", reply.body);
    let push = &standin.wait_for(1).await[0];
    assert_eq!(push.header("apns-topic"), Some("com.lancens.wxdoorbell"));
    assert_eq!(push.header("apns-push-type"), Some("alert"));
    assert_eq!(push.header("apns-expiration"), Some("0"));
    assert_eq!(push.header("apns-collapse-id"), None);
    let payload: Value = serde_json::from_slice(&push.body).unwrap();
    assert_eq!(
        payload["aps"],
        json!({ "sound": "default", "badge": 2, "alert": "Motion" })
    );
    assert_eq!(payload["message"], "other");
}

#[every_backend]
async fn apns_410_and_bad_device_token_delete_the_row(app: TestApp) {
    let standin = StandIn::start_tls(Answer::json(200, json!({}))).await;
    let dir = tempfile::tempdir().unwrap();
    let (app, _) = with_apns(app, &standin, dir.path()).await;
    let alice = app.user("alice_1").await;
    for dead in [
        Answer::json(410, json!({ "reason": "Unregistered", "timestamp": 1 })),
        Answer::json(400, json!({ "reason": "BadDeviceToken" })),
    ] {
        iphone_row(&app, &alice, RING, 0).await;
        standin.then(dead);
        let reply = notify(&app, event(&alice, "ring", None)).await;
        assert_eq!(tally(&reply, "apns"), (0, 0, 1), "{}", reply.body);
        assert_eq!(app.get(RING, &alice.token).await.body, json!([]));
    }
    // Another refusal keeps it.
    iphone_row(&app, &alice, RING, 0).await;
    standin.then(Answer::json(400, json!({ "reason": "BadTopic" })));
    let reply = notify(&app, event(&alice, "ring", None)).await;
    assert_eq!(tally(&reply, "apns"), (0, 1, 0), "{}", reply.body);
    assert_eq!(
        app.get(RING, &alice.token)
            .await
            .body
            .as_array()
            .map(Vec::len),
        Some(1)
    );
}

#[tokio::test]
async fn apns_needs_its_key_file_key_id_and_team_id_together() {
    use clap::Parser;
    let dir = tempfile::tempdir().unwrap();
    let p8 = dir.path().join("key.p8");
    std::fs::write(&p8, "not a key").unwrap();
    let p8 = p8.to_str().unwrap();
    for (args, names) in [
        (vec!["--apns-key-id", "K"], "PUSHTOKEN_APNS_KEY_FILE"),
        (
            vec!["--apns-key-file", p8, "--apns-key-id", "K"],
            "PUSHTOKEN_APNS_TEAM_ID",
        ),
        (
            vec![
                "--apns-key-file",
                p8,
                "--apns-key-id",
                "K",
                "--apns-team-id",
                "T",
            ],
            "PUSHTOKEN_APNS_KEY_FILE",
        ),
    ] {
        let cli =
            pushtoken::config::Cli::try_parse_from([&["pushtoken"][..], &args].concat()).unwrap();
        let reason = pushtoken::Config::from_settings(&cli.settings)
            .err()
            .unwrap();
        assert!(reason.contains(names), "{args:?}: {reason}");
        assert!(!reason.contains('\n'), "{reason}");
    }
}
