//! Password hashing (Argon2id, on low-priority threads of its own, admitted
//! up to a bound) and the opaque random secrets used as session tokens and refresh
//! keys.

use std::sync::Arc;

use anyhow::Context;
use argon2::password_hash::{
    rand_core::OsRng, PasswordHash, PasswordHasher, PasswordVerifier, SaltString,
};
use argon2::{Algorithm, Argon2, Params, Version};
use rand::RngCore;
use sha2::{Digest, Sha256};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// Hashes and verifies passwords on threads of their own, one a core, each
/// at the lowest scheduling priority (nice 19 and `SCHED_IDLE`): a hash uses
/// whatever CPU the other routes leave, so a flood of logins cannot slow a GET, and an idle
/// server still hashes on every core. A hash is admitted
/// ([`Passwords::admit`]) while fewer than the queue's length wait: a flood
/// of logins is refused at once rather than held, each holding its place in
/// the server's in-flight cap; at most one 19 MiB Argon2 block a thread is
/// held.
#[derive(Clone)]
pub struct Passwords {
    params: Params,
    workers: Arc<Workers>,
    /// Places of the hashes waiting or running.
    places: Arc<Semaphore>,
    /// A hash of a random password, verified when the user does not exist so
    /// that a wrong username costs as much as a wrong password.
    dummy: Arc<String>,
}

type Job = Box<dyn FnOnce() + Send>;

/// The hashing threads and the queue they take their work from. Dropping the
/// last sender (with the last [`Passwords`]) ends them.
struct Workers {
    jobs: std::sync::mpsc::Sender<Job>,
}

impl Workers {
    fn start(count: usize) -> anyhow::Result<Self> {
        let (jobs, queue) = std::sync::mpsc::channel::<Job>();
        let queue = Arc::new(std::sync::Mutex::new(queue));
        for index in 0..count {
            let queue = Arc::clone(&queue);
            std::thread::Builder::new()
                .name(format!("pushtoken-hash-{index}"))
                .spawn(move || {
                    lowest_priority();
                    loop {
                        // The lock is held only while waiting for a job, never
                        // while running one.
                        let job = match queue.lock() {
                            Ok(queue) => queue.recv(),
                            Err(_) => return,
                        };
                        match job {
                            Ok(job) => job(),
                            Err(_) => return,
                        }
                    }
                })
                .context("starting a password hashing thread")?;
        }
        Ok(Self { jobs })
    }

    async fn run<T: Send + 'static>(
        &self,
        work: impl FnOnce() -> T + Send + 'static,
    ) -> anyhow::Result<T> {
        let (done, result) = tokio::sync::oneshot::channel();
        let job: Job = Box::new(move || {
            // The caller may have gone (its request cancelled): nothing to do.
            let _ = done.send(work());
        });
        self.jobs
            .send(job)
            .map_err(|_| anyhow::anyhow!("password hashing closed"))?;
        result.await.context("password hashing thread")
    }
}

/// Puts the calling thread at the lowest priority there is: nice 19, and on
/// Linux the `SCHED_IDLE` policy, under which a thread runs only on a core
/// that nothing else wants and gives the core up as soon as another thread
/// wakes there (at nice 19 a thread still gets about 1.5% of a busy core and
/// waits out its slice before a waking thread runs). On Linux a thread's nice
/// value and policy are its own, so only the hashing threads are lowered;
/// lowering one's own priority needs no privilege. Elsewhere, or if refused,
/// hashing runs at the normal priority, or at nice 19 alone.
fn lowest_priority() {
    #[cfg(target_os = "linux")]
    {
        // SAFETY: setpriority takes plain integers and touches no memory of
        // ours; `who` 0 with PRIO_PROCESS is the calling thread on Linux.
        let status = unsafe { libc::setpriority(libc::PRIO_PROCESS, 0, 19) };
        if status != 0 {
            tracing::warn!(
                error = %std::io::Error::last_os_error(),
                "could not lower the priority of a password hashing thread"
            );
        }
        let param = libc::sched_param { sched_priority: 0 };
        // SAFETY: `param` outlives the call, which only reads it; pid 0 is
        // the calling thread.
        let status = unsafe { libc::sched_setscheduler(0, libc::SCHED_IDLE, &param) };
        if status != 0 {
            tracing::warn!(
                error = %std::io::Error::last_os_error(),
                "could not put a password hashing thread on the idle scheduling policy"
            );
        }
    }
}

