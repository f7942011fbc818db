//! Swarm tokens and signed release metadata, the two things the tracker signs.
//!
//! Everything here is pure: callers pass the current time (unix seconds), so
//! tokens and releases verify the same way in tests, seeds, clients and the
//! tracker. Each failure is its own error variant, so a caller can tell a
//! forged token from an expired one.

mod release;
mod token;

pub use release::{Release, ReleaseError, SignedRelease};
pub use token::{Claims, Role, Token, TokenError, check_peer_id};

/// The claims format version this build issues.
pub fn token_version() -> u32 {
    token::VERSION
}

/// Tolerated clock difference between the tracker and a verifier, in seconds.
pub const CLOCK_SKEW_SECS: u64 = 60;

/// Bincode config shared by everything signed here: standard, size-capped.
fn config() -> impl bincode::config::Config {
    bincode::config::standard().with_limit::<{ 16 << 10 }>()
}

/// Encodes into bincode; plain data always encodes.
fn encode<T: serde::Serialize>(value: &T) -> Vec<u8> {
    bincode::serde::encode_to_vec(value, config()).expect("plain data always encodes")
}

/// Decodes exactly `bytes` (no trailing bytes), within the size cap.
fn decode<T: serde::de::DeserializeOwned>(bytes: &[u8]) -> Option<T> {
    if bytes.len() > 16 << 10 {
        return None;
    }
    match bincode::serde::decode_from_slice(bytes, config()) {
        Ok((value, read)) if read == bytes.len() => Some(value),
        _ => None,
    }
}

/// Lowercase hex of `bytes`.
fn to_hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Parses lowercase or uppercase hex; `None` on any bad digit or odd length.
fn from_hex(text: &str) -> Option<Vec<u8>> {
    if !text.len().is_multiple_of(2) {
        return None;
    }
    (0..text.len())
        .step_by(2)
        .map(|i| {
            text.get(i..i + 2)
                .and_then(|d| u8::from_str_radix(d, 16).ok())
        })
        .collect()
}
