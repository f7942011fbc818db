//! Canonical bincode encoding of manifests and the publisher-signed envelope
//! written as `manifest.shoal`.

use crate::model::{
    ChunkInfo, ChunkParams, Entry, InvalidManifest, Manifest, SEALED_FORMAT_VERSION, Sealing,
};
use serde::{Deserialize, Serialize};
use shoal_types::{Hash, PublicKey, SecretKey, Signature, SignatureError};

/// Largest encoded manifest accepted (about 1.5 M chunks); checked before decoding.
pub const MAX_MANIFEST_BYTES: usize = 64 << 20;

/// First bytes of a signed manifest file.
pub const MAGIC: &[u8; 8] = b"SHOALMF\x01";

/// Signature domain for manifest hashes.
pub const SIGNATURE_DOMAIN: &str = "shoal/manifest/v1";

/// Why bytes could not be turned into a trusted manifest.
#[derive(Debug, thiserror::Error)]
pub enum ManifestError {
    #[error("manifest is {size} bytes, more than the {MAX_MANIFEST_BYTES}-byte limit")]
    TooLarge { size: usize },
    #[error("not a shoal manifest (bad magic bytes)")]
    Magic,
    #[error("manifest is malformed: {0}")]
    Decode(#[from] bincode::error::DecodeError),
    #[error("manifest has {0} trailing bytes")]
    Trailing(usize),
    #[error("manifest encoding is not canonical")]
    NotCanonical,
    #[error("manifest signature is invalid: {0}")]
    Signature(#[from] SignatureError),
    #[error("manifest is invalid: {0}")]
    Invalid(#[from] InvalidManifest),
}

fn config() -> impl bincode::config::Config {
    bincode::config::standard().with_limit::<MAX_MANIFEST_BYTES>()
}

fn decode_exact<T: serde::de::DeserializeOwned>(bytes: &[u8]) -> Result<T, ManifestError> {
    if bytes.len() > MAX_MANIFEST_BYTES {
        return Err(ManifestError::TooLarge { size: bytes.len() });
    }
    let (value, read) = bincode::serde::decode_from_slice(bytes, config())?;
    if read != bytes.len() {
        return Err(ManifestError::Trailing(bytes.len() - read));
    }
    Ok(value)
}

/// Format 1's fields, borrowed for encoding: a plain manifest encodes as
/// exactly this, so manifests written before encryption keep their bytes
/// and hashes.
#[derive(Serialize)]
struct PlainRef<'a> {
    format: u32,
    product: &'a str,
    channel: &'a str,
    version: &'a str,
    chunking: ChunkParams,
    entries: &'a [Entry],
    chunks: &'a [ChunkInfo],
}

/// Format 1's fields, owned for decoding.
#[derive(Deserialize)]
struct Plain {
    format: u32,
    product: String,
    channel: String,
    version: String,
    chunking: ChunkParams,
    entries: Vec<Entry>,
    chunks: Vec<ChunkInfo>,
}

impl Manifest {
    /// The canonical encoding; its BLAKE3 hash identifies the manifest.
    /// Format 1's fields, then (format 2) the sealing.
    pub fn encode(&self) -> Vec<u8> {
        let plain = PlainRef {
            format: self.format,
            product: &self.product,
            channel: &self.channel,
            version: &self.version,
            chunking: self.chunking,
            entries: &self.entries,
            chunks: &self.chunks,
        };
        let mut out = bincode::serde::encode_to_vec(&plain, config())
            .expect("encoding into a Vec cannot fail for plain data");
        if let Some(sealing) = &self.sealing {
            out.extend(
                bincode::serde::encode_to_vec(sealing, config())
                    .expect("encoding into a Vec cannot fail for plain data"),
            );
        }
        out
    }

    /// Decodes and validates a canonical encoding.
    pub fn decode(bytes: &[u8]) -> Result<Manifest, ManifestError> {
        if bytes.len() > MAX_MANIFEST_BYTES {
            return Err(ManifestError::TooLarge { size: bytes.len() });
        }
        let (plain, read): (Plain, usize) = bincode::serde::decode_from_slice(bytes, config())?;
        let rest = &bytes[read..];
        let sealing = match plain.format {
            SEALED_FORMAT_VERSION => Some(decode_exact::<Sealing>(rest)?),
            _ if !rest.is_empty() => return Err(ManifestError::Trailing(rest.len())),
            _ => None,
        };
        let manifest = Manifest {
            format: plain.format,
            product: plain.product,
            channel: plain.channel,
            version: plain.version,
            chunking: plain.chunking,
            entries: plain.entries,
            chunks: plain.chunks,
            sealing,
        };
        manifest.validate()?;
        if manifest.encode() != bytes {
            return Err(ManifestError::NotCanonical);
        }
        Ok(manifest)
    }

    /// BLAKE3 of the canonical encoding.
    pub fn hash(&self) -> Hash {
        Hash::of(&self.encode())
    }
}

/// A manifest's canonical bytes with the publisher's signature over their hash.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SignedManifest {
    manifest: Vec<u8>,
    publisher: PublicKey,
    signature: Signature,
}

impl SignedManifest {
    /// Signs `manifest` with the publisher's key.
    pub fn sign(manifest: &Manifest, key: &SecretKey) -> SignedManifest {
        let bytes = manifest.encode();
        let hash = Hash::of(&bytes);
        SignedManifest {
            manifest: bytes,
            publisher: key.public(),
            signature: key.sign(SIGNATURE_DOMAIN, hash.as_bytes()),
        }
    }

    /// The file form: magic bytes, then the bincode envelope.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = MAGIC.to_vec();
        out.extend(
            bincode::serde::encode_to_vec(self, config())
                .expect("encoding into a Vec cannot fail for plain data"),
        );
        out
    }

    /// Parses the file form. The signature is not checked yet: call [`SignedManifest::open`].
    pub fn from_bytes(bytes: &[u8]) -> Result<SignedManifest, ManifestError> {
        let body = bytes
            .strip_prefix(MAGIC.as_slice())
            .ok_or(ManifestError::Magic)?;
        decode_exact(body)
    }

    /// The key that claims to have signed this manifest.
    pub fn publisher(&self) -> PublicKey {
        self.publisher
    }

    /// The manifest hash (BLAKE3 of its canonical bytes).
    pub fn hash(&self) -> Hash {
        Hash::of(&self.manifest)
    }

    /// Checks the signature, decodes and validates the manifest. Whether the
    /// publisher key is allowed to publish the product is the caller's policy.
    pub fn open(&self) -> Result<Manifest, ManifestError> {
        self.publisher
            .verify(SIGNATURE_DOMAIN, self.hash().as_bytes(), &self.signature)?;
        Manifest::decode(&self.manifest)
    }
}
