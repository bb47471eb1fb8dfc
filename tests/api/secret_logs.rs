//! The real binary at the most verbose log level, in both log formats, driven
//! through every route with known secrets: none of them may reach the log.

use serde_json::{json, Value};

use crate::support::api::{login_body, LOGIN, LOGOUT, MESSAGE, REFRESH, RING, SIGN_UP};
use crate::support::every_database;
use crate::support::server::{command, Server, ServerLog};
use crate::support::standin::{Answer, StandIn};

/// The registration key the server is configured with.
const API_KEY_SECRET: &str = "ApiKeySecretQv83Hn27Lp95Xw";
/// A registration key that is not the configured one.
const WRONG_API_KEY: &str = "WrongApiKeySecretBt46Mz18Rk73";
/// The account's password (8–16 characters).
const PASSWORD_SECRET: &str = "PwSecret_Zq7Xk9";
/// The operator's key for `POST /v1/api/notify`.
const NOTIFY_KEY_SECRET: &str = "NotifyKeySecretRw52Ty81Ux36";
/// A notify key that is not the configured one.
const WRONG_NOTIFY_KEY: &str = "WrongNotifyKeyJk73Lm29Qa64";
/// The push services' secrets.
const XIAOMI_SECRET: &str = "XiaomiAppSecretVb47Nc82Md19";
const HUAWEI_SECRET: &str = "HuaweiAppSecretZe61Xf38Gh95";
/// The notify route.
const NOTIFY: &str = "/v1/api/notify";
/// The password it changes to.
const NEW_PASSWORD_SECRET: &str = "PwNew_Wm3Rb8Tj";
/// The password change route.
const PASSWORD: &str = "/v1/api/user/password";
/// A wrong password for that account.
const WRONG_PASSWORD: &str = "PwWrong_Hj4Tn8Rc";
/// A password too long for sign-up (over 16 characters).
const TOO_LONG_PASSWORD: &str = "PwTooLongSecret_Qz5Kp1Wd6Fg";
/// A session token the server never issued, sent in the `token` header.
const FORGED_TOKEN: &str = "ForgedSessionTokenXq7Vn2Lp9Rt4Kd";
/// A session token the server never issued, sent as `Authorization: Bearer`.
const FORGED_BEARER: &str = "ForgedBearerTokenYh3Mw8Zc1Gb6Nf";
/// A refresh key the server never issued.
const FORGED_REFLASH_KEY: &str = "ForgedReflashKeyPq2Ws7Ej4Ua9Ox";

/// `tag` repeated to exactly `len` characters: a distinctive secret whose
/// every stretch is recognisable.
fn secret(tag: &str, len: usize) -> String {
    tag.repeat(len / tag.len() + 1)[..len].to_owned()
}

/// A running server whose whole log is being kept.
struct LoggedServer {
    server: Server,
    log: ServerLog,
}

impl LoggedServer {
    /// Starts the binary on `database_url` with `RUST_LOG=trace`, the given
    /// log format and registration key, keeping every line of its log.
    async fn start(
        database_url: &str,
        log_format: &str,
        api_key: &str,
        extra: &[(&str, &str)],
    ) -> LoggedServer {
        let mut cmd = command(database_url);
        cmd.env("RUST_LOG", "trace")
            .env("PUSHTOKEN_LOG_FORMAT", log_format)
            .env("PUSHTOKEN_API_KEY", api_key)
            .envs(extra.iter().copied());
        let (server, log) = Server::spawn_logged(cmd).await;
        LoggedServer { server, log }
    }

    /// One HTTP/1.1 request over a fresh TCP connection, with these extra
    /// headers and this raw body; answers the status and the JSON body.
    async fn send(
        &self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: &str,
    ) -> (u16, Value) {
        let (status, body) = self.server.send(method, path, headers, body).await;
        let body = serde_json::from_str(&body)
            .unwrap_or_else(|_| panic!("{method} {path}: JSON body: {body}"));
        (status, body)
    }

    /// [`send`](Self::send), asserting the answer's status and message;
    /// answers the body.
    async fn expect(
        &self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: &str,
        (status, message): (u16, &str),
    ) -> Value {
        let (got, answer) = self.send(method, path, headers, body).await;
        assert_eq!(
            (got, &answer["message"]),
            (status, &json!(message)),
            "{method} {path}: {answer}"
        );
        answer
    }

