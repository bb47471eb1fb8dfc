//! The push socket: TLS, frames, register and token, heartbeats, deadlines,
//! one connection per token, and bad clients closing alone.

use std::time::{Duration, Instant};

use pushtoken::push::Frame;
use tokio_rustls::rustls::{version, ProtocolVersion};

use crate::support::push::{PushClient, Read, EVENT, HEARTBEAT, PROMPTLY, REGISTER, TOKEN};
use crate::support::{every_backend, TestApp};

const IMEI: &str = "860000000000001";
const BUNDLE: &str = "com.lancens.wxdoorbell";

fn is_token(token: &str) -> bool {
    token.len() == 64
        && token
            .bytes()
            .all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

#[every_backend]
async fn register_is_answered_with_a_64_character_lowercase_hex_token(app: TestApp) {
    let address = app.push_socket().await;
    let mut client = PushClient::connect(address).await;
    let token = client.register(IMEI, Some(BUNDLE)).await;
    assert!(is_token(&token), "{token}");
}

#[every_backend]
async fn the_same_imei_and_bundle_id_get_the_same_token_on_reconnection_restart_and_every_instance(
    app: TestApp,
) {
    let address = app.push_socket().await;
    let first = PushClient::connect(address)
        .await
        .register(IMEI, Some(BUNDLE))
        .await;
    let again = PushClient::connect(address)
        .await
        .register(IMEI, Some(BUNDLE))
        .await;
    assert_eq!(again, first);
    let other = app.another_instance().await;
    let elsewhere = PushClient::connect(other.push_socket().await)
        .await
        .register(IMEI, Some(BUNDLE))
        .await;
    assert_eq!(elsewhere, first);
    let app = app.restart().await;
    let restarted = PushClient::connect(app.push_socket().await)
        .await
        .register(IMEI, Some(BUNDLE))
        .await;
    assert_eq!(restarted, first);
}

#[every_backend]
async fn another_imei_or_bundle_id_gets_another_token_and_none_is_the_configured_bundle_id(
    app: TestApp,
) {
    let address = app.push_socket().await;
    let mut tokens = Vec::new();
    for (imei, bundle_id) in [
        (IMEI, Some(BUNDLE)),
        ("860000000000002", Some(BUNDLE)),
        (IMEI, Some("com.example.other")),
    ] {
        let token = PushClient::connect(address)
            .await
            .register(imei, bundle_id)
            .await;
        assert!(!tokens.contains(&token), "{imei} {bundle_id:?}");
        tokens.push(token);
    }
    // No bundle_id, or an empty one: the configured bundle id.
    for bundle_id in [None, Some("")] {
        let token = PushClient::connect(address)
            .await
            .register(IMEI, bundle_id)
            .await;
        assert_eq!(token, tokens[0], "{bundle_id:?}");
    }
}

#[every_backend]
async fn a_registration_is_kept_for_the_operator(app: TestApp) {
    let address = app.push_socket().await;
    let token = PushClient::connect(address)
        .await
        .register(IMEI, Some(BUNDLE))
        .await;
    let stored = app.stored_text("socket_clients").await;
    assert_eq!(stored.len(), 1, "{stored:?}");
    for value in [
        token.as_str(),
        IMEI,
        "460001234567890",
        "android",
        "Xiaomi",
        BUNDLE,
    ] {
        assert!(
            stored[0].iter().any(|v| v == value),
            "{value} in {stored:?}"
        );
    }
}

#[every_backend]
async fn nothing_is_sent_before_the_register_and_heartbeats_are_never_answered(app: TestApp) {
    let address = app.push_socket().await;
    let mut client = PushClient::connect(address).await;
    assert_eq!(client.read(Duration::from_millis(300)).await, Read::Nothing);
    client.register(IMEI, None).await;
    // Both public clients answer every frame with a heartbeat: an echo
    // would never end.
    for payload in [&b""[..], b"1764650000000"] {
        client.send(HEARTBEAT, payload).await;
    }
    assert_eq!(client.read(Duration::from_millis(500)).await, Read::Nothing);
}

#[every_backend]
async fn the_server_sends_its_own_heartbeat_every_interval(app: TestApp) {
    let app = app.with_flags(&["--push-heartbeat", "1s"]).await;
    let address = app.push_socket().await;
    let mut client = PushClient::connect(address).await;
    client.register(IMEI, None).await;
    for _ in 0..2 {
        // Answer as the clients do, which keeps the connection alive.
        match client.read(PROMPTLY).await {
            Read::Frame(HEARTBEAT, _) => client.send(HEARTBEAT, b"").await,
            other => panic!("expected a heartbeat, got {other:?}"),
        }
    }
}

#[every_backend]
async fn a_connection_silent_for_three_heartbeat_intervals_is_closed(app: TestApp) {
    let app = app.with_flags(&["--push-heartbeat", "1s"]).await;
    let address = app.push_socket().await;
    let mut client = PushClient::connect(address).await;
    client.register(IMEI, None).await;
    let started = Instant::now();
    client.assert_closed_within(Duration::from_secs(10)).await;
    assert!(
        started.elapsed() >= Duration::from_millis(2500),
        "{:?}",
        started.elapsed()
    );
}

#[every_backend]
async fn no_register_within_10_seconds_closes_the_connection(app: TestApp) {
    let address = app.push_socket().await;
    let mut client = PushClient::connect(address).await;
    let started = Instant::now();
    client.assert_closed_within(Duration::from_secs(20)).await;
    let waited = started.elapsed();
    assert!(waited >= Duration::from_secs(9), "closed after {waited:?}");
}

#[every_backend]
async fn a_first_frame_that_is_not_a_register_closes_the_connection_without_a_token(app: TestApp) {
    let address = app.push_socket().await;
    for command in [HEARTBEAT, TOKEN, EVENT, 7, -1] {
        let mut client = PushClient::connect(address).await;
        client.send(command, br#"{"imei":"860000000000001"}"#).await;
        assert_eq!(
            client.read(PROMPTLY).await,
            Read::Closed,
            "command {command}"
        );
    }
}

#[every_backend]
async fn a_register_without_a_json_object_and_a_valid_imei_closes_the_connection(app: TestApp) {
    let address = app.push_socket().await;
    let long_imei = format!(r#"{{"imei":"{}"}}"#, "1".repeat(65));
    for payload in [
        &b""[..],
        b"not json",
        b"[1, 2]",
        br#""imei""#,
        b"{}",
        br#"{"imei":""}"#,
        br#"{"imei":860000000000001}"#,
        br#"{"imei":null}"#,
        long_imei.as_bytes(),
        b"\xff\xfe{}",
    ] {
        let mut client = PushClient::connect(address).await;
        client.send(REGISTER, payload).await;
        assert_eq!(
            client.read(PROMPTLY).await,
            Read::Closed,
            "{}",
            String::from_utf8_lossy(payload)
        );
    }
    // 64 characters is the longest imei.
    let mut client = PushClient::connect(address).await;
    let token = client.register(&"é".repeat(64), None).await;
    assert!(is_token(&token));
}

#[every_backend]
async fn a_frame_over_64_kib_or_of_negative_length_closes_the_connection(app: TestApp) {
    let address = app.push_socket().await;
    // A 64 KiB payload is the largest accepted.
    let mut client = PushClient::connect(address).await;
    client.register(IMEI, None).await;
    client.send(HEARTBEAT, &vec![b'0'; 65_536]).await;
    assert_eq!(client.read(Duration::from_millis(500)).await, Read::Nothing);
    for length in [65_537i32, i32::MAX, -1, i32::MIN] {
        let mut client = PushClient::connect(address).await;
        client.register(IMEI, None).await;
        let mut header = HEARTBEAT.to_le_bytes().to_vec();
        header.extend(length.to_le_bytes());
        client.send_raw(&header).await;
        assert_eq!(client.read(PROMPTLY).await, Read::Closed, "length {length}");
    }
}

#[every_backend]
async fn an_unknown_command_after_the_register_closes_the_connection(app: TestApp) {
    let address = app.push_socket().await;
    for command in [TOKEN, EVENT, 42] {
        let mut client = PushClient::connect(address).await;
        client.register(IMEI, None).await;
        client.send(command, b"{}").await;
        assert_eq!(
            client.read(PROMPTLY).await,
            Read::Closed,
            "command {command}"
        );
    }
}

#[every_backend]
async fn a_register_again_on_the_same_connection_changes_nothing(app: TestApp) {
    let address = app.push_socket().await;
    let mut client = PushClient::connect(address).await;
    let token = client.register(IMEI, None).await;
    client.send_register(IMEI, None).await;
    assert_eq!(client.read(Duration::from_millis(500)).await, Read::Nothing);
    assert!(app.state.push.send(&token, Frame::new(EVENT, "{}")));
    assert_eq!(
        client.read(PROMPTLY).await,
        Read::Frame(EVENT, b"{}".to_vec())
    );
}

#[every_backend]
async fn bad_clients_never_disturb_another_connection(app: TestApp) {
    let app = app.with_flags(&["--push-heartbeat", "1s"]).await;
    let address = app.push_socket().await;
    let mut good = PushClient::connect(address).await;
    let token = good.register(IMEI, None).await;
    for bytes in [
        &b"\x01\x00\x00\x00\xff\xff\xff\x7f"[..],
        b"\x05\x00\x00\x00\x00\x00\x00\x00",
        b"\x01\x00\x00\x00\x03\x00\x00\x00{}}",
        b"GET / HTTP/1.1\r\n\r\n",
    ] {
        let mut bad = PushClient::connect(address).await;
        bad.send_raw(bytes).await;
        assert_eq!(bad.read(PROMPTLY).await, Read::Closed);
    }
    // A peer that is not TLS at all.
    let mut plain = tokio::net::TcpStream::connect(address).await.unwrap();
    tokio::io::AsyncWriteExt::write_all(&mut plain, b"\x01\x00\x00\x00\x02\x00\x00\x00{}")
        .await
        .unwrap();
    drop(plain);
    assert!(app.state.push.send(&token, Frame::new(EVENT, "{\"n\":1}")));
    assert_eq!(
        good.read_skipping_heartbeats(PROMPTLY).await,
        Read::Frame(EVENT, b"{\"n\":1}".to_vec())
    );
    assert_eq!(app.state.push.connections(), 1);
}

#[every_backend]
async fn a_new_connection_for_a_token_replaces_the_old_one(app: TestApp) {
    let address = app.push_socket().await;
    let mut old = PushClient::connect(address).await;
    let token = old.register(IMEI, None).await;
    let mut new = PushClient::connect(address).await;
    assert_eq!(new.register(IMEI, None).await, token);
    old.assert_closed_within(PROMPTLY).await;
    assert!(app.state.push.send(&token, Frame::new(EVENT, "{}")));
    assert_eq!(new.read(PROMPTLY).await, Read::Frame(EVENT, b"{}".to_vec()));
    assert_eq!(app.state.push.connections(), 1);
}

#[every_backend]
async fn tls_1_2_and_tls_1_3_are_both_spoken_with_or_without_a_server_name(app: TestApp) {
    let address = app.push_socket().await;
    for (offered, agreed) in [
        (&version::TLS12, ProtocolVersion::TLSv1_2),
        (&version::TLS13, ProtocolVersion::TLSv1_3),
    ] {
        for server_name in [true, false] {
            let mut client = PushClient::connect_with(address, &[offered], server_name)
                .await
                .expect("handshake");
            assert_eq!(client.tls_version(), Some(agreed));
            assert!(is_token(&client.register(IMEI, None).await));
        }
    }
}

/// An event for `user_id` in the ring family, queued for `token`.
fn queued_event(user_id: i64, token: &str, n: i64) -> pushtoken::store::NewEvent {
    pushtoken::store::NewEvent {
        user_id,
        family: pushtoken::store::Family::Ring,
        kind: "1".into(),
        uid: format!("DEV-{n}"),
        time: 1,
        body: format!(r#"{{"type":"1","uid":"DEV-{n}"}}"#),
        created_at: 1,
        recorded_ms: 1,
        queue: vec![(token.to_owned(), i64::MAX)],
    }
}

#[every_backend]
async fn a_drain_takes_off_the_queue_only_the_events_it_sent(app: TestApp) {
    // PostgreSQL hands ids out at insert: an event with a smaller id can
    // commit after a drain read a larger one. Taking off "everything up to
    // the last id sent" lost it; only what was sent goes.
    let alice = app.user("alice_1").await;
    let token = "f".repeat(64);
    let body = serde_json::json!({ "push_token": token, "language": "en" });
    app.put("/v1/api/user/token/1", &alice.token, body).await;
    let store = &app.state.store;
    let first = store
        .record_event(queued_event(alice.id, &token, 1))
        .await
        .unwrap();
    let second = store
        .record_event(queued_event(alice.id, &token, 2))
        .await
        .unwrap();
    assert!(first < second);
    store.unqueue_events(&token, vec![second]).await.unwrap();
    let left: Vec<i64> = store
        .queued_events(&token, 0)
        .await
        .unwrap()
        .into_iter()
        .map(|event| event.id)
        .collect();
    assert_eq!(left, vec![first]);
}

#[every_backend]
async fn a_closed_connection_never_forgets_the_row_of_the_one_that_took_its_token(app: TestApp) {
    // Two connections of one instance, one after the other, for one token:
    // the first one's release reaching the database late must not delete
    // the second one's row (every event to the token would be skipped).
    let token = "e".repeat(64);
    let store = &app.state.store;
    store
        .hold_socket(&token, "instance-a", "instance-a/1", 1)
        .await
        .unwrap();
    store
        .hold_socket(&token, "instance-a", "instance-a/2", 2)
        .await
        .unwrap();
    store.release_socket(&token, "instance-a/1").await.unwrap();
    assert_eq!(app.stored_text("socket_connections").await.len(), 1);
    store.release_socket(&token, "instance-a/2").await.unwrap();
    assert!(app.stored_text("socket_connections").await.is_empty());
}
