//! Value types shared by every Shoal crate: BLAKE3 hashes, ed25519 public keys,
//! signatures and secret keys, with a hex text form and serde support.
//!
//! Byte types serialise as hex strings in human-readable formats (JSON, TOML) and
//! as raw bytes in binary ones (bincode), so wire encodings stay compact.

mod bitfield;
mod bytes;
pub mod id;
mod keys;
mod rng;
pub mod sample;

pub use bitfield::Bitfield;
pub use bytes::{Hash, ParseHexError};
pub use keys::{KeyFileError, PublicKey, SecretKey, Signature, SignatureError};
pub use rng::Rng;

/// Whether other peers can dial a node directly, as the node learned it by
/// AutoNAT probes (a server dials back each address it was seen at).
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, Default, serde::Serialize, serde::Deserialize,
)]
#[serde(rename_all = "lowercase")]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub enum Reachability {
    /// Not probed yet (no AutoNAT server connected, or probes still running).
    #[default]
    Unknown,
    /// A server dialed back at least one address.
    Public,
    /// Every address probed failed the dial-back: behind a NAT or firewall.
    Private,
}

/// OpenAPI schemas for the byte types: lowercase hex strings of 32 bytes.
#[cfg(feature = "openapi")]
mod openapi {
    use utoipa::openapi::RefOr;
    use utoipa::openapi::schema::{ObjectBuilder, Schema, Type};

    fn hex32(description: &str) -> RefOr<Schema> {
        ObjectBuilder::new()
            .schema_type(Type::String)
            .pattern(Some("^[0-9a-f]{64}$"))
            .description(Some(description))
            .into()
    }

    impl utoipa::PartialSchema for crate::Hash {
        fn schema() -> RefOr<Schema> {
            hex32("A BLAKE3 hash (a chunk, a manifest, a release id), 64 hex digits")
        }
    }
    impl utoipa::ToSchema for crate::Hash {}

    impl utoipa::PartialSchema for crate::PublicKey {
        fn schema() -> RefOr<Schema> {
            hex32("An ed25519 public key, 64 hex digits")
        }
    }
    impl utoipa::ToSchema for crate::PublicKey {}
}
