//! The login ceiling: how many Argon2id hashes per second the machine makes
//! with the server's parameters (`argon2::Params::default()`: 19 MiB, 2
//! passes, 1 lane), on 1 thread and on every core (the server hashes on one
//! low-priority thread a core, so every core is its ceiling). A login
//! verifies one hash, which costs what making one costs.
//!
//! Usage: hashrate [--duration SECS] [--threads N]   (default 5 s, 1 thread)
//! Prints `{"label":"hashrate","threads":N,"hashes":H,"secs":S,"rps":R}`.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use argon2::password_hash::{PasswordHasher, SaltString};
use argon2::{Algorithm, Argon2, Params, Version};

fn flag(name: &str) -> Option<String> {
    let args: Vec<String> = std::env::args().collect();
    let f = format!("--{name}");
    args.iter()
        .position(|a| *a == f)
        .and_then(|i| args.get(i + 1))
        .cloned()
}

fn main() -> anyhow::Result<()> {
    let secs: f64 = flag("duration").map_or(Ok(5.0), |s| s.parse())?;
    let threads: usize = flag("threads").map_or(Ok(1), |s| s.parse())?;
    let stop = Arc::new(AtomicBool::new(false));
    let hashes = Arc::new(AtomicU64::new(0));
    let start = Instant::now();
    let workers: Vec<_> = (0..threads)
        .map(|_| {
            let (stop, hashes) = (stop.clone(), hashes.clone());
            std::thread::spawn(move || -> anyhow::Result<()> {
                let argon = Argon2::new(Algorithm::Argon2id, Version::V0x13, Params::default());
                let salt = SaltString::from_b64("c2FsdHNhbHRzYWx0c2FsdA")
                    .map_err(|e| anyhow::anyhow!("{e}"))?;
                while !stop.load(Ordering::Relaxed) {
                    argon
                        .hash_password(b"correct horse battery staple", &salt)
                        .map_err(|e| anyhow::anyhow!("{e}"))?;
                    hashes.fetch_add(1, Ordering::Relaxed);
                }
                Ok(())
            })
        })
        .collect();
    std::thread::sleep(Duration::from_secs_f64(secs));
    stop.store(true, Ordering::Relaxed);
    for worker in workers {
        worker
            .join()
            .map_err(|_| anyhow::anyhow!("a hashing thread panicked"))??;
    }
    let elapsed = start.elapsed().as_secs_f64();
    let done = hashes.load(Ordering::Relaxed);
    println!(
        "{}",
        serde_json::json!({
            "label": "hashrate", "threads": threads, "hashes": done,
            "secs": elapsed, "rps": done as f64 / elapsed,
        })
    );
    Ok(())
}
