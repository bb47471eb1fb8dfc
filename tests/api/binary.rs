//! The real binary, started on port 0 and spoken to over TCP.

use std::process::{Output, Stdio};

use serde_json::json;
use tokio::io::AsyncWriteExt;

use crate::support::api::{
    login_body, push_token, registration, sign_up_body, with, API_KEY, LOGIN, MESSAGE, PASSWORD,
    RING, SIGN_UP,
};
use crate::support::every_database;
use crate::support::server::{command, sqlite_in, Server};

#[every_database]
async fn serves_on_port_0_and_keeps_data_and_sessions_across_restart(database_url: &str) {
    let server = Server::start(database_url).await;

    let (status, body) = server
        .call("POST", SIGN_UP, None, Some(sign_up_body("alice_1")))
        .await;
    assert_eq!((status, &body["message"]), (201, &json!("success")));
    let (status, body) = server
        .call("POST", LOGIN, None, Some(login_body("alice_1", PASSWORD)))
        .await;
    assert_eq!(status, 201, "{body}");
    let token = body["token"].as_str().unwrap().to_owned();
    let (status, _) = server
        .call(
            "PUT",
            &format!("{RING}/4"),
            Some(&token),
            Some(json!({ "push_token": push_token(9), "language": "zh" })),
        )
        .await;
    assert_eq!(status, 201);
    server.stop().await;

    let server = Server::start(database_url).await;
    let (status, body) = server.call("GET", RING, Some(&token), None).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body[0]["serial"], 4);
    assert_eq!(body[0]["push_token"], push_token(9));
    let (status, body) = server.call("GET", "/no/such/route", None, None).await;
    assert_eq!((status, body), (404, json!({ "message": "not found" })));
    server.stop().await;
}

#[tokio::test]
async fn bad_setting_stops_startup_with_a_one_line_reason() {
    let dir = tempfile::tempdir().unwrap();
    let cases = [
        ("PUSHTOKEN_LISTEN", "not-an-address"),
        ("PUSHTOKEN_SESSION_TTL", "forever"),
        ("PUSHTOKEN_LOG_FORMAT", "xml"),
        ("PUSHTOKEN_SQLITE_SYNCHRONOUS", "off"),
        ("PUSHTOKEN_BUNDLE_ID", "has space"),
        ("DATABASE_URL", "mysql://localhost/db"),
    ];
    for (variable, value) in cases {
        let output = command(&sqlite_in(dir.path()))
            .env(variable, value)
            .output()
            .await
            .unwrap();
        assert!(
            !output.status.success(),
            "{variable}={value} should stop startup"
        );
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert_eq!(stderr.trim_end().lines().count(), 1, "one line: {stderr}");
        assert!(stderr.contains(variable), "names {variable}: {stderr}");
    }
}

