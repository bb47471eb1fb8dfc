//! The vendor's push socket: TLS on its own port, frames of `codec.rs`. A
//! client registers, gets its token (`token.rs`), binds it to its account
//! through the REST routes, and waits for events; the server sends its own
//! heartbeat and never answers one.
//!
//! One task per connection owns its socket (`connection.rs`); the
//! [`Registry`] maps each token to the one connection holding it, which
//! others reach through a bounded outbox.

mod codec;
mod connection;
mod delivery;
mod token;

use std::collections::HashMap;
use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use anyhow::Context;
use tokio::net::TcpListener;
use tokio::sync::{mpsc, Notify};
use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use tokio_rustls::rustls::ServerConfig;
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;

pub use codec::{Frame, FrameCodec, FrameError, EVENT, HEARTBEAT, MAX_PAYLOAD, REGISTER, TOKEN};
pub use delivery::{count_expired, Delivery, DELIVERIES, DELIVERY_SECONDS};
pub use token::TokenKey;

use crate::config::Config;
use crate::providers::Providers;
use crate::store::{Store, StoreResult};

/// Frames that may wait for a connection's socket; a connection whose
/// outbox is full is too slow, and is closed.
const OUTBOX: usize = 64;

/// What a connection's outbox carries: a frame to write as it is, or an
/// event recorded for its token a moment ago, handed over by the instance
/// that recorded it so that the connection need not read it back.
enum Out {
    Frame(Frame),
    Event(delivery::Queued),
}

/// What every connection of the push socket shares.
#[derive(Debug)]
pub struct Hub {
    store: Store,
    key: TokenKey,
    /// For a register without a `bundle_id`.
    bundle_id: String,
    heartbeat: Duration,
    registry: Registry,
    /// Names this instance among those sharing the database.
    instance: String,
    /// The phone makers' services, for rows the socket did not issue.
    providers: Providers,
}

impl Hub {
    /// Loads (or makes) the token key.
    pub async fn new(store: Store, config: &Config, providers: Providers) -> StoreResult<Self> {
        Ok(Self {
            providers,
            key: TokenKey::load(&store).await?,
            store,
            bundle_id: config.bundle_id.clone(),
            heartbeat: config.push_heartbeat,
            registry: Registry::default(),
            instance: crate::secrets::new_secret()[..16].to_owned(),
        })
    }

    /// How many connections this instance holds.
    pub fn connections(&self) -> usize {
        self.registry.len()
    }

    /// Hands `frame` to the connection holding `token` on this instance:
    /// whether one took it. A connection whose outbox is full is too slow
    /// to keep up, and is closed.
    pub fn send(&self, token: &str, frame: Frame) -> bool {
        self.registry.send(token, Out::Frame(frame))
    }
}

/// The connection holding each token on this instance.
#[derive(Debug, Default)]
struct Registry {
    held: Mutex<HashMap<String, Held>>,
    next_id: AtomicU64,
}

#[derive(Debug)]
struct Held {
    id: u64,
    outbox: mpsc::Sender<Out>,
    /// Tells the connection to send what is queued for it.
    drain: Arc<Notify>,
}

/// What a connection holding a token gets.
struct Holding {
    id: u64,
    /// Frames and events handed to it; closed when another connection
    /// takes the token.
    inbox: mpsc::Receiver<Out>,
    drain: Arc<Notify>,
}

impl Registry {
    /// Makes the new connection the holder of `token`; the one that held it
    /// (if any) sees its inbox close and ends.
    fn hold(&self, token: &str) -> Holding {
        let (outbox, inbox) = mpsc::channel(OUTBOX);
        let drain = Arc::new(Notify::new());
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let held = Held {
            id,
            outbox,
            drain: drain.clone(),
        };
        if self.map().insert(token.to_owned(), held).is_some() {
            tracing::debug!("a push connection was replaced by a newer one for its token");
        }
        Holding { id, inbox, drain }
    }

    /// Forgets connection `id`, unless another has taken its token since:
    /// whether it did.
    fn release(&self, token: &str, id: u64) -> bool {
        let mut held = self.map();
        let holds = held.get(token).is_some_and(|h| h.id == id);
        if holds {
            held.remove(token);
        }
        holds
    }

    /// Tells the connection holding `token` (if one does here) to send
    /// what is queued for it: whether one does.
    fn nudge(&self, token: &str) -> bool {
        match self.map().get(token) {
            Some(held) => {
                held.drain.notify_one();
                true
            }
            None => false,
        }
    }

