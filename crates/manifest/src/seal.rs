//! Chunk encryption for builds that are preloaded before they unlock
//! (`shoal publish --encrypt`, [`crate::build_sealed`]). Pure functions, no
//! IO; the only randomness is [`ContentKey::generate`].
//!
//! Every player must receive the same ciphertext, so that peers can verify
//! and relay it before anyone can read it; the encryption is therefore
//! deterministic. Each chunk is sealed with AES-256-GCM (ring's) under its own
//! key, derived with BLAKE3 from the release's content key and the chunk's
//! plaintext hash, and a fixed nonce: a chunk key only ever encrypts the
//! one plaintext whose hash it was derived from, so no key and nonce pair
//! is used on two different plaintexts. The plaintext hash is also the
//! associated data, binding the ciphertext to the manifest entry that lists
//! it. Peers check the BLAKE3 hash of the ciphertext (as they check any
//! chunk); the launcher, once it holds the content key, opens the chunk and
//! checks the plaintext hash.

use crate::{Manifest, VerifiedChunk, VerifyError, verify};
use ring::aead::{AES_256_GCM, Aad, LessSafeKey, Nonce, UnboundKey};
use shoal_types::Hash;

/// Bytes a sealed chunk has beyond its plaintext (the GCM tag).
pub const SEAL_OVERHEAD: usize = 16;

/// BLAKE3 key-derivation context of chunk keys; a new scheme gets a new one.
const CHUNK_KEY_CONTEXT: &str = "shoal 2026-12-07 chunk key v1";

/// What [`ContentKey::check`] hashes under the key.
const KEY_CHECK_INPUT: &[u8] = b"shoal 2026-12-07 content key check v1";

/// A release's content key: 32 secret bytes. Its `Debug` shows nothing of
/// it, so it never reaches a log by accident, and it has no `PartialEq`
/// (comparing secrets byte by byte leaks timing).
#[derive(Clone)]
pub struct ContentKey([u8; 32]);

impl std::fmt::Debug for ContentKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ContentKey(..)")
    }
}

impl ContentKey {
    /// A fresh key from the operating system's CSPRNG.
    pub fn generate() -> ContentKey {
        let mut bytes = [0u8; 32];
        ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut bytes)
            .expect("the operating system's random source works");
        ContentKey(bytes)
    }

    /// The key made of `bytes` (from a CSPRNG, or as stored).
    pub fn from_bytes(bytes: [u8; 32]) -> ContentKey {
        ContentKey(bytes)
    }

    /// The secret bytes, to store or hand to an entitled player.
    pub fn expose(&self) -> &[u8; 32] {
        &self.0
    }

    /// The key as 64 hex digits: how it travels in the API and sits in a
    /// key file. (No `Display`, so it is never formatted by accident.)
    pub fn to_hex(&self) -> String {
        Hash(self.0).to_string()
    }

    /// A key from 64 hex digits; `None` for anything else.
    pub fn from_hex(text: &str) -> Option<ContentKey> {
        text.parse::<Hash>().ok().map(|h| ContentKey(h.0))
    }

    /// A keyed hash that identifies this key without revealing it (the
    /// manifest's `key_check`).
    pub fn check(&self) -> Hash {
        Hash(*blake3::keyed_hash(&self.0, KEY_CHECK_INPUT).as_bytes())
    }

    /// This key encrypted under `wrapping` (AES-256-GCM, a random nonce,
    /// `context` bound in as associated data): how the tracker stores it.
    pub fn wrap(&self, wrapping: &[u8; 32], context: &[u8]) -> Vec<u8> {
        let mut nonce = [0u8; 12];
        ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut nonce)
            .expect("the operating system's random source works");
        let mut out = nonce.to_vec();
        let mut body = self.0.to_vec();
        wrapping_cipher(wrapping)
            .seal_in_place_append_tag(
                Nonce::assume_unique_for_key(nonce),
                Aad::from(context),
                &mut body,
            )
            .expect("AES-256-GCM seals 32 bytes");
        out.extend(body);
        out
    }

    /// Opens what [`ContentKey::wrap`] made with the same `wrapping` key
    /// and `context`; `None` if either differs or the bytes were altered.
    pub fn unwrap(wrapping: &[u8; 32], context: &[u8], wrapped: &[u8]) -> Option<ContentKey> {
        let (nonce, body) = wrapped.split_at_checked(12)?;
        let mut body = body.to_vec();
        let plain = wrapping_cipher(wrapping)
            .open_in_place(
                Nonce::try_assume_unique_for_key(nonce).ok()?,
                Aad::from(context),
                &mut body,
            )
            .ok()?;
        Some(ContentKey(plain.try_into().ok()?))
    }

    /// The key that seals the chunk whose plaintext hashes to `plain`.
    fn chunk_cipher(&self, plain: &Hash) -> LessSafeKey {
        let mut material = [0u8; 64];
        material[..32].copy_from_slice(&self.0);
        material[32..].copy_from_slice(plain.as_bytes());
        let key = blake3::derive_key(CHUNK_KEY_CONTEXT, &material);
        LessSafeKey::new(UnboundKey::new(&AES_256_GCM, &key).expect("a 32-byte AES-256 key"))
    }
}

