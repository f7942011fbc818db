//! Content-defined chunking (FastCDC 2020) of an in-memory byte slice or a
//! stream read through a bounded window, with BLAKE3 hashes of the chunks.

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

/// The window [`stream_chunks`] reads through by default.
pub const STREAM_WINDOW: usize = 32 << 20;

/// Chunks everything `reader` yields exactly as [`cut_points`] would over
/// the whole of it, holding a window of `window` bytes in memory (grown to
/// twice the largest chunk if the stream turns out longer, so a file known
/// to be small costs only its size); calls `each` with every chunk in order
/// and returns the bytes read.
///
/// FastCDC decides the chunk that starts at `s` from the bytes `s..s + max`
/// alone, unless the data ends sooner. So a chunk found in the window is
/// final once the window holds `max` bytes past its start, or the stream
/// ended; the rest moves to the front and the window refills.
pub fn stream_chunks<E: From<std::io::Error>>(
    mut reader: impl std::io::Read,
    params: ChunkParams,
    window: usize,
    mut each: impl FnMut(&[u8]) -> Result<(), E>,
) -> Result<u64, E> {
    let max = params.max as usize;
    let mut buf = vec![0u8; window.max(1)];
    let (mut filled, mut eof, mut total) = (0usize, false, 0u64);
    loop {
        while !eof && filled < buf.len() {
            match reader.read(&mut buf[filled..]) {
                Ok(0) => eof = true,
                Ok(n) => filled += n,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e.into()),
            }
        }
        let mut consumed = 0;
        for (offset, len) in cut_points(&buf[..filled], params) {
            if !eof && offset + max > filled {
                break;
            }
            each(&buf[offset..offset + len])?;
            consumed = offset + len;
        }
        total += consumed as u64;
        if eof {
            return Ok(total);
        }
        if consumed == 0 {
            // Nothing could be settled: the window is too small for this
            // stream; grow it to where a chunk always settles.
            buf.resize((2 * buf.len()).max(2 * max), 0);
            continue;
        }
        buf.copy_within(consumed..filled, 0);
        filled -= consumed;
    }
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
    fn streaming_through_a_window_cuts_exactly_where_the_whole_slice_does() {
        let params = ChunkParams {
            min: 4096,
            avg: 16384,
            max: 65536,
        };
        for (len, seed) in [(0, 1), (1, 2), (65_535, 3), (200_000, 4), (3 << 20, 5)] {
            let data = noise(len, seed);
            let whole: Vec<(usize, usize)> = cut_points(&data, params).collect();
            // windows from the smallest allowed to larger than the data;
            // a reader that returns odd-sized pieces
            for window in [0, 1, 4096, 131_072, 200_001, 1 << 20, 8 << 20] {
                let reader = Pieces(&data, 7777);
                let mut got = Vec::new();
                let mut at = 0;
                let total = stream_chunks::<std::io::Error>(reader, params, window, |c| {
                    assert_eq!(c, &data[at..at + c.len()]);
                    got.push((at, c.len()));
                    at += c.len();
                    Ok(())
                })
                .unwrap();
                assert_eq!(total, len as u64);
                assert_eq!(got, whole, "len {len}, window {window}");
            }
        }
    }

    /// Yields at most `n` bytes per read.
    struct Pieces<'a>(&'a [u8], usize);

    impl std::io::Read for Pieces<'_> {
        fn read(&mut self, out: &mut [u8]) -> std::io::Result<usize> {
            let n = self.0.len().min(out.len()).min(self.1);
            out[..n].copy_from_slice(&self.0[..n]);
            self.0 = &self.0[n..];
            Ok(n)
        }
    }

    #[test]
    fn empty_input_has_no_chunks() {
        assert!(chunk_and_hash(&[], ChunkParams::default()).is_empty());
    }
}
