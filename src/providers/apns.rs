//! APNs over HTTP/2 with token-based authentication: an ES256 JWT signed
//! with the team's .p8 key, renewed well within Apple's hour, on one
//! multiplexed connection per environment (kept by an HTTP/2-only client,
//! so that pushes sent before it is up wait for it rather than each opening
//! one).
//! A ring is a VoIP push to `<bundleid>.voip`, collapsed per doorbell; a
//! message an alert push. The payload is the frame's JSON beside `aps`.

use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::Context;
use async_trait::async_trait;
use serde::Serialize;
use serde_json::{Map, Value};
use tokio::sync::Mutex;

use super::{retry_after, Provider, Push, Verdict};
use crate::store::Family;

/// How long one JWT is used (Apple accepts one for an hour, and refuses one
/// renewed more often than every 20 minutes).
const JWT_LIFETIME: Duration = Duration::from_secs(40 * 60);

/// The .p8 key of a team, and its ids.
#[derive(Clone)]
pub struct ApnsKey {
    pub key_pem: String,
    pub key_id: String,
    pub team_id: String,
}

impl ApnsKey {
    /// Reads a .p8 file (a PKCS#8 PEM EC key).
    pub fn read(path: &Path, key_id: String, team_id: String) -> anyhow::Result<Self> {
        let key_pem = std::fs::read_to_string(path)
            .with_context(|| format!("cannot read {}", path.display()))?;
        jsonwebtoken::EncodingKey::from_ec_pem(key_pem.as_bytes())
            .with_context(|| format!("{} is not a .p8 (PEM EC) key", path.display()))?;
        Ok(ApnsKey {
            key_pem,
            key_id,
            team_id,
        })
    }
}

pub struct Apns {
    client: reqwest::Client,
    production: String,
    sandbox: String,
    key: ApnsKey,
    encoding: jsonwebtoken::EncodingKey,
    jwt: Mutex<Option<(String, Instant)>>,
}

impl Apns {
    pub fn new(
        client: reqwest::Client,
        production: &str,
        sandbox: &str,
        key: ApnsKey,
    ) -> anyhow::Result<Self> {
        let encoding = jsonwebtoken::EncodingKey::from_ec_pem(key.key_pem.as_bytes())
            .context("the APNs key is not a PEM EC key")?;
        Ok(Apns {
            client,
            production: production.trim_end_matches('/').to_owned(),
            sandbox: sandbox.trim_end_matches('/').to_owned(),
            key,
            encoding,
            jwt: Mutex::new(None),
        })
    }

    /// The JWT in use, made anew when it is [`JWT_LIFETIME`] old or was
    /// refused (`renew`).
    async fn jwt(&self, renew: bool) -> Result<String, String> {
        let mut held = self.jwt.lock().await;
        if let Some((jwt, made)) = &*held {
            if !renew && made.elapsed() < JWT_LIFETIME {
                return Ok(jwt.clone());
            }
        }
        #[derive(Serialize)]
        struct Claims<'a> {
            iss: &'a str,
            iat: i64,
        }
        let mut header = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::ES256);
        header.kid = Some(self.key.key_id.clone());
        let claims = Claims {
            iss: &self.key.team_id,
            iat: crate::unix_now(),
        };
        let jwt = jsonwebtoken::encode(&header, &claims, &self.encoding)
            .map_err(|e| format!("cannot sign the APNs token: {e}"))?;
        *held = Some((jwt.clone(), Instant::now()));
        Ok(jwt)
    }

    /// The payload: the frame's keys beside `aps` (the event's own `aps`
    /// when it has one), with the alert text filled when absent.
    fn payload(push: &Push) -> Value {
        let mut payload: Map<String, Value> = (*push.payload).clone();
        let mut aps = match payload.remove("aps") {
            Some(Value::Object(aps)) => aps,
            _ => Map::new(),
        };
        let text = ["alert", "message"]
            .iter()
            .find_map(|key| payload.get(*key).and_then(Value::as_str))
            .map(str::to_owned);
        if let (Some(text), false) = (text, aps.contains_key("alert")) {
            aps.insert("alert".into(), text.into());
        }
        payload.insert("aps".into(), Value::Object(aps));
        Value::Object(payload)
    }
}

#[async_trait]
impl Provider for Apns {
    async fn send(&self, push: &Push) -> Verdict {
        let base = if push.sandbox {
            &self.sandbox
        } else {
            &self.production
        };
        let url = format!("{base}/3/device/{}", push.push_token);
        let (topic, kind) = match push.family {
            Family::Ring => (format!("{}.voip", push.bundleid), "voip"),
            Family::Message => (push.bundleid.clone(), "alert"),
        };
        let expiration = if push.ttl > 0 {
            (crate::unix_now() + push.ttl).to_string()
        } else {
            "0".to_owned()
        };
        let body = Self::payload(push);
        let mut renewed = false;
        loop {
            let jwt = match self.jwt(renewed).await {
                Ok(jwt) => jwt,
                Err(why) => return Verdict::Refused(why),
            };
            let mut request = self
                .client
                .post(&url)
                .header("authorization", format!("bearer {jwt}"))
                .header("apns-topic", &topic)
                .header("apns-push-type", kind)
                .header("apns-priority", "10")
                .header("apns-expiration", &expiration)
                .json(&body);
            if push.family == Family::Ring && !push.uid().is_empty() {
                // One doorbell's calls replace each other on the phone
                // (the id is at most 64 bytes).
                let collapse: String = push.uid().chars().take(64).collect();
                request = request.header("apns-collapse-id", collapse);
            }
            let response = match request.send().await {
                Ok(response) => response,
                Err(e) => return Verdict::unreachable(e),
            };
            let status = response.status().as_u16();
            let after = retry_after(response.headers());
            let answer: Value = response.json().await.unwrap_or(Value::Null);
            let reason = answer["reason"].as_str().unwrap_or_default().to_owned();
            if status == 403 && reason == "ExpiredProviderToken" && !renewed {
                renewed = true;
                continue;
            }
            return verdict(status, &reason, after);
        }
    }
}

/// APNs' verdict: any 410, or 400 `BadDeviceToken`, is a dead token.
fn verdict(status: u16, reason: &str, after: Option<Duration>) -> Verdict {
    match status {
        200 => Verdict::Sent,
        410 => Verdict::Dead,
        400 if reason == "BadDeviceToken" => Verdict::Dead,
        429 | 500..=599 => Verdict::Retry {
            after,
            why: format!("HTTP {status} {reason}"),
        },
        _ => Verdict::Refused(format!("HTTP {status} {reason}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn apns_verdicts_follow_its_statuses_and_reasons() {
        assert_eq!(verdict(200, "", None), Verdict::Sent);
        assert_eq!(verdict(410, "Unregistered", None), Verdict::Dead);
        assert_eq!(verdict(400, "BadDeviceToken", None), Verdict::Dead);
        assert!(matches!(
            verdict(400, "BadTopic", None),
            Verdict::Refused(_)
        ));
        assert!(matches!(
            verdict(403, "InvalidProviderToken", None),
            Verdict::Refused(_)
        ));
        assert!(matches!(
            verdict(429, "TooManyRequests", None),
            Verdict::Retry { .. }
        ));
        assert!(matches!(
            verdict(503, "ServiceUnavailable", None),
            Verdict::Retry { .. }
        ));
    }
}
