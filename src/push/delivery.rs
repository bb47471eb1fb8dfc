//! Events on their way to the push socket. An event is recorded and queued,
//! in one transaction, for each of the user's socket tokens it can reach:
//! one whose connection is held now (on any instance), or, while its ttl
//! lasts, one that may reconnect. The connection holding a token sends
//! what is queued for it, oldest first, when it registers and whenever it
//! is told to ("drain"), then takes it off the queue: a queued event
//! survives a restart, and is sent once. The instance holding a connection
//! is told through the database (`Database::signal`), so an event sent
//! through any instance reaches a connection held by any other.

use std::sync::Arc;

use futures_util::StreamExt;
use serde_json::{Map, Value};

use super::{Frame, Hub, Out, EVENT};
use crate::providers::{route, Outcome, Push, Route, Tallies};
use crate::store::{Channel, Family, NewEvent, StoreResult, UserKey};
use crate::{unix_now, unix_now_ms};

/// How long an event for a connection held now waits for that connection
/// to take it, whatever its ttl (0 included): long enough to be sent, too
/// short to reach a later connection.
const LIVE_GRACE: i64 = 10;

/// An event queued for a connection, as its frame.
pub(super) struct Queued {
    pub id: i64,
    pub frame: Frame,
    pub family: String,
    /// When the event was recorded, in unix milliseconds (0: not known).
    pub recorded_ms: i64,
}

/// Counts an event's frame as written, and how long it took from the
/// event's recording when it went to a connection held at the time
/// (`live`).
pub(super) fn delivered(family: &str, recorded_ms: i64, live: bool) {
    count_outcome(family, "delivered", 1);
    if live && recorded_ms > 0 {
        let waited = (unix_now_ms() - recorded_ms).max(0) as f64 / 1000.0;
        metrics::histogram!(DELIVERY_SECONDS).record(waited);
    }
}

/// `pushtoken_event_deliveries_total`: queued deliveries by family and
/// outcome.
pub const DELIVERIES: &str = "pushtoken_event_deliveries_total";
/// `pushtoken_push_delivery_seconds`: from an event's recording to its
/// frame written, for connections held when it was sent.
pub const DELIVERY_SECONDS: &str = "pushtoken_push_delivery_seconds";

fn count_outcome(family: &str, outcome: &'static str, n: u64) {
    if n > 0 {
        let family = if family == "ring" { "ring" } else { "message" };
        metrics::counter!(DELIVERIES, "family" => family, "outcome" => outcome).increment(n);
    }
}

/// Counts deliveries whose ttl ran out before a connection took them.
pub fn count_expired(family: &str, n: i64) {
    count_outcome(family, "expired", n.max(0) as u64);
}

/// How long a notify waits for the providers' verdicts; a push undecided
/// then goes on in the background and counts as queued.
const PROVIDERS_WITHIN: std::time::Duration = std::time::Duration::from_secs(5);

/// What became of an event sent to a user: each of the user's rows in the
/// family counted once.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Delivery {
    /// The user it was sent to.
    pub user_id: i64,
    /// The event's id.
    pub id: i64,
    /// Socket tokens whose connection (on any instance) was told to send
    /// it, and provider pushes sent.
    pub delivered: u64,
    /// Socket tokens it waits for, until its ttl runs out, and provider
    /// pushes still undecided.
    pub queued: u64,
    /// The user's tokens of the family that nothing reaches.
    pub skipped: u64,
    /// Each provider's pushes by outcome.
    pub providers: Tallies,
}

/// What a socket frame and a provider's push carry: the event as sent,
/// with its id and family (replacing any of the sender's own).
fn identified(mut event: Map<String, Value>, id: i64, family: &str) -> Map<String, Value> {
    event.insert("id".into(), id.into());
    event.insert("family".into(), family.into());
    event
}

/// An event's frame payload, the same whether handed to a connection or
/// read back by its drain.
fn payload_bytes(payload: &Map<String, Value>) -> bytes::Bytes {
    serde_json::to_vec(payload).unwrap_or_default().into()
}

