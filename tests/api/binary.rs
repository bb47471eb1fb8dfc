//! The real binary, started on port 0 and spoken to over TCP.

use std::path::Path;
use std::process::{Output, Stdio};
use std::time::Duration;

use serde_json::json;
use tokio::io::AsyncWriteExt;

use crate::support::api::{
    login_body, push_token, registration, sign_up_body, with, API_KEY, CACHE_LIFETIME, LOGIN,
    MESSAGE, PASSWORD, RING, SIGN_UP,
};
use crate::support::every_database;
use crate::support::server::{command, sqlite_in, Server};
use crate::support::wire::{exchange, request};

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
        ("PUSHTOKEN_API_KEY", "short-key-15chr"),
        ("PUSHTOKEN_NOTIFY_KEY", "short-key-15chr"),
        ("PUSHTOKEN_TRUSTED_PROXIES", "10.0.0.0/8,10.0.0.0/33"),
        ("PUSHTOKEN_METRICS_LISTEN", "localhost"),
        ("PUSHTOKEN_METRICS_REFRESH", "soon"),
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
        if variable.ends_with("_KEY") {
            assert!(!stderr.contains(value), "shows no key: {stderr}");
        }
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

/// The permission bits of `path`.
fn mode(path: &Path) -> u32 {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(path)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        .permissions()
        .mode()
        & 0o777
}

#[tokio::test]
async fn sqlite_files_and_the_folders_the_server_creates_are_its_users_alone() {
    let dir = tempfile::tempdir().unwrap();
    let nested = dir.path().join("a/b");
    let server = Server::start(&sqlite_in(&nested)).await;
    // A write, so that the WAL and its index exist while it runs.
    server.session("alice_1").await;
    for folder in [dir.path().join("a"), nested.clone()] {
        assert_eq!(mode(&folder), 0o700, "{}", folder.display());
    }
    for file in ["pushtoken.db", "pushtoken.db-wal", "pushtoken.db-shm"] {
        assert_eq!(mode(&nested.join(file)), 0o600, "{file}");
    }
    server.stop().await;
}

#[tokio::test]
async fn a_database_file_readable_by_others_is_narrowed_at_startup() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let shared = dir.path().join("shared");
    std::fs::create_dir(&shared).unwrap();
    std::fs::set_permissions(&shared, std::fs::Permissions::from_mode(0o755)).unwrap();
    let output = run(&sqlite_in(&shared), &["migrate"]).await;
    assert!(output.status.success());
    let db = shared.join("pushtoken.db");
    std::fs::set_permissions(&db, std::fs::Permissions::from_mode(0o644)).unwrap();
    let (server, log) = Server::spawn_logged(command(&sqlite_in(&shared))).await;
    assert_eq!(mode(&db), 0o600);
    server.session("alice_1").await;
    assert_eq!(mode(&shared.join("pushtoken.db-wal")), 0o600);
    assert_eq!(
        mode(&shared),
        0o755,
        "a folder it did not create is the operator's"
    );
    server.stop().await;
    let lines = log.lines().await;
    assert!(
        lines
            .iter()
            .any(|l| l.contains("WARN") && l.contains("readable by others")),
        "{lines:#?}"
    );
}

#[tokio::test]
async fn plain_http_on_a_non_loopback_address_logs_a_warning_at_startup() {
    let dir = tempfile::tempdir().unwrap();
    let warned = |lines: &[String]| {
        lines
            .iter()
            .any(|l| l.contains("WARN") && l.contains("plain HTTP"))
    };
    let mut everywhere = command(&sqlite_in(dir.path()));
    everywhere.env("PUSHTOKEN_LISTEN", "0.0.0.0:0");
    let (server, log) = Server::spawn_logged(everywhere).await;
    assert!(warned(&log.so_far()), "{:#?}", log.so_far());
    server.stop().await;
    let (server, log) = Server::spawn_logged(command(&sqlite_in(dir.path()))).await;
    assert!(!warned(&log.so_far()), "{:#?}", log.so_far());
    server.stop().await;
}

