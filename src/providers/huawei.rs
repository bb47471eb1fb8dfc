//! Huawei Push Kit: an OAuth access token by client credentials (the app id
//! and secret), then `POST /v1/{app_id}/messages:send`. The event travels
//! as a data message whose `data` is the frame's JSON text; a ring goes at
//! high urgency.

use std::time::Duration;

use async_trait::async_trait;
use serde_json::{json, Value};

use super::oauth::{fetch, Fetched, TokenCache};
use super::{retry_after, Provider, Push, Verdict};
use crate::store::Family;

/// Push Kit's answer codes.
const SUCCESS: &str = "80000000";
/// Some tokens were refused: `msg` lists them in `illegal_tokens`.
const PARTLY: &str = "80100000";
/// Every token of the request is invalid.
const ALL_TOKENS_INVALID: &str = "80300007";
/// The access token expired or is invalid.
const TOKEN_EXPIRED: &str = "80200003";

pub struct Huawei {
    client: reqwest::Client,
    /// `scheme://host[:port]`.
    base: String,
    token_url: String,
    app_id: String,
    secret: String,
    token: TokenCache,
}

impl Huawei {
    pub fn new(
        client: reqwest::Client,
        base: &str,
        token_url: &str,
        app_id: String,
        secret: String,
    ) -> Self {
        Huawei {
            client,
            base: base.trim_end_matches('/').to_owned(),
            token_url: token_url.to_owned(),
            app_id,
            secret,
            token: TokenCache::default(),
        }
    }

    async fn fetch_token(&self) -> Result<Fetched, String> {
        let form = [
            ("grant_type", "client_credentials"),
            ("client_id", self.app_id.as_str()),
            ("client_secret", self.secret.as_str()),
        ];
        fetch(&self.client, &self.token_url, &form).await
    }

    fn message(push: &Push) -> Value {
        let urgency = match push.family {
            Family::Ring => "HIGH",
            Family::Message => "NORMAL",
        };
        json!({
            "validate_only": false,
            "message": {
                "data": push.payload_text(),
                "token": [push.os_token],
                "android": { "urgency": urgency, "ttl": format!("{}s", push.ttl) },
            }
        })
    }
}

#[async_trait]
impl Provider for Huawei {
    async fn send(&self, push: &Push) -> Verdict {
        let message = Self::message(push);
        let url = format!("{}/v1/{}/messages:send", self.base, self.app_id);
        let mut refreshed = false;
        loop {
            let token = match self.token.get(|| self.fetch_token()).await {
                Ok(token) => token,
                Err(why) => return Verdict::Retry { after: None, why },
            };
            let sent = self
                .client
                .post(&url)
                .bearer_auth(&token)
                .json(&message)
                .send()
                .await;
            let response = match sent {
                Ok(response) => response,
                Err(e) => return Verdict::unreachable(e),
            };
            let status = response.status().as_u16();
            let after = retry_after(response.headers());
            let body: Value = response.json().await.unwrap_or(Value::Null);
            let code = body["code"].as_str().unwrap_or_default();
            if (status == 401 || code == TOKEN_EXPIRED) && !refreshed {
                self.token.refused(&token).await;
                refreshed = true;
                continue;
            }
            return verdict(status, &body, after, &push.os_token);
        }
    }
}

/// Push Kit's verdict on one token from its answer.
fn verdict(status: u16, body: &Value, after: Option<Duration>, token: &str) -> Verdict {
    if status == 429 || status >= 500 {
        return Verdict::Retry {
            after,
            why: format!("HTTP {status}"),
        };
    }
    let code = body["code"].as_str().unwrap_or_default();
    let msg = body["msg"].as_str().unwrap_or_default();
    match code {
        SUCCESS if (200..300).contains(&status) => Verdict::Sent,
        ALL_TOKENS_INVALID => Verdict::Dead,
        PARTLY => {
            // `msg` is JSON text: {"success":…,"failure":…,"illegal_tokens":[…]}.
            let listed = serde_json::from_str::<Value>(msg)
                .ok()
                .and_then(|m| m["illegal_tokens"].as_array().cloned())
                .is_some_and(|tokens| tokens.iter().any(|t| t.as_str() == Some(token)));
            if listed {
                Verdict::Dead
            } else {
                Verdict::Refused(format!("code {code}: {msg}"))
            }
        }
        _ => Verdict::Refused(format!("HTTP {status}, code {code}: {msg}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn push_kit_verdicts_follow_its_answer_codes() {
        let answer = |code: &str, msg: &str| json!({ "code": code, "msg": msg, "requestId": "r" });
        assert_eq!(
            verdict(200, &answer(SUCCESS, "Success"), None, "t"),
            Verdict::Sent
        );
        assert_eq!(
            verdict(200, &answer(ALL_TOKENS_INVALID, "invalid"), None, "t"),
            Verdict::Dead
        );
        let partly = r#"{"success":0,"failure":1,"illegal_tokens":["t"]}"#;
        assert_eq!(
            verdict(200, &answer(PARTLY, partly), None, "t"),
            Verdict::Dead
        );
        assert!(matches!(
            verdict(200, &answer(PARTLY, partly), None, "other"),
            Verdict::Refused(_)
        ));
        assert!(matches!(
            verdict(200, &answer("80100003", "bad message"), None, "t"),
            Verdict::Refused(_)
        ));
        assert!(matches!(
            verdict(503, &Value::Null, None, "t"),
            Verdict::Retry { .. }
        ));
        assert!(matches!(
            verdict(429, &Value::Null, Some(Duration::from_secs(2)), "t"),
            Verdict::Retry { after: Some(_), .. }
        ));
    }
}
