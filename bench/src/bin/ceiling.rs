//! The HTTP ceiling: a minimal axum server answering `GET /v1/api/user/token`
//! (and any other path) with a JSON array shaped like a 3-row token list —
//! no authentication, no database, no middleware. What the real server's GET
//! is compared with.
//!
//! Usage: ceiling [LISTEN] [typed|json]   (default 127.0.0.1:6490, typed)
//!
//! `typed` (the ceiling): each request builds a list of
//! `#[derive(Serialize)]` rows and serialises it, as a handler answering
//! with query rows does. `json`: each request builds a `serde_json::Value`
//! tree with `json!` first, which costs about half the rate; kept beside it,
//! labelled, for comparison with earlier runs.

use axum::{routing::get, Json, Router};
use serde::Serialize;
use serde_json::{json, Value};

/// A token row as the server's GET answers it.
#[derive(Serialize)]
struct Row {
    id: i64,
    serial: i64,
    push_token: String,
    language: &'static str,
    dev: i64,
    bundleid: &'static str,
    os: &'static str,
    os_token: &'static str,
    push_platform: &'static str,
    phone_model: &'static str,
    created_at: i64,
    updated_at: i64,
}

fn typed_rows() -> Vec<Row> {
    (1..=3)
        .map(|serial| Row {
            id: 1,
            serial,
            push_token: format!("{serial:064x}"),
            language: "zh",
            dev: 0,
            bundleid: "com.lancens.wxdoorbell",
            os: "ANDROID",
            os_token: "",
            push_platform: "FCM",
            phone_model: "xiaomi6",
            created_at: 1_700_000_000,
            updated_at: 1_700_000_000,
        })
        .collect()
}

fn json_rows() -> Value {
    let row = |serial: i64| {
        json!({
            "id": 1, "serial": serial,
            "push_token": format!("{:064x}", serial),
            "language": "zh", "dev": 0, "bundleid": "com.lancens.wxdoorbell",
            "os": "ANDROID", "os_token": "", "push_platform": "FCM",
            "phone_model": "xiaomi6", "created_at": 1_700_000_000, "updated_at": 1_700_000_000
        })
    };
    json!([row(1), row(2), row(3)])
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let listen = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "127.0.0.1:6490".into());
    let app = match std::env::args().nth(2).as_deref() {
        None | Some("typed") => Router::new()
            .route("/v1/api/user/token", get(|| async { Json(typed_rows()) }))
            .fallback(get(|| async { Json(typed_rows()) })),
        Some("json") => Router::new()
            .route("/v1/api/user/token", get(|| async { Json(json_rows()) }))
            .fallback(get(|| async { Json(json_rows()) })),
        Some(other) => anyhow::bail!("unknown handler {other}: typed or json"),
    };
    let listener = tokio::net::TcpListener::bind(&listen).await?;
    eprintln!("ceiling listening on {listen}");
    axum::serve(listener, app)
        .with_graceful_shutdown(async {
            let _ = tokio::signal::ctrl_c().await;
        })
        .await?;
    Ok(())
}
