//! The real binary, started on port 0 and spoken to over TCP.

use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use serde_json::{json, Value};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;
use tokio::process::{Child, Command};

use crate::common::{push_token, API_KEY, PASSWORD, RING};
use crate::on_every_database;

const BIN: &str = env!("CARGO_BIN_EXE_pushtoken");

/// The SQLite URL of a database file in `dir`.
pub(crate) fn sqlite_in(dir: &Path) -> String {
    format!("sqlite://{}", dir.join("pushtoken.db").display())
}

pub(crate) fn command(database_url: &str) -> Command {
    let mut cmd = Command::new(BIN);
    cmd.env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .env("DATABASE_URL", database_url)
        .env("PUSHTOKEN_LISTEN", "127.0.0.1:0")
        .env("PUSHTOKEN_API_KEY", API_KEY)
        .env("RUST_LOG", "info")
        .kill_on_drop(true);
    cmd
}

/// A running server and the address it reported.
pub(crate) struct Server {
    pub(crate) child: Child,
    pub(crate) address: String,
}

impl Server {
    pub(crate) async fn start(database_url: &str) -> Server {
        Server::spawn(command(database_url)).await
    }

    /// Runs `cmd` and waits for the address it reports listening on.
    pub(crate) async fn spawn(mut cmd: Command) -> Server {
        let mut child = cmd
            .stderr(Stdio::piped())
            .stdout(Stdio::null())
            .spawn()
            .expect("spawn pushtoken");
        let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
        let address = tokio::time::timeout(Duration::from_secs(30), async {
            while let Some(line) = lines.next_line().await.expect("stderr") {
                if let Some(rest) = line.split("listening on ").nth(1) {
                    return rest.split_whitespace().next().unwrap().to_owned();
                }
            }
            panic!("server exited before listening");
        })
        .await
        .expect("server listens within 30s");
        // Keep draining the log so the server never blocks on a full pipe.
        tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
        Server { child, address }
    }

    /// One HTTP/1.1 request over a fresh TCP connection, answered in JSON.
    pub(crate) async fn call(
        &self,
        method: &str,
        path: &str,
        token: Option<&str>,
        body: Option<Value>,
    ) -> (u16, Value) {
        let (status, body) = self.call_text(method, path, token, body).await;
        let json = serde_json::from_str(&body).unwrap_or_else(|_| panic!("json body: {body}"));
        (status, json)
    }

    /// One HTTP/1.1 request over a fresh TCP connection; the body as text.
    pub(crate) async fn call_text(
        &self,
        method: &str,
        path: &str,
        token: Option<&str>,
        body: Option<Value>,
    ) -> (u16, String) {
        let mut stream = TcpStream::connect(&self.address).await.expect("connect");
        let body = body.map(|b| b.to_string()).unwrap_or_default();
        let auth = token.map(|t| format!("Token: {t}\r\n")).unwrap_or_default();
        let request = format!(
            "{method} {path} HTTP/1.1\r\nHost: {}\r\nConnection: close\r\n{auth}Content-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
            self.address,
            body.len()
        );
        stream.write_all(request.as_bytes()).await.expect("send");
        let mut raw = Vec::new();
        stream.read_to_end(&mut raw).await.expect("read");
        let text = String::from_utf8(raw).expect("utf-8 response");
        let (head, body) = text.split_once("\r\n\r\n").expect("http response");
        let status = head.split_whitespace().nth(1).unwrap().parse().unwrap();
        (status, body.to_owned())
    }

    /// Sends SIGTERM and waits for a clean exit.
    pub(crate) async fn stop(mut self) {
        let pid = self.child.id().expect("running") as i32;
        let status = std::process::Command::new("kill")
            .args(["-TERM", &pid.to_string()])
            .status()
            .expect("kill");
        assert!(status.success());
        let exit = tokio::time::timeout(Duration::from_secs(30), self.child.wait())
            .await
            .expect("exits within 30s")
            .unwrap();
        assert!(exit.success(), "exit status {exit:?}");
    }
}

async fn serves_on_port_0_and_keeps_data_and_sessions_across_restart(database_url: &str) {
    let server = Server::start(database_url).await;

    let (status, body) = server
        .call(
            "POST",
            "/v1/api/user",
            None,
            Some(json!({ "username": "alice_1", "password": PASSWORD, "apikey": API_KEY })),
        )
        .await;
    assert_eq!((status, &body["message"]), (201, &json!("success")));
    let (status, body) = server
        .call(
            "POST",
            "/v1/api/user/login",
            None,
            Some(json!({ "username": "alice_1", "password": PASSWORD })),
        )
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

async fn user_add_prints_the_id_and_the_user_can_log_in(database_url: &str) {
    let output = command(database_url)
        .args(["user", "add", "operator_1", "--password", PASSWORD])
        .output()
        .await
        .unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let first: i64 = String::from_utf8(output.stdout)
        .unwrap()
        .trim()
        .parse()
        .expect("prints the id");

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
    let output = child.wait_with_output().await.unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let second: i64 = String::from_utf8(output.stdout)
        .unwrap()
        .trim()
        .parse()
        .expect("prints the id");
    assert_ne!(first, second);

    let output = command(database_url)
        .args(["user", "add", "operator_1", "--password", PASSWORD])
        .output()
        .await
        .unwrap();
    assert!(!output.status.success(), "a taken username is refused");
    let output = command(database_url)
        .args(["user", "add", "123456789", "--password", PASSWORD])
        .output()
        .await
        .unwrap();
    assert!(!output.status.success(), "an all-digit username is refused");

    let output = command(database_url)
        .args(["user", "list"])
        .output()
        .await
        .unwrap();
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
            "/v1/api/user/login",
            None,
            Some(json!({ "username": "operator_2", "password": "Secret_pass1" })),
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
    let output = command(&sqlite_in(&nested))
        .arg("migrate")
        .output()
        .await
        .unwrap();
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
async fn metrics_report_stored_tokens_by_family_and_active_sessions(database_url: &str) {
    let server = Server::start(database_url).await;
    let sign_up = json!({ "username": "alice_1", "password": PASSWORD, "apikey": API_KEY });
    assert_eq!(
        server
            .call("POST", "/v1/api/user", None, Some(sign_up))
            .await
            .0,
        201
    );
    let mut tokens = Vec::new();
    for _ in 0..2 {
        let login = json!({ "username": "alice_1", "password": PASSWORD });
        let (_, body) = server
            .call("POST", "/v1/api/user/login", None, Some(login))
            .await;
        tokens.push(body["token"].as_str().unwrap().to_owned());
    }
    for (base, n) in [(RING, 1), (RING, 2), ("/v1/api/user/message/token", 3)] {
        let body = json!({ "push_token": push_token(n), "language": "en" });
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
    let body = |key: &str| json!({ "username": "alice_1", "password": PASSWORD, "apikey": key });
    assert_eq!(
        server
            .call("POST", "/v1/api/user", None, Some(body(API_KEY)))
            .await
            .0,
        403
    );
    assert_eq!(
        server
            .call("POST", "/v1/api/user", None, Some(body("key-from-a-file")))
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

on_every_database!(
    serves_on_port_0_and_keeps_data_and_sessions_across_restart,
    user_add_prints_the_id_and_the_user_can_log_in,
    metrics_report_stored_tokens_by_family_and_active_sessions,
);
