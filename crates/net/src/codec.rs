//! A request-response codec for any pair of `shoal-wire` messages: a 4-byte
//! big-endian length, then the message. The length is checked against the
//! message type's cap before the body is read.
//!
//! [`ChunkCodec`] sends the same bytes for `/shoal/chunk/1` but moves chunk
//! data without copies: the sender writes the `Data` header and then the
//! chunk itself, and the receiver reads the chunk straight into its own
//! buffer, instead of encoding and decoding a whole message around it.

use futures::{AsyncRead, AsyncReadExt as _, AsyncWrite, AsyncWriteExt as _};
use libp2p::StreamProtocol;
use shoal_wire::{ChunkRequest, ChunkResponse, Message, check_frame_len};
use std::io;
use std::marker::PhantomData;

/// Codec for requests `Q` and responses `R`.
#[derive(Debug)]
pub struct WireCodec<Q, R>(PhantomData<fn() -> (Q, R)>);

impl<Q, R> Default for WireCodec<Q, R> {
    fn default() -> Self {
        WireCodec(PhantomData)
    }
}

impl<Q, R> Clone for WireCodec<Q, R> {
    fn clone(&self) -> Self {
        WireCodec(PhantomData)
    }
}

fn invalid(e: impl Into<Box<dyn std::error::Error + Send + Sync>>) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, e)
}

/// Reads a frame's length prefix, checked against `M`'s cap.
async fn read_frame_len<M: Message, T: AsyncRead + Unpin + Send>(io: &mut T) -> io::Result<usize> {
    let mut prefix = [0u8; 4];
    io.read_exact(&mut prefix).await?;
    check_frame_len(prefix, M::MAX).map_err(invalid)
}

/// Reads the rest of a `len`-byte frame whose first bytes were `start`, and decodes it.
async fn read_body<M: Message, T: AsyncRead + Unpin + Send>(
    io: &mut T,
    start: &[u8],
    len: usize,
) -> io::Result<M> {
    let mut body = start.to_vec();
    body.resize(len, 0);
    io.read_exact(&mut body[start.len()..]).await?;
    M::decode(&body).map_err(invalid)
}

async fn read_message<M: Message, T: AsyncRead + Unpin + Send>(io: &mut T) -> io::Result<M> {
    let len = read_frame_len::<M, T>(io).await?;
    read_body(io, &[], len).await
}

async fn write_message<M: Message, T: AsyncWrite + Unpin + Send>(
    io: &mut T,
    m: &M,
) -> io::Result<()> {
    let body = m.encode();
    let len = u32::try_from(body.len())
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "message too large"))?;
    io.write_all(&len.to_be_bytes()).await?;
    io.write_all(&body).await?;
    io.close().await
}

impl<Q, R> libp2p::request_response::Codec for WireCodec<Q, R>
where
    Q: Message + Send + Sync + 'static,
    R: Message + Send + Sync + 'static,
{
    type Protocol = StreamProtocol;
    type Request = Q;
    type Response = R;

    async fn read_request<T>(&mut self, _: &StreamProtocol, io: &mut T) -> io::Result<Q>
    where
        T: AsyncRead + Unpin + Send,
    {
        read_message(io).await
    }

    async fn read_response<T>(&mut self, _: &StreamProtocol, io: &mut T) -> io::Result<R>
    where
        T: AsyncRead + Unpin + Send,
    {
        read_message(io).await
    }

    async fn write_request<T>(&mut self, _: &StreamProtocol, io: &mut T, req: Q) -> io::Result<()>
    where
        T: AsyncWrite + Unpin + Send,
    {
        write_message(io, &req).await
    }

    async fn write_response<T>(&mut self, _: &StreamProtocol, io: &mut T, res: R) -> io::Result<()>
    where
        T: AsyncWrite + Unpin + Send,
    {
        write_message(io, &res).await
    }
}

/// The `/shoal/chunk/1` codec (see the module docs).
#[derive(Debug, Clone, Default)]
pub struct ChunkCodec;

