//! Content-defined chunking (FastCDC 2020) of an in-memory byte slice, with
//! BLAKE3 hashes of the chunks.

use crate::model::ChunkParams;
use shoal_types::Hash;

/// Splits `data` into content-defined chunks and yields `(offset, len)` for
/// each. Empty input yields nothing. `params` must pass [`ChunkParams::check`].
pub fn cut_points(data: &[u8], params: ChunkParams) -> impl Iterator<Item = (usize, usize)> + '_ {
    fastcdc::v2020::FastCDC::new(
        data,
        params.min as usize,
        params.avg as usize,
        params.max as usize,
    )
    .map(|c| (c.offset, c.length))
}

/// Chunks `data` and hashes each chunk: `(hash, offset, len)` in order.
pub fn chunk_and_hash(data: &[u8], params: ChunkParams) -> Vec<(Hash, usize, usize)> {
    cut_points(data, params)
        .map(|(offset, len)| (Hash::of(&data[offset..offset + len]), offset, len))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn noise(len: usize, seed: u64) -> Vec<u8> {
        let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
        (0..len)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                x as u8
            })
            .collect()
    }

    #[test]
    fn chunks_cover_input_within_limits() {
        let params = ChunkParams {
            min: 4096,
            avg: 16384,
            max: 65536,
        };
        let data = noise(1 << 20, 1);
        let chunks = chunk_and_hash(&data, params);
        let mut expected_offset = 0;
        for (i, (hash, offset, len)) in chunks.iter().enumerate() {
            assert_eq!(*offset, expected_offset);
            assert!(*len <= params.max as usize);
            if i + 1 < chunks.len() {
                assert!(*len >= params.min as usize);
            }
            assert_eq!(*hash, Hash::of(&data[*offset..offset + len]));
            expected_offset += len;
        }
        assert_eq!(expected_offset, data.len());
        assert!(chunks.len() > 16, "average size should give many chunks");
    }

    #[test]
    fn empty_input_has_no_chunks() {
        assert!(chunk_and_hash(&[], ChunkParams::default()).is_empty());
    }
}
