//! The client address that the per-address limit counts: the connection's
//! peer, or what a trusted proxy forwards in `X-Forwarded-For`; an IPv6
//! client counts with its /64.

use std::net::SocketAddr;

use axum::body::Body;
use axum::extract::ConnectInfo;
use axum::http::{Request, StatusCode};
use serde_json::json;
use tower::ServiceExt;

use crate::support::api::REFRESH;
use crate::support::{every_backend, TestApp};

/// One sign-up/login/refresh request a minute per address: the first
/// passes the limit, the next from the same address is 429.
const ONE_A_MINUTE: [&str; 2] = ["--auth-rate-per-minute", "1"];

/// A refresh with a key that was never issued, over a connection from
/// `peer`, with these `X-Forwarded-For` values: 401 within the client's
/// rate, 429 over it (a refresh costs no password hash, and counts towards
/// the same rate as sign-up and login).
async fn refresh_from(app: &TestApp, peer: &str, forwarded: &[&str]) -> StatusCode {
    let mut request = Request::post(REFRESH).header("content-type", "application/json");
    for value in forwarded {
        request = request.header("x-forwarded-for", *value);
    }
    let body = json!({ "reflash_key": "never-issued" }).to_string();
    let mut request = request.body(Body::from(body)).unwrap();
    let peer = SocketAddr::new(peer.parse().unwrap(), 40_000);
    request.extensions_mut().insert(ConnectInfo(peer));
    let status = app.router().oneshot(request).await.unwrap().status();
    assert!(
        [StatusCode::UNAUTHORIZED, StatusCode::TOO_MANY_REQUESTS].contains(&status),
        "{status}"
    );
    status
}

const PASSES: StatusCode = StatusCode::UNAUTHORIZED;
const LIMITED: StatusCode = StatusCode::TOO_MANY_REQUESTS;

#[every_backend]
async fn forwarded_for_is_never_read_without_trusted_proxies(app: TestApp) {
    let app = app.with_flags(&ONE_A_MINUTE).await;
    assert_eq!(
        refresh_from(&app, "10.0.0.1", &["203.0.113.1"]).await,
        PASSES
    );
    // Another forwarded address changes nothing: the peer is the client.
    assert_eq!(
        refresh_from(&app, "10.0.0.1", &["203.0.113.2"]).await,
        LIMITED
    );
    assert_eq!(refresh_from(&app, "10.0.0.1", &[]).await, LIMITED);
}

#[every_backend]
async fn behind_a_trusted_proxy_each_forwarded_client_has_a_rate_of_its_own(app: TestApp) {
    let app = app
        .with_flags(&[
            "--auth-rate-per-minute",
            "1",
            "--trusted-proxies",
            "10.0.0.0/8",
        ])
        .await;
    assert_eq!(
        refresh_from(&app, "10.0.0.1", &["203.0.113.1"]).await,
        PASSES
    );
    assert_eq!(
        refresh_from(&app, "10.0.0.1", &["203.0.113.2"]).await,
        PASSES
    );
    // The same client through another trusted proxy is the same client.
    assert_eq!(
        refresh_from(&app, "10.0.0.2", &["203.0.113.1"]).await,
        LIMITED
    );
    // The proxy's own requests (no header) are its own.
    assert_eq!(refresh_from(&app, "10.0.0.1", &[]).await, PASSES);
    assert_eq!(refresh_from(&app, "10.0.0.1", &[]).await, LIMITED);
}

#[every_backend]
async fn an_untrusted_peer_cannot_pose_as_a_proxy(app: TestApp) {
    let app = app
        .with_flags(&[
            "--auth-rate-per-minute",
            "1",
            "--trusted-proxies",
            "10.0.0.0/8",
        ])
        .await;
    assert_eq!(
        refresh_from(&app, "198.51.100.1", &["203.0.113.1"]).await,
        PASSES
    );
    for forwarded in ["203.0.113.2", "10.0.0.1", "203.0.113.3, 10.0.0.1"] {
        assert_eq!(
            refresh_from(&app, "198.51.100.1", &[forwarded]).await,
            LIMITED,
            "{forwarded}"
        );
    }
}

#[every_backend]
async fn the_right_most_address_that_is_not_a_trusted_proxy_is_the_client(app: TestApp) {
    let app = app
        .with_flags(&[
            "--auth-rate-per-minute",
            "1",
            "--trusted-proxies",
            "10.0.0.0/8",
        ])
        .await;
    // Two proxies: the outer appended the client, the inner the outer.
    let chain = "192.0.2.1, 203.0.113.1, 10.0.0.2";
    assert_eq!(refresh_from(&app, "10.0.0.1", &[chain]).await, PASSES);
    // What the client wrote left of its address is never read: another
    // claim, or garbage, is still the same client.
    for chain in [
        "192.0.2.2, 203.0.113.1, 10.0.0.2",
        "not an address, 203.0.113.1, 10.0.0.2",
        "203.0.113.1",
    ] {
        assert_eq!(
            refresh_from(&app, "10.0.0.1", &[chain]).await,
            LIMITED,
            "{chain}"
        );
    }
    // Several headers are one list, in order.
    assert_eq!(
        refresh_from(&app, "10.0.0.1", &["192.0.2.1", "203.0.113.9, 10.0.0.2"]).await,
        PASSES
    );
    assert_eq!(
        refresh_from(&app, "10.0.0.1", &["203.0.113.9"]).await,
        LIMITED
    );
}

#[every_backend]
async fn a_malformed_forwarded_for_counts_against_the_proxy(app: TestApp) {
    let app = app
        .with_flags(&[
            "--auth-rate-per-minute",
            "1",
            "--trusted-proxies",
            "10.0.0.0/8",
        ])
        .await;
    assert_eq!(
        refresh_from(&app, "10.0.0.1", &["203.0.113.1, proxy.internal"]).await,
        PASSES
    );
    assert_eq!(refresh_from(&app, "10.0.0.1", &[]).await, LIMITED);
    assert_eq!(
        refresh_from(&app, "10.0.0.1", &["not an address"]).await,
        LIMITED
    );
    // The client it could not read was not charged.
    assert_eq!(
        refresh_from(&app, "10.0.0.1", &["203.0.113.1"]).await,
        PASSES
    );
}

#[every_backend]
async fn ipv6_clients_share_a_rate_per_64(app: TestApp) {
    let app = app
        .with_flags(&[
            "--auth-rate-per-minute",
            "1",
            "--trusted-proxies",
            "fd00::/8",
        ])
        .await;
    assert_eq!(refresh_from(&app, "2001:db8:1:2::1", &[]).await, PASSES);
    assert_eq!(
        refresh_from(&app, "2001:db8:1:2:ffff:ffff:ffff:ffff", &[]).await,
        LIMITED
    );
    assert_eq!(refresh_from(&app, "2001:db8:1:3::1", &[]).await, PASSES);
    // Forwarded ones too.
    assert_eq!(
        refresh_from(&app, "fd00::1", &["2001:db8:9:9::1"]).await,
        PASSES
    );
    assert_eq!(
        refresh_from(&app, "fd00::2", &["2001:db8:9:9::2"]).await,
        LIMITED
    );
}
