//! Encrypted releases' content keys (issue 17): stored wrapped under a key
//! derived from the tracker's own secret key (so the database alone, or a
//! backup of it, reveals none), opened once per release and cached, so a
//! storm of token requests at the launch minute costs one read.

use crate::State;
use crate::store::Result;
use shoal_manifest::seal::ContentKey;
use shoal_types::{Hash, SecretKey};

/// BLAKE3 key-derivation context of the at-rest wrapping key.
const WRAPPING_CONTEXT: &str = "shoal 2026-12-07 tracker content keys at rest v1";

/// The key content keys are wrapped under. Every replica shares the
/// tracker's key file, so every replica derives the same one.
fn wrapping_key(tracker: &SecretKey) -> [u8; 32] {
    blake3::derive_key(WRAPPING_CONTEXT, &tracker.seed())
}

/// Stores `key` for the release with manifest `manifest` and caches it.
pub async fn store(state: &State, manifest: &Hash, key: &ContentKey) -> Result<()> {
    let wrapped = key.wrap(&wrapping_key(&state.key), manifest.as_bytes());
    state.db.put_content_key(manifest, &wrapped).await?;
    crate::lock(&state.content_keys).insert(*manifest, key.clone());
    Ok(())
}

/// The content key of the release with manifest `manifest`, from the cache
/// or the database; `None` if none is stored (or it does not open, which
/// is logged: a tracker key changed under its database).
pub async fn get(state: &State, manifest: &Hash) -> Result<Option<ContentKey>> {
    if let Some(key) = crate::lock(&state.content_keys).get(manifest) {
        return Ok(Some(key.clone()));
    }
    let Some(wrapped) = state.db.content_key(manifest).await? else {
        return Ok(None);
    };
    let Some(key) = ContentKey::unwrap(&wrapping_key(&state.key), manifest.as_bytes(), &wrapped)
    else {
        tracing::error!(%manifest, "a stored content key does not open under this tracker's key");
        return Ok(None);
    };
    crate::lock(&state.content_keys).insert(*manifest, key.clone());
    Ok(Some(key))
}