    /// [`expect`](Self::expect) with a JSON body.
    async fn expect_json(
        &self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: Value,
        answer: (u16, &str),
    ) -> Value {
        self.expect(method, path, headers, &body.to_string(), answer)
            .await
    }

    /// Stops the server with SIGTERM, waits for a clean exit and answers its
    /// whole log.
    async fn stop(self) -> Vec<String> {
        self.server.stop().await;
        self.log.lines().await
    }
}

/// The stretches of a secret looked for in the log: the whole value and,
/// for long values, its first and last 16 characters (a truncated or
/// abbreviated secret leaks too).
fn needles(secret: &str) -> Vec<String> {
    let mut needles = vec![secret.to_owned()];
    if secret.len() >= 24 {
        needles.push(secret[..16].to_owned());
        needles.push(secret[secret.len() - 16..].to_owned());
    }
    needles
}

#[every_database]
async fn no_secret_appears_in_logs_at_the_most_verbose_level(database_url: &str) {
    for log_format in ["text", "json"] {
        let (secrets, log) = drive_every_route(database_url, log_format).await;
        assert_log_keeps_secrets(log_format, &secrets, &log);
    }
}

/// Starts a server in `log_format`, drives every route with secrets, stops
/// it; answers the secrets (known and issued) and the whole log.
async fn drive_every_route(
    database_url: &str,
    log_format: &str,
) -> (Vec<(&'static str, String)>, Vec<String>) {
    // Two push services, so that their secrets travel too.
    let xiaomi = StandIn::start(Answer::json(200, json!({ "result": "ok", "code": 0 }))).await;
    let huawei = StandIn::start(Answer::json(
        200,
        json!({ "code": "80000000", "msg": "Success" }),
    ))
    .await;
    let access_token = secret("HuaweiAccessTokenEcho", 48);
    huawei.then(Answer::json(
        200,
        json!({ "access_token": access_token, "expires_in": 3600 }),
    ));
    let huawei_token_url = format!("{}/oauth2/v3/token", huawei.url);
    let services = [
        ("PUSHTOKEN_NOTIFY_KEY", NOTIFY_KEY_SECRET),
        ("PUSHTOKEN_XIAOMI_APP_SECRET", XIAOMI_SECRET),
        ("PUSHTOKEN_XIAOMI_URL", xiaomi.url.as_str()),
        ("PUSHTOKEN_HUAWEI_APP_ID", "104512345"),
        ("PUSHTOKEN_HUAWEI_APP_SECRET", HUAWEI_SECRET),
        ("PUSHTOKEN_HUAWEI_URL", huawei.url.as_str()),
        ("PUSHTOKEN_HUAWEI_TOKEN_URL", huawei_token_url.as_str()),
    ];
    let server = LoggedServer::start(database_url, log_format, API_KEY_SECRET, &services).await;
    let username = format!("secret_logs_{log_format}");
    let ring_push = [secret("PushRingAlpha", 64), secret("PushRingBravo", 64)];
    let message_push = [secret("PushMsgCharlie", 64), secret("PushMsgDelta", 64)];
    let os_tokens = [
        secret("OsTokenFcmEcho", 163),
        secret("OsTokenHmsFoxtrot", 350),
        secret("OsTokenMiGolf", 163),
    ];
    let too_long_push = secret("PushTooLongHotel", 65);
    let spaced_push = format!("{} {}", secret("PushSpacedIndia", 31), secret("Juliet", 32));
    let spaced_os_token = format!("{} {}", secret("OsTokSpacedKilo", 80), secret("Lima", 80));
    let malformed_push = secret("PushMalformedMike", 64);
    let malformed_password = "PwMalformed_Nov1";
    let array_password = "PwInArray_Oscar2";
    let mut secrets: Vec<(&'static str, String)> = vec![
        ("api key", API_KEY_SECRET.to_owned()),
        ("wrong api key", WRONG_API_KEY.to_owned()),
        ("password", PASSWORD_SECRET.to_owned()),
        ("wrong password", WRONG_PASSWORD.to_owned()),
        ("too long password", TOO_LONG_PASSWORD.to_owned()),
        ("malformed-JSON password", malformed_password.to_owned()),
        ("password in a non-object body", array_password.to_owned()),
        ("forged session token", FORGED_TOKEN.to_owned()),
        ("forged bearer token", FORGED_BEARER.to_owned()),
        ("forged refresh key", FORGED_REFLASH_KEY.to_owned()),
        ("too long push token", too_long_push.clone()),
        ("push token with a space", spaced_push.clone()),
        ("os token with a space", spaced_os_token.clone()),
        ("malformed-JSON push token", malformed_push.clone()),
    ];
    for push in ring_push.iter().chain(&message_push) {
        secrets.push(("push token", push.clone()));
    }
    for os_token in &os_tokens {
        secrets.push(("os token", os_token.clone()));
    }
    // Whether the route was logged is checked against these counts.
    let mut ring_calls = 0;
    let mut message_calls = 0;

    // Sign-up: wrong key, too long password, malformed and non-object
    // bodies, then a success.
    for (body, answer) in [
        (
            json!({ "username": username, "password": PASSWORD_SECRET, "apikey": WRONG_API_KEY })
                .to_string(),
            (403, "apikey error"),
        ),
        (
            json!({ "username": username, "password": TOO_LONG_PASSWORD, "apikey": API_KEY_SECRET })
                .to_string(),
            (400, "password length error"),
        ),
        (
            format!(r#"{{"username": "{username}", "password": "{malformed_password}", "apikey": "{API_KEY_SECRET}""#),
            (400, "paramer error"),
        ),
        (
            json!([username, array_password, API_KEY_SECRET]).to_string(),
            (400, "paramer error"),
        ),
        (
            json!({ "username": username, "password": PASSWORD_SECRET, "apikey": API_KEY_SECRET })
                .to_string(),
            (201, "success"),
        ),
    ] {
        server.expect("POST", SIGN_UP, &[], &body, answer).await;
    }

    // Login: wrong password, malformed JSON, then two sessions.
    for (body, answer) in [
        (
            login_body(&username, WRONG_PASSWORD).to_string(),
            (401, "username or password error"),
        ),
        (
            format!(r#"{{"username": "{username}", "password": "{malformed_password}"#),
            (400, "paramer error"),
        ),
    ] {
        server.expect("POST", LOGIN, &[], &body, answer).await;
    }
    let mut sessions = Vec::new();
    for _ in 0..2 {
        let login = login_body(&username, PASSWORD_SECRET);
        let body = server
            .expect_json("POST", LOGIN, &[], login, (201, "success"))
            .await;
        let token = body["token"].as_str().expect("token").to_owned();
        let reflash_key = body["reflash_key"]
            .as_str()
            .expect("reflash_key")
            .to_owned();
        secrets.push(("session token", token.clone()));
        secrets.push(("refresh key", reflash_key.clone()));
        sessions.push((token, reflash_key));
    }
    let (token, reflash_key) = sessions[0].clone();
    let (second_token, _) = sessions[1].clone();

    // Register ring and message tokens by POST and PUT (create and update),
    // in the `token` header, its `Token` spelling and as a bearer token.
    let bearer = format!("Bearer {token}");
    let forged_bearer = format!("Bearer {FORGED_BEARER}");
    for (base, push, calls) in [
        (RING, &ring_push, &mut ring_calls),
        (MESSAGE, &message_push, &mut message_calls),
    ] {
        let session = [("token", token.as_str())];
        let at_7 = format!("{base}/7");
        let at_8 = format!("{base}/8");
        let registration = json!({
            "push_token": push[0], "language": "en", "dev": 1,
            "os": "ANDROID", "os_token": os_tokens[0], "push_platform": "FCM",
            "phone_model": "phone:Xiaomi_Mi_10/App:钉钉智能_1.0.0/Android_11",
        });
        let headers = [
            ("token", token.as_str()),
            ("bundleid", "com.example.secretlogs"),
        ];
        server
            .expect_json("POST", base, &headers, registration, (201, "success"))
            .await;
        let body = json!({ "push_token": push[1], "language": "zh", "os_token": os_tokens[1] });
        server
            .expect_json("PUT", &at_7, &[("Token", &token)], body, (201, "success"))
            .await;
        let body = json!({ "push_token": push[1], "language": "de", "os_token": os_tokens[2] });
        server
            .expect_json(
                "PUT",
                &at_7,
                &[("Authorization", &bearer)],
                body,
                (200, "success"),
            )
            .await;
        let (status, body) = server.send("GET", base, &session, "").await;
        assert_eq!(status, 200, "{base}: {body}");
        assert_eq!(body.as_array().map(Vec::len), Some(2), "{body}");
        // Error cases carrying secrets.
        let cases = [
            (
                "PUT",
                at_8.as_str(),
                &session,
                json!({ "push_token": too_long_push, "language": "en" }).to_string(),
                (400, "push_token length error"),
            ),
            (
                "POST",
                base,
                &session,
                json!({ "push_token": spaced_push, "language": "en" }).to_string(),
                (400, "push_token error"),
            ),
            (
                "PUT",
                at_8.as_str(),
                &session,
                json!({ "push_token": push[0], "language": "en", "os_token": spaced_os_token })
                    .to_string(),
                (400, "os_token error"),
            ),
            (
                "POST",
                base,
                &session,
                format!(r#"{{"push_token": "{malformed_push}", "language": "#),
                (400, "paramer error"),
            ),
            (
                "POST",
                base,
                &[("token", FORGED_TOKEN)],
                json!({ "push_token": push[0], "language": "en" }).to_string(),
                (401, "invalid token"),
            ),
            (
                "GET",
                base,
                &[("Authorization", &forged_bearer)],
                String::new(),
                (401, "invalid token"),
            ),
        ];
        for (method, path, headers, body, answer) in cases {
            server.expect(method, path, headers, &body, answer).await;
        }
        // Delete one, then all.
        server
            .expect("DELETE", &at_7, &session, "", (200, "success"))
            .await;
        let (status, body) = server.send("DELETE", base, &session, "").await;
        assert_eq!((status, &body["deleted"]), (200, &json!(1)), "{body}");
        *calls += 12;
    }
    // Register again, so that logout has tokens to delete.
    let body = json!({ "push_token": ring_push[0], "language": "en", "os_token": os_tokens[0] });
    let at_1 = format!("{RING}/1");
    server
        .expect_json("PUT", &at_1, &[("token", &token)], body, (201, "success"))
        .await;
    ring_calls += 1;

    // Refresh: a forged key, a real one, then the used one again.
    let forged = json!({ "reflash_key": FORGED_REFLASH_KEY });
    server
        .expect_json("POST", REFRESH, &[], forged, (401, "invalid token"))
        .await;
    let refresh = json!({ "reflash_key": reflash_key });
    let body = server
        .expect_json("POST", REFRESH, &[], refresh.clone(), (201, "success"))
        .await;
    let refreshed = body["token"].as_str().expect("token").to_owned();
    secrets.push(("session token", refreshed.clone()));
    secrets.push((
        "refresh key",
        body["reflash_key"]
            .as_str()
            .expect("reflash_key")
            .to_owned(),
    ));
    // The rotated-out token is now refused.
    server
        .expect(
            "GET",
            RING,
            &[("token", &token)],
            "",
            (401, "invalid token"),
        )
        .await;
    ring_calls += 1;

    // Logout: a wrong username, then the token in the body, then a bearer
    // token in the header.
    let second_bearer = format!("Bearer {second_token}");
    for (headers, body, answer) in [
        (
            &[][..],
            json!({ "username": "someone_else", "token": refreshed }),
            (400, "username error"),
        ),
        (
            &[],
            json!({ "username": username, "token": refreshed }),
            (200, "success"),
        ),
        (
            &[("Authorization", second_bearer.as_str())],
            json!({ "username": username }),
            (200, "success"),
        ),
    ] {
        server
            .expect_json("POST", LOGOUT, headers, body, answer)
            .await;
    }
    // A logged-out token is refused.
    server
        .expect(
            "GET",
            MESSAGE,
            &[("token", &second_token)],
            "",
            (401, "invalid token"),
        )
        .await;
    message_calls += 1;
    // The used refresh key again: refused, and its login ends.
    server
        .expect_json("POST", REFRESH, &[], refresh, (401, "invalid token"))
        .await;

    // Events through the push services: rows for Xiaomi and Huawei, and a
    // notify with the operator's key (a wrong one first).
    let mi_regid = secret("XiaomiRegidFoxtrot", 40);
    let hms_token = secret("HuaweiTokenGolf", 130);
    secrets.push(("notify key", NOTIFY_KEY_SECRET.to_owned()));
    secrets.push(("xiaomi app secret", XIAOMI_SECRET.to_owned()));
    secrets.push(("huawei app secret", HUAWEI_SECRET.to_owned()));
    secrets.push(("huawei access token", access_token.clone()));
    secrets.push(("xiaomi regid", mi_regid.clone()));
    secrets.push(("huawei token", hms_token.clone()));
    let login = login_body(&username, PASSWORD_SECRET);
    let body = server
        .expect_json("POST", LOGIN, &[], login, (201, "success"))
        .await;
    let pusher = body["token"].as_str().expect("token").to_owned();
    secrets.push(("session token", pusher.clone()));
    for (serial, platform, os_token) in [(1, "XIAOMI", &mi_regid), (2, "HUAWEI", &hms_token)] {
        let push = secret(&format!("PushService{platform}"), 64);
        secrets.push(("push token", push.clone()));
        let body = json!({ "push_token": push, "language": "en", "os_token": os_token,
                           "push_platform": platform });
        let at = format!("{MESSAGE}/{serial}");
        server
            .expect_json("PUT", &at, &[("token", &pusher)], body, (201, "success"))
            .await;
    }
    let event = json!({ "user": username, "family": "message",
                        "event": { "type": "0", "uid": "DEV-1" } });
    let wrong = format!("Bearer {WRONG_NOTIFY_KEY}");
    secrets.push(("wrong notify key", WRONG_NOTIFY_KEY.to_owned()));
    server
        .expect_json(
            "POST",
            NOTIFY,
            &[("Authorization", &wrong)],
            event.clone(),
            (401, "invalid token"),
        )
        .await;
    let bearer = format!("Bearer {NOTIFY_KEY_SECRET}");
    let answer = server
        .expect_json(
            "POST",
            NOTIFY,
            &[("Authorization", &bearer)],
            event,
            (202, "success"),
        )
        .await;
    assert_eq!(answer["providers"]["xiaomi"]["sent"], 1, "{answer}");
    assert_eq!(answer["providers"]["huawei"]["sent"], 1, "{answer}");
    assert_eq!(xiaomi.seen().len(), 1);
    message_calls += 2;

    // A password change: a wrong current password, then the right one.
    let login = login_body(&username, PASSWORD_SECRET);
    let body = server
        .expect_json("POST", LOGIN, &[], login, (201, "success"))
        .await;
    let third = body["token"].as_str().expect("token").to_owned();
    secrets.push(("session token", third.clone()));
    secrets.push(("new password", NEW_PASSWORD_SECRET.to_owned()));
    for (old, answer) in [
        (WRONG_PASSWORD, (400, "oldpassword error")),
        (PASSWORD_SECRET, (200, "success")),
    ] {
        let body = json!({ "password": NEW_PASSWORD_SECRET, "oldpassword": old });
        server
            .expect_json("PUT", PASSWORD, &[("token", &third)], body, answer)
            .await;
    }

    let log = server.stop().await;
    // Neither path contains the other.
    let logged = |path: &str| log.iter().filter(|line| line.contains(path)).count();
    assert!(
        logged(RING) >= ring_calls,
        "{log_format}: {ring_calls} ring requests, {} log lines mention {RING}:\n{}",
        logged(RING),
        log.join("\n")
    );
    assert!(
        logged(MESSAGE) >= message_calls,
        "{log_format}: {message_calls} message requests, {} log lines mention {MESSAGE}:\n{}",
        logged(MESSAGE),
        log.join("\n")
    );
    (secrets, log)
}

/// Asserts that the log is real (not empty, at debug detail, with the
/// account routes) and that no stretch of any secret is in it.
fn assert_log_keeps_secrets(log_format: &str, secrets: &[(&str, String)], log: &[String]) {
    assert!(!log.is_empty(), "{log_format}: the log is empty");
    for evidence in [
        "listening on",
        "/v1/api/user/login",
        "/v1/api/user/logout",
        "/v1/api/user/refresh",
        "/v1/api/user/password",
        "rejected an unknown or expired session token",
        "stopped",
    ] {
        assert!(
            log.iter().any(|line| line.contains(evidence)),
            "{log_format}: no log line mentions {evidence:?}:\n{}",
            log.join("\n")
        );
    }
    if log_format == "json" {
        for line in log {
            assert!(
                serde_json::from_str::<Value>(line).is_ok(),
                "not a JSON log line: {line}"
            );
        }
    }
    let mut leaks = Vec::new();
    for (kind, secret) in secrets {
        for needle in needles(secret) {
            for line in log.iter().filter(|line| line.contains(&needle)) {
                leaks.push(format!("{kind} ({needle}) in: {line}"));
            }
        }
    }
    assert!(
        leaks.is_empty(),
        "{log_format}: secrets in the log at RUST_LOG=trace:\n{}",
        leaks.join("\n")
    );
}
