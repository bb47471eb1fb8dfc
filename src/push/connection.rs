//! One push-socket connection, from the TLS handshake to its close. Every
//! wait has a deadline: the handshake and the register together
//! ([`REGISTER_WITHIN`]), each write ([`WRITE_WITHIN`]), and silence (three
//! heartbeat intervals). Anything a client does wrong closes that
//! connection alone, with a line at debug level.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use serde_json::{Map, Value};
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;
use tokio::time::{timeout, timeout_at, Instant};
use tokio_rustls::TlsAcceptor;
use tokio_util::codec::{Framed, FramedParts};
use tokio_util::sync::CancellationToken;

use super::codec::{Frame, FrameCodec, HEARTBEAT, REGISTER, TOKEN};
use super::delivery::Queued;
use super::{Holding, Hub, Out};
use crate::store::SocketClient;
use crate::unix_now;

/// The handshake and the first frame, a register, within this.
pub const REGISTER_WITHIN: Duration = Duration::from_secs(10);
/// A frame must be written within this, else the client is too slow.
const WRITE_WITHIN: Duration = Duration::from_secs(10);
/// How long a closing connection's TLS goodbye may take.
const CLOSE_WITHIN: Duration = Duration::from_secs(1);
/// Longest kept of a register's `imsi`, `type` and `brand`.
const MAX_KEPT: usize = 255;

type Socket = Framed<tokio_rustls::server::TlsStream<TcpStream>, FrameCodec>;

pub(super) async fn serve(
    hub: Arc<Hub>,
    acceptor: TlsAcceptor,
    stream: TcpStream,
    peer: SocketAddr,
    closing: CancellationToken,
) {
    let span = tracing::debug_span!("push", peer = %peer.ip());
    let run = async {
        let deadline = Instant::now() + REGISTER_WITHIN;
        let mut socket = match timeout_at(deadline, acceptor.accept(stream)).await {
            // Buffers that start empty and grow with the frames: an idle
            // connection holds none (`Framed::new` allocates 8 KiB each way).
            Ok(Ok(tls)) => Framed::from_parts(FramedParts::new::<Frame>(tls, FrameCodec)),
            Ok(Err(e)) => {
                tracing::debug!(error = %e, "push connection: TLS handshake failed");
                return;
            }
            Err(_) => {
                tracing::debug!("push connection: no TLS handshake in time");
                return;
            }
        };
        let ended = match register(&hub, &mut socket, deadline).await {
            Err(why) => why,
            Ok(token) => {
                // Held (here and in the database) before the client has its
                // token: an event sent as soon as the token is bound finds
                // the connection.
                let mut holding = hub.registry.hold(&token);
                // This connection, among every instance's.
                let holder = format!("{}/{}", hub.instance, holding.id);
                metrics::gauge!("pushtoken_push_connections").increment(1.0);
                match hub
                    .store
                    .hold_socket(&token, &hub.instance, &holder, unix_now())
                    .await
                {
                    Ok(Some(before)) => hub.tell(&before, "close", &token).await,
                    Ok(None) => {}
                    Err(e) => tracing::warn!(error = %e, "cannot record a push connection"),
                }
                let answer = serde_json::json!({ "token": token }).to_string();
                let ended = match send(&mut socket, Frame::new(TOKEN, answer)).await {
                    Ok(()) => {
                        tracing::debug!("push connection registered");
                        hold(&hub, &mut socket, &token, &mut holding, &closing).await
                    }
                    Err(()) => "too slow to write to",
                };
                if hub.registry.release(&token, holding.id) {
                    if let Err(e) = hub.store.release_socket(&token, &holder).await {
                        tracing::warn!(error = %e, "cannot record a push connection's end");
                    }
                }
                metrics::gauge!("pushtoken_push_connections").decrement(1.0);
                ended
            }
        };
        tracing::debug!(reason = ended, "push connection closed");
        // TLS close_notify, then FIN: a client that sees the connection
        // end cleanly reconnects cleanly.
        let _ = timeout(CLOSE_WITHIN, socket.get_mut().shutdown()).await;
    };
    tracing::Instrument::instrument(run, span).await;
}

