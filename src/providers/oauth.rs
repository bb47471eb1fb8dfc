//! OAuth access tokens of a service (FCM's service account, Huawei's client
//! credentials), fetched when first needed, cached until shortly before they
//! expire, and fetched again at once when the service refuses one.

use std::future::Future;
use std::time::{Duration, Instant};

use tokio::sync::Mutex;

/// How long before its stated expiry a token is fetched again.
const EARLY: Duration = Duration::from_secs(120);

/// One cached access token.
#[derive(Default)]
pub struct TokenCache {
    held: Mutex<Option<(String, Instant)>>,
}

/// A fetched token and its lifetime.
pub struct Fetched {
    pub token: String,
    pub expires_in: Duration,
}

impl TokenCache {
    /// The cached token, or a new one from `fetch` (one fetch at a time).
    pub async fn get<F, Fut>(&self, fetch: F) -> Result<String, String>
    where
        F: FnOnce() -> Fut,
        Fut: Future<Output = Result<Fetched, String>>,
    {
        let mut held = self.held.lock().await;
        if let Some((token, until)) = &*held {
            if Instant::now() < *until {
                return Ok(token.clone());
            }
        }
        let fetched = fetch().await?;
        let until = Instant::now() + fetched.expires_in.saturating_sub(EARLY);
        *held = Some((fetched.token.clone(), until));
        Ok(fetched.token)
    }

    /// Forgets `token` (the service refused it), unless a newer one is
    /// cached already.
    pub async fn refused(&self, token: &str) {
        let mut held = self.held.lock().await;
        if held.as_ref().is_some_and(|(t, _)| t == token) {
            *held = None;
        }
    }
}

/// An access token from `url`, asked for with `form` (an OAuth token
/// request: a JWT bearer assertion, or client credentials).
pub async fn fetch(
    client: &reqwest::Client,
    url: &str,
    form: &[(&str, &str)],
) -> Result<Fetched, String> {
    let response = client
        .post(url)
        .form(form)
        .send()
        .await
        .map_err(|e| format!("cannot reach the token endpoint: {e}"))?;
    let status = response.status();
    if !status.is_success() {
        return Err(format!("the token endpoint answered HTTP {status}"));
    }
    #[derive(serde::Deserialize)]
    struct Token {
        access_token: String,
        #[serde(default)]
        expires_in: Option<u64>,
    }
    let token: Token = response
        .json()
        .await
        .map_err(|_| "the token endpoint's answer has no access_token".to_owned())?;
    Ok(Fetched {
        token: token.access_token,
        expires_in: Duration::from_secs(token.expires_in.unwrap_or(3600)),
    })
}
