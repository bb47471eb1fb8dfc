//! What nearly every request reads, kept in memory: the user of each
//! session token, and each user's rows of a family (`GET {base}`).
//!
//! A cached answer is served only while nothing that could change it has
//! happened since it was read:
//! - A write that could change a cached answer *bumps* the stripes its
//!   change falls in before it is answered: the sessions of a user; the
//!   rows of a user; the rows holding a token (another user's `PUT` or
//!   `POST` takes a token over). An entry keeps the epochs of its stripes,
//!   and a hit whose stripes moved is a miss. Since an entry's stripes are
//!   known only from its answer, it is kept only if no bump at all happened
//!   while its query ran (the domain's `changes`, bumped before the
//!   stripe): so a GET that starts after a write was answered never sees
//!   what was there before it.
//! - Other instances on PostgreSQL hear of each bump through `NOTIFY`
//!   (sent in batches by a task of each process, [`tell_others`]) and bump
//!   the same stripes; a listener that lost its connection bumps them all.
//! - No entry is served once `lifetime` has passed since its query began:
//!   the bound on how long another process's change can take to be seen,
//!   whatever happens to the notifications.

use std::collections::HashSet;
use std::sync::atomic::{AtomicU64, Ordering::SeqCst};
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use moka::sync::Cache as Map;
use tokio::sync::{mpsc, oneshot};

use super::{Channel, Database, Family, PushTokenRow, SessionUser, StoreResult};

/// How many stripes each domain has: changes in one stripe cost a miss to
/// every entry in it, never a stale hit.
const STRIPES: usize = 4096;

/// Longest `NOTIFY` payload sent (PostgreSQL takes under 8000 bytes).
const PAYLOAD_MAX: usize = 7000;

/// Cache lookups, by cache (`sessions`, `rows`) and outcome (`hit`, `miss`).
pub const LOOKUPS: &str = "pushtoken_cache_lookups_total";

/// How the cache is sized and how old an entry may be served.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CacheOptions {
    /// Entries of each of the two caches (0: nothing is cached).
    pub entries: u64,
    /// How long after its query began an entry may still be served.
    pub lifetime: Duration,
}

/// What a write changed: the stripe of a domain, or everything.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Change {
    /// The sessions of the users in this stripe.
    Sessions(u16),
    /// The rows of the users, or the rows holding the tokens, in this
    /// stripe.
    Rows(u16),
    All,
}

impl Change {
    pub fn sessions_of(user_id: i64) -> Self {
        Change::Sessions(stripe(b"user", &user_id.to_le_bytes()))
    }

    pub fn rows_of(user_id: i64) -> Self {
        Change::Rows(stripe(b"user", &user_id.to_le_bytes()))
    }

    /// The rows, of any user, holding `token` in `family`.
    pub fn token(family: Family, token: &str) -> Self {
        Change::Rows(stripe(family.as_str().as_bytes(), token.as_bytes()))
    }

    /// As written in a notification: `s12`, `r12` or `*`.
    fn word(self) -> String {
        match self {
            Change::Sessions(i) => format!("s{i}"),
            Change::Rows(i) => format!("r{i}"),
            Change::All => "*".to_owned(),
        }
    }

    fn parse(word: &str) -> Option<Self> {
        let stripe = |digits: &str| {
            digits
                .parse::<u16>()
                .ok()
                .filter(|&i| usize::from(i) < STRIPES)
        };
        match word.split_at_checked(1)? {
            ("s", digits) => stripe(digits).map(Change::Sessions),
            ("r", digits) => stripe(digits).map(Change::Rows),
            ("*", "") => Some(Change::All),
            _ => None,
        }
    }
}

/// The stripe of a key: FNV-1a of its tag and bytes, the same in every
/// instance and version (the notifications name stripes).
fn stripe(tag: &[u8], bytes: &[u8]) -> u16 {
    let hash = tag
        .iter()
        .chain([0u8].iter())
        .chain(bytes)
        .fold(0xcbf2_9ce4_8422_2325_u64, |hash, &byte| {
            (hash ^ u64::from(byte)).wrapping_mul(0x0100_0000_01b3)
        });
    (hash % STRIPES as u64) as u16
}

