//! Stand-ins for the phone makers' push services, on loopback: each records
//! every request it gets and answers what the test queued, in order, then
//! its default answer. Plain HTTP, or HTTPS (HTTP/1.1 and HTTP/2) with a
//! certificate of its own whose PEM is the CA file the server is told to
//! trust.

use std::collections::VecDeque;
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::extract::{Request, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Router;
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};

/// What a stand-in answers one request.
#[derive(Clone, Debug)]
pub enum Answer {
    Reply {
        status: u16,
        headers: Vec<(&'static str, String)>,
        body: String,
    },
    /// Never answers.
    Hang,
}

impl Answer {
    /// `status` with a JSON body.
    pub fn json(status: u16, body: serde_json::Value) -> Self {
        Answer::Reply {
            status,
            headers: vec![("content-type", "application/json".into())],
            body: body.to_string(),
        }
    }

    /// `status` with `Retry-After: seconds` and an empty JSON object.
    pub fn retry_after(status: u16, seconds: u64) -> Self {
        Answer::Reply {
            status,
            headers: vec![
                ("content-type", "application/json".into()),
                ("retry-after", seconds.to_string()),
            ],
            body: "{}".into(),
        }
    }
}

/// A request a stand-in got.
#[derive(Clone, Debug)]
pub struct Seen {
    pub method: String,
    pub path: String,
    /// `HTTP/1.1` or `HTTP/2.0`.
    pub version: String,
    pub headers: HeaderMap,
    pub body: Bytes,
    pub at: Instant,
}

impl Seen {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    /// The body as a form (`application/x-www-form-urlencoded`).
    pub fn form(&self) -> Vec<(String, String)> {
        serde_urlencoded::from_bytes(&self.body).expect("a form body")
    }

    /// The value of `name` in the form body.
    pub fn field(&self, name: &str) -> Option<String> {
        self.form()
            .into_iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v)
    }
}

#[derive(Default)]
struct Shared {
    seen: Mutex<Vec<Seen>>,
    queued: Mutex<VecDeque<Answer>>,
    default: Mutex<Option<Answer>>,
}

pub struct StandIn {
    /// `scheme://127.0.0.1:port`.
    pub url: String,
    /// HTTPS: the PEM of its certificate, the CA to trust.
    pub ca_file: Option<PathBuf>,
    shared: Arc<Shared>,
    _dir: Option<tempfile::TempDir>,
}

impl StandIn {
    /// A plain-HTTP stand-in answering `default` to anything not queued.
    pub async fn start(default: Answer) -> Self {
        Self::serve(default, false).await
    }

    /// An HTTPS stand-in with a self-signed certificate for 127.0.0.1.
    pub async fn start_tls(default: Answer) -> Self {
        Self::serve(default, true).await
    }

    async fn serve(default: Answer, tls: bool) -> Self {
        let shared = Arc::new(Shared::default());
        *shared.default.lock().unwrap() = Some(default);
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap();
        let (config, ca_file, dir) = if tls {
            let made = rcgen::generate_simple_self_signed(vec![
                "127.0.0.1".to_owned(),
                "localhost".to_owned(),
            ])
            .unwrap();
            let dir = tempfile::tempdir().unwrap();
            let ca_file = dir.path().join("standin-ca.pem");
            std::fs::write(&ca_file, made.cert.pem()).unwrap();
            let cert = CertificateDer::from(made.cert.der().to_vec());
            let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(made.key_pair.serialize_der()));
            let config = pushtoken::server::tls_config_of(vec![cert], key).unwrap();
            let mut config = Arc::unwrap_or_clone(config);
            config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
            (Some(Arc::new(config)), Some(ca_file), Some(dir))
        } else {
            (None, None, None)
        };
        let app = Router::new().fallback(record).with_state(shared.clone());
        tokio::spawn(pushtoken::server::run(
            listener,
            config,
            app,
            std::future::pending(),
            Duration::from_secs(1),
        ));
        let scheme = if tls { "https" } else { "http" };
        StandIn {
            url: format!("{scheme}://{address}"),
            ca_file,
            shared,
            _dir: dir,
        }
    }

    /// Answers the next request with `answer` (after those queued before).
    pub fn then(&self, answer: Answer) {
        self.shared.queued.lock().unwrap().push_back(answer);
    }

    /// The requests so far.
    pub fn seen(&self) -> Vec<Seen> {
        self.shared.seen.lock().unwrap().clone()
    }

    /// The requests, once there are at least `n` (within 10 s).
    pub async fn wait_for(&self, n: usize) -> Vec<Seen> {
        for _ in 0..200 {
            let seen = self.seen();
            if seen.len() >= n {
                return seen;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("the stand-in saw {} requests, not {n}", self.seen().len());
    }
}

async fn record(State(shared): State<Arc<Shared>>, request: Request) -> Response {
    let (parts, body) = request.into_parts();
    let body = axum::body::to_bytes(body, 1 << 20)
        .await
        .unwrap_or_default();
    shared.seen.lock().unwrap().push(Seen {
        method: parts.method.to_string(),
        path: parts.uri.path().to_owned(),
        version: format!("{:?}", parts.version),
        headers: parts.headers,
        body,
        at: Instant::now(),
    });
    let answer = shared
        .queued
        .lock()
        .unwrap()
        .pop_front()
        .or_else(|| shared.default.lock().unwrap().clone());
    match answer {
        Some(Answer::Reply {
            status,
            headers,
            body,
        }) => {
            let mut response = (StatusCode::from_u16(status).unwrap(), body).into_response();
            for (name, value) in headers {
                response.headers_mut().insert(name, value.parse().unwrap());
            }
            response
        }
        Some(Answer::Hang) | None => std::future::pending().await,
    }
}

/// A TCP relay in front of a stand-in: it counts the connections made to it
/// and holds each one back for `delay` before reaching the stand-in (a slow
/// handshake, so that requests sent together find no connection ready).
pub struct Relay {
    /// The stand-in's scheme, the relay's address.
    pub url: String,
    accepted: Arc<AtomicUsize>,
}

impl Relay {
    pub async fn before(standin: &StandIn, delay: Duration) -> Self {
        let (scheme, target) = standin.url.split_once("://").unwrap();
        let target = target.to_owned();
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap();
        let accepted = Arc::new(AtomicUsize::new(0));
        let counted = accepted.clone();
        tokio::spawn(async move {
            while let Ok((mut inbound, _)) = listener.accept().await {
                counted.fetch_add(1, Ordering::SeqCst);
                let target = target.clone();
                tokio::spawn(async move {
                    tokio::time::sleep(delay).await;
                    if let Ok(mut outbound) = TcpStream::connect(&target).await {
                        let _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
                    }
                });
            }
        });
        Relay {
            url: format!("{scheme}://{address}"),
            accepted,
        }
    }

    /// TCP connections accepted so far.
    pub fn connections(&self) -> usize {
        self.accepted.load(Ordering::SeqCst)
    }
}
