//! `POST /v1/api/notify` and the event history: an event reaches every
//! push-socket connection of the user's tokens in its family, waits for a
//! disconnected one while its ttl lasts, and never reaches a phone that is
//! no longer the user's.

use axum::http::{Method, StatusCode};
use serde_json::{json, Value};

use crate::support::api::{full_sign_up_body, MESSAGE, PASSWORD, RING};
use crate::support::push::{PushClient, Read, EVENT, PROMPTLY};
use crate::support::{every_backend, Reply, TestApp, TestUser};

const KEY: &str = "operator-notify-key";
const NOTIFY: &str = "/v1/api/notify";
const HISTORY: &str = "/v1/api/user/deviceses/event_record";

async fn with_key(app: TestApp) -> TestApp {
    app.with_flags(&["--notify-key", KEY]).await
}

async fn notify(app: &TestApp, body: Value) -> Reply {
    let bearer = format!("Bearer {KEY}");
    app.request(
        Method::POST,
        NOTIFY,
        &[("authorization", bearer.as_str())],
        Some(body),
    )
    .await
}

fn ring(user: &TestUser, kind: &str, uid: &str) -> Value {
    json!({ "user": user.username, "family": "ring", "event": { "type": kind, "uid": uid } })
}

/// A notify answer's `delivered`, `queued` and `skipped`.
fn tallies(reply: &Reply) -> [i64; 3] {
    ["delivered", "queued", "skipped"].map(|key| reply.body[key].as_i64().unwrap_or(-1))
}

/// A push-socket client registered as `imei`, its token bound to `user`
/// in the family at `base`.
async fn phone(
    app: &TestApp,
    address: std::net::SocketAddr,
    user: &TestUser,
    base: &str,
    imei: &str,
) -> (PushClient, String) {
    let mut client = PushClient::connect(address).await;
    let token = client.register(imei, None).await;
    let reply = app
        .post(
            base,
            &user.token,
            json!({ "push_token": token, "language": "en" }),
        )
        .await;
    assert!(reply.status.is_success(), "{}", reply.body);
    (client, token)
}