/// The epochs of one domain's stripes, and how many bumps there were.
struct Epochs {
    changes: AtomicU64,
    stripes: Box<[AtomicU64]>,
}

/// The epochs of an entry's stripes when it was read.
struct Stamp(Vec<(u16, u64)>);

impl Epochs {
    fn new() -> Self {
        Epochs {
            changes: AtomicU64::new(0),
            stripes: (0..STRIPES).map(|_| AtomicU64::new(0)).collect(),
        }
    }

    /// `changes` first: see [`Epochs::stamp`].
    fn bump(&self, stripe: Option<u16>) {
        self.changes.fetch_add(1, SeqCst);
        match stripe {
            Some(i) => {
                self.stripes[usize::from(i)].fetch_add(1, SeqCst);
            }
            None => {
                for epoch in &self.stripes {
                    epoch.fetch_add(1, SeqCst);
                }
            }
        }
    }

    /// Read before an entry's query.
    fn began(&self) -> u64 {
        self.changes.load(SeqCst)
    }

    /// The stamp of an answer whose query began at `began`, `None` when a
    /// bump happened since. A write that changed the answer after its query
    /// read it bumps `changes` after its commit: before the second read of
    /// `changes` here (no stamp), or after it, and so its stripe after the
    /// stripes were read here (a stamp that no longer holds).
    fn stamp(&self, began: u64, stripes: impl IntoIterator<Item = u16>) -> Option<Stamp> {
        let stamp = stripes
            .into_iter()
            .map(|i| (i, self.stripes[usize::from(i)].load(SeqCst)))
            .collect();
        (self.changes.load(SeqCst) == began).then_some(Stamp(stamp))
    }

    fn holds(&self, stamp: &Stamp) -> bool {
        stamp
            .0
            .iter()
            .all(|&(i, epoch)| self.stripes[usize::from(i)].load(SeqCst) == epoch)
    }
}

struct Entry<T> {
    value: T,
    stamp: Stamp,
    began_at: Instant,
}

/// A user's rows of a family, shared by every answer that serves them.
pub type Rows = Arc<[PushTokenRow]>;

/// A message to [`tell_others`].
enum Outgoing {
    Change(Change),
    /// Answered once everything before it was sent.
    Flush(oneshot::Sender<()>),
}

/// Kept entries by key (`None`: nothing is kept).
type Kept<K, V> = Option<Map<K, Arc<Entry<V>>>>;

/// The two caches and their epochs.
pub struct Cache {
    /// By session token hash.
    sessions: Kept<String, SessionUser>,
    /// By user and family.
    rows: Kept<(i64, Family), Rows>,
    session_epochs: Epochs,
    row_epochs: Epochs,
    lifetime: Duration,
    /// Names this process in its notifications, so that it skips its own.
    instance: String,
    /// Changes for the other instances, on a database that may have some.
    outbox: Option<mpsc::UnboundedSender<Outgoing>>,
}

/// One of the two caches, `None` when nothing is to be kept.
fn map<K, V>(options: &CacheOptions) -> Kept<K, V>
where
    K: std::hash::Hash + Eq + Send + Sync + 'static,
    V: Send + Sync + 'static,
{
    (options.entries > 0).then(|| {
        Map::builder()
            .max_capacity(options.entries)
            .time_to_live(options.lifetime)
            .build()
    })
}

impl std::fmt::Debug for Cache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Cache")
            .field("enabled", &self.sessions.is_some())
            .field("lifetime", &self.lifetime)
            .finish_non_exhaustive()
    }
}

impl Cache {
    /// The cache of a store; on a database other instances may share
    /// (`shared`), with the task that tells them of this one's changes.
    pub fn new(options: &CacheOptions, shared: Option<Arc<dyn Database>>) -> Self {
        let instance = crate::secrets::new_secret()[..16].to_owned();
        let outbox = shared.map(|database| {
            let (outbox, changes) = mpsc::unbounded_channel();
            tokio::spawn(tell_others(database, instance.clone(), changes));
            outbox
        });
        Cache {
            sessions: map(options),
            rows: map(options),
            session_epochs: Epochs::new(),
            row_epochs: Epochs::new(),
            lifetime: options.lifetime,
            instance,
            outbox,
        }
    }

    pub fn enabled(&self) -> bool {
        self.sessions.is_some()
    }