#[tokio::test]
async fn sigterm_as_soon_as_the_server_listens_stops_it_gracefully() {
    // The handler is in place before the "listening on" line: a signal
    // right after it is a graceful stop (exit 0), every time.
    for _ in 0..5 {
        let dir = tempfile::tempdir().unwrap();
        let (server, _) = Server::spawn_logged(command(&sqlite_in(dir.path()))).await;
        server.stop().await;
    }
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

/// The value of `series` in a Prometheus text exposition.
fn metric(text: &str, series: &str) -> f64 {
    let line = text
        .lines()
        .find(|l| l.starts_with(series))
        .unwrap_or_else(|| panic!("{series} in {text}"));
    line.rsplit(' ').next().unwrap().parse().unwrap()
}

/// Scrapes `GET {base}/metrics` until `done` holds for its text (10 s at
/// most); the last text.
async fn scrape_until(server: &Server, done: impl Fn(&str) -> bool) -> String {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let (status, text) = server.call_text("GET", "/metrics", None, None).await;
        assert_eq!(status, 200, "{text}");
        if done(&text) || tokio::time::Instant::now() > deadline {
            return text;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// In a process of its own, so the figures are this server's alone.
#[every_database]
async fn metrics_report_stored_tokens_by_family_and_active_sessions(database_url: &str) {
    let server = Server::start_with(database_url, &[("PUSHTOKEN_METRICS_REFRESH", "1s")]).await;
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
    // Counted in the background, every second here.
    let text = scrape_until(&server, |text| {
        metric(text, "pushtoken_push_tokens{family=\"message\"}") == 1.0
    })
    .await;
    assert_eq!(metric(&text, "pushtoken_push_tokens{family=\"ring\"}"), 2.0);
    assert_eq!(
        metric(&text, "pushtoken_push_tokens{family=\"message\"}"),
        1.0
    );
    assert_eq!(metric(&text, "pushtoken_active_sessions"), 2.0);
    assert_eq!(metric(&text, "pushtoken_database_up"), 1.0);
    assert_eq!(
        metric(
            &text,
            r#"pushtoken_http_requests_total{route="/v1/api/user/login",method="POST",status="201"}"#
        ),
        2.0
    );
    server.stop().await;
}

#[every_database]
async fn a_scrape_counts_no_rows_they_are_counted_in_the_background(database_url: &str) {
    let ring = "pushtoken_push_tokens{family=\"ring\"}";
    let server = Server::start_with(database_url, &[("PUSHTOKEN_METRICS_REFRESH", "1h")]).await;
    // Counted once at startup.
    scrape_until(&server, |text| text.contains("pushtoken_database_up 1")).await;
    let token = server.session("alice_1").await;
    for n in 1..=2 {
        let (status, _) = server
            .call("POST", RING, Some(&token), Some(registration(n)))
            .await;
        assert_eq!(status, 201);
    }
    for _ in 0..3 {
        let (_, text) = server.call_text("GET", "/metrics", None, None).await;
        assert_eq!(metric(&text, ring), 0.0, "a scrape does not count");
        assert_eq!(metric(&text, "pushtoken_active_sessions"), 0.0);
    }
    server.stop().await;
    // Another start counts them at once, and again at each interval.
    let server = Server::start_with(database_url, &[("PUSHTOKEN_METRICS_REFRESH", "1s")]).await;
    let text = scrape_until(&server, |text| text.contains(&format!("{ring} 2"))).await;
    assert_eq!(metric(&text, ring), 2.0, "{text}");
    let (status, _) = server
        .call("POST", RING, Some(&token), Some(registration(3)))
        .await;
    assert_eq!(status, 201);
    let text = scrape_until(&server, |text| text.contains(&format!("{ring} 3"))).await;
    assert_eq!(metric(&text, ring), 3.0, "{text}");
    server.stop().await;
}

#[every_database]
async fn metrics_listen_serves_metrics_there_and_not_on_the_api(database_url: &str) {
    let mut cmd = command(database_url);
    cmd.env("PUSHTOKEN_METRICS_LISTEN", "127.0.0.1:0");
    let (server, log) = Server::spawn_logged(cmd).await;
    let address = log
        .so_far()
        .iter()
        .find_map(|line| {
            let rest = line.split("serving /metrics on http://").nth(1)?;
            Some(rest.split('/').next()?.to_owned())
        })
        .expect("the metrics address is logged before the API's");
    let (status, body) = server.call("GET", "/metrics", None, None).await;
    assert_eq!((status, body), (404, json!({ "message": "not found" })));
    let get = |path: &str| request("GET", path, &address, &[], "");
    let (status, text) = exchange(&address, get("/metrics").as_bytes())
        .await
        .unwrap();
    let text = String::from_utf8(text).unwrap();
    assert_eq!(status, 200, "{text}");
    assert!(text.contains("pushtoken_db_pool_max_connections"), "{text}");
    let (status, _) = exchange(&address, get("/healthz").as_bytes())
        .await
        .unwrap();
    assert_eq!(status, 404, "only /metrics there");
    server.stop().await;
}

#[tokio::test]
async fn secrets_can_be_given_as_files() {
    let dir = tempfile::tempdir().unwrap();
    let key_file = dir.path().join("api_key");
    std::fs::write(&key_file, "key-from-a-file-0123\n").unwrap();
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
            .call("POST", SIGN_UP, None, Some(body("key-from-a-file-0123")))
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
    let output = notify("wrong-notify-key-0", "alice_1")
        .output()
        .await
        .unwrap();
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
    // The server sees another process's change within its cache lifetime.
    tokio::time::sleep(CACHE_LIFETIME).await;
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
    tokio::time::sleep(CACHE_LIFETIME).await;
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