impl Hub {
    /// Records `event` for the user's tokens of `family` and sends it on
    /// its way; `None` when there is no such user. `event` holds `type` and
    /// `uid` (checked); its `time` is added when it has none; `ttl` is in
    /// seconds.
    pub async fn deliver(
        &self,
        user: UserKey<'_>,
        family: Family,
        mut event: Map<String, Value>,
        ttl: i64,
    ) -> StoreResult<Option<Delivery>> {
        // The user and their tokens in one read.
        let Some((user_id, recipients)) = self.store.recipients(user, family).await? else {
            return Ok(None);
        };
        let now = unix_now();
        let time = match event.get("time").and_then(Value::as_i64) {
            Some(time) => time,
            None => {
                if !event.contains_key("time") {
                    event.insert("time".into(), now.into());
                }
                now
            }
        };
        let text = |key: &str| event.get(key).and_then(Value::as_str).unwrap_or_default();
        let (kind, uid) = (text("type").to_owned(), text("uid").to_owned());
        let mut skipped = 0;
        let mut queue = Vec::new();
        // Tokens whose connection an instance holds, tokens waiting, and
        // rows for a provider.
        let (mut live, mut waiting, mut pushed) = (Vec::new(), Vec::new(), Vec::new());
        for recipient in recipients {
            match (route(&recipient), recipient.held_by.clone(), ttl) {
                (Route::Socket, Some(instance), _) => {
                    queue.push((recipient.push_token.clone(), now + ttl.max(LIVE_GRACE)));
                    live.push((instance, recipient.push_token));
                }
                (Route::Socket, None, 1..) => {
                    queue.push((recipient.push_token.clone(), now + ttl));
                    waiting.push(recipient.push_token);
                }
                (Route::Provider(kind), _, _) if self.providers.has(kind) => {
                    pushed.push((kind, recipient));
                }
                _ => skipped += 1,
            }
        }
        let recorded_ms = unix_now_ms();
        let payload = event.clone();
        let id = self
            .store
            .record_event(NewEvent {
                user_id,
                family,
                kind,
                uid,
                time,
                body: Value::Object(event).to_string(),
                created_at: now,
                recorded_ms,
                queue,
            })
            .await?;
        // The providers carry the socket frame's JSON.
        let payload = identified(payload, id, family.as_str());
        let payload = Arc::new(payload);
        let decided: Vec<_> = pushed
            .into_iter()
            .map(|(kind, row)| {
                let push = Push {
                    payload: payload.clone(),
                    family,
                    ttl,
                    expires_ms: recorded_ms + ttl * 1000,
                    user_id,
                    serial: row.serial,
                    push_token: row.push_token,
                    os_token: row.os_token,
                    bundleid: row.bundleid,
                    sandbox: row.dev == 1,
                };
                (kind, self.providers.send(kind, push))
            })
            .collect();
        // A connection held here gets the event itself, as the frame a
        // drain would read back; another instance's is told to drain.
        let mut frame: Option<bytes::Bytes> = None;
        for (instance, token) in &live {
            if *instance != self.instance {
                self.tell(instance, "drain", token).await;
                continue;
            }
            let event = Queued {
                id,
                frame: Frame::new(
                    EVENT,
                    frame.get_or_insert_with(|| payload_bytes(&payload)).clone(),
                ),
                family: family.as_str().to_owned(),
                recorded_ms,
            };
            if !self.registry.send(token, Out::Event(event)) {
                // Its connection has just ended, or another took the
                // token: the event stays queued for what comes next.
                self.registry.nudge(token);
            }
        }
        // No connection held these a moment ago: one may have registered
        // here since.
        for token in &waiting {
            self.registry.nudge(token);
        }
        metrics::counter!("pushtoken_events_total", "family" => family.as_str()).increment(1);
        count_outcome(family.as_str(), "queued", waiting.len() as u64);
        let mut delivery = Delivery {
            user_id,
            id,
            delivered: live.len() as u64,
            queued: waiting.len() as u64,
            skipped,
            providers: Tallies::default(),
        };
        let deadline = tokio::time::Instant::now() + PROVIDERS_WITHIN;
        let outcomes =
            futures_util::future::join_all(decided.into_iter().map(|(kind, outcome)| async move {
                (kind, tokio::time::timeout_at(deadline, outcome).await)
            }))
            .await;
        for (kind, outcome) in outcomes {
            match outcome {
                Ok(Ok(outcome)) => {
                    delivery.providers.of(kind).count(outcome);
                    if outcome == Outcome::Sent {
                        delivery.delivered += 1;
                    }
                }
                // Still being tried (or its task ended without a word).
                _ => delivery.queued += 1,
            }
        }
        Ok(Some(delivery))
    }

    /// Tells `instance` to `what` (`drain` or `close`) its connection for
    /// `token`: directly when it is this one, through the database if not.
    pub(super) async fn tell(&self, instance: &str, what: &str, token: &str) {
        if instance == self.instance {
            self.act(what, token);
            return;
        }
        let message = format!("{what} {instance} {token}");
        if let Err(e) = self.store.signal(Channel::Deliveries, &message).await {
            // The event stays queued: the connection sends it when it
            // reconnects.
            tracing::warn!(error = %e, "cannot reach another instance");
        }
    }

    /// What is queued for `token` at `now`, oldest first.
    pub(super) async fn queued(&self, token: &str, now: i64) -> StoreResult<Vec<Queued>> {
        let events = self.store.queued_events(token, now).await?;
        Ok(events
            .into_iter()
            .map(|event| {
                let body = match serde_json::from_str(&event.body) {
                    Ok(Value::Object(body)) => body,
                    _ => Map::new(),
                };
                let body = identified(body, event.id, &event.family);
                Queued {
                    id: event.id,
                    frame: Frame::new(EVENT, payload_bytes(&body)),
                    family: event.family,
                    recorded_ms: event.recorded_ms,
                }
            })
            .collect())
    }

    /// Acts on the other instances' messages for this one, until the
    /// database has no more to give (SQLite: none at all).
    pub(super) async fn listen(self: Arc<Self>) {
        let mut messages = match self.store.signals(Channel::Deliveries).await {
            Ok(Some(messages)) => messages,
            Ok(None) => return,
            Err(e) => {
                tracing::warn!(error = %e, "cannot listen for other instances");
                return;
            }
        };
        while let Some(message) = messages.next().await {
            let Some(message) = message else {
                // Messages may have been lost: every connection looks.
                self.registry.nudge_all();
                continue;
            };
            let mut words = message.splitn(3, ' ');
            let (Some(what), Some(instance), Some(token)) =
                (words.next(), words.next(), words.next())
            else {
                continue;
            };
            if instance == self.instance {
                self.act(what, token);
            }
        }
    }

    /// Closes (`close`) or drains (anything else) this instance's
    /// connection for `token`, if it holds one.
    fn act(&self, what: &str, token: &str) {
        if what == "close" {
            self.registry.close(token);
        } else {
            self.registry.nudge(token);
        }
    }
}
