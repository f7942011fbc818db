//! Release manifests: content-defined chunking (FastCDC 2020) with BLAKE3
//! hashes, the canonical signed encoding, chunk verification, diffs between
//! releases, and the bundle directory that `shoal publish` writes.
//!
//! Invariant: only [`verify`] constructs a [`VerifiedChunk`].

pub mod build;
pub mod bundle;
pub mod chunker;
mod codec;
mod diff;
mod model;
pub mod path;
pub mod seal;
mod verify;

pub use build::{
    BuildError, BuildOptions, ChunkSink, DiscardChunks, Progress, build, build_sealed,
};
pub use bundle::{Bundle, BundleError, BundleWriter};
pub use codec::{MAX_MANIFEST_BYTES, ManifestError, SignedManifest};
pub use diff::{Diff, diff};
pub use model::{
    BadChunkParams, ChunkInfo, ChunkParams, Entry, EntryKind, FORMAT_VERSION, InvalidManifest,
    Manifest, SEALED_FORMAT_VERSION, Sealing, is_valid_name,
};
pub use verify::{VerifiedChunk, VerifyError, verify};
