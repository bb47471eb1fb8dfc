//! FCM HTTP v1: `POST /v1/projects/{project_id}/messages:send` with an OAuth
//! access token of the service account (a JWT signed with its key, traded
//! at its `token_uri`). The event travels as a data message: its top-level
//! keys, non-strings as JSON text; a ring goes at high Android priority.

use std::path::Path;
use std::time::Duration;

use anyhow::Context;
use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use serde_json::{json, Map, Value};

use super::oauth::{fetch, Fetched, TokenCache};
use super::{retry_after, Provider, Push, Verdict};
use crate::store::Family;

/// The scope FCM's send API needs.
const SCOPE: &str = "https://www.googleapis.com/auth/firebase.messaging";

/// What FCM needs of a service-account file.
#[derive(Clone, Deserialize)]
pub struct ServiceAccount {
    pub project_id: String,
    pub private_key: String,
    #[serde(default)]
    pub private_key_id: Option<String>,
    pub client_email: String,
    pub token_uri: String,
}

impl ServiceAccount {
    /// Reads and checks a service-account JSON file.
    pub fn read(path: &Path) -> anyhow::Result<Self> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("cannot read {}", path.display()))?;
        let account: ServiceAccount = serde_json::from_str(&text).with_context(|| {
            format!(
                "{} is not a service-account JSON file (project_id, private_key, client_email, token_uri)",
                path.display()
            )
        })?;
        jsonwebtoken::EncodingKey::from_rsa_pem(account.private_key.as_bytes()).with_context(
            || {
                format!(
                    "the private_key of {} is not an RSA PEM key",
                    path.display()
                )
            },
        )?;
        reqwest::Url::parse(&account.token_uri)
            .with_context(|| format!("the token_uri of {} is not a URL", path.display()))?;
        Ok(account)
    }
}

pub struct Fcm {
    /// For the access token.
    client: reqwest::Client,
    /// For the messages: HTTP/2 only when the service is HTTPS (as FCM
    /// is), so that pushes sent before its connection is up wait for that
    /// one connection instead of each opening its own.
    sender: reqwest::Client,
    /// `scheme://host[:port]`.
    base: String,
    account: ServiceAccount,
    key: jsonwebtoken::EncodingKey,
    token: TokenCache,
}

impl Fcm {
    pub fn new(
        client: reqwest::Client,
        sender: reqwest::Client,
        base: &str,
        account: ServiceAccount,
    ) -> anyhow::Result<Self> {
        let key = jsonwebtoken::EncodingKey::from_rsa_pem(account.private_key.as_bytes())
            .context("the service account's private_key is not an RSA PEM key")?;
        Ok(Fcm {
            client,
            sender,
            base: base.trim_end_matches('/').to_owned(),
            account,
            key,
            token: TokenCache::default(),
        })
    }

    /// A new access token: a signed JWT traded at the account's token URI.
    async fn fetch_token(&self) -> Result<Fetched, String> {
        #[derive(Serialize)]
        struct Claims<'a> {
            iss: &'a str,
            scope: &'a str,
            aud: &'a str,
            iat: i64,
            exp: i64,
        }
        let now = crate::unix_now();
        let claims = Claims {
            iss: &self.account.client_email,
            scope: SCOPE,
            aud: &self.account.token_uri,
            iat: now,
            exp: now + 3600,
        };
        let mut header = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::RS256);
        header.kid = self.account.private_key_id.clone();
        let assertion = jsonwebtoken::encode(&header, &claims, &self.key)
            .map_err(|e| format!("cannot sign the token request: {e}"))?;
        let form = [
            ("grant_type", "urn:ietf:params:oauth:grant-type:jwt-bearer"),
            ("assertion", assertion.as_str()),
        ];
        fetch(&self.client, &self.account.token_uri, &form).await
    }

    /// The message FCM is sent for `push`.
    fn message(push: &Push) -> Value {
        let data: Map<String, Value> = push
            .payload
            .iter()
            .map(|(key, value)| {
                let text = match value {
                    Value::String(s) => s.clone(),
                    other => other.to_string(),
                };
                (key.clone(), Value::String(text))
            })
            .collect();
        let priority = match push.family {
            Family::Ring => "high",
            Family::Message => "normal",
        };
        json!({
            "message": {
                "token": push.os_token,
                "data": data,
                "android": { "priority": priority, "ttl": format!("{}s", push.ttl) },
            }
        })
    }

    async fn post(
        &self,
        token: &str,
        message: &Value,
    ) -> Result<reqwest::Response, reqwest::Error> {
        let url = format!(
            "{}/v1/projects/{}/messages:send",
            self.base, self.account.project_id
        );
        self.sender
            .post(url)
            .bearer_auth(token)
            .json(message)
            .send()
            .await
    }
}

