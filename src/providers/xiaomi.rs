//! Xiaomi MiPush: the regid send API (`POST /v3/message/regid`), with the
//! app secret as `Authorization: key=…`. The event travels as a
//! pass-through message whose payload is the frame's JSON text.

use async_trait::async_trait;
use serde::Deserialize;
use serde_json::Value;

use super::{retry_after, Provider, Push, Verdict};

/// MiPush's answer code for a registration id it does not know.
const INVALID_REGID: i64 = 20301;

pub struct Xiaomi {
    client: reqwest::Client,
    /// `scheme://host[:port]`.
    base: String,
    secret: String,
}

impl Xiaomi {
    pub fn new(client: reqwest::Client, base: &str, secret: String) -> Self {
        Xiaomi {
            client,
            base: base.trim_end_matches('/').to_owned(),
            secret,
        }
    }
}

#[derive(Deserialize)]
struct Answer {
    #[serde(default)]
    code: i64,
    #[serde(default)]
    reason: Option<String>,
    #[serde(default)]
    data: Option<Value>,
}

#[async_trait]
impl Provider for Xiaomi {
    async fn send(&self, push: &Push) -> Verdict {
        let mut form = vec![
            ("registration_id", push.os_token.clone()),
            ("payload", push.payload_text()),
            ("pass_through", "1".to_owned()),
            ("restricted_package_name", push.bundleid.clone()),
        ];
        if push.ttl > 0 {
            form.push(("time_to_live", (push.ttl * 1000).to_string()));
        }
        let sent = self
            .client
            .post(format!("{}/v3/message/regid", self.base))
            .header(
                reqwest::header::AUTHORIZATION,
                format!("key={}", self.secret),
            )
            .form(&form)
            .send()
            .await;
        let response = match sent {
            Ok(response) => response,
            Err(e) => return Verdict::unreachable(e),
        };
        let status = response.status();
        if status.as_u16() == 429 || status.is_server_error() {
            return Verdict::Retry {
                after: retry_after(response.headers()),
                why: format!("HTTP {status}"),
            };
        }
        let answer: Answer = match response.json().await {
            Ok(answer) => answer,
            Err(_) if status.is_success() => {
                return Verdict::Refused(format!("HTTP {status} with an unreadable answer"))
            }
            Err(_) => return Verdict::Refused(format!("HTTP {status}")),
        };
        let bad = answer
            .data
            .as_ref()
            .and_then(|data| data.get("bad_regids"))
            .and_then(Value::as_str)
            .is_some_and(|bad| bad.split(',').any(|regid| regid.trim() == push.os_token));
        if bad || answer.code == INVALID_REGID {
            return Verdict::Dead;
        }
        if status.is_success() && answer.code == 0 {
            return Verdict::Sent;
        }
        Verdict::Refused(format!(
            "HTTP {status}, code {}: {}",
            answer.code,
            answer.reason.unwrap_or_default()
        ))
    }
}
