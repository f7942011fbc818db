//! Group commit for PostgreSQL appends (the audit log). Every token
//! decision appends one audit entry and answers only once it is committed;
//! one statement per entry serialises on the counter row (each holds its
//! lock until its commit is flushed), so decisions/s were one over the
//! commit latency. Here the first request in becomes the leader: it takes
//! every entry queued meanwhile and commits them in one statement (one
//! counter bump, one multi-row insert, one WAL flush), then answers each
//! with its own number. Requests arriving during that commit queue for the
//! next one. Numbers stay gapless and in commit order, as one at a time.

use super::postgres::PgStore;
use super::{Result, StoreError, Table};
use std::sync::{Arc, Mutex};
use tokio::sync::oneshot;
use tracing::Instrument as _;

/// Most entries one statement carries.
const MAX_BATCH: usize = 512;

/// One append waiting for a commit.
struct Pending {
    table: Table,
    counter: String,
    value: Vec<u8>,
    reply: oneshot::Sender<Result<u64>>,
}

/// Appends waiting, and the lock a leader holds while it commits them.
#[derive(Default)]
pub(super) struct Appends {
    queue: Mutex<Vec<Pending>>,
    leader: Arc<tokio::sync::Mutex<()>>,
}

impl Appends {
    /// Appends `value` to `table` numbered by `counter`; its number.
    pub(super) async fn append(
        &self,
        store: &PgStore,
        table: Table,
        counter: &str,
        value: &[u8],
    ) -> Result<u64> {
        let (reply, mut answer) = oneshot::channel();
        crate::lock(&self.queue).push(Pending {
            table,
            counter: counter.to_owned(),
            value: value.to_vec(),
            reply,
        });
        // Entries leave the queue only under the leader lock and are
        // answered before it is released: holding it, ours is either
        // answered or still queued.
        let guard = Arc::clone(&self.leader).lock_owned().await;
        if let Ok(result) = answer.try_recv() {
            return result;
        }
        let batch = std::mem::take(&mut *crate::lock(&self.queue));
        let store = store.clone();
        // The commit runs on its own task, so a request dropped midway (its
        // client went away) still answers the others it carries.
        let task = tokio::spawn(
            async move {
                let _guard = guard;
                commit_all(&store, batch).await;
            }
            .instrument(tracing::Span::current()),
        );
        let _ = task.await;
        answer
            .await
            .unwrap_or_else(|_| Err(StoreError::Backend("the audit append was lost".into())))
    }
}

/// Commits `batch`, one statement per (table, counter) and per
/// [`MAX_BATCH`] entries, and answers every entry.
async fn commit_all(store: &PgStore, mut batch: Vec<Pending>) {
    while !batch.is_empty() {
        let (table, counter) = (batch[0].table, batch[0].counter.clone());
        let (mut group, rest): (Vec<_>, Vec<_>) = batch
            .into_iter()
            .partition(|p| p.table == table && p.counter == counter);
        batch = rest;
        while !group.is_empty() {
            let tail = group.split_off(group.len().min(MAX_BATCH));
            let values: Vec<&[u8]> = group.iter().map(|p| p.value.as_slice()).collect();
            let result = store.append_many(table, &counter, &values).await;
            for (i, p) in group.into_iter().enumerate() {
                let answer = match &result {
                    Ok(first) => Ok(first + i as u64),
                    Err(e) => Err(StoreError::Backend(e.to_string())),
                };
                let _ = p.reply.send(answer);
            }
            group = tail;
        }
    }
}