#[async_trait]
impl Provider for Fcm {
    async fn send(&self, push: &Push) -> Verdict {
        let message = Self::message(push);
        let mut refreshed = false;
        loop {
            let token = match self.token.get(|| self.fetch_token()).await {
                Ok(token) => token,
                Err(why) => return Verdict::Retry { after: None, why },
            };
            let response = match self.post(&token, &message).await {
                Ok(response) => response,
                Err(e) => return Verdict::unreachable(e),
            };
            let status = response.status().as_u16();
            if status == 401 && !refreshed {
                // The token expired or was revoked early: one fresh one.
                self.token.refused(&token).await;
                refreshed = true;
                continue;
            }
            let after = retry_after(response.headers());
            let body: Value = response.json().await.unwrap_or(Value::Null);
            return verdict(status, &body, after);
        }
    }
}

/// FCM's verdict from its answer: 404 `UNREGISTERED`, or 400
/// `INVALID_ARGUMENT` naming `message.token`, is a dead token.
fn verdict(status: u16, body: &Value, after: Option<Duration>) -> Verdict {
    if (200..300).contains(&status) {
        return Verdict::Sent;
    }
    let error = &body["error"];
    let text = |v: &Value| v.as_str().unwrap_or_default().to_owned();
    let details = error["details"].as_array().cloned().unwrap_or_default();
    let unregistered = text(&error["status"]) == "UNREGISTERED"
        || details
            .iter()
            .any(|d| text(&d["errorCode"]) == "UNREGISTERED");
    let bad_token = details.iter().any(|d| {
        d["fieldViolations"]
            .as_array()
            .is_some_and(|v| v.iter().any(|f| text(&f["field"]) == "message.token"))
    });
    match status {
        404 if unregistered => Verdict::Dead,
        400 if text(&error["status"]) == "INVALID_ARGUMENT" && bad_token => Verdict::Dead,
        429 | 500..=599 => Verdict::Retry {
            after,
            why: format!("HTTP {status}"),
        },
        _ => Verdict::Refused(format!(
            "HTTP {status}: {} {}",
            text(&error["status"]),
            text(&error["message"])
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fcm_verdicts_follow_its_error_statuses() {
        let unregistered = json!({ "error": { "code": 404, "status": "NOT_FOUND",
            "details": [{ "@type": "type.googleapis.com/google.firebase.fcm.v1.FcmError", "errorCode": "UNREGISTERED" }] } });
        assert_eq!(verdict(404, &unregistered, None), Verdict::Dead);
        let bad_token = json!({ "error": { "code": 400, "status": "INVALID_ARGUMENT",
            "details": [{ "fieldViolations": [{ "field": "message.token", "description": "Invalid registration token" }] }] } });
        assert_eq!(verdict(400, &bad_token, None), Verdict::Dead);
        let bad_data = json!({ "error": { "code": 400, "status": "INVALID_ARGUMENT",
            "details": [{ "fieldViolations": [{ "field": "message.data[0].value" }] }] } });
        assert!(matches!(verdict(400, &bad_data, None), Verdict::Refused(_)));
        assert!(matches!(
            verdict(503, &Value::Null, Some(Duration::from_secs(3))),
            Verdict::Retry { after: Some(d), .. } if d == Duration::from_secs(3)
        ));
        assert!(matches!(
            verdict(429, &Value::Null, None),
            Verdict::Retry { .. }
        ));
        assert!(matches!(
            verdict(403, &Value::Null, None),
            Verdict::Refused(_)
        ));
        assert_eq!(
            verdict(200, &json!({ "name": "projects/p/messages/1" }), None),
            Verdict::Sent
        );
    }
}