impl Passwords {
    /// Hashes at `params`, with at most `queue` waiting besides those
    /// running.
    pub fn new(params: Params, queue: usize) -> anyhow::Result<Self> {
        let workers = std::thread::available_parallelism().map_or(2, |n| n.get());
        let dummy = hash_blocking(&params, &hex::encode(random_bytes()))?;
        Ok(Self {
            params,
            workers: Arc::new(Workers::start(workers)?),
            places: Arc::new(Semaphore::new(workers + queue)),
            dummy: Arc::new(dummy),
        })
    }

    /// A place for hashing, `None` when the queue is full.
    pub fn admit(&self) -> Option<Admitted> {
        let place = self.places.clone().try_acquire_owned().ok()?;
        Some(Admitted {
            passwords: self.clone(),
            _place: place,
        })
    }

    async fn hash(&self, password: String) -> anyhow::Result<String> {
        let params = self.params.clone();
        self.workers
            .run(move || hash_blocking(&params, &password))
            .await?
    }

    async fn verify(&self, password: String, hash: Option<String>) -> anyhow::Result<bool> {
        let exists = hash.is_some();
        let hash = hash.unwrap_or_else(|| self.dummy.as_str().to_owned());
        let ok = self
            .workers
            .run(move || {
                let parsed = PasswordHash::new(&hash)
                    .map_err(|e| anyhow::anyhow!("stored password hash: {e}"))?;
                Ok::<_, anyhow::Error>(
                    Argon2::default()
                        .verify_password(password.as_bytes(), &parsed)
                        .is_ok(),
                )
            })
            .await??;
        Ok(ok && exists)
    }
}

/// A place among the password hashes waiting or running, for one request's
/// hashing.
pub struct Admitted {
    passwords: Passwords,
    _place: OwnedSemaphorePermit,
}

impl Admitted {
    /// A new hash of `password`.
    pub async fn hash(&self, password: String) -> anyhow::Result<String> {
        self.passwords.hash(password).await
    }

    /// Whether `password` matches `hash`; `None` verifies against a dummy
    /// hash (and is `false`), so that a missing user costs as much as a
    /// wrong password.
    pub async fn verify(&self, password: String, hash: Option<String>) -> anyhow::Result<bool> {
        self.passwords.verify(password, hash).await
    }
}

/// Hashes a password with Argon2id at the given cost.
pub fn hash_blocking(params: &Params, password: &str) -> anyhow::Result<String> {
    let argon = Argon2::new(Algorithm::Argon2id, Version::V0x13, params.clone());
    let salt = SaltString::generate(&mut OsRng);
    Ok(argon
        .hash_password(password.as_bytes(), &salt)
        .map_err(|e| anyhow::anyhow!("hashing password: {e}"))?
        .to_string())
}

fn random_bytes() -> [u8; 32] {
    let mut bytes = [0u8; 32];
    rand::rngs::OsRng.fill_bytes(&mut bytes);
    bytes
}

/// A new opaque secret: 256 random bits, hex-encoded.
pub fn new_secret() -> String {
    hex::encode(random_bytes())
}

/// What the database keeps of a secret: its SHA-256, hex-encoded.
pub fn secret_hash(secret: &str) -> String {
    hex::encode(Sha256::digest(secret.as_bytes()))
}

