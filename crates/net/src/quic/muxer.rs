//! One QUIC connection as a libp2p stream muxer, and its streams.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

use futures::FutureExt;
use futures::future::BoxFuture;
use libp2p::core::muxing::{StreamMuxer, StreamMuxerEvent};

use super::*;

/// One QUIC connection as a libp2p stream muxer: every libp2p stream is a QUIC
/// bidirectional stream.
pub struct Connection {
    connection: quinn::Connection,
    inbound: Option<StreamFuture>,
    outbound: Option<StreamFuture>,
    closing: Option<BoxFuture<'static, quinn::ConnectionError>>,
}

impl std::fmt::Debug for Connection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Connection")
            .field("remote", &self.connection.remote_address())
            .finish_non_exhaustive()
    }
}

impl Connection {
    pub(super) fn new(connection: quinn::Connection) -> Self {
        Connection {
            connection,
            inbound: None,
            outbound: None,
            closing: None,
        }
    }
}

/// A stream being opened or accepted.
type StreamFuture = BoxFuture<'static, Result<Stream, quinn::ConnectionError>>;

fn poll_stream(
    slot: &mut Option<StreamFuture>,
    cx: &mut Context<'_>,
    start: impl FnOnce() -> StreamFuture,
) -> Poll<Result<Stream, QuicError>> {
    let future = slot.get_or_insert_with(start);
    let result = futures::ready!(future.poll_unpin(cx));
    *slot = None;
    Poll::Ready(result.map_err(QuicError::from))
}

impl StreamMuxer for Connection {
    type Substream = Stream;
    type Error = QuicError;

    fn poll_inbound(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Result<Self::Substream, Self::Error>> {
        let this = self.get_mut();
        let connection = &this.connection;
        poll_stream(&mut this.inbound, cx, || {
            let connection = connection.clone();
            async move { connection.accept_bi().await.map(Stream::new) }.boxed()
        })
    }

    fn poll_outbound(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Result<Self::Substream, Self::Error>> {
        let this = self.get_mut();
        let connection = &this.connection;
        poll_stream(&mut this.outbound, cx, || {
            let connection = connection.clone();
            async move { connection.open_bi().await.map(Stream::new) }.boxed()
        })
    }

    fn poll_close(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        let this = self.get_mut();
        let connection = &this.connection;
        let closing = this.closing.get_or_insert_with(|| {
            connection.close(0u32.into(), b"");
            let connection = connection.clone();
            async move { connection.closed().await }.boxed()
        });
        match futures::ready!(closing.poll_unpin(cx)) {
            quinn::ConnectionError::LocallyClosed => Poll::Ready(Ok(())),
            error => Poll::Ready(Err(error.into())),
        }
    }

    fn poll(
        self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
    ) -> Poll<Result<StreamMuxerEvent, Self::Error>> {
        // Migration is off, so the remote address never changes.
        Poll::Pending
    }
}

/// One QUIC bidirectional stream.
#[derive(Debug)]
pub struct Stream {
    send: quinn::SendStream,
    recv: quinn::RecvStream,
    finished: bool,
}

impl Stream {
    fn new((send, recv): (quinn::SendStream, quinn::RecvStream)) -> Stream {
        Stream {
            send,
            recv,
            finished: false,
        }
    }
}

impl futures::AsyncRead for Stream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut [u8],
    ) -> Poll<io::Result<usize>> {
        futures::AsyncRead::poll_read(Pin::new(&mut self.get_mut().recv), cx, buf)
    }
}

impl futures::AsyncWrite for Stream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        futures::AsyncWrite::poll_write(Pin::new(&mut self.get_mut().send), cx, buf)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        futures::AsyncWrite::poll_flush(Pin::new(&mut self.get_mut().send), cx)
    }

    fn poll_close(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        // Closing is finishing the send side, which quinn allows once; both the codecs
        // and request-response close, so the second close is a no-op.
        let this = self.get_mut();
        if this.finished {
            return Poll::Ready(Ok(()));
        }
        futures::ready!(futures::AsyncWrite::poll_close(
            Pin::new(&mut this.send),
            cx
        ))?;
        this.finished = true;
        Poll::Ready(Ok(()))
    }
}