/// A sealed chunk: what peers store, verify and serve.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sealed {
    /// The ciphertext, tag included (`SEAL_OVERHEAD` bytes longer).
    pub bytes: Vec<u8>,
    /// BLAKE3 of the plaintext: what the launcher checks after opening.
    pub plain: Hash,
    /// BLAKE3 of `bytes`: what the manifest lists for peers to verify.
    pub hash: Hash,
}

/// Why a sealed chunk does not open.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum OpenError {
    /// The tag does not verify: the wrong content key, or altered bytes.
    #[error("the chunk does not decrypt under this release's key (a wrong key, or altered bytes)")]
    Undecryptable,
    /// It decrypted, but not to the plaintext the manifest lists.
    #[error("the decrypted chunk hashes to {got}, not to the {want} the manifest lists")]
    WrongPlaintext { want: Hash, got: Hash },
    /// The opened view of the manifest does not list it as sealed.
    #[error("the manifest's tables disagree: {0}")]
    NotListed(String),
}

fn wrapping_cipher(key: &[u8; 32]) -> LessSafeKey {
    LessSafeKey::new(UnboundKey::new(&AES_256_GCM, key).expect("a 32-byte AES-256 key"))
}

fn nonce() -> Nonce {
    // One plaintext per chunk key (see the module's text): a fixed nonce.
    Nonce::assume_unique_for_key([0u8; 12])
}

/// Seals `plaintext` under `key`.
pub fn seal(key: &ContentKey, plaintext: &[u8]) -> Sealed {
    let plain = Hash::of(plaintext);
    let bytes = reseal(key, &plain, plaintext);
    let hash = Hash::of(&bytes);
    Sealed { bytes, plain, hash }
}

/// Seals a plaintext already known to hash to `plain` (a chunk read back
/// and verified), hashing nothing: the same bytes [`seal`] gives, since
/// sealing is deterministic.
pub fn reseal(key: &ContentKey, plain: &Hash, plaintext: &[u8]) -> Vec<u8> {
    let mut bytes = Vec::with_capacity(plaintext.len() + SEAL_OVERHEAD);
    bytes.extend_from_slice(plaintext);
    key.chunk_cipher(plain)
        .seal_in_place_append_tag(nonce(), Aad::from(plain.as_bytes()), &mut bytes)
        .expect("AES-256-GCM seals any chunk a manifest can list");
    bytes
}

/// Opens a chunk the manifest lists with plaintext hash `plain`, checking
/// both the tag and the plaintext hash.
pub fn open(key: &ContentKey, plain: &Hash, sealed: &[u8]) -> Result<Vec<u8>, OpenError> {
    let mut bytes = sealed.to_vec();
    decrypt_in_place(key, plain, &mut bytes)?;
    let got = Hash::of(&bytes);
    if got != *plain {
        return Err(OpenError::WrongPlaintext { want: *plain, got });
    }
    Ok(bytes)
}

/// Opens sealed chunk `index` in place (no copy) and verifies the plaintext
/// against `opened`, the release's [`Manifest::opened_view`]: the tag, then
/// one BLAKE3 pass of the plaintext. On success `bytes` holds the plaintext.
pub fn open_chunk<'a>(
    key: &ContentKey,
    opened: &Manifest,
    index: u32,
    bytes: &'a mut Vec<u8>,
) -> Result<VerifiedChunk<'a>, OpenError> {
    let plain = opened
        .chunks
        .get(index as usize)
        .map(|c| c.hash)
        .ok_or_else(|| OpenError::NotListed(format!("the release has no chunk {index}")))?;
    decrypt_in_place(key, &plain, bytes)?;
    verify(opened, index, bytes).map_err(|e| match e {
        VerifyError::Hash { expected, got, .. } => OpenError::WrongPlaintext {
            want: expected,
            got,
        },
        // The tag held, so the manifest's own tables disagree.
        other => OpenError::NotListed(other.to_string()),
    })
}

