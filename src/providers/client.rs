//! The providers' HTTP clients: rustls with the public roots, and the
//! operator's CA (`PUSHTOKEN_PROVIDER_CA_FILE`) beside them. The shared one
//! speaks HTTP/2 where the service offers it (ALPN); APNs's (and FCM's
//! for its messages, over HTTPS) speaks HTTP/2 only, which is what keeps it to one connection per environment: with the
//! protocol left to ALPN, every push that finds no connection ready opens
//! one of its own (a burst after startup opens one per push, and all but one
//! are closed once the handshakes end), while with HTTP/2 known beforehand
//! they wait for the one being opened.

use std::path::Path;
use std::time::Duration;

use anyhow::Context;

/// A client trusting the public roots and, when given, the CAs of
/// `ca_file` (PEM).
pub fn http_client(ca_file: Option<&Path>) -> anyhow::Result<reqwest::Client> {
    builder(ca_file)?
        .build()
        .context("cannot build the providers' HTTP client")
}

/// The same, speaking HTTP/2 only (APNs accepts nothing else; FCM serves
/// it): one connection per host, however many requests are sent before it
/// is up.
pub fn http2_client(ca_file: Option<&Path>) -> anyhow::Result<reqwest::Client> {
    builder(ca_file)?
        .http2_prior_knowledge()
        .build()
        .context("cannot build the providers' HTTP/2 client")
}

fn builder(ca_file: Option<&Path>) -> anyhow::Result<reqwest::ClientBuilder> {
    let mut builder = reqwest::Client::builder()
        .use_rustls_tls()
        .connect_timeout(Duration::from_secs(10))
        .timeout(Duration::from_secs(30))
        .pool_idle_timeout(Duration::from_secs(600))
        .http2_keep_alive_interval(Duration::from_secs(60))
        .http2_keep_alive_while_idle(true)
        .user_agent(concat!("pushtoken/", env!("CARGO_PKG_VERSION")));
    if let Some(path) = ca_file {
        let pem = std::fs::read(path)
            .with_context(|| format!("cannot read the provider CA file {}", path.display()))?;
        let certificates = reqwest::Certificate::from_pem_bundle(&pem)
            .with_context(|| format!("{} holds no PEM certificate", path.display()))?;
        anyhow::ensure!(
            !certificates.is_empty(),
            "{} holds no PEM certificate",
            path.display()
        );
        for certificate in certificates {
            builder = builder.add_root_certificate(certificate);
        }
    }
    Ok(builder)
}
