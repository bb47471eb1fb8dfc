//! Password hashing (Argon2id, off the async threads, admitted up to a
//! bound) and the opaque random secrets used as session tokens and refresh
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

/// Hashes and verifies passwords on the blocking pool, on at most all cores
/// but one at a time (one on a 1- or 2-core machine), so a burst of logins
/// leaves a core to the other routes and holds at most that many 19 MiB
/// Argon2 blocks. A hash is admitted ([`Passwords::admit`]) while fewer
/// than the queue's length wait: a flood of logins is refused at once
/// rather than held, each holding its place in the server's in-flight cap.
#[derive(Clone)]
pub struct Passwords {
    params: Params,
    permits: Arc<Semaphore>,
    /// Places of the hashes waiting or running.
    places: Arc<Semaphore>,
    /// A hash of a random password, verified when the user does not exist so
    /// that a wrong username costs as much as a wrong password.
    dummy: Arc<String>,
}

impl Passwords {
    /// Hashes at `params`, with at most `queue` waiting besides those
    /// running.
    pub fn new(params: Params, queue: usize) -> anyhow::Result<Self> {
        let cores = std::thread::available_parallelism().map_or(2, |n| n.get());
        let workers = cores.saturating_sub(1).max(1);
        let dummy = hash_blocking(&params, &hex::encode(random_bytes()))?;
        Ok(Self {
            params,
            permits: Arc::new(Semaphore::new(workers)),
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
        self.run(move || hash_blocking(&params, &password)).await?
    }

    async fn verify(&self, password: String, hash: Option<String>) -> anyhow::Result<bool> {
        let exists = hash.is_some();
        let hash = hash.unwrap_or_else(|| self.dummy.as_str().to_owned());
        let ok = self
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

    async fn run<T: Send + 'static>(
        &self,
        work: impl FnOnce() -> T + Send + 'static,
    ) -> anyhow::Result<T> {
        let _permit = self
            .permits
            .acquire()
            .await
            .context("password hashing closed")?;
        tokio::task::spawn_blocking(work)
            .await
            .context("password hashing task")
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
