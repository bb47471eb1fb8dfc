//! The tokens the push socket issues: a keyed hash of what identifies a
//! client, under a secret the server keeps in its database. The same
//! (`imei`, `bundle_id`) gets the same token on every connection, after a
//! restart and on every instance; another pair gets another token; and
//! without the secret, nobody can compute one from the pair.

use hmac::{Hmac, Mac};
use sha2::Sha256;

use crate::secrets::new_secret;
use crate::store::{Store, StoreResult};
use crate::unix_now;

/// The name of the secret in the database.
const SECRET: &str = "push_token_key";

#[derive(Clone)]
pub struct TokenKey(Hmac<Sha256>);

impl std::fmt::Debug for TokenKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("TokenKey([redacted])")
    }
}

impl TokenKey {
    /// The key stored in the database, made and stored first if there is
    /// none.
    pub async fn load(store: &Store) -> StoreResult<Self> {
        let secret = store
            .server_secret(SECRET, &new_secret(), unix_now())
            .await?;
        Ok(Self::new(secret.as_bytes()))
    }

    pub fn new(secret: &[u8]) -> Self {
        Self(Hmac::new_from_slice(secret).expect("HMAC takes a key of any length"))
    }

    /// The token of (`imei`, `bundle_id`): 64 lowercase hex characters.
    pub fn token(&self, imei: &str, bundle_id: &str) -> String {
        let mut mac = self.0.clone();
        // The length first, so no two pairs hash the same text.
        mac.update(&(imei.len() as u64).to_le_bytes());
        mac.update(imei.as_bytes());
        mac.update(bundle_id.as_bytes());
        hex::encode(mac.finalize().into_bytes())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_token_is_64_lowercase_hex_the_same_for_the_same_pair() {
        let key = TokenKey::new(b"secret");
        let token = key.token("860000000000001", "com.lancens.wxdoorbell");
        assert_eq!(token.len(), 64);
        assert!(token
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)));
        assert_eq!(
            token,
            key.token("860000000000001", "com.lancens.wxdoorbell")
        );
    }

    #[test]
    fn another_pair_or_another_key_gives_another_token() {
        let key = TokenKey::new(b"secret");
        let token = key.token("ab", "c");
        assert_ne!(token, key.token("a", "bc"));
        assert_ne!(token, key.token("ab", "d"));
        assert_ne!(token, key.token("abc", ""));
        assert_ne!(token, TokenKey::new(b"other").token("ab", "c"));
    }
}
