//! Release metadata signed by the tracker, and the client-side checks that
//! stop rollbacks (older versions) and freezes (expired metadata).

use crate::{CLOCK_SKEW_SECS, decode, encode, from_hex, to_hex};
use serde::{Deserialize, Serialize};
use shoal_types::{Hash, PublicKey, SecretKey, Signature};

/// Signature domain of release metadata.
pub const DOMAIN: &str = "shoal/release/v1";

/// What the tracker says a release is.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Release {
    pub product: String,
    pub channel: String,
    /// Monotonic per (product, channel), assigned by the tracker.
    pub version: u64,
    /// BLAKE3 of the publisher-signed manifest's canonical bytes.
    pub manifest_hash: Hash,
    /// Bytes of unique chunks (what a fresh install downloads).
    pub total_size: u64,
    /// The publisher key that signed the manifest, which the tracker checked
    /// is authorised for the product when the release was registered.
    pub publisher: PublicKey,
    pub published_at: u64,
    /// After this time a client must refuse the metadata (freeze protection).
    pub expires_at: u64,
}

impl Release {
    /// The release id, which names its swarm: BLAKE3 over what identifies the
    /// release (product, channel, version, manifest). It leaves out
    /// `expires_at`, so the tracker can re-sign metadata with a fresh expiry
    /// without moving the swarm.
    pub fn id(&self) -> Hash {
        Hash::of(&encode(&(
            "shoal/release-id/v1",
            &self.product,
            &self.channel,
            self.version,
            self.manifest_hash,
        )))
    }
}

/// Release metadata with the tracker's signature. Text form: hex.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SignedRelease {
    release: Vec<u8>,
    signature: Signature,
}

/// Why release metadata was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ReleaseError {
    #[error("release metadata is malformed")]
    Malformed,
    #[error("release metadata signature is invalid")]
    Signature,
    #[error(
        "release metadata expired at {expires_at} (now {now}); the tracker may be replaying stale data"
    )]
    Expired { expires_at: u64, now: u64 },
    #[error(
        "release version {offered} is older than version {accepted} already accepted (rollback refused)"
    )]
    Rollback { offered: u64, accepted: u64 },
    #[error("release is for {product}/{channel}, not the one requested")]
    WrongChannel { product: String, channel: String },
}

impl SignedRelease {
    pub fn sign(release: &Release, tracker: &SecretKey) -> SignedRelease {
        let bytes = encode(release);
        let signature = tracker.sign(DOMAIN, &bytes);
        SignedRelease {
            release: bytes,
            signature,
        }
    }

    pub fn to_bytes(&self) -> Vec<u8> {
        encode(self)
    }

    pub fn from_bytes(bytes: &[u8]) -> Result<SignedRelease, ReleaseError> {
        decode(bytes).ok_or(ReleaseError::Malformed)
    }

    pub fn to_text(&self) -> String {
        to_hex(&self.to_bytes())
    }

    pub fn from_text(text: &str) -> Result<SignedRelease, ReleaseError> {
        SignedRelease::from_bytes(&from_hex(text.trim()).ok_or(ReleaseError::Malformed)?)
    }

    /// The release after checking only the tracker's signature.
    pub fn open(&self, tracker: &PublicKey) -> Result<Release, ReleaseError> {
        tracker
            .verify(DOMAIN, &self.release, &self.signature)
            .map_err(|_| ReleaseError::Signature)?;
        decode(&self.release).ok_or(ReleaseError::Malformed)
    }

    /// What a client checks before acting on a release: the signature, that
    /// it is for the product and channel asked for, that it has not expired,
    /// and that its version is not older than `highest_accepted`.
    pub fn verify(
        &self,
        tracker: &PublicKey,
        product: &str,
        channel: &str,
        now: u64,
        highest_accepted: Option<u64>,
    ) -> Result<Release, ReleaseError> {
        let release = self.open(tracker)?;
        if release.product != product || release.channel != channel {
            return Err(ReleaseError::WrongChannel {
                product: release.product,
                channel: release.channel,
            });
        }
        // The same clock-skew allowance as tokens: a verifier whose clock
        // runs a little fast must not refuse metadata the tracker just signed.
        if now > release.expires_at.saturating_add(CLOCK_SKEW_SECS) {
            return Err(ReleaseError::Expired {
                expires_at: release.expires_at,
                now,
            });
        }
        if let Some(accepted) = highest_accepted
            && release.version < accepted
        {
            return Err(ReleaseError::Rollback {
                offered: release.version,
                accepted,
            });
        }
        Ok(release)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn release(version: u64) -> Release {
        Release {
            product: "game".into(),
            channel: "stable".into(),
            version,
            manifest_hash: Hash::of(b"m"),
            total_size: 10,
            publisher: SecretKey::from_seed([9; 32]).public(),
            published_at: 100,
            expires_at: 10_000,
        }
    }

    #[test]
    fn checks() {
        let key = SecretKey::from_seed([1; 32]);
        let pk = key.public();
        let s =
            SignedRelease::from_text(&SignedRelease::sign(&release(5), &key).to_text()).unwrap();
        assert_eq!(
            s.verify(&pk, "game", "stable", 200, Some(5)).unwrap(),
            release(5)
        );
        assert_eq!(
            s.verify(&pk, "game", "stable", 200, None).unwrap().version,
            5
        );
        assert_eq!(
            s.verify(&pk, "game", "stable", 200, Some(6)),
            Err(ReleaseError::Rollback {
                offered: 5,
                accepted: 6
            })
        );
        // expiry allows the tokens' clock skew, and not a second more
        assert!(
            s.verify(&pk, "game", "stable", 10_000 + CLOCK_SKEW_SECS, None)
                .is_ok()
        );
        assert!(matches!(
            s.verify(&pk, "game", "stable", 10_001 + CLOCK_SKEW_SECS, None),
            Err(ReleaseError::Expired { .. })
        ));
        assert!(matches!(
            s.verify(&pk, "game", "beta", 200, None),
            Err(ReleaseError::WrongChannel { .. })
        ));
        let other = SecretKey::from_seed([2; 32]).public();
        assert_eq!(
            s.verify(&other, "game", "stable", 200, None),
            Err(ReleaseError::Signature)
        );
        assert_eq!(SignedRelease::from_text("00"), Err(ReleaseError::Malformed));
    }

    #[test]
    fn id_ignores_expiry_only() {
        let mut a = release(5);
        let id = a.id();
        a.expires_at += 1;
        assert_eq!(a.id(), id);
        a.version += 1;
        assert_ne!(a.id(), id);
    }
}
