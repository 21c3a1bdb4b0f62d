//! Client credentials as they are written in an auth file and presented on a call: new bearer
//! tokens, their stored form (`sha256:<hex>`), secrets stored as argon2id PHC strings, and the
//! constant-time checks of both. The CLI writes these forms and the server reads them, so one
//! module owns them.

use argon2::{
    Argon2,
    password_hash::{PasswordHasher, PasswordVerifier, phc::PasswordHash},
};
use base64::{Engine, engine::general_purpose::URL_SAFE_NO_PAD};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use crate::Error;

/// How a stored token hash begins.
pub const TOKEN_HASH_PREFIX: &str = "sha256:";

/// Random bytes in a new token: 256 bits, so guessing one is hopeless and a fast hash is enough
/// to store it (see [`TokenHash`]).
pub const TOKEN_BYTES: usize = 32;

/// What every new token starts with: a token never starts with `-` (which a command line would
/// take for a flag, as URL-safe base64 may), and a secret scanner can recognise one in a leak.
pub const TOKEN_PREFIX: &str = "jw_";

/// A new random bearer token: [`TOKEN_PREFIX`], then URL-safe base64 of [`TOKEN_BYTES`] bytes
/// from the OS generator.
pub fn new_token() -> Result<String, Error> {
    let mut bytes = [0u8; TOKEN_BYTES];
    getrandom::fill(&mut bytes).map_err(|e| Error::internal(format!("random bytes: {e}")))?;
    Ok(format!("{TOKEN_PREFIX}{}", URL_SAFE_NO_PAD.encode(bytes)))
}

/// The stored form of a token, `sha256:<64 hex digits>`.
pub fn token_hash(token: &str) -> String {
    TokenHash::of(token).to_string()
}

/// The stored form of a client secret: an argon2id PHC string with a random salt.
pub fn secret_hash(secret: &str) -> Result<String, Error> {
    Argon2::default()
        .hash_password(secret.as_bytes())
        .map(|hash| hash.to_string())
        .map_err(|e| Error::internal(format!("argon2: {e}")))
}

/// A stored token hash. SHA-256, not a password hash: a token carries 256 random bits, so no
/// dictionary or brute force applies, and a fast hash keeps the check of every call cheap. A
/// human-chosen secret goes in a [`SecretHash`] instead.
#[derive(Clone, PartialEq, Eq)]
pub struct TokenHash([u8; 32]);

impl TokenHash {
    /// The hash of a presented token.
    pub fn of(token: &str) -> TokenHash {
        TokenHash(Sha256::digest(token.as_bytes()).into())
    }

    /// Reads the stored form `sha256:<64 hex digits>`.
    pub fn parse(stored: &str) -> Result<TokenHash, String> {
        let hex = stored
            .strip_prefix(TOKEN_HASH_PREFIX)
            .ok_or_else(|| format!("does not start with {TOKEN_HASH_PREFIX:?}"))?;
        if hex.len() != 64 {
            return Err("is not 64 hex digits after \"sha256:\"".to_owned());
        }
        let mut bytes = [0u8; 32];
        for (i, byte) in bytes.iter_mut().enumerate() {
            *byte = u8::from_str_radix(&hex[2 * i..2 * i + 2], 16)
                .map_err(|_| "is not 64 hex digits after \"sha256:\"".to_owned())?;
        }
        Ok(TokenHash(bytes))
    }

    /// The hash's first eight bytes, to find stored hashes by without comparing them: a lookup
    /// by it tells the caller only whether some stored hash shares 64 bits with the hash of what
    /// it sent, which it cannot steer (it would need a SHA-256 preimage). The full comparison is
    /// [`TokenHash::matches`].
    pub fn index(&self) -> u64 {
        let mut first = [0u8; 8];
        first.copy_from_slice(&self.0[..8]);
        u64::from_le_bytes(first)
    }

    /// True if both are the same hash, compared in constant time.
    pub fn matches(&self, other: &TokenHash) -> bool {
        self.0.ct_eq(&other.0).into()
    }
}

impl std::fmt::Display for TokenHash {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(TOKEN_HASH_PREFIX)?;
        for byte in self.0 {
            write!(f, "{byte:02x}")?;
        }
        Ok(())
    }
}