    /// The session's user: cached, else `load`ed (and cached when it was
    /// found and nothing changed meanwhile).
    pub async fn session<F>(
        &self,
        token_hash: &str,
        now: i64,
        load: F,
    ) -> StoreResult<Option<SessionUser>>
    where
        F: std::future::Future<Output = StoreResult<Option<SessionUser>>>,
    {
        let Some(map) = &self.sessions else {
            return load.await;
        };
        if let Some(entry) = map.get(token_hash) {
            if self.serves(&entry, &self.session_epochs) && entry.value.expires_at > now {
                count("sessions", "hit");
                return Ok(Some(entry.value.clone()));
            }
        }
        count("sessions", "miss");
        let (began, began_at) = (self.session_epochs.began(), Instant::now());
        let user = load.await?;
        if let Some(user) = &user {
            let stripe = Change::sessions_of(user.user_id).stripe();
            if let Some(stamp) = self.session_epochs.stamp(began, stripe) {
                let value = user.clone();
                let entry = Entry {
                    value,
                    stamp,
                    began_at,
                };
                map.insert(token_hash.to_owned(), Arc::new(entry));
            }
        }
        Ok(user)
    }

    /// The user's rows of `family`: cached, else `load`ed (and cached when
    /// nothing changed meanwhile).
    pub async fn rows<F>(&self, user_id: i64, family: Family, load: F) -> StoreResult<Rows>
    where
        F: std::future::Future<Output = StoreResult<Vec<PushTokenRow>>>,
    {
        let Some(map) = &self.rows else {
            return Ok(load.await?.into());
        };
        if let Some(entry) = map.get(&(user_id, family)) {
            if self.serves(&entry, &self.row_epochs) {
                count("rows", "hit");
                return Ok(entry.value.clone());
            }
        }
        count("rows", "miss");
        let (began, began_at) = (self.row_epochs.began(), Instant::now());
        let rows: Rows = load.await?.into();
        let stripes = rows
            .iter()
            .map(|row| Change::token(family, &row.push_token))
            .chain([Change::rows_of(user_id)])
            .filter_map(Change::stripe);
        if let Some(stamp) = self.row_epochs.stamp(began, stripes) {
            let value = rows.clone();
            map.insert(
                (user_id, family),
                Arc::new(Entry {
                    value,
                    stamp,
                    began_at,
                }),
            );
        }
        Ok(rows)
    }

    fn serves<T>(&self, entry: &Entry<T>, epochs: &Epochs) -> bool {
        entry.began_at.elapsed() < self.lifetime && epochs.holds(&entry.stamp)
    }

    /// Records `changes`, made by this process and committed: no entry they
    /// touch is served again, here at once and in the other instances as
    /// soon as they hear of them.
    pub fn changed(&self, changes: &[Change]) {
        for &change in changes {
            self.apply(change);
            if let Some(outbox) = &self.outbox {
                let _ = outbox.send(Outgoing::Change(change));
            }
        }
    }

    fn apply(&self, change: Change) {
        match change {
            Change::Sessions(i) => self.session_epochs.bump(Some(i)),
            Change::Rows(i) => self.row_epochs.bump(Some(i)),
            Change::All => {
                self.session_epochs.bump(None);
                self.row_epochs.bump(None);
            }
        }
    }

    /// Waits (at most `within`) until the changes recorded so far were
    /// sent to the other instances.
    pub async fn flush(&self, within: Duration) {
        let Some(outbox) = &self.outbox else { return };
        let (done, sent) = oneshot::channel();
        if outbox.send(Outgoing::Flush(done)).is_ok() {
            let _ = tokio::time::timeout(within, sent).await;
        }
    }

    /// Applies the other instances' changes as they come, until the
    /// database has no more to give (never, on one that others may share).
    pub async fn hear_others(self: Arc<Self>, database: Arc<dyn Database>) {
        let mut messages = match database.signals(Channel::Cache).await {
            Ok(Some(messages)) => messages,
            Ok(None) => return,
            Err(e) => {
                tracing::warn!(error = %e, "cannot listen for other instances' changes");
                return;
            }
        };
        while let Some(message) = messages.next().await {
            let Some(message) = message else {
                // Some may have been lost while the connection was down.
                self.apply(Change::All);
                continue;
            };
            let mut words = message.split(' ');
            if words.next() == Some(self.instance.as_str()) {
                continue;
            }
            words.filter_map(Change::parse).for_each(|c| self.apply(c));
        }
    }
}

