//! Swarm tokens: short-lived claims signed by the tracker, bound to one peer
//! identity and one swarm.

use crate::{CLOCK_SKEW_SECS, decode, encode, from_hex, to_hex};
use serde::{Deserialize, Serialize};
use shoal_types::{Hash, PublicKey, SecretKey, Signature};
use std::fmt;

/// Signature domain of swarm tokens.
pub const DOMAIN: &str = "shoal/token/v1";
/// The claims format this code issues and accepts (2: claims name the API
/// key they were issued under, so renewal can re-check it).
pub const VERSION: u32 = 2;
/// Longest peer id accepted (libp2p's base58 text is about 52 characters).
pub const MAX_PEER_ID_LEN: usize = 128;

/// What the token holder may do in the swarm.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    Client,
    Seed,
}

/// The signed content of a swarm token.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Claims {
    pub version: u32,
    /// The release (swarm) this token admits to.
    pub swarm: Hash,
    pub product: String,
    /// Opaque account id of the holder.
    pub account: String,
    /// Id of the API key the token was issued under: the tracker renews a
    /// token only while that key is unrevoked.
    pub key: String,
    /// The holder's libp2p PeerId, base58 text.
    pub peer_id: String,
    pub role: Role,
    pub issued_at: u64,
    pub expires_at: u64,
}

/// A signed token. Its text form (for JSON and headers) is hex.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Token {
    claims: Vec<u8>,
    signature: Signature,
}

impl fmt::Debug for Token {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match decode::<Claims>(&self.claims) {
            Some(c) => write!(
                f,
                "Token({} for {} in {}, until {})",
                c.account, c.peer_id, c.swarm, c.expires_at
            ),
            None => write!(f, "Token(<malformed>)"),
        }
    }
}

/// Why a token was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    #[error("token is malformed")]
    Malformed,
    #[error("token version {0} is not supported")]
    Version(u32),
    #[error("token signature is invalid")]
    Signature,
    #[error("token expired at {expires_at} (now {now})")]
    Expired { expires_at: u64, now: u64 },
    #[error("token is not valid until {issued_at} (now {now})")]
    NotYetValid { issued_at: u64, now: u64 },
    #[error("token is for swarm {token}, not {expected}")]
    WrongSwarm { token: Hash, expected: Hash },
    #[error("token is bound to peer {token}, not {actual}")]
    WrongPeer { token: String, actual: String },
}

/// Checks that `peer_id` looks like libp2p's base58 PeerId text (the exact
/// binding is checked against the authenticated connection).
pub fn check_peer_id(peer_id: &str) -> bool {
    const BASE58: &[u8] = b"123456789ABCDEFGHJKLMNPQRSTUVWXYZabcdefghijkmnopqrstuvwxyz";
    (8..=MAX_PEER_ID_LEN).contains(&peer_id.len()) && peer_id.bytes().all(|b| BASE58.contains(&b))
}

impl Token {
    /// Signs `claims` with the tracker's key.
    pub fn issue(claims: &Claims, tracker: &SecretKey) -> Token {
        let bytes = encode(claims);
        let signature = tracker.sign(DOMAIN, &bytes);
        Token {
            claims: bytes,
            signature,
        }
    }

    /// The binary form: claims length, claims, signature.
    pub fn to_bytes(&self) -> Vec<u8> {
        encode(self)
    }

    pub fn from_bytes(bytes: &[u8]) -> Result<Token, TokenError> {
        decode(bytes).ok_or(TokenError::Malformed)
    }

    /// Hex text of [`Token::to_bytes`].
    pub fn to_text(&self) -> String {
        to_hex(&self.to_bytes())
    }

    pub fn from_text(text: &str) -> Result<Token, TokenError> {
        Token::from_bytes(&from_hex(text.trim()).ok_or(TokenError::Malformed)?)
    }

    /// A stable identity for caching verified tokens.
    pub fn fingerprint(&self) -> Hash {
        Hash::of(&self.to_bytes())
    }

    /// The claims, after checking the signature and format version only.
    pub fn verify_signature(&self, tracker: &PublicKey) -> Result<Claims, TokenError> {
        tracker
            .verify(DOMAIN, &self.claims, &self.signature)
            .map_err(|_| TokenError::Signature)?;
        let claims: Claims = decode(&self.claims).ok_or(TokenError::Malformed)?;
        if claims.version != VERSION {
            return Err(TokenError::Version(claims.version));
        }
        Ok(claims)
    }