impl std::fmt::Debug for TokenHash {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "TokenHash({self})")
    }
}

/// What the stand-in hash ([`SecretHash::stand_in`]) is made from. Not a secret: the stand-in
/// only ever costs time and never lets anyone in.
const STAND_IN_PASSWORD: &[u8] = b"jetway stand-in: no client has this secret";

/// The stand-in's salt (16 bytes, argon2's recommended length).
const STAND_IN_SALT: &[u8] = b"jetway-stand-in!";

/// A stored client secret: an argon2id PHC string (`$argon2id$v=19$...`); it displays as that
/// string (a hash, not the secret).
#[derive(Clone, Debug)]
pub struct SecretHash(PasswordHash);

impl std::fmt::Display for SecretHash {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.0.fmt(f)
    }
}

impl SecretHash {
    /// Reads a PHC string; only argon2id is accepted.
    pub fn parse(stored: &str) -> Result<SecretHash, String> {
        let hash = PasswordHash::new(stored)
            .map_err(|e| format!("is not a PHC string (like $argon2id$v=19$...): {e}"))?;
        if hash.algorithm.as_str() != "argon2id" {
            return Err(format!("uses {}, not argon2id", hash.algorithm.as_str()));
        }
        Ok(SecretHash(hash))
    }

    /// A hash with the parameters [`secret_hash`] writes, that no client's id leads to: a
    /// login with an unknown client id (or one without a secret) is checked against it, so that
    /// it costs the same argon2 work as a wrong secret and its answer's timing does not tell which
    /// client ids exist. Its result must be ignored.
    pub fn stand_in() -> &'static SecretHash {
        static STAND_IN: std::sync::LazyLock<SecretHash> = std::sync::LazyLock::new(|| {
            #[expect(
                clippy::expect_used,
                reason = "fixed input of valid lengths: argon2 cannot refuse it"
            )]
            let hash = Argon2::default()
                .hash_password_with_salt(STAND_IN_PASSWORD, STAND_IN_SALT)
                .expect("argon2 hashes a fixed password and salt");
            SecretHash(hash)
        });
        &STAND_IN
    }

    /// True if `secret` is the one hashed. argon2 compares its output in constant time.
    pub fn verify(&self, secret: &str) -> bool {
        Argon2::default()
            .verify_password(secret.as_bytes(), &self.0)
            .is_ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_new_token_is_random_and_its_hash_reads_back() {
        let (a, b) = (new_token().unwrap(), new_token().unwrap());
        assert_ne!(a, b);
        let random = a.strip_prefix(TOKEN_PREFIX).unwrap();
        assert_eq!(URL_SAFE_NO_PAD.decode(random).unwrap().len(), TOKEN_BYTES);
        let stored = token_hash(&a);
        assert!(
            stored.starts_with("sha256:") && stored.len() == 7 + 64,
            "{stored}"
        );
        let parsed = TokenHash::parse(&stored).unwrap();
        assert!(parsed.matches(&TokenHash::of(&a)));
        assert!(!parsed.matches(&TokenHash::of(&b)));
        assert_eq!(parsed.to_string(), stored);
    }

    #[test]
    fn a_malformed_token_hash_is_refused() {
        assert!(TokenHash::parse("md5:00").is_err());
        assert!(TokenHash::parse("sha256:abc").is_err());
        assert!(TokenHash::parse(&format!("sha256:{}", "zz".repeat(32))).is_err());
    }

    #[test]
    fn a_secret_hash_verifies_its_secret_only() {
        let stored = secret_hash("correct horse").unwrap();
        assert!(stored.starts_with("$argon2id$"), "{stored}");
        let hash = SecretHash::parse(&stored).unwrap();
        assert!(hash.verify("correct horse"));
        assert!(!hash.verify("correct horse "));
        assert!(SecretHash::parse("plain text").is_err());
    }

    #[test]
    fn the_stand_in_costs_what_a_stored_secret_costs() {
        let stored = SecretHash::parse(&secret_hash("any").unwrap()).unwrap();
        let stand_in = SecretHash::stand_in();
        assert_eq!(stand_in.0.algorithm, stored.0.algorithm);
        assert_eq!(stand_in.0.version, stored.0.version);
        assert_eq!(stand_in.0.params, stored.0.params);
        assert!(!stand_in.verify("any"));
    }
}
