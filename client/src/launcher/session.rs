//! One swarm session, shared by install, update and repair: the checked
//! right to join ([`Session`]: tracker, pinned key, ticket), then a running
//! node that joins the swarm, fetches what its store lacks and gives back
//! by seeding ([`Swarm`]).

use super::errors::download_error;
use super::node::{self, Announcer, Node, Serving};
use super::trust::{Ticket, ticket, tracker_key};
use super::{now_secs, view};
use crate::config::Settings;
use crate::tracker::Tracker;
use anyhow::Context as _;
use shoal_net::download::{Counters, Job};
use shoal_store::Install;
use shoal_types::PublicKey;
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};
use tokio::sync::mpsc;
use tracing::Instrument as _;

/// The checked right to join one swarm: the tracker, its pinned key, and a
/// token with release metadata that checked out against that key and the
/// highest version this install accepted.
pub(super) struct Session {
    pub(super) tracker: Tracker,
    pub(super) key: PublicKey,
    pub(super) ticket: Ticket,
}

impl Session {
    /// Steps 1–2a for `product` on `channel`, as `launcher`'s peer id: for
    /// the version that plays now, or (`preload`) the newest, even locked.
    pub(super) async fn open(
        launcher: &Launcher,
        settings: &Settings,
        install: &Install,
        product: &str,
        channel: &str,
        preload: bool,
    ) -> anyhow::Result<Session> {
        let key = tracker_key(settings)?;
        let tracker = Tracker::new(&settings.tracker, settings.api_key.clone())?;
        let me = launcher.identity(settings)?.public().to_peer_id();
        let ticket = ticket(&tracker, &key, install, product, channel, &me, preload).await?;
        Ok(Session {
            tracker,
            key,
            ticket,
        })
    }

    /// Serves `serving` from `launcher`'s node (started by the first
    /// session that needs it) and joins the swarm.
    pub(super) async fn join(
        &self,
        launcher: &Launcher,
        settings: &Settings,
        serving: Arc<Serving>,
        counters: Arc<Counters>,
    ) -> anyhow::Result<Swarm> {
        let node = launcher.node(settings, self.key).await?;
        Ok(Swarm::join(
            node,
            &self.tracker,
            &self.ticket,
            serving,
            counters,
        ))
    }
}

/// The peer node of one launcher, started when its first product joins a
/// swarm and shared by every product it installs, updates or seeds at once
/// (`shoal update A B`).
#[derive(Debug, Default)]
pub struct Launcher {
    identity: std::sync::Mutex<Option<Identity>>,
    node: tokio::sync::OnceCell<Arc<Node>>,
}

/// The keypair a launcher's node runs as, and the lock that makes it ours.
#[derive(Debug)]
struct Identity {
    keypair: shoal_net::Keypair,
    _lock: Option<std::fs::File>,
}

impl Launcher {
    pub fn new() -> Launcher {
        Launcher::default()
    }

    /// The config directory's peer key, locked for as long as this launcher
    /// lives. If another launcher process holds it, a fresh identity for
    /// this run: two nodes of one identity would each answer for the
    /// other's swarms, and peers connected to one could not reach the other.
    fn identity(&self, settings: &Settings) -> anyhow::Result<shoal_net::Keypair> {
        let mut slot = self.identity.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(id) = &*slot {
            return Ok(id.keypair.clone());
        }
        let mine = shoal_net::keypair_from_seed(settings.peer_key.seed());
        let id = match &settings.peer_key_file {
            None => Identity {
                keypair: mine,
                _lock: None,
            },
            Some(path) => {
                let file = std::fs::File::open(path)
                    .with_context(|| format!("opening {}", path.display()))?;
                match file.try_lock() {
                    Ok(()) => Identity {
                        keypair: mine,
                        _lock: Some(file),
                    },
                    Err(std::fs::TryLockError::WouldBlock) => {
                        tracing::info!(
                            path = %path.display(),
                            "another launcher is running as this peer identity: this one joins as a fresh identity for this run"
                        );
                        Identity {
                            keypair: shoal_net::generate_keypair(),
                            _lock: None,
                        }
                    }
                    Err(std::fs::TryLockError::Error(e)) => {
                        return Err(e).with_context(|| format!("locking {}", path.display()));
                    }
                }
            }
        };
        let keypair = id.keypair.clone();
        *slot = Some(id);
        Ok(keypair)
    }

    async fn node(&self, settings: &Settings, key: PublicKey) -> anyhow::Result<Arc<Node>> {
        let keypair = self.identity(settings)?;
        let node = self
            .node
            .get_or_try_init(|| async { Node::start(settings, keypair, key).await.map(Arc::new) })
            .await?;
        Ok(node.clone())
    }
}

/// One product's part of the node: its events, its announce loop.
pub(super) struct Swarm {
    node: Arc<Node>,
    pub(super) events: mpsc::Receiver<shoal_net::Event>,
    pub(super) announcer: Arc<Announcer>,
    pub(super) announcing: tokio::task::JoinHandle<()>,
    pub(super) more: Option<mpsc::Receiver<shoal_net::download::Source>>,
    pub(super) counters: Arc<Counters>,
}

impl Drop for Swarm {
    fn drop(&mut self) {
        self.announcing.abort();
        self.node.detach(&self.announcer.serving.swarm);
    }
}

