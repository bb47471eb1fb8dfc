//! The HTTP ceiling: a minimal axum server answering `GET /v1/api/user/token`
//! (and any other path) with a JSON array shaped like a 3-row token list —
//! no authentication, no database, no middleware. What the real server's GET
//! is compared with.
//!
//! Usage: ceiling [LISTEN]   (default 127.0.0.1:6490)

use axum::{routing::get, Json, Router};
use serde_json::{json, Value};

fn rows() -> Value {
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
    // Build the value once per request, like a handler serializing query rows.
    let app = Router::new()
        .route("/v1/api/user/token", get(|| async { Json(rows()) }))
        .fallback(get(|| async { Json(rows()) }));
    let listener = tokio::net::TcpListener::bind(&listen).await?;
    eprintln!("ceiling listening on {listen}");
    axum::serve(listener, app)
        .with_graceful_shutdown(async {
            let _ = tokio::signal::ctrl_c().await;
        })
        .await?;
    Ok(())
}
