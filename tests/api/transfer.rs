//! `pushtoken export`, `import` and `stats`, through the real binary: the
//! whole database as JSON Lines, into an empty database of either kind and
//! back, byte for byte; what an import refuses; what stats count.

use std::process::{Output, Stdio};
use std::sync::Arc;

use axum::http::{Method, StatusCode};
use serde_json::{json, Value};
use tokio::io::AsyncWriteExt;

use crate::support::accounts::refresh;
use crate::support::api::{
    login_body, push_token, API_KEY, LOGIN, MESSAGE, PASSWORD, RING, SIGN_UP,
};
use crate::support::push::{PushClient, Read, EVENT, PROMPTLY};
use crate::support::server::{command, Server};
use crate::support::{every_backend, every_database, TestApp, TestDb};

const NOTIFY_KEY: &str = "operator-notify-key";
const HEADER: &str = r#"{"format":"pushtoken-export","version":1}"#;
const KINDS: [&str; 8] = [
    "user",
    "session",
    "used_refresh_key",
    "push_token",
    "socket_client",
    "event",
    "queued_event",
    "secret",
];
/// The phone whose socket stays connected, and the one that hangs up
/// before an event is sent to it.
const CONNECTED_IMEI: &str = "860000000000001";
const GONE_IMEI: &str = "860000000000002";
const PHONE_MODEL: &str = "华为 Mate 60 Pro";
const EVENT_MESSAGE: &str = "门铃响了 🔔 «Tür»";

/// What a stocked database holds that the tests use afterwards.
struct Stock {
    /// Alice's session made by a refresh (her second login's, rotated).
    rotated_session: String,
    /// Her first login's session.
    first_session: String,
    /// The token the push socket issued to the phone that stays connected.
    connected_token: String,
    gone_token: String,
    /// The connection of that phone, kept open.
    _connected: PushClient,
}

/// Fills the app's database through the server's routes and its push
/// socket with a record of every kind: users with and without email,
/// phone and realm (some not ASCII); sessions, one of them rotated (so a
/// refresh key is kept as used); push tokens of both families on several
/// platforms, a phone model not in ASCII; two socket clients; events, one
/// of them queued for the phone that hung up; and the server's secret.
async fn stock(app: TestApp) -> (TestApp, Stock) {
    let app = app.with_flags(&["--notify-key", NOTIFY_KEY]).await;
    for body in [
        json!({
            "username": "alice_1", "password": PASSWORD, "apikey": API_KEY,
            "email": "zoë@例え.jp", "phone": "+8613800000001", "realm": "家",
        }),
        json!({
            "username": "bobby_2", "password": PASSWORD, "apikey": API_KEY,
            "email": "bob@example.com",
        }),
        json!({ "username": "carola_3", "password": PASSWORD, "apikey": API_KEY }),
    ] {
        app.post_anonymous(SIGN_UP, body)
            .await
            .assert_success(StatusCode::CREATED);
    }
    let first_session = session_of(&app, "zoë@例え.jp").await.0;
    let (_, key) = session_of(&app, "alice_1").await;
    let rotated = refresh(&app, &key).await;
    rotated.assert_success(StatusCode::CREATED);
    let rotated_session = rotated.body["token"].as_str().unwrap().to_owned();
    let (bob, _) = session_of(&app, "bobby_2").await;

    let registrations = [
        (&rotated_session, RING, 1, "FCM", 0),
        (&rotated_session, MESSAGE, 2, "APNS", 1),
        (&bob, RING, 0, "HUAWEI", 0),
    ];
    for (session, family, serial, platform, dev) in registrations {
        let body = json!({
            "push_token": push_token(serial as u32 + 100), "language": "zh", "dev": dev,
            "os": "ANDROID", "os_token": format!("os-token-{serial}"),
            "push_platform": platform, "phone_model": PHONE_MODEL,
        });
        let reply = app.put(&format!("{family}/{serial}"), session, body).await;
        reply.assert_success(StatusCode::CREATED);
    }

    let socket = app.push_socket().await;
    let mut connected = PushClient::connect(socket).await;
    let connected_token = connected.register(CONNECTED_IMEI, None).await;
    let mut gone = PushClient::connect(socket).await;
    let gone_token = gone.register(GONE_IMEI, None).await;
    for (session, family, token) in [
        (&rotated_session, RING, &connected_token),
        (&bob, MESSAGE, &gone_token),
    ] {
        let reply = app
            .post(
                family,
                session,
                json!({ "push_token": token, "language": "en" }),
            )
            .await;
        assert!(reply.status.is_success(), "{}", reply.body);
    }
    drop(gone);
    released(&app, &gone_token).await;

    let rung = notify(
        &app,
        "alice_1",
        "ring",
        json!({ "type": "1", "uid": "DEV-1" }),
    )
    .await;
    assert_eq!(rung["delivered"], 1, "{rung}");
    let queued = notify(
        &app,
        "bobby_2",
        "message",
        json!({ "type": "0", "uid": "DEV-2", "message": EVENT_MESSAGE }),
    )
    .await;
    assert_eq!(queued["queued"], 1, "{queued}");
    let stock = Stock {
        rotated_session,
        first_session,
        connected_token,
        gone_token,
        _connected: connected,
    };
    (app, stock)
}

