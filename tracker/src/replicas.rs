//! Swarm membership shared between tracker replicas on one PostgreSQL
//! database. Every replica keeps its swarms in memory, as a lone tracker
//! does, and answers announces from them; what it learns it also queues
//! here. Once per [`EXCHANGE_MS`] a task writes the queue in one statement
//! (the newest report per peer; a peer that left as a row without one) and
//! reads the rows other replicas wrote since its last read, merging them
//! into its swarms. An announce at one replica is therefore in the others'
//! peer lists within about two exchange periods, far inside one announce
//! interval, and the database sees one write per peer per period however
//! often the peer announces.

use crate::State;
use crate::store::StoreError;
use crate::store::postgres::PgStore;
use crate::swarm::PeerReport;
use shoal_types::Hash;
use std::collections::HashMap;
use std::sync::Mutex;

/// How often a replica writes its queue and reads the others'.
pub const EXCHANGE_MS: u64 = 500;

/// Rows are read again this far back, so a row whose transaction committed
/// late (after a later one was already read) is not missed.
const OVERLAP_MS: i64 = 5_000;

/// Most rows read in one query (the read pages on).
const PAGE: i64 = 20_000;

/// Most queued changes: past it, the oldest peers' next announces carry
/// them (membership is soft state, re-announced every interval).
const MAX_QUEUE: usize = 1_000_000;

/// Queued changes: (swarm, peer) → (newest report, or `None` for a
/// departure; when it happened).
type Queue = HashMap<(Hash, String), (Option<PeerReport>, u64)>;

/// One replica's side of the exchange.
#[derive(Debug)]
pub struct Replicas {
    pub pg: PgStore,
    /// This replica's random id: rows it wrote are not read back.
    pub id: String,
    queue: Mutex<Queue>,
    /// The newest `written_ms` read so far.
    read_to: Mutex<i64>,
    /// Exchanges run and rows merged, for metrics.
    pub merged: std::sync::atomic::AtomicU64,
}

impl Replicas {
    pub fn new(pg: PgStore) -> Replicas {
        let mut seed = [0u8; 8];
        let _ = getrandom::getrandom(&mut seed);
        Replicas {
            pg,
            id: format!("{:016x}", u64::from_le_bytes(seed)),
            queue: Mutex::new(HashMap::new()),
            read_to: Mutex::new(0),
            merged: std::sync::atomic::AtomicU64::new(0),
        }
    }

    /// Queues an announce (`Some`) or a departure (`None`) taken here.
    pub fn note(&self, swarm: Hash, peer: &str, report: Option<PeerReport>, at: u64) {
        let mut queue = crate::lock(&self.queue);
        if queue.len() >= MAX_QUEUE && !queue.contains_key(&(swarm, peer.to_owned())) {
            return;
        }
        queue.insert((swarm, peer.to_owned()), (report, at));
    }

    /// Writes the queue in one statement.
    async fn write(&self) -> Result<usize, StoreError> {
        let batch: Vec<_> = std::mem::take(&mut *crate::lock(&self.queue))
            .into_iter()
            .collect();
        if batch.is_empty() {
            return Ok(0);
        }
        let mut swarms = Vec::with_capacity(batch.len());
        let mut peers = Vec::with_capacity(batch.len());
        let mut reports = Vec::with_capacity(batch.len());
        let mut ats = Vec::with_capacity(batch.len());
        for ((swarm, peer), (report, at)) in &batch {
            swarms.push(swarm.as_bytes().to_vec());
            peers.push(peer.clone());
            reports.push(
                report
                    .as_ref()
                    .map(|r| serde_json::to_vec(r).expect("reports serialise")),
            );
            ats.push(i64::try_from(*at).unwrap_or(i64::MAX));
        }
        let written = self
            .pg
            .execute(
                "INSERT INTO members (swarm, peer, replica, report, at, written_ms)
                 SELECT s, p, $5, r, a, (extract(epoch FROM clock_timestamp()) * 1000)::bigint
                 FROM unnest($1::bytea[], $2::text[], $3::bytea[], $4::bigint[]) AS t(s, p, r, a)
                 ON CONFLICT (swarm, peer) DO UPDATE SET
                     replica = EXCLUDED.replica, report = EXCLUDED.report,
                     at = EXCLUDED.at, written_ms = EXCLUDED.written_ms
                 WHERE members.at <= EXCLUDED.at",
                &[&swarms, &peers, &reports, &ats, &self.id],
            )
            .await;
        if let Err(e) = written {
            // put the batch back (newer notes win) and try next period
            let mut queue = crate::lock(&self.queue);
            for (k, v) in batch {
                queue.entry(k).or_insert(v);
            }
            return Err(e);
        }
        Ok(batch.len())
    }

    /// Reads the rows other replicas wrote since the last read and merges
    /// them into `state`'s swarms. Returns how many it merged.
    async fn read(&self, state: &State) -> Result<usize, StoreError> {
        let mut merged = 0;
        loop {
            let since = crate::lock(&self.read_to).saturating_sub(OVERLAP_MS);
            let rows = self
                .pg
                .query(
                    "SELECT swarm, peer, report, at, written_ms FROM members
                     WHERE written_ms > $1 AND replica <> $2
                     ORDER BY written_ms LIMIT $3",
                    &[&since, &self.id, &PAGE],
                )
                .await?;
            let n = rows.len();
            let mut newest = since;
            for row in rows {
                let swarm: Vec<u8> = row.get(0);
                let Ok(swarm) = <[u8; 32]>::try_from(swarm.as_slice()) else {
                    continue;
                };
                let swarm = Hash(swarm);
                let peer: String = row.get(1);
                let report: Option<Vec<u8>> = row.get(2);
                let at = u64::try_from(row.get::<_, i64>(3)).unwrap_or(0);
                newest = newest.max(row.get::<_, i64>(4));
                let report = match report.map(|r| serde_json::from_slice::<PeerReport>(&r)) {
                    Some(Ok(r)) => Some(r),
                    Some(Err(e)) => {
                        tracing::warn!(%peer, error = %e, "a member row does not decode");
                        continue;
                    }
                    None => None,
                };
                state.with_swarm(&swarm, |s| {
                    // what this replica heard itself more recently stands
                    if s.last_seen(&peer).is_some_and(|seen| seen > at) {
                        return;
                    }
                    match report {
                        Some(r) => s.announce(at, r),
                        None => s.remove(&peer),
                    }
                });
                merged += 1;
            }
            {
                let mut read_to = crate::lock(&self.read_to);
                *read_to = (*read_to).max(newest);
            }
            if n < PAGE as usize {
                break;
            }
        }
        self.merged
            .fetch_add(merged as u64, std::sync::atomic::Ordering::Relaxed);
        Ok(merged)
    }

    /// Deletes rows older than `deadline` (peers that stopped announcing).
    async fn sweep(&self, deadline: u64) -> Result<u64, StoreError> {
        let deadline = i64::try_from(deadline).unwrap_or(i64::MAX);
        self.pg
            .execute("DELETE FROM members WHERE at < $1", &[&deadline])
            .await
    }

    /// One period: write, read, and now and then sweep.
    pub async fn exchange(&self, state: &State, sweep: bool) -> Result<(), StoreError> {
        self.write().await?;
        self.read(state).await?;
        if sweep {
            let deadline = state
                .now()
                .saturating_sub(2 * state.config.announce_interval_secs);
            self.sweep(deadline).await?;
        }
        Ok(())
    }
}
