//! Accepting connections: plain HTTP or HTTPS (rustls) on one listener,
//! HTTP/1.1 and HTTP/2, with bounded handshakes and header reads, and a
//! graceful stop that lets in-flight requests finish within a grace period.

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use axum::extract::ConnectInfo;
use axum::Router;
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto::Builder;
use hyper_util::server::graceful::GracefulShutdown;
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::rustls::pki_types::pem::PemObject;
use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tokio_rustls::rustls::ServerConfig;
use tokio_rustls::TlsAcceptor;
use tower::ServiceExt;

/// A client that has not sent its request head (or finished its TLS
/// handshake) by then is cut off.
const HEAD_TIMEOUT: Duration = Duration::from_secs(10);

/// Largest request head (request line and headers) read: more is 431.
const MAX_HEAD: usize = 64 * 1024;

/// Loads a PEM certificate chain and private key into the HTTPS
/// configuration (ALPN `h2` and `http/1.1`).
/// Every failure names the file and what is wrong with it.
pub fn load_tls(cert: &Path, key: &Path) -> anyhow::Result<Arc<ServerConfig>> {
    let mut config = Arc::unwrap_or_clone(tls_config(cert, key)?);
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

/// TLS 1.2 and 1.3 with the certificate chain and key of these PEM files.
pub fn tls_config(cert: &Path, key: &Path) -> anyhow::Result<Arc<ServerConfig>> {
    let certs = CertificateDer::pem_file_iter(cert)
        .and_then(|certs| certs.collect::<Result<Vec<_>, _>>())
        .map_err(|e| anyhow::anyhow!("cannot read the TLS certificate {}: {e}", cert.display()))?;
    anyhow::ensure!(!certs.is_empty(), "no certificate in {}", cert.display());
    let key = PrivateKeyDer::from_pem_file(key)
        .map_err(|e| anyhow::anyhow!("cannot read the TLS key {}: {e}", key.display()))?;
    tls_config_of(certs, key)
}

/// TLS 1.2 and 1.3 with this certificate chain and key.
pub fn tls_config_of(
    certs: Vec<CertificateDer<'static>>,
    key: PrivateKeyDer<'static>,
) -> anyhow::Result<Arc<ServerConfig>> {
    let provider = Arc::new(tokio_rustls::rustls::crypto::ring::default_provider());
    let config = ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .context("TLS protocol versions")?
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .context("the TLS certificate and key do not form a usable pair")?;
    Ok(Arc::new(config))
}

/// The next connection on `listener`, or `None` once `shutdown` has
/// resolved. A failed accept (out of file descriptors, most often) is
/// logged, and tried again after a pause.
pub async fn accept<F: Future<Output = ()>>(
    listener: &TcpListener,
    shutdown: &mut std::pin::Pin<&mut F>,
) -> Option<(TcpStream, SocketAddr)> {
    loop {
        tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(accepted) => return Some(accepted),
                Err(e) => {
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            },
            () = shutdown.as_mut() => return None,
        }
    }
}

/// Serves `app` on `listener` until `shutdown` resolves, then stops
/// accepting and waits up to `grace` for open requests to finish.
pub async fn run(
    listener: TcpListener,
    tls: Option<Arc<ServerConfig>>,
    app: Router,
    shutdown: impl Future<Output = ()>,
    grace: Duration,
) -> io::Result<()> {
    let tls = tls.map(TlsAcceptor::from);
    let mut builder = Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(HEAD_TIMEOUT)
        .max_buf_size(MAX_HEAD);
    builder.http2().timer(TokioTimer::new());
    let graceful = GracefulShutdown::new();
    tokio::pin!(shutdown);
    while let Some((stream, peer)) = accept(&listener, &mut shutdown).await {
        let connection = serve_connection(
            stream,
            peer,
            tls.clone(),
            app.clone(),
            builder.clone(),
            graceful.watcher(),
        );
        tokio::spawn(connection);
    }
    drop(listener);
    tracing::info!("shutting down: finishing in-flight requests");
    tokio::select! {
        () = graceful.shutdown() => {}
        () = tokio::time::sleep(grace) => tracing::warn!("shutdown grace period over; dropping remaining connections"),
    }
    Ok(())
}