/// The register, by `deadline`, recorded: the client's token, or why the
/// connection is to close.
async fn register(
    hub: &Hub,
    socket: &mut Socket,
    deadline: Instant,
) -> Result<String, &'static str> {
    let first = match timeout_at(deadline, socket.next()).await {
        Ok(Some(Ok(frame))) => frame,
        Ok(Some(Err(_))) => return Err("not a frame"),
        Ok(None) => return Err("closed by the client before registering"),
        Err(_) => return Err("no register in time"),
    };
    count_frame(first.command);
    if first.command != REGISTER {
        return Err("the first frame is not a register");
    }
    let Some(client) = read_register(hub, &first.payload) else {
        return Err("a register that is not a JSON object with a valid imei");
    };
    if let Err(e) = hub.store.register_socket_client(&client).await {
        tracing::warn!(error = %e, "push connection: cannot record its registration");
        return Err("the registration could not be recorded");
    }
    Ok(client.token)
}

/// The client a register payload names: `imei` 1–64 characters; an absent
/// or empty `bundle_id` is the configured one.
fn read_register(hub: &Hub, payload: &[u8]) -> Option<SocketClient> {
    let Ok(Value::Object(register)) = serde_json::from_slice::<Value>(payload) else {
        return None;
    };
    let imei = match register.get("imei") {
        Some(Value::String(imei)) if (1..=64).contains(&imei.chars().count()) => imei.clone(),
        _ => return None,
    };
    let bundle_id = match register.get("bundle_id") {
        Some(Value::String(id)) if !id.is_empty() => kept(id),
        _ => hub.bundle_id.clone(),
    };
    Some(SocketClient {
        token: hub.key.token(&imei, &bundle_id),
        imei,
        imsi: text(&register, "imsi"),
        kind: text(&register, "type"),
        brand: text(&register, "brand"),
        bundle_id,
        registered_at: unix_now(),
    })
}

/// A register's field as text (`""` when absent), at most [`MAX_KEPT`]
/// characters of it.
fn text(register: &Map<String, Value>, name: &str) -> String {
    match register.get(name) {
        None | Some(Value::Null) => String::new(),
        Some(Value::String(s)) => kept(s),
        Some(other) => kept(&other.to_string()),
    }
}

fn kept(s: &str) -> String {
    s.chars().take(MAX_KEPT).collect()
}

/// Serves a registered connection until it ends; why it ended.
async fn hold(
    hub: &Hub,
    socket: &mut Socket,
    token: &str,
    holding: &mut Holding,
    closing: &CancellationToken,
) -> &'static str {
    // Events this connection wrote lately: one handed over while a drain
    // read it back too is written once.
    let mut recent = Recent::default();
    // What was queued while the client was away, before anything else.
    if drain(hub, socket, token, &mut recent, false).await.is_err() {
        return "too slow to write to";
    }
    let mut heartbeat = tokio::time::interval_at(Instant::now() + hub.heartbeat, hub.heartbeat);
    heartbeat.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let silence = hub.heartbeat * 3;
    let mut heard = Instant::now();
    loop {
        tokio::select! {
            frame = socket.next() => match frame {
                Some(Ok(frame)) => {
                    heard = Instant::now();
                    count_frame(frame.command);
                    // A heartbeat is never answered (clients send one after
                    // every frame they receive: an answer would loop); a
                    // register again changes nothing.
                    if !matches!(frame.command, HEARTBEAT | REGISTER) {
                        return "a frame of an unknown command";
                    }
                }
                Some(Err(_)) => return "not a frame",
                None => return "closed by the client",
            },
            () = holding.drain.notified() => {
                if drain(hub, socket, token, &mut recent, true).await.is_err() {
                    return "too slow to write to";
                }
            }
            out = holding.inbox.recv() => match out {
                Some(out) => {
                    if write_handed(hub, socket, token, &mut holding.inbox, &mut recent, out)
                        .await
                        .is_err()
                    {
                        return "too slow to write to";
                    }
                }
                None => return "replaced by a newer connection for its token",
            },
            _ = heartbeat.tick() => {
                if send(socket, Frame::new(HEARTBEAT, bytes::Bytes::new())).await.is_err() {
                    return "too slow to write to";
                }
            }
            () = tokio::time::sleep_until(heard + silence) => return "silent for three heartbeats",
            () = closing.cancelled() => return "the server is stopping",
        }
    }
}