impl Swarm {
    fn join(
        node: Arc<Node>,
        tracker: &Tracker,
        ticket: &Ticket,
        serving: Arc<Serving>,
        counters: Arc<Counters>,
    ) -> Swarm {
        let client = &node.client;
        let events = node.attach(&serving, &counters);
        let announcer = Arc::new(Announcer {
            tracker: tracker.clone(),
            token: RwLock::new(ticket.token.to_text()),
            client: client.clone(),
            reserving: Default::default(),
            me: client.peer_id(),
            counters: counters.clone(),
            serving,
            complete: Default::default(),
            renewed: tokio::sync::watch::channel(ticket.token.clone()).0,
        });
        let (more_tx, more_rx) = mpsc::channel(256);
        let announcing = tokio::spawn(
            announcer
                .clone()
                .run(more_tx)
                .instrument(tracing::info_span!("announce", swarm = %ticket.swarm)),
        );
        Swarm {
            node,
            events,
            announcer,
            announcing,
            more: Some(more_rx),
            counters,
        }
    }

    /// The node this product runs on.
    pub(super) fn client(&self) -> &shoal_net::Client {
        &self.node.client
    }

    /// Fetches what `serving`'s store lacks; progress drawn if asked.
    pub(super) async fn fetch(
        &mut self,
        settings: &Settings,
        manifest: &shoal_manifest::Manifest,
        ticket: &Ticket,
        serving: &Serving,
        label: String,
        total: u64,
    ) -> anyhow::Result<shoal_net::download::Report> {
        let me = self.node.client.peer_id();
        let sources: Vec<_> = ticket
            .bootstrap
            .iter()
            .filter_map(|p| node::source(p, &me))
            .collect();
        let view = settings.progress.then(|| {
            tokio::spawn(
                view::show(label, self.counters.clone(), total, true)
                    .instrument(tracing::debug_span!("progress_view")),
            )
        });
        let job = Job {
            manifest,
            swarm: ticket.swarm,
            token: &ticket.token,
            sources: &sources,
            store: serving,
            scheduler: Default::default(),
            download_rate: settings.max_download,
            stall: settings.stall,
            more_sources: self.more.take(),
            counters: self.counters.clone(),
            renewed: Some(self.announcer.renewed.subscribe()),
        };
        let result = shoal_net::download::download(&self.node.client, &mut self.events, job).await;
        if let Some(v) = view {
            v.abort();
            view::clear();
        }
        result.map_err(download_error)
    }

    /// Runs `work` (the swap, which may take a while) while answering the
    /// node's events: peers that join us meanwhile hear what we hold, and
    /// unread events would fill the node's backlog and pause it.
    pub(super) async fn meanwhile<T>(&mut self, work: impl std::future::Future<Output = T>) -> T {
        let greeting = self.greet();
        tokio::pin!(work);
        tokio::select! {
            out = &mut work => out,
            () = greeting => work.await,
        }
    }

    /// Tells every peer that joins us what we hold, until the node stops
    /// (`shoal_net::download::give_back`).
    fn greet(&mut self) -> impl std::future::Future<Output = ()> + '_ {
        let serving = &self.announcer.serving;
        let (swarm, held) = (
            serving.swarm,
            serving.clone() as Arc<dyn shoal_net::ChunkSource>,
        );
        shoal_net::download::give_back(
            &self.node.client,
            &mut self.events,
            swarm,
            self.announcer.renewed.subscribe(),
            held,
        )
    }

    /// Serves until `until` or `stop`, then leaves the swarm.
    pub(super) async fn give_back(
        mut self,
        dir: &Path,
        until: Duration,
        stop: impl std::future::Future<Output = ()>,
    ) -> anyhow::Result<f64> {
        self.announcer.complete.store(true, Ordering::Relaxed);
        let mut seeded = 0.0;
        if !until.is_zero() {
            let start = Instant::now();
            let marker = SeedingMarker::write(dir, until)?;
            tokio::select! {
                _ = tokio::time::sleep(until) => {}
                _ = stop => {}
                () = self.greet() => {}
            }
            drop(marker);
            seeded = start.elapsed().as_secs_f64();
        }
        self.announcing.abort();
        self.announcer.leave().await;
        Ok(seeded)
    }
}

/// While a launcher seeds, `DIR/.shoal/seeding.json` says so (for `status`).
pub(super) struct SeedingMarker(PathBuf);

impl SeedingMarker {
    fn write(dir: &Path, until: Duration) -> anyhow::Result<SeedingMarker> {
        let path = dir.join(".shoal/seeding.json");
        let body = serde_json::json!({
            "pid": std::process::id(),
            "until": now_secs() + until.as_secs(),
        });
        std::fs::write(&path, body.to_string())
            .with_context(|| format!("writing {}", path.display()))?;
        Ok(SeedingMarker(path))
    }
}

impl Drop for SeedingMarker {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_second_launcher_at_once_runs_as_a_fresh_identity() {
        let dir = tempfile::tempdir().unwrap();
        let settings = crate::config::File::default().resolve(dir.path()).unwrap();
        let own = shoal_net::keypair_from_seed(settings.peer_key.seed())
            .public()
            .to_peer_id();
        let peer = |l: &Launcher| l.identity(&settings).unwrap().public().to_peer_id();
        let first = Launcher::new();
        assert_eq!(peer(&first), own);
        assert_eq!(peer(&first), own, "kept for the launcher's life");
        let second = Launcher::new();
        let fresh = peer(&second);
        assert_ne!(fresh, own, "the identity is held by the first");
        assert_eq!(peer(&second), fresh, "and the fresh one is kept");
        drop(first);
        assert_eq!(
            peer(&Launcher::new()),
            own,
            "free again once the first is gone"
        );
    }
}
