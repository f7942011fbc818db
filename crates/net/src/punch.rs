//! Hole punching for the QUIC transport. A dial in the listener role (the
//! side of a DCUtR upgrade that waits for the other's connection) sends
//! stray UDP packets from the listening socket to the remote: that opens
//! this side's NAT mapping and filter for the remote's address, so the
//! remote's connection attempt gets through, and the incoming connection
//! from that address becomes the dial's result instead of a new inbound one.

use crate::quic::QuicError;
use std::collections::HashMap;
use std::net::{SocketAddr, UdpSocket};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::oneshot;

/// Most hole punches waiting on one listener at once.
pub(crate) const MAX_WAITING: usize = 64;

/// The dials waiting for a connection from an address, per listener.
#[derive(Debug, Default)]
pub(crate) struct Waiting {
    dials: HashMap<SocketAddr, oneshot::Sender<quinn::Incoming>>,
}

impl Waiting {
    /// Registers a dial waiting for `remote`; `None` when too many wait.
    pub(crate) fn wait_for(
        &mut self,
        remote: SocketAddr,
    ) -> Option<oneshot::Receiver<quinn::Incoming>> {
        self.dials.retain(|_, tx| !tx.is_closed());
        if self.dials.len() >= MAX_WAITING && !self.dials.contains_key(&remote) {
            return None;
        }
        let (tx, rx) = oneshot::channel();
        self.dials.insert(remote, tx);
        Some(rx)
    }

    /// Dials still waiting.
    #[cfg(test)]
    pub(crate) fn claim_count(&self) -> usize {
        self.dials.values().filter(|tx| !tx.is_closed()).count()
    }

    /// Hands `incoming` to the dial waiting for its address, if any; gives
    /// it back otherwise (an ordinary inbound connection).
    pub(crate) fn claim(&mut self, incoming: quinn::Incoming) -> Option<quinn::Incoming> {
        match self.dials.remove(&incoming.remote_address()) {
            Some(tx) => tx.send(incoming).err(),
            None => Some(incoming),
        }
    }
}

/// Sends punch packets from `socket` to `to` every 10 to 200 ms (random, as
/// libp2p-quic does, so both sides' packets do not keep crossing in step)
/// until the remote's connection arrives on `arrived`, or `limit` passes.
pub(crate) async fn punch(
    socket: Arc<UdpSocket>,
    to: SocketAddr,
    arrived: oneshot::Receiver<quinn::Incoming>,
    limit: Duration,
    seed: u64,
) -> Result<quinn::Incoming, QuicError> {
    let mut rng = shoal_types::Rng::new(seed);
    let sending = async move {
        let mut packet = [0u8; 64];
        loop {
            for b in packet.chunks_mut(8) {
                b.copy_from_slice(&rng.next_u64().to_le_bytes()[..b.len()]);
            }
            // The socket is quinn's (non-blocking); a full send buffer only
            // skips one packet of many.
            if let Err(e) = socket.send_to(&packet, to)
                && e.kind() != std::io::ErrorKind::WouldBlock
            {
                tracing::debug!(%to, error = %e, "hole punch packet not sent");
            }
            tokio::time::sleep(Duration::from_millis(10 + rng.below(190) as u64)).await;
        }
    };
    tokio::select! {
        incoming = arrived => incoming.map_err(|_| QuicError::HolePunch("the listener went away")),
        _ = sending => unreachable!("the punch loop never ends by itself"),
        _ = tokio::time::sleep(limit) => {
            tracing::info!(%to, ?limit, "hole punch failed: no connection came through");
            Err(QuicError::HolePunch("no connection came through the hole in time"))
        }
    }
}