/// Whether `a` and `b` are equal, in a time that tells neither where they
/// differ nor how long the other is: what is compared, in constant time, are
/// their SHA-256 digests, which are of one length whatever was sent. (A
/// comparison of the texts themselves answers at once when the lengths
/// differ, which tells a caller the key's length.)
pub fn constant_time_eq(a: &str, b: &str) -> bool {
    use subtle::ConstantTimeEq;
    let (a, b) = (Sha256::digest(a.as_bytes()), Sha256::digest(b.as_bytes()));
    a.as_slice().ct_eq(b.as_slice()).into()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cheap() -> Params {
        Params::new(8, 1, 1, None).unwrap()
    }

    #[tokio::test]
    async fn a_password_hashed_by_the_pool_verifies_and_a_wrong_one_does_not() {
        let passwords = Passwords::new(cheap(), 4).unwrap();
        let admitted = passwords.admit().unwrap();
        let hash = admitted.hash("correct horse".into()).await.unwrap();
        assert!(admitted
            .verify("correct horse".into(), Some(hash.clone()))
            .await
            .unwrap());
        assert!(!admitted
            .verify("wrong horse".into(), Some(hash))
            .await
            .unwrap());
        // A missing user is refused whatever the password.
        assert!(!admitted.verify("anything".into(), None).await.unwrap());
    }

    #[cfg(target_os = "linux")]
    #[tokio::test]
    async fn hashing_runs_at_the_lowest_priority_and_the_callers_thread_keeps_its_own() {
        let passwords = Passwords::new(cheap(), 4).unwrap();
        // SAFETY: getpriority reads the calling thread's nice value.
        let here = unsafe { libc::getpriority(libc::PRIO_PROCESS, 0) };
        let there = passwords
            .workers
            .run(|| unsafe { libc::getpriority(libc::PRIO_PROCESS, 0) })
            .await
            .unwrap();
        assert_eq!(there, 19);
        // SAFETY: sched_getscheduler reads the calling thread's policy.
        let policy = passwords
            .workers
            .run(|| unsafe { libc::sched_getscheduler(0) })
            .await
            .unwrap();
        assert_eq!(policy, libc::SCHED_IDLE);
        // SAFETY: as above.
        let ours = unsafe { libc::sched_getscheduler(0) };
        assert_eq!(
            ours,
            libc::SCHED_OTHER,
            "the caller's thread changed policy"
        );
        // SAFETY: as above.
        let after = unsafe { libc::getpriority(libc::PRIO_PROCESS, 0) };
        assert_eq!(here, after, "the caller's thread was lowered too");
    }

    #[test]
    fn admission_stops_at_the_threads_and_the_queue_and_resumes_when_a_place_frees() {
        let passwords = Passwords::new(cheap(), 2).unwrap();
        let threads = std::thread::available_parallelism().map_or(2, |n| n.get());
        let held: Vec<_> = (0..threads + 2)
            .map(|_| passwords.admit().expect("a free place"))
            .collect();
        assert!(passwords.admit().is_none());
        drop(held);
        assert!(passwords.admit().is_some());
    }

    #[tokio::test]
    async fn many_hashes_at_once_all_complete() {
        let passwords = Passwords::new(cheap(), 64).unwrap();
        let hashes = futures_util::future::join_all((0..32).map(|i| {
            let admitted = passwords.admit().unwrap();
            async move { admitted.hash(format!("password {i}")).await }
        }))
        .await;
        assert_eq!(hashes.iter().filter(|h| h.is_ok()).count(), 32);
    }

    #[test]
    fn constant_time_eq_tells_equal_texts_from_any_other() {
        let key = "registration-key-0123";
        assert!(constant_time_eq(key, key));
        assert!(constant_time_eq("", ""));
        for other in [
            "",
            "registration-key-012",
            "registration-key-01234",
            "Registration-key-0123",
            "registration-key-0124",
        ] {
            assert!(!constant_time_eq(key, other), "{other:?}");
            assert!(!constant_time_eq(other, key), "{other:?}");
        }
    }
}