fn decrypt_in_place(key: &ContentKey, plain: &Hash, bytes: &mut Vec<u8>) -> Result<(), OpenError> {
    let len = key
        .chunk_cipher(plain)
        .open_in_place(nonce(), Aad::from(plain.as_bytes()), bytes)
        .map_err(|_| OpenError::Undecryptable)?
        .len();
    bytes.truncate(len);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn key(b: u8) -> ContentKey {
        ContentKey::from_bytes([b; 32])
    }

    #[test]
    fn sealing_is_deterministic_and_opens_to_the_plaintext() {
        let text = b"the first level's textures".repeat(1000);
        let a = seal(&key(1), &text);
        let b = seal(&key(1), &text);
        assert_eq!(a, b, "every player gets the same ciphertext");
        assert_eq!(a.bytes.len(), text.len() + SEAL_OVERHEAD);
        assert_eq!(a.hash, Hash::of(&a.bytes));
        assert_eq!(a.plain, Hash::of(&text));
        assert_eq!(open(&key(1), &a.plain, &a.bytes).as_deref(), Ok(&text[..]));
        // nothing of the plaintext shows in the ciphertext
        assert!(!a.bytes.windows(26).any(|w| w == &text[..26]));
    }

    #[test]
    fn another_release_key_seals_differently_and_cannot_open() {
        let text = b"same chunk, another release".to_vec();
        let a = seal(&key(1), &text);
        let b = seal(&key(2), &text);
        assert_ne!(a.bytes, b.bytes);
        assert_eq!(
            open(&key(2), &a.plain, &a.bytes),
            Err(OpenError::Undecryptable)
        );
    }

    #[test]
    fn altered_bytes_and_a_wrong_plaintext_hash_are_refused() {
        let a = seal(&key(7), b"a chunk of the build");
        let mut bent = a.bytes.clone();
        bent[3] ^= 1;
        assert_eq!(
            open(&key(7), &a.plain, &bent),
            Err(OpenError::Undecryptable)
        );
        let other = Hash::of(b"another chunk");
        assert_eq!(
            open(&key(7), &other, &a.bytes),
            Err(OpenError::Undecryptable),
            "the plaintext hash is bound in: a manifest entry cannot be swapped"
        );
    }

    #[test]
    fn a_wrapped_key_opens_only_with_its_wrapping_key_and_context() {
        let k = ContentKey::generate();
        let w = [3u8; 32];
        let a = k.wrap(&w, b"release a");
        assert_ne!(a, k.wrap(&w, b"release a"), "a fresh nonce each time");
        assert!(!a.windows(32).any(|x| x == k.expose()));
        let back = ContentKey::unwrap(&w, b"release a", &a).unwrap();
        assert_eq!(back.expose(), k.expose());
        assert!(ContentKey::unwrap(&[4u8; 32], b"release a", &a).is_none());
        assert!(ContentKey::unwrap(&w, b"release b", &a).is_none());
        let mut bent = a.clone();
        bent[20] ^= 1;
        assert!(ContentKey::unwrap(&w, b"release a", &bent).is_none());
        assert!(ContentKey::unwrap(&w, b"release a", &a[..11]).is_none());
    }

    #[test]
    fn the_key_never_shows_in_debug_output() {
        let k = key(0xab);
        assert_eq!(format!("{k:?}"), "ContentKey(..)");
    }

    proptest! {
        #[test]
        fn any_chunk_round_trips(data in proptest::collection::vec(any::<u8>(), 0..4096), k in any::<[u8; 32]>()) {
            let key = ContentKey::from_bytes(k);
            let s = seal(&key, &data);
            prop_assert_eq!(open(&key, &s.plain, &s.bytes), Ok(data));
        }

        #[test]
        fn distinct_plaintexts_never_share_a_chunk_key(a in proptest::collection::vec(any::<u8>(), 1..256), b in proptest::collection::vec(any::<u8>(), 1..256)) {
            prop_assume!(a != b);
            let k = key(9);
            let (sa, sb) = (seal(&k, &a), seal(&k, &b));
            // b's ciphertext does not open under a's chunk key
            prop_assert_eq!(open(&k, &sa.plain, &sb.bytes), Err(OpenError::Undecryptable));
        }
    }
}