#[every_database]
async fn user_add_prints_the_id_and_the_user_can_log_in(database_url: &str) {
    let add_operator_1 = ["user", "add", "operator_1", "--password", PASSWORD];
    let first = added_id(run(database_url, &add_operator_1).await);

    let mut child = command(database_url)
        .args(["user", "add", "operator_2", "--password-stdin"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(b"Secret_pass1\n")
        .await
        .unwrap();
    let second = added_id(child.wait_with_output().await.unwrap());
    assert_ne!(first, second);

    let output = run(database_url, &add_operator_1).await;
    assert!(!output.status.success(), "a taken username is refused");
    let output = run(
        database_url,
        &["user", "add", "123456789", "--password", PASSWORD],
    )
    .await;
    assert!(!output.status.success(), "an all-digit username is refused");

    let output = run(database_url, &["user", "list"]).await;
    let listing = String::from_utf8(output.stdout).unwrap();
    assert!(
        listing.contains("operator_1") && listing.contains("operator_2"),
        "{listing}"
    );
    assert!(!listing.contains("123456789"));

    let server = Server::start(database_url).await;
    let (status, body) = server
        .call(
            "POST",
            LOGIN,
            None,
            Some(login_body("operator_2", "Secret_pass1")),
        )
        .await;
    assert_eq!(status, 201, "{body}");
    assert_eq!(body["id"], second);
    server.stop().await;
}

#[tokio::test]
async fn migrate_creates_the_database_file_and_folder() {
    let dir = tempfile::tempdir().unwrap();
    let nested = dir.path().join("a/b");
    let output = run(&sqlite_in(&nested), &["migrate"]).await;
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(nested.join("pushtoken.db").exists());
}

#[tokio::test]
async fn unreachable_postgres_stops_startup_after_the_startup_timeout() {
    let output = command("postgres://postgres@127.0.0.1:1/pushtoken")
        .env("PUSHTOKEN_DB_STARTUP_TIMEOUT", "1s")
        .output()
        .await
        .unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    let last = stderr.trim_end().lines().last().unwrap_or_default();
    assert!(
        last.starts_with("pushtoken: cannot open the database"),
        "{stderr}"
    );
    assert!(!stderr.contains("panicked"), "{stderr}");
}

/// In a process of its own, so the figures are this server's alone.
#[every_database]
async fn metrics_report_stored_tokens_by_family_and_active_sessions(database_url: &str) {
    let server = Server::start(database_url).await;
    assert_eq!(
        server
            .call("POST", SIGN_UP, None, Some(sign_up_body("alice_1")))
            .await
            .0,
        201
    );
    let mut tokens = Vec::new();
    for _ in 0..2 {
        let (_, body) = server
            .call("POST", LOGIN, None, Some(login_body("alice_1", PASSWORD)))
            .await;
        tokens.push(body["token"].as_str().unwrap().to_owned());
    }
    for (base, n) in [(RING, 1), (RING, 2), (MESSAGE, 3)] {
        let body = registration(n);
        assert_eq!(
            server
                .call("POST", base, Some(&tokens[0]), Some(body))
                .await
                .0,
            201
        );
    }
    let (status, text) = server.call_text("GET", "/metrics", None, None).await;
    assert_eq!(status, 200);
    let value = |series: &str| -> f64 {
        let line = text
            .lines()
            .find(|l| l.starts_with(series))
            .unwrap_or_else(|| panic!("{series} in {text}"));
        line.rsplit(' ').next().unwrap().parse().unwrap()
    };
    assert_eq!(value("pushtoken_push_tokens{family=\"ring\"}"), 2.0);
    assert_eq!(value("pushtoken_push_tokens{family=\"message\"}"), 1.0);
    assert_eq!(value("pushtoken_active_sessions"), 2.0);
    assert_eq!(value("pushtoken_database_up"), 1.0);
    assert_eq!(
        value(
            r#"pushtoken_http_requests_total{route="/v1/api/user/login",method="POST",status="201"}"#
        ),
        2.0
    );
    server.stop().await;
}

#[tokio::test]
async fn secrets_can_be_given_as_files() {
    let dir = tempfile::tempdir().unwrap();
    let key_file = dir.path().join("api_key");
    std::fs::write(&key_file, "key-from-a-file\n").unwrap();
    let url_file = dir.path().join("database_url");
    std::fs::write(&url_file, format!("{}\n", sqlite_in(dir.path()))).unwrap();

    let mut cmd = command("unused");
    cmd.env_remove("DATABASE_URL")
        .env_remove("PUSHTOKEN_API_KEY")
        .env("DATABASE_URL_FILE", &url_file)
        .env("PUSHTOKEN_API_KEY_FILE", &key_file);
    let server = Server::spawn(cmd).await;
    let body = |key: &str| with(sign_up_body("alice_1"), "apikey", json!(key));
    assert_eq!(
        server
            .call("POST", SIGN_UP, None, Some(body(API_KEY)))
            .await
            .0,
        403
    );
    assert_eq!(
        server
            .call("POST", SIGN_UP, None, Some(body("key-from-a-file")))
            .await
            .0,
        201
    );
    server.stop().await;
    assert!(
        dir.path().join("pushtoken.db").exists(),
        "DATABASE_URL came from its file"
    );

    // Both forms at once, or a missing file, stop startup with one line.
    let both = command(&sqlite_in(dir.path()))
        .env("PUSHTOKEN_API_KEY_FILE", &key_file)
        .output()
        .await
        .unwrap();
    let missing = command(&sqlite_in(dir.path()))
        .env_remove("PUSHTOKEN_API_KEY")
        .env("PUSHTOKEN_API_KEY_FILE", dir.path().join("nowhere"))
        .output()
        .await
        .unwrap();
    for output in [both, missing] {
        assert!(!output.status.success());
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert_eq!(stderr.trim_end().lines().count(), 1, "{stderr}");
        assert!(stderr.contains("PUSHTOKEN_API_KEY_FILE"), "{stderr}");
    }
}

/// Runs the binary's command line (`user add …`, `migrate`) on `database_url`.
#[every_database]
async fn notify_posts_an_event_to_the_running_server_and_prints_its_answer(database_url: &str) {
    let key = ("PUSHTOKEN_NOTIFY_KEY", "operator-notify-key");
    let server = Server::start_with(database_url, &[key]).await;
    added_id(
        run(
            database_url,
            &["user", "add", "alice_1", "--password", PASSWORD],
        )
        .await,
    );
    let url = format!("http://{}", server.address);
    let notify = |key: &'static str, user: &'static str| {
        let mut cmd = command(database_url);
        cmd.env("PUSHTOKEN_NOTIFY_KEY", key)
            .args(["notify", user, "ring", "--type", "1", "--uid", "DEV-1"])
            .args(["--message", "At the door", "--server", url.as_str()]);
        cmd
    };
    let output = notify(key.1, "alice_1").output().await.unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let answer: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(answer["message"], "success", "{answer}");
    assert_eq!(
        (&answer["delivered"], &answer["skipped"]),
        (&json!(0), &json!(0))
    );
    assert!(answer["id"].as_i64().unwrap() > 0);
    // A wrong key: the server's answer, and a failing exit.
    let output = notify("wrong-key", "alice_1").output().await.unwrap();
    assert!(!output.status.success());
    assert!(String::from_utf8_lossy(&output.stdout).contains("invalid token"));
    let output = notify(key.1, "nobody_1").output().await.unwrap();
    assert!(!output.status.success());
    assert!(String::from_utf8_lossy(&output.stdout).contains("no data error"));
    server.stop().await;
}

#[every_database]
async fn user_passwd_revoke_and_delete_act_on_the_user_and_say_what_they_did(database_url: &str) {
    let add = ["user", "add", "alice_1", "--password", PASSWORD];
    let id = added_id(run(database_url, &add).await);
    let server = Server::start(database_url).await;
    let login = |password: &'static str| {
        let server = &server;
        async move {
            let body = Some(login_body("alice_1", password));
            server.call("POST", LOGIN, None, body).await
        }
    };
    let token_of = |body: &serde_json::Value| body["token"].as_str().unwrap().to_owned();
    let (_, first) = login(PASSWORD).await;
    let (_, second) = login(PASSWORD).await;
    let ring = format!("{RING}/1");
    let (status, _) = server
        .call(
            "PUT",
            &ring,
            Some(&token_of(&second)),
            Some(registration(1)),
        )
        .await;
    assert_eq!(status, 201);

    let said = stdout_of(run(database_url, &["user", "revoke", "alice_1"]).await);
    assert_eq!(said, format!("2 sessions of alice_1 (id {id}) revoked"));
    for token in [token_of(&first), token_of(&second)] {
        let (status, body) = server.call("GET", RING, Some(&token), None).await;
        assert_eq!((status, &body["message"]), (401, &json!("invalid token")));
    }

    let (_, third) = login(PASSWORD).await;
    let mut child = command(database_url)
        .args(["user", "passwd", "alice_1", "--password-stdin"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stdin = child.stdin.as_mut().unwrap();
    stdin.write_all(b"New_pass_22\n").await.unwrap();
    let said = stdout_of(child.wait_with_output().await.unwrap());
    assert_eq!(
        said,
        format!("password of alice_1 (id {id}) changed; 1 sessions revoked")
    );
    let (status, _) = server
        .call("GET", RING, Some(&token_of(&third)), None)
        .await;
    assert_eq!(status, 401);
    assert_eq!(login(PASSWORD).await.0, 401);
    assert_eq!(login("New_pass_22").await.0, 201);

    let said = stdout_of(run(database_url, &["user", "delete", "alice_1"]).await);
    assert_eq!(
        said,
        format!("user alice_1 (id {id}) deleted with 1 sessions, 1 push tokens and 0 events")
    );
    assert_eq!(login("New_pass_22").await.0, 401);
    for args in [
        &["user", "delete", "alice_1"][..],
        &["user", "revoke", "alice_1"],
        &["user", "passwd", "alice_1", "--password", "New_pass_33"],
    ] {
        let output = run(database_url, args).await;
        assert!(!output.status.success(), "{args:?}");
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(stderr.contains("no user alice_1"), "{args:?}: {stderr}");
    }
    server.stop().await;
}

/// What a successful command printed, without its last newline.
fn stdout_of(output: Output) -> String {
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout)
        .unwrap()
        .trim_end()
        .to_owned()
}

async fn run(database_url: &str, args: &[&str]) -> Output {
    command(database_url).args(args).output().await.unwrap()
}

/// The id a successful `user add` printed.
fn added_id(output: Output) -> i64 {
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout)
        .unwrap()
        .trim()
        .parse()
        .expect("prints the id")
}
