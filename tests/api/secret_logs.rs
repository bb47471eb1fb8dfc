//! The real binary at the most verbose log level, in both log formats, driven
//! through every route with known secrets: none of them may reach the log.

use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::{json, Value};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;
use tokio::task::JoinHandle;

use crate::binary::{command, Server};
use crate::common::{MESSAGE, RING};
use crate::on_every_database;

/// The registration key the server is configured with.
const API_KEY_SECRET: &str = "ApiKeySecretQv83Hn27Lp95Xw";
/// A registration key that is not the configured one.
const WRONG_API_KEY: &str = "WrongApiKeySecretBt46Mz18Rk73";
/// The account's password (8–16 characters).
const PASSWORD_SECRET: &str = "PwSecret_Zq7Xk9";
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

/// How long any one wait on the server may take.
const WAIT: Duration = Duration::from_secs(30);

/// A running server whose whole stderr is being kept.
struct LoggedServer {
    server: Server,
    log: Arc<Mutex<Vec<String>>>,
    drain: JoinHandle<()>,
}

impl LoggedServer {
    /// Starts the binary on `database_url` with `RUST_LOG=trace`, the given
    /// log format and registration key, keeping every line of its log.
    async fn start(database_url: &str, log_format: &str, api_key: &str) -> LoggedServer {
        let mut child = command(database_url)
            .env("RUST_LOG", "trace")
            .env("PUSHTOKEN_LOG_FORMAT", log_format)
            .env("PUSHTOKEN_API_KEY", api_key)
            .stderr(Stdio::piped())
            .stdout(Stdio::null())
            .spawn()
            .expect("spawn pushtoken");
        let mut lines = BufReader::new(child.stderr.take().expect("stderr")).lines();
        let log = Arc::new(Mutex::new(Vec::new()));
        let address = tokio::time::timeout(WAIT, async {
            while let Some(line) = lines.next_line().await.expect("stderr") {
                let address = listening_address(&line);
                log.lock().unwrap().push(line);
                if let Some(address) = address {
                    return address;
                }
            }
            panic!(
                "server exited before listening:\n{}",
                log.lock().unwrap().join("\n")
            );
        })
        .await
        .expect("server listens within 30s");
        // Keep every further line until the server closes its stderr.
        let kept = log.clone();
        let drain = tokio::spawn(async move {
            while let Ok(Some(line)) = lines.next_line().await {
                kept.lock().unwrap().push(line);
            }
        });
        LoggedServer {
            server: Server { child, address },
            log,
            drain,
        }
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
        let address = &self.server.address;
        let extra: String = headers
            .iter()
            .map(|(name, value)| format!("{name}: {value}\r\n"))
            .collect();
        let request = format!(
            "{method} {path} HTTP/1.1\r\nHost: {address}\r\nConnection: close\r\n{extra}Content-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        );
        let raw = tokio::time::timeout(WAIT, async {
            let mut stream = TcpStream::connect(address).await.expect("connect");
            stream.write_all(request.as_bytes()).await.expect("send");
            let mut raw = Vec::new();
            stream.read_to_end(&mut raw).await.expect("read");
            raw
        })
        .await
        .unwrap_or_else(|_| panic!("{method} {path} answers within 30s"));
        let text = String::from_utf8(raw).expect("utf-8 response");
        let (head, body) = text.split_once("\r\n\r\n").expect("http response");
        let status = head
            .split_whitespace()
            .nth(1)
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(|| panic!("status line: {head}"));
        let body = serde_json::from_str(body)
            .unwrap_or_else(|_| panic!("{method} {path}: JSON body: {body}"));
        (status, body)
    }

    /// [`send`](Self::send) with a JSON body.
    async fn json(
        &self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: Value,
    ) -> (u16, Value) {
        self.send(method, path, headers, &body.to_string()).await
    }

    /// Stops the server with SIGTERM, waits for a clean exit and answers its
    /// whole log.
    async fn stop(self) -> Vec<String> {
        self.server.stop().await;
        tokio::time::timeout(WAIT, self.drain)
            .await
            .expect("the log ends within 30s of the exit")
            .expect("log reader");
        let log = self.log.lock().unwrap().clone();
        log
    }
}

/// The address in a "listening on <address>" log line, text or JSON.
fn listening_address(line: &str) -> Option<String> {
    let rest = line.split("listening on ").nth(1)?;
    let address: String = rest
        .chars()
        .take_while(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | ':' | '[' | ']'))
        .collect();
    (!address.is_empty()).then_some(address)
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
    let server = LoggedServer::start(database_url, log_format, API_KEY_SECRET).await;
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
    let (status, body) = server
        .json(
            "POST",
            "/v1/api/user",
            &[],
            json!({ "username": username, "password": PASSWORD_SECRET, "apikey": WRONG_API_KEY }),
        )
        .await;
    assert_eq!((status, &body["message"]), (403, &json!("apikey error")));
    let (status, body) = server
        .json(
            "POST",
            "/v1/api/user",
            &[],
            json!({ "username": username, "password": TOO_LONG_PASSWORD, "apikey": API_KEY_SECRET }),
        )
        .await;
    assert_eq!(
        (status, &body["message"]),
        (400, &json!("password length error"))
    );
    let (status, body) = server
        .send(
            "POST",
            "/v1/api/user",
            &[],
            &format!(r#"{{"username": "{username}", "password": "{malformed_password}", "apikey": "{API_KEY_SECRET}""#),
        )
        .await;
    assert_eq!((status, &body["message"]), (400, &json!("paramer error")));
    let (status, body) = server
        .json(
            "POST",
            "/v1/api/user",
            &[],
            json!([username, array_password, API_KEY_SECRET]),
        )
        .await;
    assert_eq!((status, &body["message"]), (400, &json!("paramer error")));
    let (status, body) = server
        .json(
            "POST",
            "/v1/api/user",
            &[],
            json!({ "username": username, "password": PASSWORD_SECRET, "apikey": API_KEY_SECRET }),
        )
        .await;
    assert_eq!(
        (status, &body["message"]),
        (201, &json!("success")),
        "{body}"
    );

    // Login: wrong password, malformed JSON, then two sessions.
    let (status, body) = server
        .json(
            "POST",
            "/v1/api/user/login",
            &[],
            json!({ "username": username, "password": WRONG_PASSWORD }),
        )
        .await;
    assert_eq!(
        (status, &body["message"]),
        (401, &json!("username or password error"))
    );
    let (status, body) = server
        .send(
            "POST",
            "/v1/api/user/login",
            &[],
            &format!(r#"{{"username": "{username}", "password": "{malformed_password}"#),
        )
        .await;
    assert_eq!((status, &body["message"]), (400, &json!("paramer error")));
    let mut sessions = Vec::new();
    for _ in 0..2 {
        let (status, body) = server
            .json(
                "POST",
                "/v1/api/user/login",
                &[],
                json!({ "username": username, "password": PASSWORD_SECRET }),
            )
            .await;
        assert_eq!(status, 201, "{body}");
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
    for (base, push, calls) in [
        (RING, &ring_push, &mut ring_calls),
        (MESSAGE, &message_push, &mut message_calls),
    ] {
        let (status, body) = server
            .json(
                "POST",
                base,
                &[("token", &token), ("bundleid", "com.example.secretlogs")],
                json!({
                    "push_token": push[0], "language": "en", "dev": 1,
                    "os": "ANDROID", "os_token": os_tokens[0], "push_platform": "FCM",
                    "phone_model": "phone:Xiaomi_Mi_10/App:钉钉智能_1.0.0/Android_11",
                }),
            )
            .await;
        assert_eq!(status, 201, "{base}: {body}");
        let (status, body) = server
            .json(
                "PUT",
                &format!("{base}/7"),
                &[("Token", &token)],
                json!({ "push_token": push[1], "language": "zh", "os_token": os_tokens[1] }),
            )
            .await;
        assert_eq!(status, 201, "{base}/7: {body}");
        let (status, body) = server
            .json(
                "PUT",
                &format!("{base}/7"),
                &[("Authorization", &bearer)],
                json!({ "push_token": push[1], "language": "de", "os_token": os_tokens[2] }),
            )
            .await;
        assert_eq!(status, 200, "{base}/7 update: {body}");
        let (status, body) = server.send("GET", base, &[("token", &token)], "").await;
        assert_eq!(status, 200, "{base}: {body}");
        assert_eq!(body.as_array().map(Vec::len), Some(2), "{body}");
        // Error cases carrying secrets.
        let (status, body) = server
            .json(
                "PUT",
                &format!("{base}/8"),
                &[("token", &token)],
                json!({ "push_token": too_long_push, "language": "en" }),
            )
            .await;
        assert_eq!(
            (status, &body["message"]),
            (400, &json!("push_token length error"))
        );
        let (status, body) = server
            .json(
                "POST",
                base,
                &[("token", &token)],
                json!({ "push_token": spaced_push, "language": "en" }),
            )
            .await;
        assert_eq!(
            (status, &body["message"]),
            (400, &json!("push_token error"))
        );
        let (status, body) = server
            .json(
                "PUT",
                &format!("{base}/8"),
                &[("token", &token)],
                json!({ "push_token": push[0], "language": "en", "os_token": spaced_os_token }),
            )
            .await;
        assert_eq!((status, &body["message"]), (400, &json!("os_token error")));
        let (status, body) = server
            .send(
                "POST",
                base,
                &[("token", &token)],
                &format!(r#"{{"push_token": "{malformed_push}", "language": "#),
            )
            .await;
        assert_eq!((status, &body["message"]), (400, &json!("paramer error")));
        let (status, body) = server
            .json(
                "POST",
                base,
                &[("token", FORGED_TOKEN)],
                json!({ "push_token": push[0], "language": "en" }),
            )
            .await;
        assert_eq!((status, &body["message"]), (401, &json!("invalid token")));
        let (status, body) = server
            .send(
                "GET",
                base,
                &[("Authorization", &format!("Bearer {FORGED_BEARER}"))],
                "",
            )
            .await;
        assert_eq!((status, &body["message"]), (401, &json!("invalid token")));
        // Delete one, then all.
        let (status, body) = server
            .send("DELETE", &format!("{base}/7"), &[("token", &token)], "")
            .await;
        assert_eq!((status, &body["message"]), (200, &json!("success")));
        let (status, body) = server.send("DELETE", base, &[("token", &token)], "").await;
        assert_eq!((status, &body["deleted"]), (200, &json!(1)), "{body}");
        *calls += 12;
    }
    // Register again, so that logout has tokens to delete.
    let (status, body) = server
        .json(
            "PUT",
            &format!("{RING}/1"),
            &[("token", &token)],
            json!({ "push_token": ring_push[0], "language": "en", "os_token": os_tokens[0] }),
        )
        .await;
    assert_eq!(status, 201, "{body}");
    ring_calls += 1;

    // Refresh: a forged key, a real one, then the used one again.
    let (status, body) = server
        .json(
            "POST",
            "/v1/api/user/refresh",
            &[],
            json!({ "reflash_key": FORGED_REFLASH_KEY }),
        )
        .await;
    assert_eq!((status, &body["message"]), (401, &json!("invalid token")));
    let (status, body) = server
        .json(
            "POST",
            "/v1/api/user/refresh",
            &[],
            json!({ "reflash_key": reflash_key }),
        )
        .await;
    assert_eq!(status, 201, "{body}");
    let refreshed = body["token"].as_str().expect("token").to_owned();
    secrets.push(("session token", refreshed.clone()));
    secrets.push((
        "refresh key",
        body["reflash_key"]
            .as_str()
            .expect("reflash_key")
            .to_owned(),
    ));
    let (status, body) = server
        .json(
            "POST",
            "/v1/api/user/refresh",
            &[],
            json!({ "reflash_key": reflash_key }),
        )
        .await;
    assert_eq!((status, &body["message"]), (401, &json!("invalid token")));
    // The rotated-out token is now refused.
    let (status, body) = server.send("GET", RING, &[("token", &token)], "").await;
    assert_eq!((status, &body["message"]), (401, &json!("invalid token")));
    ring_calls += 1;

    // Logout: a wrong username, then the token in the body, then a bearer
    // token in the header.
    let (status, body) = server
        .json(
            "POST",
            "/v1/api/user/logout",
            &[],
            json!({ "username": "someone_else", "token": refreshed }),
        )
        .await;
    assert_eq!((status, &body["message"]), (400, &json!("username error")));
    let (status, body) = server
        .json(
            "POST",
            "/v1/api/user/logout",
            &[],
            json!({ "username": username, "token": refreshed }),
        )
        .await;
    assert_eq!(
        (status, &body["message"]),
        (200, &json!("success")),
        "{body}"
    );
    let (status, body) = server
        .json(
            "POST",
            "/v1/api/user/logout",
            &[("Authorization", &format!("Bearer {second_token}"))],
            json!({ "username": username }),
        )
        .await;
    assert_eq!(
        (status, &body["message"]),
        (200, &json!("success")),
        "{body}"
    );
    // A logged-out token is refused.
    let (status, body) = server
        .send("GET", MESSAGE, &[("token", &second_token)], "")
        .await;
    assert_eq!((status, &body["message"]), (401, &json!("invalid token")));
    message_calls += 1;

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

on_every_database!(no_secret_appears_in_logs_at_the_most_verbose_level,);
