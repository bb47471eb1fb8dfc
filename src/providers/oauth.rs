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
