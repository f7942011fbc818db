//! Chunk verification: the only way to obtain a [`VerifiedChunk`].

use crate::model::Manifest;
use shoal_types::Hash;

/// Bytes that match a chunk of a manifest. Only [`verify`] constructs one, so
/// anything that accepts a `VerifiedChunk` (the store, the upload path) can
/// rely on the bytes being exactly what the publisher signed.
#[derive(Debug, Clone, Copy)]
pub struct VerifiedChunk<'a> {
    index: u32,
    hash: Hash,
    data: &'a [u8],
}

impl<'a> VerifiedChunk<'a> {
    /// Index in the manifest's chunk table.
    pub fn index(&self) -> u32 {
        self.index
    }
    /// The chunk's BLAKE3 hash.
    pub fn hash(&self) -> Hash {
        self.hash
    }
    /// The verified bytes.
    pub fn data(&self) -> &'a [u8] {
        self.data
    }
}

/// Why bytes were refused as a chunk. Every variant means the sender (or the
/// disk they came from) is at fault.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum VerifyError {
    #[error("chunk index {index} is out of range (manifest has {n_chunks} chunks)")]
    IndexOutOfRange { index: u32, n_chunks: usize },
    #[error("chunk {index} should be {expected} bytes, got {got}")]
    Length {
        index: u32,
        expected: u32,
        got: usize,
    },
    #[error("chunk {index} hash mismatch: expected {expected}, got {got}")]
    Hash {
        index: u32,
        expected: Hash,
        got: Hash,
    },
}

/// Checks `data` against chunk `index` of `manifest`: length first (cheap),
/// then the BLAKE3 hash.
pub fn verify<'a>(
    manifest: &Manifest,
    index: u32,
    data: &'a [u8],
) -> Result<VerifiedChunk<'a>, VerifyError> {
    let info = manifest
        .chunks
        .get(index as usize)
        .ok_or(VerifyError::IndexOutOfRange {
            index,
            n_chunks: manifest.chunks.len(),
        })?;
    if data.len() != info.len as usize {
        return Err(VerifyError::Length {
            index,
            expected: info.len,
            got: data.len(),
        });
    }
    let got = Hash::of(data);
    if got != info.hash {
        return Err(VerifyError::Hash {
            index,
            expected: info.hash,
            got,
        });
    }
    Ok(VerifiedChunk {
        index,
        hash: got,
        data,
    })
}