async fn read_chunk_response<T: AsyncRead + Unpin + Send>(io: &mut T) -> io::Result<ChunkResponse> {
    let len = read_frame_len::<ChunkResponse, T>(io).await?;
    if len < 2 {
        return read_body(io, &[], len).await;
    }
    let mut head = [0u8; 10];
    io.read_exact(&mut head[..2]).await?;
    if head[0] != shoal_wire::DATA_TAG {
        // A small message: read and decode it whole.
        return read_body(io, &head[..2], len).await;
    }
    let head_len = ChunkResponse::data_header_len(head[1]);
    if head_len > len {
        return Err(invalid("chunk header longer than its frame"));
    }
    io.read_exact(&mut head[2..head_len]).await?;
    let data_len = ChunkResponse::parse_data_header(&head[..head_len]).map_err(invalid)?;
    if head_len + data_len != len {
        return Err(invalid("chunk length disagrees with its frame"));
    }
    let mut data = vec![0u8; data_len];
    io.read_exact(&mut data).await?;
    Ok(ChunkResponse::Data(data))
}

async fn write_chunk_response<T: AsyncWrite + Unpin + Send>(
    io: &mut T,
    response: &ChunkResponse,
) -> io::Result<()> {
    let ChunkResponse::Data(data) = response else {
        return write_message(io, response).await;
    };
    let header = ChunkResponse::data_header(data.len());
    let len = u32::try_from(header.len() + data.len())
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "chunk too large"))?;
    let mut head = len.to_be_bytes().to_vec();
    head.extend_from_slice(&header);
    io.write_all(&head).await?;
    io.write_all(data).await?;
    io.close().await
}

impl libp2p::request_response::Codec for ChunkCodec {
    type Protocol = StreamProtocol;
    type Request = ChunkRequest;
    type Response = ChunkResponse;

    async fn read_request<T>(&mut self, _: &StreamProtocol, io: &mut T) -> io::Result<ChunkRequest>
    where
        T: AsyncRead + Unpin + Send,
    {
        read_message(io).await
    }

    async fn read_response<T>(
        &mut self,
        _: &StreamProtocol,
        io: &mut T,
    ) -> io::Result<ChunkResponse>
    where
        T: AsyncRead + Unpin + Send,
    {
        read_chunk_response(io).await
    }

    async fn write_request<T>(
        &mut self,
        _: &StreamProtocol,
        io: &mut T,
        req: ChunkRequest,
    ) -> io::Result<()>
    where
        T: AsyncWrite + Unpin + Send,
    {
        write_message(io, &req).await
    }

    async fn write_response<T>(
        &mut self,
        _: &StreamProtocol,
        io: &mut T,
        res: ChunkResponse,
    ) -> io::Result<()>
    where
        T: AsyncWrite + Unpin + Send,
    {
        write_chunk_response(io, &res).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures::io::Cursor;

    fn block_on<F: std::future::Future>(f: F) -> F::Output {
        tokio::runtime::Builder::new_current_thread()
            .build()
            .expect("a runtime")
            .block_on(f)
    }

    fn framed(m: &ChunkResponse) -> Vec<u8> {
        let body = m.encode();
        let mut out = (body.len() as u32).to_be_bytes().to_vec();
        out.extend(body);
        out
    }

    #[test]
    fn chunk_responses_are_the_plain_encoding_both_ways() {
        for m in [
            ChunkResponse::Data(vec![3; 1 << 20]),
            ChunkResponse::Data(vec![1; 300]),
            ChunkResponse::Data(Vec::new()),
            ChunkResponse::Busy,
            ChunkResponse::NotFound,
        ] {
            let mut written = Cursor::new(Vec::new());
            block_on(write_chunk_response(&mut written, &m)).unwrap();
            assert_eq!(written.get_ref(), &framed(&m));
            let back = block_on(read_chunk_response(&mut Cursor::new(framed(&m)))).unwrap();
            assert_eq!(back, m);
        }
    }

    #[test]
    fn lying_chunk_frames_are_refused() {
        // a frame longer than the data it announces, and one shorter
        let mut long = framed(&ChunkResponse::Data(vec![1; 100]));
        long[3] += 1;
        long.push(0);
        assert!(block_on(read_chunk_response(&mut Cursor::new(long))).is_err());
        let mut short = framed(&ChunkResponse::Data(vec![1; 100]));
        short[3] -= 1;
        assert!(block_on(read_chunk_response(&mut Cursor::new(short))).is_err());
        // over the cap, before any body is read
        let huge = (u32::MAX).to_be_bytes().to_vec();
        assert!(block_on(read_chunk_response(&mut Cursor::new(huge))).is_err());
    }
}