async fn serve_connection(
    stream: TcpStream,
    peer: SocketAddr,
    tls: Option<TlsAcceptor>,
    app: Router,
    builder: Builder<TokioExecutor>,
    watcher: hyper_util::server::graceful::Watcher,
) {
    let _ = stream.set_nodelay(true);
    let activity = Arc::new(Activity::default());
    let seen = activity.clone();
    let service = hyper::service::service_fn(move |request: hyper::Request<Incoming>| {
        let mut request = request.map(axum::body::Body::new);
        request.extensions_mut().insert(ConnectInfo(peer));
        let guard = seen.begin();
        let response = app.clone().oneshot(request);
        async move {
            let response = response.await;
            drop(guard);
            response
        }
    });
    let served = async {
        match tls {
            None => {
                let connection =
                    builder.serve_connection_with_upgrades(TokioIo::new(stream), service);
                watcher.watch(connection.into_owned()).await
            }
            Some(acceptor) => {
                let stream = match tokio::time::timeout(HEAD_TIMEOUT, acceptor.accept(stream)).await
                {
                    Ok(Ok(stream)) => stream,
                    Ok(Err(e)) => {
                        tracing::debug!(%peer, error = %e, "TLS handshake failed");
                        return Ok(());
                    }
                    Err(_) => {
                        tracing::debug!(%peer, "TLS handshake timed out");
                        return Ok(());
                    }
                };
                let connection =
                    builder.serve_connection_with_upgrades(TokioIo::new(stream), service);
                watcher.watch(connection.into_owned()).await
            }
        }
    };
    let result = tokio::select! {
        result = served => result,
        () = activity.idle_for_too_long() => {
            tracing::debug!(%peer, "closed an idle connection");
            Ok(())
        }
    };
    if let Err(e) = result {
        tracing::debug!(%peer, error = %e, "connection ended with an error");
    }
}

/// Requests on one connection: how many are being answered, and when the
/// last one ended. A connection that has no request in flight for too long
/// is closed: before its first request after [`HEAD_TIMEOUT`] (a client that
/// connects and sends nothing, or only an HTTP/2 preface), later after
/// [`IDLE_TIMEOUT`] (a keep-alive connection nobody uses).
#[derive(Default)]
struct Activity {
    in_flight: std::sync::atomic::AtomicUsize,
    requests: std::sync::atomic::AtomicU64,
    last_end: std::sync::Mutex<Option<tokio::time::Instant>>,
}

/// How long a keep-alive connection may sit without a request.
const IDLE_TIMEOUT: Duration = Duration::from_secs(75);

struct InFlight(Arc<Activity>);

impl Drop for InFlight {
    fn drop(&mut self) {
        *self.0.last_end.lock().unwrap_or_else(|e| e.into_inner()) =
            Some(tokio::time::Instant::now());
        self.0
            .in_flight
            .fetch_sub(1, std::sync::atomic::Ordering::SeqCst);
    }
}

impl Activity {
    fn begin(self: &Arc<Self>) -> InFlight {
        use std::sync::atomic::Ordering;
        self.requests.fetch_add(1, Ordering::SeqCst);
        self.in_flight.fetch_add(1, Ordering::SeqCst);
        InFlight(self.clone())
    }

    /// Resolves once the connection has been without a request in flight
    /// for longer than its allowance.
    async fn idle_for_too_long(&self) {
        use std::sync::atomic::Ordering;
        let opened = tokio::time::Instant::now();
        loop {
            let (since, allowance) = match self.requests.load(Ordering::SeqCst) {
                0 => (opened, HEAD_TIMEOUT),
                _ => {
                    let last = *self.last_end.lock().unwrap_or_else(|e| e.into_inner());
                    (last.unwrap_or(opened), IDLE_TIMEOUT)
                }
            };
            let idle = self.in_flight.load(Ordering::SeqCst) == 0;
            let deadline = since + allowance;
            if idle && tokio::time::Instant::now() >= deadline {
                return;
            }
            let next = if idle {
                deadline
            } else {
                tokio::time::Instant::now() + Duration::from_secs(1)
            };
            tokio::time::sleep_until(
                next.max(tokio::time::Instant::now() + Duration::from_millis(100)),
            )
            .await;
        }
    }
}