impl Change {
    /// The stripe of a session or row change (`None` for [`Change::All`]).
    fn stripe(self) -> Option<u16> {
        match self {
            Change::Sessions(i) | Change::Rows(i) => Some(i),
            Change::All => None,
        }
    }
}

fn count(cache: &'static str, outcome: &'static str) {
    metrics::counter!(LOOKUPS, "cache" => cache, "outcome" => outcome).increment(1);
}

/// Sends this process's changes to the other instances, those that came
/// together in one notification (or a few, when long).
async fn tell_others(
    database: Arc<dyn Database>,
    instance: String,
    mut outgoing: mpsc::UnboundedReceiver<Outgoing>,
) {
    while let Some(first) = outgoing.recv().await {
        let mut changes = HashSet::new();
        let mut flushes = Vec::new();
        let mut take = |message| match message {
            Outgoing::Change(change) => {
                changes.insert(change);
            }
            Outgoing::Flush(done) => flushes.push(done),
        };
        take(first);
        while let Ok(message) = outgoing.try_recv() {
            take(message);
        }
        let words: Vec<String> = if changes.contains(&Change::All) {
            vec![Change::All.word()]
        } else {
            changes.into_iter().map(Change::word).collect()
        };
        let mut payload = instance.clone();
        for (n, word) in words.iter().enumerate() {
            payload.push(' ');
            payload.push_str(word);
            if n + 1 == words.len() || payload.len() + 8 > PAYLOAD_MAX {
                if let Err(e) = database.signal(Channel::Cache, &payload).await {
                    tracing::warn!(error = %e, "cannot tell other instances of changes");
                }
                payload.truncate(instance.len());
            }
        }
        for done in flushes {
            let _ = done.send(());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn changes_read_back_as_written_and_nothing_else_parses() {
        for change in [
            Change::Sessions(0),
            Change::Rows(4095),
            Change::sessions_of(7),
            Change::token(Family::Ring, "abc"),
            Change::All,
        ] {
            assert_eq!(Change::parse(&change.word()), Some(change));
        }
        for bad in ["", "s", "r4096", "x1", "s-1", "**", "s1 "] {
            assert_eq!(Change::parse(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn stripes_are_fixed_across_builds() {
        // Notifications name stripes: another version must agree.
        assert_eq!(
            stripe(b"user", &1_i64.to_le_bytes()),
            stripe(b"user", &1_i64.to_le_bytes())
        );
        assert_eq!(
            stripe(b"", b""),
            (0xaf63_bd4c_8601_b7df_u64 % STRIPES as u64) as u16
        );
    }

    #[test]
    fn a_stamp_taken_across_a_bump_is_refused_and_a_bump_undoes_a_stamp() {
        let epochs = Epochs::new();
        let began = epochs.began();
        epochs.bump(Some(9));
        assert!(epochs.stamp(began, [1]).is_none());

        let began = epochs.began();
        let stamp = epochs.stamp(began, [1, 2]).expect("nothing changed");
        assert!(epochs.holds(&stamp));
        epochs.bump(Some(3));
        assert!(epochs.holds(&stamp), "another stripe");
        epochs.bump(Some(2));
        assert!(!epochs.holds(&stamp));

        let stamp = epochs.stamp(epochs.began(), [5]).expect("nothing changed");
        epochs.bump(None);
        assert!(!epochs.holds(&stamp));
    }

    fn cache(lifetime: Duration) -> Cache {
        Cache::new(
            &CacheOptions {
                entries: 100,
                lifetime,
            },
            None,
        )
    }

    fn user(user_id: i64, expires_at: i64) -> SessionUser {
        SessionUser {
            session_id: 1,
            user_id,
            username: "alice_1".into(),
            expires_at,
        }
    }

    fn row(user_id: i64, serial: i64, token: &str) -> PushTokenRow {
        PushTokenRow {
            user_id,
            serial,
            push_token: token.into(),
            language: "en".into(),
            dev: 0,
            bundleid: String::new(),
            os: String::new(),
            os_token: String::new(),
            push_platform: String::new(),
            phone_model: String::new(),
            created_at: 0,
            updated_at: 0,
        }
    }

    /// Looks alice's (user 7) ring rows up; whether the database was asked.
    async fn asked(cache: &Cache, rows: Vec<PushTokenRow>) -> bool {
        let asked = std::cell::Cell::new(false);
        let load = async {
            asked.set(true);
            Ok(rows)
        };
        cache.rows(7, Family::Ring, load).await.expect("rows");
        asked.get()
    }

    #[tokio::test]
    async fn rows_are_read_once_until_the_user_writes() {
        let cache = cache(Duration::from_secs(60));
        let rows = vec![row(7, 0, "t0")];
        assert!(asked(&cache, rows.clone()).await);
        assert!(!asked(&cache, rows.clone()).await);
        cache.changed(&[Change::rows_of(8), Change::sessions_of(7)]);
        assert!(!asked(&cache, rows.clone()).await, "another user's change");
        cache.changed(&[Change::rows_of(7)]);
        assert!(asked(&cache, rows.clone()).await);
        assert!(!asked(&cache, rows).await);
    }

    #[tokio::test]
    async fn rows_holding_a_token_another_user_writes_are_read_again() {
        let cache = cache(Duration::from_secs(60));
        let rows = vec![row(7, 0, "t0"), row(7, 1, "t1")];
        assert!(asked(&cache, rows.clone()).await);
        cache.changed(&[Change::token(Family::Message, "t1")]);
        assert!(
            !asked(&cache, rows.clone()).await,
            "the other family's token"
        );
        cache.changed(&[Change::token(Family::Ring, "t1")]);
        assert!(asked(&cache, rows).await);
    }

    #[tokio::test]
    async fn an_answer_read_while_something_changed_is_not_kept() {
        let cache = cache(Duration::from_secs(60));
        let load = async {
            cache.changed(&[Change::rows_of(99)]);
            Ok(vec![row(7, 0, "t0")])
        };
        cache.rows(7, Family::Ring, load).await.expect("rows");
        assert!(asked(&cache, vec![]).await);
        assert!(!asked(&cache, vec![]).await);
    }

    #[tokio::test]
    async fn nothing_is_served_past_its_lifetime() {
        let cache = cache(Duration::from_millis(20));
        assert!(asked(&cache, vec![]).await);
        assert!(!asked(&cache, vec![]).await);
        tokio::time::sleep(Duration::from_millis(30)).await;
        assert!(asked(&cache, vec![]).await);
    }

    /// Looks session `hash` up at `now`; whether the database was asked.
    async fn session_asked(cache: &Cache, now: i64, found: Option<SessionUser>) -> bool {
        let asked = std::cell::Cell::new(false);
        let load = async {
            asked.set(true);
            Ok(found)
        };
        cache.session("hash", now, load).await.expect("session");
        asked.get()
    }

    #[tokio::test]
    async fn a_session_is_read_once_until_its_user_changes_or_it_expires() {
        let cache = cache(Duration::from_secs(60));
        assert!(session_asked(&cache, 100, None).await);
        assert!(
            session_asked(&cache, 100, None).await,
            "unknown is not kept"
        );
        assert!(session_asked(&cache, 100, Some(user(7, 200))).await);
        assert!(!session_asked(&cache, 199, None).await);
        assert!(session_asked(&cache, 200, None).await, "expired");
        cache.changed(&[Change::rows_of(7)]);
        assert!(
            !session_asked(&cache, 100, None).await,
            "rows are not sessions"
        );
        cache.changed(&[Change::sessions_of(7)]);
        assert!(session_asked(&cache, 100, None).await);
    }

    #[tokio::test]
    async fn without_entries_nothing_is_kept() {
        let cache = Cache::new(
            &CacheOptions {
                entries: 0,
                lifetime: Duration::from_secs(60),
            },
            None,
        );
        assert!(asked(&cache, vec![]).await);
        assert!(asked(&cache, vec![]).await);
        assert!(session_asked(&cache, 100, Some(user(7, 200))).await);
        assert!(session_asked(&cache, 100, Some(user(7, 200))).await);
    }
}
