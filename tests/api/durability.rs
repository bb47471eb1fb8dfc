//! Nothing acknowledged is lost when the server dies. The real binary is
//! killed with SIGKILL at random moments while clients stream writes, and
//! restarted on the same database; every write answered 2xx (and not
//! superseded by a later acknowledged one) must be there afterwards, every
//! acknowledged delete must stay deleted, and sessions keep working. The
//! clients keep a model of what they were told (`support::writers`).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use crate::support::api::FAMILIES;
use crate::support::server::Server;
use crate::support::writers::{assert_no_violations, join_writers, spawn_writers, verify_all};
use crate::support::{every_database, TestDb};

#[every_database]
async fn acknowledged_writes_and_sessions_survive_repeated_sigkill(database_url: &str) {
    survive_repeated_sigkill(database_url, &[]).await;
}

/// `synchronous=normal` skips the sync at each commit, but a commit is in
/// the WAL file (the operating system's cache) before it is acknowledged,
/// so a crash of the process still loses nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_synchronous_normal_loses_nothing_on_sigkill() {
    let db = TestDb::sqlite();
    survive_repeated_sigkill(&db.url(), &[("PUSHTOKEN_SQLITE_SYNCHRONOUS", "normal")]).await;
}

async fn survive_repeated_sigkill(database_url: &str, env: &[(&str, &str)]) {
    const CRASHES: usize = 5;
    let seed: u64 = rand::random();
    eprintln!("seed {seed}");
    let mut rng = StdRng::seed_from_u64(seed);
    let mut server = Server::start_with(database_url, env).await;
    let sessions = server.sessions("writer", 3).await;
    let address = Arc::new(RwLock::new(server.address.clone()));
    let stop = Arc::new(AtomicBool::new(false));
    let tasks = spawn_writers(&sessions, &address, &stop, seed);

    let started = Instant::now();
    for _ in 0..CRASHES {
        // Each instance serves writes before it is killed, however slowly
        // a loaded machine starts it.
        served_a_write(&server).await;
        tokio::time::sleep(Duration::from_millis(rng.gen_range(200..600))).await;
        server.kill_hard().await;
        server = Server::start_with(database_url, env).await;
        *address.write().unwrap() = server.address.clone();
    }
    // Some writes on the last instance too, then stop.
    served_a_write(&server).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    stop.store(true, Ordering::SeqCst);
    let mut writers = join_writers(tasks).await;
    let elapsed = started.elapsed();

    verify_all(&mut writers, &server.address).await;
    eprintln!("{CRASHES} crashes in {elapsed:?}");
    assert_no_violations(&writers);
    let acknowledged: u32 = writers.iter().map(|w| w.acknowledged).sum();
    assert!(
        acknowledged >= 100,
        "only {acknowledged} writes acknowledged"
    );
    let instances = writers
        .iter()
        .flat_map(|w| w.served_by.iter())
        .collect::<std::collections::HashSet<_>>()
        .len();
    assert_eq!(
        instances,
        CRASHES + 1,
        "every instance (each restart) acknowledged writes"
    );
    // Sessions survived every restart: no writer was ever refused (a 401 is
    // a violation), and each token still works on the last instance.
    for token in &sessions {
        let (status, body) = server.call("GET", FAMILIES[0], Some(token), None).await;
        assert_eq!(status, 200, "the session survives: {body}");
    }
    server.stop().await;
}

/// Waits until `server` has answered a token write with success (its own
/// request metrics say so; each instance is a process of its own).
async fn served_a_write(server: &Server) {
    for _ in 0..400 {
        let (_, text) = server.call_text("GET", "/metrics", None, None).await;
        let served = text.lines().any(|line| {
            line.starts_with("pushtoken_http_requests_total{")
                && line.contains("token")
                && (line.contains("status=\"200\"") || line.contains("status=\"201\""))
        });
        if served {
            return;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    panic!("the instance at {} served no write in 10 s", server.address);
}