/// Closes the client's connection and waits until the server has seen it
/// go.
async fn hang_up(app: &TestApp, client: PushClient, token: &str) {
    drop(client);
    for _ in 0..100 {
        let held = app.stored_text("socket_connections").await;
        if !held.iter().any(|row| row.iter().any(|v| v == token)) {
            return;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    panic!("the server still holds a connection for the token");
}

/// Waits until no event is queued for any token.
async fn unqueued(app: &TestApp) {
    for _ in 0..100 {
        if app.stored_text("queued_events").await.is_empty() {
            return;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    panic!("an event stays queued after its frame was read");
}

/// The next event frame's JSON.
async fn next_event(client: &mut PushClient) -> Value {
    match client.read_skipping_heartbeats(PROMPTLY).await {
        Read::Frame(EVENT, payload) => serde_json::from_slice(&payload).expect("event JSON"),
        other => panic!("expected an event, got {other:?}"),
    }
}

async fn no_event(client: &mut PushClient) {
    let read = client
        .read_skipping_heartbeats(std::time::Duration::from_millis(500))
        .await;
    assert_eq!(read, Read::Nothing);
}

#[every_backend]
async fn notify_without_a_configured_key_is_apikey_error_with_or_without_a_header(app: TestApp) {
    let user = app.user("alice_1").await;
    notify(&app, ring(&user, "1", "DEV-1"))
        .await
        .assert_error(StatusCode::FORBIDDEN, "apikey error");
    app.request(Method::POST, NOTIFY, &[], Some(ring(&user, "1", "DEV-1")))
        .await
        .assert_error(StatusCode::FORBIDDEN, "apikey error");
}

#[every_backend]
async fn notify_needs_the_operators_key_as_a_bearer(app: TestApp) {
    let app = with_key(app).await;
    let user = app.user("alice_1").await;
    let body = ring(&user, "1", "DEV-1");
    app.request(Method::POST, NOTIFY, &[], Some(body.clone()))
        .await
        .assert_error(StatusCode::UNAUTHORIZED, "no token");
    for header in ["Bearer wrong-key", "Bearer ", KEY] {
        let reply = app
            .request(
                Method::POST,
                NOTIFY,
                &[("authorization", header)],
                Some(body.clone()),
            )
            .await;
        assert_eq!(
            reply.status,
            StatusCode::UNAUTHORIZED,
            "{header}: {}",
            reply.body
        );
    }
    // The key comes before the body.
    app.request(
        Method::POST,
        NOTIFY,
        &[("authorization", "Bearer x")],
        Some(json!("[")),
    )
    .await
    .assert_error(StatusCode::UNAUTHORIZED, "invalid token");
    notify(&app, body)
        .await
        .assert_success(StatusCode::ACCEPTED);
}

#[every_backend]
async fn notify_bodies_are_checked_field_by_field_with_the_vendor_errors(app: TestApp) {
    let app = with_key(app).await;
    let user = app.user("alice_1").await;
    let event = json!({ "type": "1", "uid": "DEV-1" });
    let big = "x".repeat(8 * 1024);
    for (body, status, message) in [
        (json!({}), 400, "undefined user"),
        (json!({ "user": null }), 400, "undefined user"),
        (json!({ "user": true }), 400, "user format error"),
        (json!({ "user": 1.5 }), 400, "user format error"),
        (
            json!({ "user": 999_999, "family": "ring", "event": event }),
            404,
            "no data error",
        ),
        (json!({ "user": "nobody_at_all" }), 404, "no data error"),
        (json!({ "user": user.id }), 400, "undefined family"),
        (
            json!({ "user": user.username, "family": "call" }),
            400,
            "family error",
        ),
        (
            json!({ "user": user.username, "family": 1 }),
            400,
            "family error",
        ),
        (
            json!({ "user": user.id, "family": "ring" }),
            400,
            "undefined event",
        ),
        (
            json!({ "user": user.id, "family": "ring", "event": "x" }),
            400,
            "event format error",
        ),
        (
            json!({ "user": user.id, "family": "ring", "event": { "type": "1", "uid": "u", "m": big } }),
            400,
            "event length error",
        ),
        (
            json!({ "user": user.id, "family": "ring", "event": { "uid": "u" } }),
            400,
            "undefined type",
        ),
        (
            json!({ "user": user.id, "family": "ring", "event": { "type": 1, "uid": "u" } }),
            400,
            "type format error",
        ),
        (
            json!({ "user": user.id, "family": "ring", "event": { "type": "", "uid": "u" } }),
            400,
            "type error",
        ),
        (
            json!({ "user": user.id, "family": "ring", "event": { "type": "x".repeat(17), "uid": "u" } }),
            400,
            "type error",
        ),
        (
            json!({ "user": user.id, "family": "ring", "event": { "type": "1" } }),
            400,
            "undefined uid",
        ),
        (
            json!({ "user": user.id, "family": "ring", "event": { "type": "1", "uid": 7 } }),
            400,
            "uid format error",
        ),
        (
            json!({ "user": user.id, "family": "ring", "event": { "type": "1", "uid": "u".repeat(65) } }),
            400,
            "uid error",
        ),
        (
            json!({ "user": user.id, "family": "ring", "event": event, "ttl": "60" }),
            400,
            "ttl format error",
        ),
        (
            json!({ "user": user.id, "family": "ring", "event": event, "ttl": 1.5 }),
            400,
            "ttl format error",
        ),
        (
            json!({ "user": user.id, "family": "ring", "event": event, "ttl": -1 }),
            400,
            "ttl error",
        ),
        (
            json!({ "user": user.id, "family": "ring", "event": event, "ttl": 604_801 }),
            400,
            "ttl error",
        ),
        (json!([1]), 400, "paramer error"),
    ] {
        let reply = notify(&app, body.clone()).await;
        reply.assert_error(StatusCode::from_u16(status).unwrap(), message);
    }
    // Nothing was recorded by a refused call.
    assert!(app.stored_text("events").await.is_empty());
}

#[every_backend]
async fn an_event_reaches_every_connection_of_the_users_tokens_in_its_family(app: TestApp) {
    let app = with_key(app).await;
    let address = app.push_socket().await;
    let alice = app.user("alice_1").await;
    let (mut first, _) = phone(&app, address, &alice, RING, "imei-1").await;
    let (mut second, _) = phone(&app, address, &alice, RING, "imei-2").await;
    let (mut messages, _) = phone(&app, address, &alice, MESSAGE, "imei-3").await;
    // An APNs-style token, which no socket issued: skipped.
    app.post(
        RING,
        &alice.token,
        json!({ "push_token": "ab".repeat(32), "language": "en" }),
    )
    .await
    .assert_success(StatusCode::CREATED);
    let body = json!({
        "user": alice.id, "family": "ring",
        "event": { "type": "1", "uid": "DEV-1", "message": "Someone is at the door",
                   "id": "theirs", "family": "theirs", "img": "https://example.invalid/1.jpg" },
    });
    let reply = notify(&app, body).await;
    reply.assert_success(StatusCode::ACCEPTED);
    assert_eq!(tallies(&reply), [2, 0, 1], "{}", reply.body);
    for client in [&mut first, &mut second] {
        let event = next_event(client).await;
        assert_eq!(event["id"], reply.body["id"]);
        assert_eq!(event["family"], "ring");
        assert_eq!(event["type"], "1");
        assert_eq!(event["uid"], "DEV-1");
        assert_eq!(event["message"], "Someone is at the door");
        assert_eq!(event["img"], "https://example.invalid/1.jpg");
        assert!(event["time"].as_i64().unwrap() >= pushtoken::unix_now() - 60);
    }
    no_event(&mut messages).await;
    // A message event reaches the message token only; its own time stays.
    let body = json!({ "user": alice.username, "family": "message",
                       "event": { "type": "0", "uid": "DEV-1", "time": 1_700_000_000 } });
    notify(&app, body)
        .await
        .assert_success(StatusCode::ACCEPTED);
    let event = next_event(&mut messages).await;
    assert_eq!(
        (&event["family"], &event["time"]),
        (&json!("message"), &json!(1_700_000_000))
    );
    no_event(&mut first).await;
}

#[every_backend]
async fn notify_finds_the_user_by_id_username_email_or_phone_even_with_no_tokens(app: TestApp) {
    let app = with_key(app).await;
    let address = app.push_socket().await;
    let reply = crate::support::accounts::sign_up(&app, full_sign_up_body("carol_1", 7)).await;
    reply.assert_success(StatusCode::CREATED);
    let login = app.login("carol_1", PASSWORD).await;
    login.assert_success(StatusCode::CREATED);
    let carol = TestUser {
        id: reply.body["id"].as_i64().expect("id"),
        username: "carol_1".into(),
        token: login.body["token"].as_str().expect("token").into(),
        reflash_key: login.body["reflash_key"].as_str().expect("key").into(),
    };
    // Dave holds no token at all: his events are recorded, nothing is sent.
    let dave = app.user("dave_1").await;
    let (mut ring_phone, _) = phone(&app, address, &carol, RING, "imei-1").await;
    let sign_up = full_sign_up_body("carol_1", 7);
    for (n, user) in [
        json!(carol.id),
        json!("carol_1"),
        sign_up["email"].clone(),
        sign_up["phone"].clone(),
    ]
    .into_iter()
    .enumerate()
    {
        let uid = format!("DEV-{n}");
        let body = json!({ "user": user, "family": "ring", "event": { "type": "1", "uid": uid } });
        let reply = notify(&app, body).await;
        reply.assert_success(StatusCode::ACCEPTED);
        assert_eq!(reply.body["delivered"], json!(1), "{user}: {}", reply.body);
        assert_eq!(next_event(&mut ring_phone).await["uid"], json!(uid));
    }
    for user in [json!(dave.id), json!(dave.username)] {
        let body = json!({ "user": user, "family": "ring", "event": { "type": "1", "uid": "D" } });
        let reply = notify(&app, body).await;
        reply.assert_success(StatusCode::ACCEPTED);
        assert_eq!(tallies(&reply), [0, 0, 0], "{user}: {}", reply.body);
    }
    assert_eq!(app.stored_text("events").await.len(), 6);
    no_event(&mut ring_phone).await;
}

#[every_backend]
async fn another_users_event_never_reaches_my_connection(app: TestApp) {
    let app = with_key(app).await;
    let address = app.push_socket().await;
    let alice = app.user("alice_1").await;
    let bob = app.user("bobby_1").await;
    let (mut alices, _) = phone(&app, address, &alice, RING, "imei-a").await;
    let (mut bobs, _) = phone(&app, address, &bob, RING, "imei-b").await;
    notify(&app, ring(&bob, "1", "DEV-B"))
        .await
        .assert_success(StatusCode::ACCEPTED);
    assert_eq!(next_event(&mut bobs).await["uid"], "DEV-B");
    no_event(&mut alices).await;
}

#[every_backend]
async fn an_event_for_a_disconnected_token_waits_and_arrives_on_reconnection_in_order_once(
    app: TestApp,
) {
    let app = with_key(app).await;
    let address = app.push_socket().await;
    let alice = app.user("alice_1").await;
    let (client, token) = phone(&app, address, &alice, MESSAGE, "imei-1").await;
    hang_up(&app, client, &token).await;
    let mut ids = Vec::new();
    for n in 0..3 {
        let body = json!({ "user": alice.id, "family": "message",
                           "event": { "type": "0", "uid": format!("DEV-{n}") } });
        let reply = notify(&app, body).await;
        reply.assert_success(StatusCode::ACCEPTED);
        assert_eq!(reply.body["queued"], 1, "{}", reply.body);
        ids.push(reply.body["id"].clone());
    }
    let mut again = PushClient::connect(address).await;
    again.register("imei-1", None).await;
    for id in &ids {
        assert_eq!(&next_event(&mut again).await["id"], id);
    }
    no_event(&mut again).await;
    drop(again);
    // Once: a later connection gets nothing more.
    let mut later = PushClient::connect(address).await;
    later.register("imei-1", None).await;
    no_event(&mut later).await;
}

#[every_backend]
async fn a_queued_event_survives_a_restart(app: TestApp) {
    let app = with_key(app).await;
    let address = app.push_socket().await;
    let alice = app.user("alice_1").await;
    let (client, token) = phone(&app, address, &alice, RING, "imei-1").await;
    hang_up(&app, client, &token).await;
    let body = json!({ "user": alice.id, "family": "ring", "ttl": 3600,
                       "event": { "type": "1", "uid": "DEV-1" } });
    let id = notify(&app, body).await.body["id"].clone();
    let app = app.restart().await;
    let mut client = PushClient::connect(app.push_socket().await).await;
    client.register("imei-1", None).await;
    assert_eq!(next_event(&mut client).await["id"], id);
}

/// `n` events of the message family for `user`, sent at once; their ids.
async fn burst(app: &TestApp, user: &TestUser, n: usize, ttl: i64) -> Vec<i64> {
    let sends = (0..n).map(|i| {
        let body = json!({ "user": user.id, "family": "message", "ttl": ttl,
                           "event": { "type": "0", "uid": format!("DEV-{i}") } });
        async move {
            let reply = notify(app, body).await;
            reply.assert_success(StatusCode::ACCEPTED);
            reply.body["id"].as_i64().expect("an event id")
        }
    });
    futures_util::future::join_all(sends).await
}

/// The ids of the next `n` event frames, then nothing more.
async fn read_ids(client: &mut PushClient, n: usize) -> Vec<i64> {
    let mut read = Vec::with_capacity(n);
    for _ in 0..n {
        read.push(next_event(client).await["id"].as_i64().expect("an id"));
    }
    no_event(client).await;
    read
}

#[every_backend]
async fn a_burst_of_events_to_a_held_connection_arrives_each_once_and_leaves_nothing_queued(
    app: TestApp,
) {
    // A connection held by the instance that records an event is handed
    // the event itself, and takes what it wrote off the queue together.
    let app = with_key(app).await;
    let address = app.push_socket().await;
    let alice = app.user("alice_1").await;
    let (mut client, _) = phone(&app, address, &alice, MESSAGE, "imei-1").await;
    let mut sent = burst(&app, &alice, 40, 0).await;
    let mut read = read_ids(&mut client, sent.len()).await;
    read.sort_unstable();
    sent.sort_unstable();
    assert_eq!(read, sent);
    unqueued(&app).await;
}

#[every_backend]
async fn events_sent_while_a_phone_reconnects_arrive_once_each(app: TestApp) {
    // Events queued while the phone was away are read back when it
    // registers; those sent meanwhile are handed to it too. Each is
    // written once, whichever way reaches it first.
    let app = with_key(app).await;
    let address = app.push_socket().await;
    let alice = app.user("alice_1").await;
    let (client, token) = phone(&app, address, &alice, MESSAGE, "imei-1").await;
    hang_up(&app, client, &token).await;
    let mut sent = burst(&app, &alice, 20, 3600).await;
    let mut again = PushClient::connect(address).await;
    let (_, during) = tokio::join!(
        again.register("imei-1", None),
        burst(&app, &alice, 20, 3600)
    );
    sent.extend(during);
    let mut read = read_ids(&mut again, sent.len()).await;
    read.sort_unstable();
    sent.sort_unstable();
    assert_eq!(read, sent);
    unqueued(&app).await;
}

#[every_backend]
async fn ttl_zero_reaches_only_connections_held_now(app: TestApp) {
    let app = with_key(app).await;
    let address = app.push_socket().await;
    let alice = app.user("alice_1").await;
    let (mut live, _) = phone(&app, address, &alice, RING, "imei-live").await;
    let (gone, token) = phone(&app, address, &alice, RING, "imei-gone").await;
    hang_up(&app, gone, &token).await;
    let body = json!({ "user": alice.id, "family": "ring", "ttl": 0,
                       "event": { "type": "1", "uid": "DEV-1" } });
    let reply = notify(&app, body).await;
    assert_eq!(tallies(&reply), [1, 0, 1], "{}", reply.body);
    assert_eq!(next_event(&mut live).await["uid"], "DEV-1");
    let mut back = PushClient::connect(address).await;
    back.register("imei-gone", None).await;
    no_event(&mut back).await;
}

#[every_backend]
async fn a_queued_event_never_reaches_a_token_taken_over_by_another_user(app: TestApp) {
    let app = with_key(app).await;
    let address = app.push_socket().await;
    let alice = app.user("alice_1").await;
    let bob = app.user("bobby_1").await;
    let (client, token) = phone(&app, address, &alice, RING, "imei-1").await;
    hang_up(&app, client, &token).await;
    notify(&app, ring(&alice, "1", "ALICE-QUEUED"))
        .await
        .assert_success(StatusCode::ACCEPTED);
    // The phone now signs in to bob's account and binds the same token.
    app.post(
        RING,
        &bob.token,
        json!({ "push_token": token, "language": "en" }),
    )
    .await
    .assert_success(StatusCode::CREATED);
    let mut phone_now = PushClient::connect(address).await;
    phone_now.register("imei-1", None).await;
    no_event(&mut phone_now).await;
    let reply = notify(&app, ring(&alice, "1", "ALICE-LATER")).await;
    assert_eq!(reply.body["delivered"], 0, "{}", reply.body);
    no_event(&mut phone_now).await;
    notify(&app, ring(&bob, "1", "BOB")).await;
    assert_eq!(next_event(&mut phone_now).await["uid"], "BOB");
}

#[every_backend]
async fn after_logout_nothing_reaches_the_phone(app: TestApp) {
    let app = with_key(app).await;
    let address = app.push_socket().await;
    let alice = app.user("alice_1").await;
    let (mut client, _) = phone(&app, address, &alice, RING, "imei-1").await;
    let reply = app
        .post_anonymous(
            "/v1/api/user/logout",
            json!({ "username": alice.username, "token": alice.token }),
        )
        .await;
    reply.assert_success(StatusCode::OK);
    let reply = notify(&app, ring(&alice, "1", "DEV-1")).await;
    assert_eq!(tallies(&reply), [0, 0, 0], "{}", reply.body);
    no_event(&mut client).await;
}

#[every_backend]
async fn the_history_lists_the_users_events_newest_first_with_the_vendors_defaults(app: TestApp) {
    let app = with_key(app).await;
    let alice = app.user("alice_1").await;
    let bob = app.user("bobby_1").await;
    let mut ids = Vec::new();
    for (n, uid) in ["DEV-1", "DEV-2", "DEV-1"].iter().enumerate() {
        let mut event = json!({ "type": n.to_string(), "uid": uid });
        if n == 2 {
            event["event_guid"] = "guid-3".into();
            event["width"] = 640.into();
            event["time"] = 1_700_000_000.into();
        }
        let body = json!({ "user": alice.id, "family": if n == 1 { "message" } else { "ring" }, "event": event });
        ids.push(notify(&app, body).await.body["id"].as_i64().unwrap());
    }
    notify(&app, ring(&bob, "1", "DEV-1")).await;
    let reply = app.get(HISTORY, &alice.token).await;
    reply.assert_success_list();
    let rows = reply.body.as_array().unwrap();
    let listed: Vec<i64> = rows.iter().map(|r| r["id"].as_i64().unwrap()).collect();
    assert_eq!(listed, [ids[2], ids[1], ids[0]]);
    let newest = &rows[0];
    assert_eq!(newest["event_guid"], "guid-3");
    assert_eq!(newest["width"], 640);
    assert_eq!(newest["time"], 1_700_000_000);
    let oldest = &rows[2];
    let keys: Vec<&str> = oldest
        .as_object()
        .unwrap()
        .keys()
        .map(String::as_str)
        .collect();
    let mut expected = [
        "id",
        "type",
        "uid",
        "time",
        "event_guid",
        "img",
        "width",
        "height",
        "starttime",
        "endtime",
        "video_status",
    ];
    expected.sort_unstable();
    let mut sorted = keys.clone();
    sorted.sort_unstable();
    assert_eq!(sorted, expected);
    assert_eq!(
        (
            &oldest["type"],
            &oldest["img"],
            &oldest["width"],
            &oldest["height"],
            &oldest["video_status"]
        ),
        (
            &json!("0"),
            &json!(""),
            &json!(1920),
            &json!(1072),
            &json!(0)
        )
    );
    // One device, and pages.
    let reply = app
        .get("/v1/api/user/event_record/DEV-1/devicees", &alice.token)
        .await;
    let listed: Vec<i64> = reply
        .body
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["id"].as_i64().unwrap())
        .collect();
    assert_eq!(listed, [ids[2], ids[0]]);
    let page = |p: u32| format!("{HISTORY}?page={p}&page_number=2");
    assert_eq!(
        app.get(&page(0), &alice.token)
            .await
            .body
            .as_array()
            .unwrap()
            .len(),
        2
    );
    let second = app.get(&page(1), &alice.token).await;
    assert_eq!(second.body[0]["id"], ids[0]);
    for (query, message) in [
        ("page=x", "page format error"),
        ("page=-1", "page error"),
        ("page_number=0", "page_number error"),
        ("page_number=101", "page_number error"),
        ("page_number=ten", "page_number format error"),
    ] {
        app.get(&format!("{HISTORY}?{query}"), &alice.token)
            .await
            .assert_error(StatusCode::BAD_REQUEST, message);
    }
    app.get(HISTORY, "not-a-session")
        .await
        .assert_error(StatusCode::UNAUTHORIZED, "invalid token");
}

/// Two instances on one PostgreSQL database: an event sent through either
/// reaches a connection held by the other, and a token's connection moves
/// to the newest one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn across_instances_an_event_reaches_the_connection_another_instance_holds() {
    let first = with_key(TestApp::postgres().await).await;
    let second = first.another_instance_with(&["--notify-key", KEY]).await;
    let (at_first, at_second) = (first.push_socket().await, second.push_socket().await);
    let alice = first.user("alice_1").await;
    let (mut client, _) = phone(&first, at_second, &alice, RING, "imei-1").await;
    let reply = notify(&first, ring(&alice, "1", "DEV-1")).await;
    assert_eq!(reply.body["delivered"], 1, "{}", reply.body);
    assert_eq!(next_event(&mut client).await["id"], reply.body["id"]);
    // The frame is written before it is taken off the queue: a phone that
    // reconnects in that instant may get it again. Past that instant,
    // nothing is queued any more.
    unqueued(&first).await;
    // The same phone connects to the first instance: the second closes its
    // connection, and events go to the new one.
    let mut moved = PushClient::connect(at_first).await;
    moved.register("imei-1", None).await;
    client.assert_closed_within(PROMPTLY).await;
    let reply = notify(&second, ring(&alice, "1", "DEV-2")).await;
    assert_eq!(next_event(&mut moved).await["id"], reply.body["id"]);
}

const DELIVERIES: &str = "pushtoken_event_deliveries_total";

#[every_backend]
async fn deliveries_are_counted_by_family_and_outcome_and_timed(app: TestApp) {
    let app = with_key(app).await;
    let address = app.push_socket().await;
    let alice = app.user("alice_1").await;
    let (mut live, _) = phone(&app, address, &alice, RING, "imei-live").await;
    let (gone, token) = phone(&app, address, &alice, MESSAGE, "imei-gone").await;
    hang_up(&app, gone, &token).await;
    let delivered = [r#"family="ring""#, r#"outcome="delivered""#];
    let queued = [r#"family="message""#, r#"outcome="queued""#];
    let timed = "pushtoken_push_delivery_seconds_count";
    let before = (
        app.metric(DELIVERIES, &delivered).await,
        app.metric(DELIVERIES, &queued).await,
        app.metric(timed, &[]).await,
    );
    notify(&app, ring(&alice, "1", "DEV-1"))
        .await
        .assert_success(StatusCode::ACCEPTED);
    assert_eq!(next_event(&mut live).await["uid"], "DEV-1");
    let body = json!({ "user": alice.id, "family": "message",
                       "event": { "type": "0", "uid": "DEV-1" } });
    assert_eq!(notify(&app, body).await.body["queued"], 1);
    // The frame is counted once written; the metrics are process-wide, so
    // other tests may add to them too.
    let mut after = before;
    for _ in 0..100 {
        after = (
            app.metric(DELIVERIES, &delivered).await,
            app.metric(DELIVERIES, &queued).await,
            app.metric(timed, &[]).await,
        );
        if after.0 > before.0 && after.2 > before.2 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    assert!(
        after.0 >= before.0 + 1.0,
        "delivered: {before:?} → {after:?}"
    );
    assert!(after.1 >= before.1 + 1.0, "queued: {before:?} → {after:?}");
    assert!(after.2 >= before.2 + 1.0, "timed: {before:?} → {after:?}");
}

#[every_backend]
async fn the_sweep_drops_deliveries_whose_ttl_ran_out_and_events_past_their_retention(
    app: TestApp,
) {
    let app = app
        .with_flags(&["--notify-key", KEY, "--event-retention", "1h"])
        .await;
    let address = app.push_socket().await;
    let alice = app.user("alice_1").await;
    let (client, token) = phone(&app, address, &alice, RING, "imei-1").await;
    hang_up(&app, client, &token).await;
    let expired = [r#"family="ring""#, r#"outcome="expired""#];
    let before = app.metric(DELIVERIES, &expired).await;
    let body = json!({ "user": alice.id, "family": "ring", "ttl": 60,
                       "event": { "type": "1", "uid": "DEV-1" } });
    notify(&app, body)
        .await
        .assert_success(StatusCode::ACCEPTED);
    assert_eq!(app.stored_text("queued_events").await.len(), 1);

    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    // Within its ttl the sweep keeps it.
    pushtoken::tidy(&app.state, now + 30).await;
    assert_eq!(app.stored_text("queued_events").await.len(), 1);
    pushtoken::tidy(&app.state, now + 61).await;
    assert!(app.stored_text("queued_events").await.is_empty());
    assert!(app.metric(DELIVERIES, &expired).await >= before + 1.0);
    let mut back = PushClient::connect(address).await;
    back.register("imei-1", None).await;
    no_event(&mut back).await;

    // The event stays in the history for the retention.
    pushtoken::tidy(&app.state, now + 3_500).await;
    let history = app.get(HISTORY, &alice.token).await.body;
    assert_eq!(history.as_array().map(Vec::len), Some(1), "{history}");
    pushtoken::tidy(&app.state, now + 3_700).await;
    assert_eq!(app.get(HISTORY, &alice.token).await.body, json!([]));
}
