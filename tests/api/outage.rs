//! The database going away and coming back. A TCP relay between the server
//! and PostgreSQL is cut and restored, like a database restart or a network
//! fault: the server answers 503 `10001` quickly while it cannot reach the
//! database, recovers by itself, and waits for the database at startup.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::http::StatusCode;
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;

use crate::support::api::{registration, RING};
use crate::support::db::{database_url, postgres_admin_url};
use crate::support::{TestApp, TestDb};

/// A relay from a local port to the PostgreSQL server that can be cut.
struct Relay {
    port: u16,
    up: Arc<AtomicBool>,
    links: Arc<Mutex<Vec<JoinHandle<()>>>>,
    accept: JoinHandle<()>,
}

impl Relay {
    async fn start(target: String) -> Relay {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let up = Arc::new(AtomicBool::new(true));
        let links: Arc<Mutex<Vec<JoinHandle<()>>>> = Arc::default();
        let (up2, links2) = (up.clone(), links.clone());
        let accept = tokio::spawn(async move {
            loop {
                let Ok((mut client, _)) = listener.accept().await else {
                    return;
                };
                if !up2.load(Ordering::SeqCst) {
                    continue; // dropped: the connection is refused
                }
                let target = target.clone();
                links2.lock().unwrap().push(tokio::spawn(async move {
                    if let Ok(mut server) = TcpStream::connect(&target).await {
                        let _ = tokio::io::copy_bidirectional(&mut client, &mut server).await;
                    }
                }));
            }
        });
        Relay {
            port,
            up,
            links,
            accept,
        }
    }

    /// Refuses new connections and breaks the open ones.
    fn cut(&self) {
        self.up.store(false, Ordering::SeqCst);
        for link in self.links.lock().unwrap().drain(..) {
            link.abort();
        }
    }

    fn restore(&self) {
        self.up.store(true, Ordering::SeqCst);
    }
}

impl Drop for Relay {
    fn drop(&mut self) {
        self.accept.abort();
        self.cut();
    }
}

/// host:port of the PostgreSQL server the tests use.
fn postgres_address() -> String {
    let admin = postgres_admin_url();
    let rest = admin.split("://").nth(1).unwrap();
    let host_port = rest
        .rsplit('@')
        .next()
        .unwrap()
        .split(['/', '?'])
        .next()
        .unwrap();
    if host_port.contains(':') {
        host_port.to_owned()
    } else {
        format!("{host_port}:5432")
    }
}

/// The test database's URL, through the relay.
fn relayed_url(db: &TestDb, relay: &Relay) -> String {
    let TestDb::Postgres { admin_url, name } = db else {
        unreachable!()
    };
    let direct = database_url(admin_url, name);
    direct.replacen(&postgres_address(), &format!("127.0.0.1:{}", relay.port), 1)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_outage_answers_503_10001_quickly_and_recovers_by_itself() {
    let relay = Relay::start(postgres_address()).await;
    let db = Arc::new(TestDb::postgres().await);
    let url = relayed_url(&db, &relay);
    let app = TestApp::start_at(db, &url, &["--db-acquire-timeout", "1s"]).await;
    let user = app.user("alice_1").await;
    app.put(&format!("{RING}/1"), &user.token, registration(1))
        .await
        .assert_success(StatusCode::CREATED);

    relay.cut();
    for _ in 0..3 {
        let started = Instant::now();
        let reply = tokio::time::timeout(Duration::from_secs(20), app.get(RING, &user.token))
            .await
            .expect("no hang while the database is away");
        reply.assert_error(StatusCode::SERVICE_UNAVAILABLE, "10001");
        assert_eq!(
            reply.body.as_object().unwrap().len(),
            1,
            "no detail leaks: {}",
            reply.body
        );
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "answered within the acquire timeout"
        );
    }
    let reply = app
        .put(&format!("{RING}/2"), &user.token, registration(2))
        .await;
    reply.assert_error(StatusCode::SERVICE_UNAVAILABLE, "10001");

    relay.restore();
    let deadline = Instant::now() + Duration::from_secs(30);
    let rows = loop {
        let reply = app.get(RING, &user.token).await;
        if reply.status == StatusCode::OK {
            break reply.body;
        }
        assert!(
            Instant::now() < deadline,
            "recovers once the database is back: {}",
            reply.body
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert_eq!(
        rows.as_array().unwrap().len(),
        1,
        "the acknowledged write is there, the refused one is not"
    );
    app.put(&format!("{RING}/2"), &user.token, registration(2))
        .await
        .assert_success(StatusCode::CREATED);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn startup_waits_for_postgres_to_become_reachable() {
    let relay = Relay::start(postgres_address()).await;
    relay.cut();
    let db = Arc::new(TestDb::postgres().await);
    let url = relayed_url(&db, &relay);
    let starting = tokio::spawn(async move { TestApp::start_at(db, &url, &[]).await });
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert!(
        !starting.is_finished(),
        "startup waits while the database is unreachable"
    );
    relay.restore();
    let app = tokio::time::timeout(Duration::from_secs(30), starting)
        .await
        .expect("starts once the database is reachable")
        .expect("startup succeeded");
    let user = app.user("alice_1").await;
    app.get(RING, &user.token).await.assert_success_list();
}
