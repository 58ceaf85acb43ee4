//! Secrets: the server key, variables encrypted at rest
//! (ChaCha20-Poly1305), tokens (random, stored only as SHA-256 hashes),
//! and webhook signatures (HMAC-SHA256).

use crate::error::{ServeError, StoreError};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use chacha20poly1305::aead::{Aead, KeyInit};
use chacha20poly1305::{ChaCha20Poly1305, Key, Nonce};
use hmac::{Hmac, Mac};
use sha2::{Digest, Sha256};
use std::path::Path;

type HmacSha256 = Hmac<Sha256>;

/// What a token authenticates, from its prefix.
pub const USER_TOKEN_PREFIX: &str = "gpat-";
pub const RUNNER_TOKEN_PREFIX: &str = "glrt-";
pub const JOB_TOKEN_PREFIX: &str = "gjob-";
pub const REGISTRATION_TOKEN_PREFIX: &str = "grrt-";

/// The key variables are encrypted with; never stored in the database.
#[derive(Clone)]
pub struct ServerKey([u8; 32]);

impl std::fmt::Debug for ServerKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ServerKey(***)")
    }
}

impl ServerKey {
    /// `GANTRY_SERVER_KEY` (64 hex digits) when set, else `DIR/server.key`,
    /// created (mode 0600) on first start.
    pub fn load(env_value: Option<&str>, data_dir: &Path) -> Result<ServerKey, ServeError> {
        if let Some(text) = env_value {
            return Self::parse(text.trim()).ok_or_else(|| {
                ServeError::Config("GANTRY_SERVER_KEY must be 64 hex digits (32 bytes)".into())
            });
        }
        let path = data_dir.join("server.key");
        match std::fs::read_to_string(&path) {
            Ok(text) => Self::parse(text.trim()).ok_or_else(|| {
                ServeError::Config(format!(
                    "{} is not a server key (64 hex digits); restore it from a backup, or delete it only if no variables are stored",
                    path.display()
                ))
            }),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                let mut key = [0u8; 32];
                fill_random(&mut key);
                gantry_engine::state::write_private(&path, hex::encode(key).as_bytes()).map_err(
                    |source| ServeError::Io {
                        what: "cannot write the server key",
                        path: path.display().to_string(),
                        source,
                    },
                )?;
                Ok(ServerKey(key))
            }
            Err(source) => Err(ServeError::Io {
                what: "cannot read the server key",
                path: path.display().to_string(),
                source,
            }),
        }
    }

    pub fn parse(text: &str) -> Option<ServerKey> {
        let bytes = hex::decode(text).ok()?;
        Some(ServerKey(bytes.try_into().ok()?))
    }

    /// Encrypts a secret for storage: `v1:` base64(nonce ‖ ciphertext).
    pub fn encrypt(&self, plain: &str) -> String {
        let cipher = ChaCha20Poly1305::new(Key::from_slice(&self.0));
        let mut nonce = [0u8; 12];
        fill_random(&mut nonce);
        let sealed = cipher
            .encrypt(Nonce::from_slice(&nonce), plain.as_bytes())
            .expect("ChaCha20-Poly1305 encryption of an in-memory buffer cannot fail");
        let mut out = nonce.to_vec();
        out.extend(sealed);
        format!("v1:{}", B64.encode(out))
    }

    pub fn decrypt(&self, stored: &str) -> Result<String, StoreError> {
        let data = stored
            .strip_prefix("v1:")
            .and_then(|b| B64.decode(b).ok())
            .filter(|d| d.len() > 12)
            .ok_or(StoreError::Decrypt)?;
        let cipher = ChaCha20Poly1305::new(Key::from_slice(&self.0));
        let plain = cipher
            .decrypt(Nonce::from_slice(&data[..12]), &data[12..])
            .map_err(|_| StoreError::Decrypt)?;
        String::from_utf8(plain).map_err(|_| StoreError::Decrypt)
    }

    /// The runner registration token: derived from the key, so every
    /// server process behind a load balancer agrees without storing it.
    pub fn registration_token(&self) -> String {
        let mut mac = <HmacSha256 as Mac>::new_from_slice(&self.0).expect("any key length");
        mac.update(b"gantry runner registration");
        let tag = mac.finalize().into_bytes();
        format!("{REGISTRATION_TOKEN_PREFIX}{}", hex::encode(&tag[..20]))
    }
}

pub fn fill_random(buf: &mut [u8]) {
    getrandom::fill(buf).expect("the operating system's random source is available");
}

/// A new random token with `prefix`.
pub fn new_token(prefix: &str) -> String {
    let mut bytes = [0u8; 20];
    fill_random(&mut bytes);
    format!("{prefix}{}", hex::encode(bytes))
}

/// What the database stores for a token.
pub fn token_hash(token: &str) -> String {
    hex::encode(Sha256::digest(token.as_bytes()))
}

/// Compares in constant time.
pub fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// Checks GitHub's `X-Hub-Signature-256: sha256=HEX` (and Gitea's bare
/// hex `X-Gitea-Signature`) over the raw body.
pub fn verify_hmac_sha256(secret: &str, body: &[u8], signature: &str) -> bool {
    let hex_sig = signature.strip_prefix("sha256=").unwrap_or(signature);
    let Ok(expected) = hex::decode(hex_sig.trim()) else {
        return false;
    };
    let mut mac = <HmacSha256 as Mac>::new_from_slice(secret.as_bytes()).expect("any key length");
    mac.update(body);
    mac.verify_slice(&expected).is_ok()
}

/// `sha256=HEX` for a body, as GitHub signs it (tests and clients).
pub fn sign_hmac_sha256(secret: &str, body: &[u8]) -> String {
    let mut mac = <HmacSha256 as Mac>::new_from_slice(secret.as_bytes()).expect("any key length");
    mac.update(body);
    format!("sha256={}", hex::encode(mac.finalize().into_bytes()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encrypt_round_trips_and_wrong_key_is_refused() {
        let key = ServerKey([7; 32]);
        let stored = key.encrypt("hunter2");
        assert!(!stored.contains("hunter2"));
        assert_eq!(key.decrypt(&stored).unwrap(), "hunter2");
        assert!(ServerKey([8; 32]).decrypt(&stored).is_err());
    }

    #[test]
    fn hmac_signature_is_checked() {
        let sig = sign_hmac_sha256("s3cret", b"{}");
        assert!(verify_hmac_sha256("s3cret", b"{}", &sig));
        assert!(!verify_hmac_sha256("other", b"{}", &sig));
        assert!(!verify_hmac_sha256("s3cret", b"{ }", &sig));
        assert!(!verify_hmac_sha256("s3cret", b"{}", "sha256=zz"));
    }
}
