//! One node, several swarms: a launcher that updates two products at once,
//! or seeds one release while it fetches another, runs one node. [`Router`]
//! hands each download the events of its own swarm (and every connection's
//! end), and [`Swarms`] serves each swarm's chunks from its own store.

use crate::{Budget, ChunkSource, Event};
use shoal_types::{Bitfield, Hash};
use std::collections::HashMap;
use std::sync::{Arc, Mutex, RwLock};
use tokio::sync::mpsc;
use tracing::Instrument as _;

/// Events queued to one subscriber before the router waits for it.
const SUBSCRIBER_QUEUE: usize = 1024;

/// Splits a node's event stream between subscribers, one per swarm they
/// download. A subscriber gets the haves and authentications of its swarm
/// and every `Disconnected` and `Direct` (connections are shared between
/// swarms). Delivery is lossless and in order: when a subscriber's queue is
/// full the router waits for it, and the node holds back behind it within
/// its own bound, so every subscriber must keep reading (as a single reader
/// of [`crate::spawn`]'s stream had to). Events of a swarm nobody subscribes
/// to are dropped, so a node whose downloads are over needs no reader.
/// A dropped receiver unsubscribes.
#[derive(Debug, Clone)]
pub struct Router {
    routes: Arc<Mutex<Routes>>,
}

#[derive(Debug, Default)]
struct Routes {
    list: Vec<Route>,
}

#[derive(Debug)]
struct Route {
    swarm: Hash,
    tx: mpsc::Sender<Event>,
}

impl Router {
    /// Starts routing `events` (the stream [`crate::spawn`] returned). The
    /// routing task ends when the node stops.
    pub fn new(mut events: mpsc::Receiver<Event>) -> Router {
        let routes = Arc::new(Mutex::new(Routes::default()));
        let shared = routes.clone();
        tokio::spawn(
            async move {
                while let Some(event) = events.recv().await {
                    let targets = lock(&shared).targets(&event);
                    for tx in targets {
                        if tx.send(event.clone()).await.is_err() {
                            lock(&shared).list.retain(|r| !r.tx.same_channel(&tx));
                        }
                    }
                }
            }
            .instrument(tracing::debug_span!("route_events")),
        );
        Router { routes }
    }

    /// The events for a download of `swarm`, from now on. Subscribe before
    /// dialling its sources, so that no early have is missed.
    pub fn subscribe(&self, swarm: Hash) -> mpsc::Receiver<Event> {
        let (tx, rx) = mpsc::channel(SUBSCRIBER_QUEUE);
        lock(&self.routes).list.push(Route { swarm, tx });
        rx
    }

    /// Subscribers right now (dropped receivers leave at the next event
    /// meant for them).
    pub fn subscribers(&self) -> usize {
        lock(&self.routes).list.len()
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl Routes {
    fn targets(&self, event: &Event) -> Vec<mpsc::Sender<Event>> {
        let swarm = match event {
            Event::Have { message, .. } => Some(message.swarm),
            Event::Authenticated { swarm, .. } => Some(*swarm),
            Event::Disconnected { .. } | Event::Direct { .. } => None,
        };
        self.list
            .iter()
            .filter(|r| swarm.is_none_or(|s| s == r.swarm))
            .map(|r| r.tx.clone())
            .collect()
    }
}

/// The chunks of several swarms behind one node: each request goes to the
/// source of its swarm; a swarm not added is not held.
#[derive(Default)]
pub struct Swarms {
    by_swarm: RwLock<HashMap<Hash, Arc<dyn ChunkSource>>>,
}

impl std::fmt::Debug for Swarms {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Swarms")
            .field("swarms", &self.read().keys().collect::<Vec<_>>())
            .finish()
    }
}

impl Swarms {
    pub fn new() -> Swarms {
        Swarms::default()
    }

    /// Serves `swarm` from `source` (replacing what served it before).
    pub fn add(&self, swarm: Hash, source: Arc<dyn ChunkSource>) {
        self.by_swarm
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .insert(swarm, source);
    }

