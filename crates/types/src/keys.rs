//! ed25519 keys and signatures, with domain-separated signing and the
//! secret-key file format shared by publishers, the tracker and seeds.

use crate::bytes::hex_bytes;
use ed25519_dalek::{Signer as _, SigningKey, VerifyingKey};

/// An ed25519 public key (32 bytes). Parsing never fails on a curve point;
/// an invalid point is reported by [`PublicKey::verify`].
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PublicKey(pub [u8; 32]);
hex_bytes!(PublicKey, 32);

/// An ed25519 signature (64 bytes).
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct Signature(pub [u8; 64]);
hex_bytes!(Signature, 64);

/// Why a signature was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SignatureError {
    /// The public key is not a valid ed25519 point.
    #[error("public key {0} is not a valid ed25519 key")]
    BadKey(PublicKey),
    /// The signature does not match the message under this key.
    #[error("signature does not verify under key {0}")]
    Mismatch(PublicKey),
}

/// The exact bytes signed for `payload` in `domain`. Distinct domains keep a
/// signature made for one purpose (say, a manifest) from being valid for
/// another (say, a swarm token).
fn signed_message(domain: &str, payload: &[u8]) -> Vec<u8> {
    let mut msg = Vec::with_capacity(domain.len() + 1 + payload.len());
    msg.extend_from_slice(domain.as_bytes());
    msg.push(0);
    msg.extend_from_slice(payload);
    msg
}

impl PublicKey {
    /// Checks `signature` over `payload` in `domain` (strict verification:
    /// no malleable or small-order signatures).
    pub fn verify(
        &self,
        domain: &str,
        payload: &[u8],
        signature: &Signature,
    ) -> Result<(), SignatureError> {
        let key = VerifyingKey::from_bytes(&self.0).map_err(|_| SignatureError::BadKey(*self))?;
        let sig = ed25519_dalek::Signature::from_bytes(&signature.0);
        key.verify_strict(&signed_message(domain, payload), &sig)
            .map_err(|_| SignatureError::Mismatch(*self))
    }
}

/// Why a secret-key file could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KeyFileError {
    /// The file does not start with the Shoal key header.
    #[error(
        "not a shoal secret key file (expected first line {:?})",
        SecretKey::FILE_HEADER
    )]
    Header,
    /// The key line is missing or not 64 hex digits.
    #[error("malformed secret key: {0}")]
    Key(#[from] crate::ParseHexError),
    /// No key line follows the header.
    #[error("secret key file has no key line")]
    Missing,
}

/// An ed25519 secret key. Its bytes are wiped on drop and never printed.
#[derive(Clone)]
pub struct SecretKey(SigningKey);

impl std::fmt::Debug for SecretKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "SecretKey(public: {})", self.public())
    }
}

impl SecretKey {
    /// First line of every secret-key file.
    pub const FILE_HEADER: &'static str = "shoal-ed25519-secret-key-v1";

    /// A fresh key from the operating system's random source.
    pub fn generate() -> Result<Self, getrandom::Error> {
        let mut seed = [0u8; 32];
        getrandom::getrandom(&mut seed)?;
        let key = Self::from_seed(seed);
        seed.fill(0);
        Ok(key)
    }

    /// The key whose 32-byte seed is `seed` (deterministic; for tests and key files).
    pub fn from_seed(seed: [u8; 32]) -> Self {
        SecretKey(SigningKey::from_bytes(&seed))
    }

    /// The 32-byte seed. Handle with care.
    pub fn seed(&self) -> [u8; 32] {
        self.0.to_bytes()
    }

    /// The matching public key.
    pub fn public(&self) -> PublicKey {
        PublicKey(self.0.verifying_key().to_bytes())
    }

    /// Signs `payload` in `domain`; see [`PublicKey::verify`].
    pub fn sign(&self, domain: &str, payload: &[u8]) -> Signature {
        Signature(self.0.sign(&signed_message(domain, payload)).to_bytes())
    }

    /// The text of a key file: a header, a comment naming the public key, and
    /// the hex seed.
    pub fn to_file_text(&self) -> String {
        let seed: String = self.seed().iter().map(|b| format!("{b:02x}")).collect();
        format!(
            "{}\n# public key: {}\n{seed}\n",
            Self::FILE_HEADER,
            self.public()
        )
    }

    /// Parses the text written by [`SecretKey::to_file_text`]. Lines starting
    /// with `#` and blank lines are ignored.
    pub fn from_file_text(text: &str) -> Result<Self, KeyFileError> {
        let mut lines = text
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty() && !l.starts_with('#'));
        if lines.next() != Some(Self::FILE_HEADER) {
            return Err(KeyFileError::Header);
        }
        let line = lines.next().ok_or(KeyFileError::Missing)?;
        let seed = crate::bytes::decode_hex::<32>(line)?;
        Ok(Self::from_seed(seed))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sign_and_verify() {
        let key = SecretKey::from_seed([7; 32]);
        let sig = key.sign("test", b"hello");
        key.public().verify("test", b"hello", &sig).unwrap();
        assert_eq!(
            key.public().verify("test", b"hellO", &sig),
            Err(SignatureError::Mismatch(key.public()))
        );
        // the same bytes under another domain are not accepted
        assert!(key.public().verify("other", b"hello", &sig).is_err());
        let other = SecretKey::from_seed([8; 32]);
        assert!(other.public().verify("test", b"hello", &sig).is_err());
    }

    #[test]
    fn key_file_round_trip() {
        let key = SecretKey::generate().unwrap();
        let text = key.to_file_text();
        assert!(text.contains(&key.public().to_string()));
        let back = SecretKey::from_file_text(&text).unwrap();
        assert_eq!(back.public(), key.public());
    }

    #[test]
    fn key_file_errors() {
        assert_eq!(
            SecretKey::from_file_text("hello\n").unwrap_err(),
            KeyFileError::Header
        );
        let header_only = format!("{}\n", SecretKey::FILE_HEADER);
        assert_eq!(
            SecretKey::from_file_text(&header_only).unwrap_err(),
            KeyFileError::Missing
        );
        let short = format!("{}\nabcd\n", SecretKey::FILE_HEADER);
        assert!(matches!(
            SecretKey::from_file_text(&short),
            Err(KeyFileError::Key(_))
        ));
    }

    #[test]
    fn debug_hides_secret() {
        let key = SecretKey::from_seed([9; 32]);
        let seed_hex: String = key.seed().iter().map(|b| format!("{b:02x}")).collect();
        assert!(!format!("{key:?}").contains(&seed_hex));
    }
}
