//! Abuse limits: password guessing per username, sign-up/login/refresh
//! bursts per client address, and a cap on requests in flight with a
//! timeout for each. All are per server instance.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv6Addr, SocketAddr};
use std::num::NonZeroU32;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::extract::{ConnectInfo, FromRequestParts, MatchedPath, Request, State};
use axum::http::request::Parts;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use governor::clock::{Clock, DefaultClock};
use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};
use tokio::sync::Semaphore;

use crate::config::Config;
use crate::error::{Error, Result};
use crate::http::client::{self, ClientAddress};
use crate::http::observe::passes_the_cap;
use crate::http::AppState;

/// How long failed logins are counted against a username.
pub const FAILURE_WINDOW: Duration = Duration::from_secs(15 * 60);
/// Usernames tracked at once before expired windows are swept.
const TRACKED_USERNAMES: usize = 100_000;

pub struct Limits {
    max_failures: u32,
    failures: Mutex<HashMap<String, Failures>>,
    per_address: Option<DefaultKeyedRateLimiter<IpAddr>>,
    in_flight: Arc<Semaphore>,
    request_timeout: Duration,
}

#[derive(Clone, Copy)]
struct Failures {
    count: u32,
    since: Instant,
}

impl Limits {
    pub fn new(config: &Config) -> Self {
        let per_address = NonZeroU32::new(config.auth_rate_per_minute).map(|rate| {
            let burst = NonZeroU32::new(rate.get().min(100)).unwrap_or(rate);
            RateLimiter::keyed(Quota::per_minute(rate).allow_burst(burst))
        });
        Limits {
            max_failures: config.login_max_failures,
            failures: Mutex::default(),
            per_address,
            in_flight: Arc::new(Semaphore::new(config.max_in_flight)),
            request_timeout: config.request_timeout,
        }
    }

    /// 429 while `username` has used up its failed logins in this window.
    pub fn check_username(&self, username: &str) -> Result<()> {
        if self.max_failures == 0 {
            return Ok(());
        }
        let failures = self.failures.lock().unwrap_or_else(|e| e.into_inner());
        match failures.get(username) {
            Some(f) if f.count >= self.max_failures && f.since.elapsed() < FAILURE_WINDOW => {
                let left = FAILURE_WINDOW.saturating_sub(f.since.elapsed());
                Err(Error::TooManyRequests {
                    retry_after_secs: left.as_secs() + 1,
                })
            }
            _ => Ok(()),
        }
    }

    /// Counts a failed login for `username`.
    pub fn login_failed(&self, username: &str) {
        if self.max_failures == 0 {
            return;
        }
        let mut failures = self.failures.lock().unwrap_or_else(|e| e.into_inner());
        if failures.len() >= TRACKED_USERNAMES {
            failures.retain(|_, f| f.since.elapsed() < FAILURE_WINDOW);
        }
        let now = Instant::now();
        let entry = failures.entry(username.to_owned()).or_insert(Failures {
            count: 0,
            since: now,
        });
        if entry.since.elapsed() >= FAILURE_WINDOW {
            *entry = Failures {
                count: 0,
                since: now,
            };
        }
        entry.count = entry.count.saturating_add(1);
    }

    /// A successful login clears the username's count.
    pub fn login_succeeded(&self, username: &str) {
        self.failures
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(username);
    }

    /// 429 when `address` has made too many sign-up, login and refresh
    /// requests. An IPv6 address counts with its /64 (one host's share).
    fn check_address(&self, address: IpAddr) -> Result<()> {
        let Some(limiter) = &self.per_address else {
            return Ok(());
        };
        limiter.check_key(&rate_key(address)).map_err(|not_until| {
            let wait = not_until.wait_time_from(DefaultClock::default().now());
            Error::TooManyRequests {
                retry_after_secs: wait.as_secs() + 1,
            }
        })
    }

    /// Forgets idle addresses and expired username windows.
    pub fn sweep(&self) {
        if let Some(limiter) = &self.per_address {
            limiter.retain_recent();
            limiter.shrink_to_fit();
        }
        self.failures
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .retain(|_, f| f.since.elapsed() < FAILURE_WINDOW);
    }
}

/// What the per-address rate counts `address` under: an IPv4 address
/// itself, an IPv6 address's /64 (a host is given a /64 and picks any
/// address in it).
fn rate_key(address: IpAddr) -> IpAddr {
    match address.to_canonical() {
        IpAddr::V6(v6) => IpAddr::V6(Ipv6Addr::from(u128::from(v6) & !(u128::MAX >> 64))),
        v4 => v4,
    }
}

/// The client's address: as the observation middleware found it (from
/// `X-Forwarded-For` when a trusted proxy sent the request), else the
/// connection's.
fn client_address(parts: &Parts, state: &AppState) -> IpAddr {
    match parts.extensions.get::<ClientAddress>() {
        Some(ClientAddress(address)) => *address,
        None => {
            let peer = parts
                .extensions
                .get::<ConnectInfo<SocketAddr>>()
                .map(|ConnectInfo(peer)| peer.ip());
            client::client_address(peer, &parts.headers, &state.config.trusted_proxies)
        }
    }
}

/// Passes when the client address is within its sign-up/login/refresh rate.
pub struct AuthRate;

impl FromRequestParts<AppState> for AuthRate {
    type Rejection = Error;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self> {
        state
            .limits
            .check_address(client_address(parts, state))
            .map(|()| AuthRate)
    }
}

/// Caps the requests in flight and bounds each by the request timeout: over
/// the cap a request is shed at once with 503 `server busy` (a flood cannot
/// pile up; health probes still pass, a busy server is alive), and one that
/// takes too long (a slow client, most often) gets 408 `request timeout`.
/// `/metrics` counts like any route: a scrape reads no table, but it is a
/// request that anyone who reaches the port can send.
pub async fn bound(State(state): State<AppState>, request: Request, next: Next) -> Response {
    let limits = &state.limits;
    let probe = request
        .extensions()
        .get::<MatchedPath>()
        .is_some_and(|path| passes_the_cap(path.as_str()));
    let permit = match limits.in_flight.clone().try_acquire_owned() {
        Ok(permit) => Some(permit),
        Err(_) if probe => None,
        Err(_) => return Error::Busy.into_response(),
    };
    let response = match tokio::time::timeout(limits.request_timeout, next.run(request)).await {
        Ok(response) => response,
        Err(_) => Error::Timeout.into_response(),
    };
    drop(permit);
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ipv6_addresses_count_per_64_and_ipv4_per_address() {
        let key = |text: &str| rate_key(text.parse().unwrap()).to_string();
        assert_eq!(key("2001:db8:1:2:aaaa:bbbb:cccc:dddd"), "2001:db8:1:2::");
        assert_eq!(key("2001:db8:1:2::1"), "2001:db8:1:2::");
        assert_eq!(key("2001:db8:1:3::1"), "2001:db8:1:3::");
        assert_eq!(key("203.0.113.7"), "203.0.113.7");
        assert_eq!(key("::ffff:203.0.113.7"), "203.0.113.7");
    }
}