    /// Stops serving `swarm`.
    pub fn remove(&self, swarm: &Hash) {
        self.by_swarm
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .remove(swarm);
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, HashMap<Hash, Arc<dyn ChunkSource>>> {
        self.by_swarm.read().unwrap_or_else(|p| p.into_inner())
    }

    fn of(&self, swarm: &Hash) -> Option<Arc<dyn ChunkSource>> {
        self.read().get(swarm).cloned()
    }
}

impl ChunkSource for Swarms {
    fn chunk(&self, swarm: &Hash, index: u32) -> Option<Vec<u8>> {
        self.of(swarm)?.chunk(swarm, index)
    }
    fn bitfield(&self, swarm: &Hash) -> Option<Bitfield> {
        self.of(swarm)?.bitfield(swarm)
    }
    fn settling(&self, swarm: &Hash) -> bool {
        self.of(swarm).is_some_and(|s| s.settling(swarm))
    }
    fn chunk_len(&self, swarm: &Hash, index: u32) -> Option<u32> {
        self.of(swarm)?.chunk_len(swarm, index)
    }
    fn budget(&self, swarm: &Hash, index: u32) -> Budget {
        self.of(swarm)
            .map_or(Budget::Window, |s| s.budget(swarm, index))
    }
    fn promised(&self, swarm: &Hash, index: u32) {
        if let Some(s) = self.of(swarm) {
            s.promised(swarm, index);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use libp2p::PeerId;
    use shoal_wire::{HaveMessage, HaveUpdate};
    use std::time::Duration;

    fn have(swarm: Hash, peer: PeerId) -> Event {
        Event::Have {
            peer,
            message: HaveMessage {
                swarm,
                update: HaveUpdate::Have(vec![1]),
            },
        }
    }

    #[tokio::test]
    async fn each_download_hears_its_own_swarm_and_every_disconnect() {
        let (tx, rx) = mpsc::channel(4);
        let router = Router::new(rx);
        let (a, b) = (Hash::of(b"a"), Hash::of(b"b"));
        let mut sub_a = router.subscribe(a);
        let mut sub_b = router.subscribe(b);
        let peer = PeerId::random();
        tx.send(have(b, peer)).await.unwrap();
        tx.send(Event::Authenticated { peer, swarm: a })
            .await
            .unwrap();
        tx.send(Event::Disconnected { peer }).await.unwrap();
        let got_a = [sub_a.recv().await.unwrap(), sub_a.recv().await.unwrap()];
        assert!(matches!(got_a[0], Event::Authenticated { swarm, .. } if swarm == a));
        assert!(matches!(got_a[1], Event::Disconnected { .. }));
        let got_b = [sub_b.recv().await.unwrap(), sub_b.recv().await.unwrap()];
        assert!(matches!(&got_b[0], Event::Have { message, .. } if message.swarm == b));
        assert!(matches!(got_b[1], Event::Disconnected { .. }));
    }

    #[tokio::test]
    async fn a_busy_subscriber_is_waited_for_and_a_dropped_one_leaves() {
        let (tx, rx) = mpsc::channel(4);
        let router = Router::new(rx);
        let a = Hash::of(b"a");
        let mut busy = router.subscribe(a);
        let gone = router.subscribe(a);
        drop(gone);
        let peer = PeerId::random();
        let n = SUBSCRIBER_QUEUE + 500;
        let sender = tokio::spawn(
            async move {
                for _ in 0..n {
                    tx.send(have(a, peer)).await.unwrap();
                }
            }
            .instrument(tracing::debug_span!("send")),
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
        assert!(!sender.is_finished(), "held back, not dropped");
        for _ in 0..n {
            assert!(matches!(busy.recv().await, Some(Event::Have { .. })));
        }
        sender.await.unwrap();
        assert_eq!(router.subscribers(), 1, "the dropped receiver left");
    }
}