    /// Full verification for a peer: signature under the pinned tracker key,
    /// time window (with [`CLOCK_SKEW_SECS`]), swarm, and binding to the
    /// connection's authenticated peer id.
    pub fn verify(
        &self,
        tracker: &PublicKey,
        now: u64,
        swarm: &Hash,
        authenticated_peer: &str,
    ) -> Result<Claims, TokenError> {
        let claims = self.verify_signature(tracker)?;
        claims.check_time(now)?;
        if claims.swarm != *swarm {
            return Err(TokenError::WrongSwarm {
                token: claims.swarm,
                expected: *swarm,
            });
        }
        if claims.peer_id != authenticated_peer {
            return Err(TokenError::WrongPeer {
                token: claims.peer_id,
                actual: authenticated_peer.to_owned(),
            });
        }
        Ok(claims)
    }
}

impl Claims {
    /// Checks the validity window at `now`, allowing [`CLOCK_SKEW_SECS`].
    pub fn check_time(&self, now: u64) -> Result<(), TokenError> {
        if now > self.expires_at.saturating_add(CLOCK_SKEW_SECS) {
            return Err(TokenError::Expired {
                expires_at: self.expires_at,
                now,
            });
        }
        if now.saturating_add(CLOCK_SKEW_SECS) < self.issued_at {
            return Err(TokenError::NotYetValid {
                issued_at: self.issued_at,
                now,
            });
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const PEER: &str = "12D3KooWDpJ7As7BWAwRMfu1VU2WCqNjvq387JEYKDBj4kx6nXTN";

    fn claims() -> Claims {
        Claims {
            version: VERSION,
            swarm: Hash::of(b"release"),
            product: "game".into(),
            account: "acc_1".into(),
            key: "key_1".into(),
            peer_id: PEER.into(),
            role: Role::Client,
            issued_at: 1000,
            expires_at: 2800,
        }
    }

    fn tracker() -> SecretKey {
        SecretKey::from_seed([1; 32])
    }

    fn check(
        token: &Token,
        key: &PublicKey,
        now: u64,
        swarm: &Hash,
        peer: &str,
    ) -> Result<Claims, TokenError> {
        Token::from_text(&token.to_text())?.verify(key, now, swarm, peer)
    }

    #[test]
    fn valid_token_verifies() {
        let t = Token::issue(&claims(), &tracker());
        let c = check(&t, &tracker().public(), 1500, &claims().swarm, PEER).unwrap();
        assert_eq!(c, claims());
    }

    #[test]
    fn each_failure_has_its_variant() {
        let t = Token::issue(&claims(), &tracker());
        let key = tracker().public();
        let swarm = claims().swarm;
        // wrong key
        let other = SecretKey::from_seed([2; 32]).public();
        assert_eq!(
            check(&t, &other, 1500, &swarm, PEER),
            Err(TokenError::Signature)
        );
        // expired, beyond the skew allowance; within it is fine
        assert!(matches!(
            check(&t, &key, 2800 + CLOCK_SKEW_SECS + 1, &swarm, PEER),
            Err(TokenError::Expired { .. })
        ));
        assert!(check(&t, &key, 2800 + CLOCK_SKEW_SECS, &swarm, PEER).is_ok());
        assert!(matches!(
            check(&t, &key, 1000 - CLOCK_SKEW_SECS - 1, &swarm, PEER),
            Err(TokenError::NotYetValid { .. })
        ));
        // other peer id
        assert!(matches!(
            check(&t, &key, 1500, &swarm, "12D3KooWOther"),
            Err(TokenError::WrongPeer { .. })
        ));
        // other swarm
        assert!(matches!(
            check(&t, &key, 1500, &Hash::of(b"other"), PEER),
            Err(TokenError::WrongSwarm { .. })
        ));
        // garbage
        assert_eq!(Token::from_text("zz"), Err(TokenError::Malformed));
        assert_eq!(Token::from_text("abc"), Err(TokenError::Malformed));
    }

    #[test]
    fn tampered_claims_are_refused() {
        let t = Token::issue(&claims(), &tracker());
        let key = tracker().public();
        let mut bytes = t.to_bytes();
        // flip every bit in turn: nothing but the original verifies
        for bit in 0..bytes.len() * 8 {
            bytes[bit / 8] ^= 1 << (bit % 8);
            let result =
                Token::from_bytes(&bytes).and_then(|t| t.verify(&key, 1500, &claims().swarm, PEER));
            assert!(result.is_err(), "bit {bit} flipped was accepted");
            bytes[bit / 8] ^= 1 << (bit % 8);
        }
        // re-signed claims with a longer expiry by someone else
        let mut forged = claims();
        forged.expires_at = u64::MAX;
        let f = Token::issue(&forged, &SecretKey::from_seed([3; 32]));
        assert_eq!(
            f.verify(&key, 1500, &claims().swarm, PEER),
            Err(TokenError::Signature)
        );
    }

    #[test]
    fn peer_id_shape() {
        assert!(check_peer_id(PEER));
        assert!(!check_peer_id("short"));
        assert!(!check_peer_id("12D3KooW0OIl")); // 0, O, I, l are not base58
        assert!(!check_peer_id(&"1".repeat(MAX_PEER_ID_LEN + 1)));
    }
}