    /// Tells every connection to send what is queued for it.
    fn nudge_all(&self) {
        for held in self.map().values() {
            held.drain.notify_one();
        }
    }

    /// Closes the connection holding `token` here, if one does.
    fn close(&self, token: &str) {
        self.map().remove(token);
    }

    /// Hands `out` to the connection holding `token` here: whether one
    /// took it.
    fn send(&self, token: &str, out: Out) -> bool {
        let mut held = self.map();
        let Some(holder) = held.get(token) else {
            return false;
        };
        match holder.outbox.try_send(out) {
            Ok(()) => true,
            Err(mpsc::error::TrySendError::Full(_)) => {
                tracing::debug!("a push connection fell behind its outbox; closing it");
                held.remove(token);
                false
            }
            Err(mpsc::error::TrySendError::Closed(_)) => false,
        }
    }

    fn len(&self) -> usize {
        self.map().len()
    }

    fn map(&self) -> std::sync::MutexGuard<'_, HashMap<String, Held>> {
        self.held.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// The TLS settings of the push socket: the push socket's certificate and
/// key when both are set, else the HTTPS pair, else a self-signed
/// certificate made now (the clients do not verify it).
pub fn tls_config(config: &Config) -> anyhow::Result<Arc<ServerConfig>> {
    let pair = match (&config.push_tls_cert, &config.push_tls_key) {
        (Some(cert), Some(key)) => Some((cert, key)),
        _ => config.tls_cert.as_ref().zip(config.tls_key.as_ref()),
    };
    if let Some((cert, key)) = pair {
        return crate::server::tls_config(cert, key);
    }
    let names = [
        "localhost",
        "chnpush.lancens.com",
        "eurpush.lancens.com",
        "usapush.lancens.com",
    ];
    let made = rcgen::generate_simple_self_signed(names.map(str::to_owned).to_vec())
        .context("cannot make a self-signed certificate for the push socket")?;
    let cert = CertificateDer::from(made.cert.der().to_vec());
    let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(made.key_pair.serialize_der()));
    crate::server::tls_config_of(vec![cert], key)
}

/// Serves the push socket on `listener` until `shutdown` resolves, then
/// closes every connection.
pub async fn serve(
    hub: Arc<Hub>,
    listener: TcpListener,
    tls: Arc<ServerConfig>,
    shutdown: impl Future<Output = ()>,
) -> anyhow::Result<()> {
    let acceptor = TlsAcceptor::from(tls);
    let closing = CancellationToken::new();
    let address = listener.local_addr()?;
    match raise_open_file_limit() {
        Some(limit) => tracing::info!(
            %address,
            open_file_limit = limit,
            "push socket open at {address}; it can hold about {} connections",
            limit.saturating_sub(64)
        ),
        None => tracing::info!(%address, "push socket open at {address}"),
    }
    let listening = tokio::spawn(hub.clone().listen());
    tokio::pin!(shutdown);
    while let Some((stream, peer)) = crate::server::accept(&listener, &mut shutdown).await {
        let _ = stream.set_nodelay(true);
        tokio::spawn(connection::serve(
            hub.clone(),
            acceptor.clone(),
            stream,
            peer,
            closing.child_token(),
        ));
    }
    closing.cancel();
    listening.abort();
    Ok(())
}

/// Raises this process's soft limit of open files to its hard limit, where
/// the system has one; the limit in force.
fn raise_open_file_limit() -> Option<u64> {
    #[cfg(unix)]
    {
        let mut limit = libc::rlimit {
            rlim_cur: 0,
            rlim_max: 0,
        };
        // SAFETY: getrlimit and setrlimit only read and write `limit`.
        unsafe {
            if libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) != 0 {
                return None;
            }
            if limit.rlim_cur < limit.rlim_max {
                let raised = libc::rlimit {
                    rlim_cur: limit.rlim_max,
                    rlim_max: limit.rlim_max,
                };
                if libc::setrlimit(libc::RLIMIT_NOFILE, &raised) == 0 {
                    limit = raised;
                }
            }
        }
        #[allow(clippy::unnecessary_cast)] // rlim_t is not u64 on every system
        Some(limit.rlim_cur as u64)
    }
    #[cfg(not(unix))]
    None
}