/// Logs in as `login`: the session token and refresh key.
async fn session_of(app: &TestApp, login: &str) -> (String, String) {
    let reply = app.post_anonymous(LOGIN, login_body(login, PASSWORD)).await;
    reply.assert_success(StatusCode::CREATED);
    let text = |key: &str| reply.body[key].as_str().unwrap().to_owned();
    (text("token"), text("reflash_key"))
}

/// `POST /v1/api/notify`; the answer, which must be 202.
async fn notify(app: &TestApp, user: &str, family: &str, event: Value) -> Value {
    let bearer = format!("Bearer {NOTIFY_KEY}");
    let reply = app
        .request(
            Method::POST,
            "/v1/api/notify",
            &[("authorization", bearer.as_str())],
            Some(json!({ "user": user, "family": family, "event": event })),
        )
        .await;
    assert_eq!(reply.status, StatusCode::ACCEPTED, "{}", reply.body);
    reply.body
}

/// Waits until the server no longer holds a connection for `token`.
async fn released(app: &TestApp, token: &str) {
    for _ in 0..100 {
        let held = app.stored_text("socket_connections").await;
        if !held.iter().any(|row| row.iter().any(|v| v == token)) {
            return;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    panic!("the server still holds the connection that hung up");
}

/// A new empty database of the other kind than `db`.
async fn other_kind(db: &TestDb) -> TestDb {
    match db {
        TestDb::Sqlite { .. } => TestDb::postgres().await,
        TestDb::Postgres { .. } => TestDb::sqlite(),
    }
}

/// A new empty database of the same kind as `db`.
async fn same_kind(db: &TestDb) -> TestDb {
    match db {
        TestDb::Sqlite { .. } => TestDb::sqlite(),
        TestDb::Postgres { .. } => TestDb::postgres().await,
    }
}

/// `pushtoken export` of the database at `url`, which must succeed.
async fn export(url: &str) -> String {
    let output = command(url).arg("export").output().await.unwrap();
    assert!(
        output.status.success(),
        "export: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout).expect("an export is UTF-8")
}

/// `pushtoken import` into the database at `url`, reading `input`.
async fn import(url: &str, input: &[u8]) -> Output {
    let mut child = command(url)
        .arg("import")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    // A refusal may come before the input is read: the pipe may be closed.
    let _ = stdin.write_all(input).await;
    drop(stdin);
    child.wait_with_output().await.unwrap()
}

/// Asserts that an import succeeded.
#[track_caller]
fn assert_imported(output: &Output) {
    assert!(
        output.status.success(),
        "import: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    let said = String::from_utf8_lossy(&output.stdout);
    assert!(said.starts_with("imported "), "{said}");
}

/// The JSON objects of an export's lines after its header.
fn records(export: &str) -> Vec<Value> {
    export
        .lines()
        .skip(1)
        .map(|line| serde_json::from_str(line).expect("a JSON line"))
        .collect()
}

/// The largest `id` of the records of `kind`.
fn largest_id(export: &str, kind: &str) -> i64 {
    records(export)
        .iter()
        .filter(|r| r["kind"] == kind)
        .map(|r| r["id"].as_i64().unwrap())
        .max()
        .unwrap_or_else(|| panic!("no {kind} in the export"))
}

#[every_backend]
async fn an_export_imported_into_the_other_kind_and_back_exports_the_same_lines(app: TestApp) {
    let (app, stock) = stock(app).await;
    let source = app.db.url();
    let exported = export(&source).await;
    for secret in [&*stock.rotated_session, &*stock.first_session, PASSWORD] {
        assert!(!exported.contains(secret), "hashes only");
    }
    assert_eq!(exported.lines().next(), Some(HEADER));
    assert!(exported.ends_with('\n'));
    let kinds: std::collections::BTreeSet<String> = records(&exported)
        .iter()
        .map(|r| r["kind"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(kinds, KINDS.iter().map(|k| k.to_string()).collect());
    for text in [PHONE_MODEL, "zoë@例え.jp", "家"] {
        assert!(exported.contains(text), "{text} as it is, not escaped");
    }
    assert!(
        records(&exported)
            .iter()
            .any(|r| r["kind"] == "event" && r["body"].as_str().unwrap().contains(EVENT_MESSAGE)),
        "the event's text survives"
    );
    assert_eq!(
        export(&source).await,
        exported,
        "the same data, the same bytes"
    );

    let other = other_kind(&app.db).await;
    assert_imported(&import(&other.url(), exported.as_bytes()).await);
    assert_eq!(export(&other.url()).await, exported);

    let back = same_kind(&app.db).await;
    let exported_again = export(&other.url()).await;
    assert_imported(&import(&back.url(), exported_again.as_bytes()).await);
    assert_eq!(export(&back.url()).await, exported);
}

#[every_backend]
async fn after_an_import_passwords_sessions_socket_tokens_and_queued_events_work_and_new_ids_are_higher(
    app: TestApp,
) {
    let (app, stock) = stock(app).await;
    let exported = export(&app.db.url()).await;
    let target = Arc::new(other_kind(&app.db).await);
    let url = target.url();
    // A first start makes a secret of its own, which the import replaces
    // (else the socket tokens below would differ).
    let first = TestApp::start_at(target.clone(), &url, &[]).await;
    assert_eq!(first.stored_text("server_secrets").await.len(), 1);
    first.state.store.close().await;
    drop(first);

    assert_imported(&import(&url, exported.as_bytes()).await);
    let moved = TestApp::start_at(target.clone(), &url, &["--notify-key", NOTIFY_KEY]).await;
    for login in [
        "alice_1",
        "zoë@例え.jp",
        "+8613800000001",
        "bobby_2",
        "carola_3",
    ] {
        moved
            .login(login, PASSWORD)
            .await
            .assert_success(StatusCode::CREATED);
    }
    for session in [&stock.rotated_session, &stock.first_session] {
        let reply = moved.get(RING, session).await;
        reply.assert_success_list();
        let rows = reply.body.as_array().unwrap();
        assert_eq!(rows.len(), 2, "{}", reply.body);
        assert!(rows.iter().any(|row| row["phone_model"] == PHONE_MODEL));
    }

    let socket = moved.push_socket().await;
    let again = PushClient::connect(socket)
        .await
        .register(CONNECTED_IMEI, None)
        .await;
    assert_eq!(again, stock.connected_token);
    let mut back = PushClient::connect(socket).await;
    assert_eq!(back.register(GONE_IMEI, None).await, stock.gone_token);
    match back.read_skipping_heartbeats(PROMPTLY).await {
        Read::Frame(EVENT, payload) => {
            let event: Value = serde_json::from_slice(&payload).unwrap();
            assert_eq!(event["message"], EVENT_MESSAGE);
        }
        other => panic!("the queued event should come, got {other:?}"),
    }

    let user = moved.sign_up("dora_4").await;
    assert!(user > largest_id(&exported, "user"), "new user id {user}");
    let event = notify(
        &moved,
        "dora_4",
        "ring",
        json!({ "type": "1", "uid": "DEV-4" }),
    )
    .await;
    let event = event["id"].as_i64().unwrap();
    assert!(
        event > largest_id(&exported, "event"),
        "new event id {event}"
    );
    moved
        .login("dora_4", PASSWORD)
        .await
        .assert_success(StatusCode::CREATED);
    moved.state.store.close().await;
    let now = export(&url).await;
    assert!(largest_id(&now, "session") > largest_id(&exported, "session"));
}

/// A small valid export: one user, with its session, and a secret.
fn sample(user: i64) -> String {
    let hash = "$argon2id$v=19$m=1024,t=1,p=1$c2FsdHNhbHQ$aGFzaGhhc2hoYXNo";
    format!(
        "{HEADER}\n\
         {{\"kind\":\"user\",\"id\":{user},\"username\":\"erin_5\",\"password_hash\":\"{hash}\",\
         \"email\":null,\"phone\":null,\"realm\":\"ünï\",\"created_at\":1764650000}}\n\
         {{\"kind\":\"session\",\"id\":3,\"user_id\":{user},\"token_hash\":\"aa\",\
         \"refresh_hash\":\"bb\",\"created_at\":1764650000,\"expires_at\":1764650001,\
         \"refresh_expires_at\":1764650002,\"login_id\":3,\"login_at\":1764650000}}\n\
         {{\"kind\":\"secret\",\"name\":\"push_token_key\",\"value\":\"imported-secret\",\
         \"created_at\":1764650000}}\n"
    )
}

/// Asserts a refusal: a non-zero exit and one line on standard error that
/// says `reason`.
#[track_caller]
fn assert_refused(output: &Output, reason: &str) {
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success(), "refused: {stderr}");
    assert_eq!(stderr.trim_end().lines().count(), 1, "one line: {stderr}");
    assert!(stderr.contains(reason), "says {reason:?}: {stderr}");
    assert!(
        output.stdout.is_empty(),
        "{}",
        String::from_utf8_lossy(&output.stdout)
    );
}

#[every_database]
async fn import_refuses_bad_input_with_a_one_line_reason_and_writes_nothing(database_url: &str) {
    // A first start: the database holds the secret it made.
    Server::start(database_url).await.stop().await;
    let before = export(database_url).await;
    assert_eq!(records(&before).len(), 1, "{before}");

    let good = sample(7);
    let (head, rest) = good.split_once('\n').unwrap();
    let cases = [
        (String::new(), "empty"),
        (good.replace("\"version\":1", "\"version\":2"), "version 2"),
        (
            good.replace(HEADER, "{\"format\":\"something-else\"}"),
            "not the header",
        ),
        (
            format!("{head}\n{{\"kind\":\"user\",\"id\":\n{rest}"),
            "line 2 is not JSON",
        ),
        (format!("{good}not json\n"), "line 5 is not JSON"),
        (
            format!("{head}\n[1, 2]\n{rest}"),
            "line 2 is not a JSON object",
        ),
        (
            format!("{good}{{\"kind\":\"device\",\"id\":1}}\n"),
            "line 5: unknown kind \"device\"",
        ),
        (
            format!("{good}{{\"id\":1}}\n"),
            "line 5: it has no \"kind\"",
        ),
        (good.trim_end().to_owned(), "line 4 is cut short"),
        (good[..good.len() - 20].to_owned(), "line 4 is cut short"),
        (
            good.replace("\"realm\":\"ünï\"", "\"realm\":1"),
            "line 2: the user's \"realm\" is not a string or null",
        ),
        (
            good.replace("\"realm\"", "\"region\""),
            "line 2: a user has no field \"region\"",
        ),
        (
            good.replace("\"user_id\":7", "\"user_id\":8"),
            "line 3: cannot store",
        ),
        (
            format!("{good}{}", good.lines().nth(1).unwrap()) + "\n",
            "line 5: cannot store",
        ),
    ];
    for (input, reason) in cases {
        let output = import(database_url, input.as_bytes()).await;
        assert_refused(&output, reason);
        assert_eq!(
            export(database_url).await,
            before,
            "nothing written for {reason:?}"
        );
    }

    assert_imported(&import(database_url, good.as_bytes()).await);
    let after = export(database_url).await;
    assert_eq!(after, good, "the first start's secret is replaced");
}

#[every_database]
async fn import_refuses_a_database_that_holds_records_and_leaves_it_untouched(database_url: &str) {
    let added = command(database_url)
        .args(["user", "add", "frank_6", "--password", PASSWORD])
        .output()
        .await
        .unwrap();
    assert!(added.status.success());
    let before = export(database_url).await;

    let output = import(database_url, sample(9).as_bytes()).await;
    assert_refused(&output, "not empty (it holds users)");
    assert_eq!(export(database_url).await, before);
}

#[every_backend]
async fn stats_counts_users_live_sessions_tokens_by_family_and_platform_and_prints_a_table(
    app: TestApp,
) {
    let (app, _stock) = stock(app).await;
    let output = command(&app.db.url())
        .args(["stats", "--json"])
        .output()
        .await
        .unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let stats: Value = serde_json::from_slice(&output.stdout).expect("one JSON object");
    assert_eq!(
        stats,
        json!({
            "users": 3,
            "sessions": 3,
            "tokens": {
                "ring": { "total": 3, "platforms": { "": 1, "FCM": 1, "HUAWEI": 1 } },
                "message": { "total": 2, "platforms": { "": 1, "APNS": 1 } },
            },
            "socket_clients": 2,
            "events": 2,
        })
    );

    let output = command(&app.db.url()).arg("stats").output().await.unwrap();
    assert!(output.status.success());
    let table = String::from_utf8(output.stdout).unwrap();
    let row = |name: &str| -> Vec<String> {
        let line = table
            .lines()
            .find(|l| l.trim_start().starts_with(name))
            .unwrap_or_else(|| panic!("a row {name}: {table}"));
        line[name.len() + (line.len() - line.trim_start().len())..]
            .split_whitespace()
            .map(str::to_owned)
            .collect()
    };
    assert_eq!(row("users"), ["3"]);
    assert_eq!(row("live sessions"), ["3"]);
    assert_eq!(row("socket clients"), ["2"]);
    assert_eq!(row("events"), ["2"]);
    assert_eq!(row("push tokens"), ["ring", "message"]);
    assert_eq!(row("all"), ["3", "2"]);
    assert_eq!(row("FCM"), ["1", "0"]);
    assert_eq!(row("APNS"), ["0", "1"]);
    assert_eq!(row("(none)"), ["1", "1"]);
}

#[tokio::test]
async fn export_and_stats_refuse_a_sqlite_file_that_is_not_there() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("nothing-here.db");
    let url = format!("sqlite://{}", path.display());
    for command_line in [&["export"][..], &["stats"], &["stats", "--json"]] {
        let output = command(&url).args(command_line).output().await.unwrap();
        assert!(!output.status.success(), "{command_line:?}");
        assert!(output.stdout.is_empty());
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert_eq!(stderr.trim_end().lines().count(), 1, "{stderr}");
        assert!(stderr.contains("no database at"), "{stderr}");
    }
    assert!(!path.exists(), "no file made");
}