/// Sends what is queued for `token`, then takes it off the queue; `live`
/// when told to by a delivery (not on registering). A database failure
/// leaves the events queued (logged); a failed write is `Err`.
async fn drain(
    hub: &Hub,
    socket: &mut Socket,
    token: &str,
    recent: &mut Recent,
    live: bool,
) -> Result<(), ()> {
    let now = unix_now();
    let queued = match hub.queued(token, now).await {
        Ok(queued) => queued,
        Err(e) => {
            tracing::warn!(error = %e, "cannot read a push connection's queued events");
            return Ok(());
        }
    };
    let mut sent = Vec::with_capacity(queued.len());
    let mut written = Ok(());
    for event in queued {
        written = write_event(socket, recent, event, live, &mut sent).await;
        if written.is_err() {
            break;
        }
    }
    unqueue(hub, token, sent).await;
    written
}

/// Writes `out`, handed to the connection, and whatever else its inbox
/// holds already; then takes the events written off the queue, together.
async fn write_handed(
    hub: &Hub,
    socket: &mut Socket,
    token: &str,
    inbox: &mut tokio::sync::mpsc::Receiver<Out>,
    recent: &mut Recent,
    out: Out,
) -> Result<(), ()> {
    let mut sent = Vec::new();
    let mut written = Ok(());
    let mut next = Some(out);
    while let Some(out) = next.take() {
        written = match out {
            Out::Frame(frame) => send(socket, frame).await,
            Out::Event(event) => write_event(socket, recent, event, true, &mut sent).await,
        };
        if written.is_err() {
            break;
        }
        next = inbox.try_recv().ok();
    }
    unqueue(hub, token, sent).await;
    written
}

/// Writes a queued event's frame unless this connection wrote it lately;
/// its id joins `sent` once written.
async fn write_event(
    socket: &mut Socket,
    recent: &mut Recent,
    event: Queued,
    live: bool,
    sent: &mut Vec<i64>,
) -> Result<(), ()> {
    if recent.contains(event.id) {
        return Ok(());
    }
    send(socket, event.frame).await?;
    super::delivery::delivered(&event.family, event.recorded_ms, live);
    recent.insert(event.id);
    sent.push(event.id);
    Ok(())
}

/// Takes the events `sent` off `token`'s queue: what was written is sent,
/// even when a later write failed. A database failure is logged; the
/// events stay queued.
async fn unqueue(hub: &Hub, token: &str, sent: Vec<i64>) {
    if sent.is_empty() {
        return;
    }
    if let Err(e) = hub.store.unqueue_events(token, sent).await {
        tracing::warn!(error = %e, "cannot take sent events off the queue");
    }
}

/// The ids of the last [`Recent::KEPT`] events a connection wrote.
#[derive(Default)]
struct Recent(std::collections::VecDeque<i64>);

impl Recent {
    /// Enough for the events that can be handed over while a drain reads
    /// them back: an outbox's worth, and a drain's.
    const KEPT: usize = 2 * super::OUTBOX;

    fn contains(&self, id: i64) -> bool {
        self.0.contains(&id)
    }

    fn insert(&mut self, id: i64) {
        if self.0.len() == Self::KEPT {
            self.0.pop_front();
        }
        self.0.push_back(id);
    }
}

/// Writes `frame`, within [`WRITE_WITHIN`].
async fn send(socket: &mut Socket, frame: Frame) -> Result<(), ()> {
    let command = frame.command;
    match timeout(WRITE_WITHIN, socket.send(frame)).await {
        Ok(Ok(())) => {
            metrics::counter!("pushtoken_push_frames_total", "direction" => "out", "command" => command_label(command)).increment(1);
            Ok(())
        }
        _ => Err(()),
    }
}

fn count_frame(command: i32) {
    metrics::counter!("pushtoken_push_frames_total", "direction" => "in", "command" => command_label(command)).increment(1);
}

fn command_label(command: i32) -> &'static str {
    match command {
        HEARTBEAT => "heartbeat",
        REGISTER => "register",
        TOKEN => "token",
        super::EVENT => "event",
        _ => "other",
    }
}
