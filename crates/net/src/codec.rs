//! A request-response codec for any pair of `shoal-wire` messages: a 4-byte
//! big-endian length, then the message. The length is checked against the
//! message type's cap before the body is read.

use futures::{AsyncRead, AsyncReadExt as _, AsyncWrite, AsyncWriteExt as _};
use libp2p::StreamProtocol;
use shoal_wire::{Message, check_frame_len};
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

async fn read_message<M: Message, T: AsyncRead + Unpin + Send>(io: &mut T) -> io::Result<M> {
    let mut prefix = [0u8; 4];
    io.read_exact(&mut prefix).await?;
    let len = check_frame_len(prefix, M::MAX)
        .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))?;
    let mut body = vec![0u8; len];
    io.read_exact(&mut body).await?;
    M::decode(&body).map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))
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
