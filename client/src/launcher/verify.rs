//! `shoal verify` (rehash the install) and `shoal repair` (fetch exactly
//! the damaged chunks through the swarm).

use super::errors::store_error;
use super::node::{Held, Serving};
use super::session::Session;
use super::{installed_build, open_install, view};
use crate::config::Settings;
use crate::{Exit, with_exit};
use serde::Serialize;
use shoal_net::download::Counters;
use shoal_types::Bitfield;
use std::path::Path;
use std::sync::atomic::Ordering;
use std::sync::{Arc, RwLock};
use std::time::Duration;
use tracing::Instrument as _;

/// What `shoal verify` found.
#[derive(Debug, Clone, Serialize)]
pub struct Verified {
    pub product: String,
    pub version: u64,
    pub files: usize,
    pub bytes: u64,
    pub damage: Vec<shoal_store::Damage>,
}

/// Rehashes the install against its manifest.
pub async fn verify(settings: &Settings, dir: &Path) -> anyhow::Result<Verified> {
    let install = open_install(settings, dir)?;
    let build = Arc::new(installed_build(&install)?);
    let counters: Arc<Counters> = Default::default();
    let total = build.record.size;
    let view = settings.progress.then(|| {
        tokio::spawn(
            view::show("verifying".into(), counters.clone(), total, false)
                .instrument(tracing::debug_span!("progress_view")),
        )
    });
    let damage = {
        let build = build.clone();
        let counters = counters.clone();
        tokio::task::spawn_blocking({
            let span = tracing::Span::current();
            move || {
                span.in_scope(|| {
                    build.check(|n| {
                        counters.from_seeds.fetch_add(n, Ordering::Relaxed);
                    })
                })
            }
        })
        .await?
    };
    if let Some(v) = view {
        v.abort();
        view::clear();
    }
    Ok(Verified {
        product: build.record.product.clone(),
        version: build.record.version,
        files: build.manifest().files().count(),
        bytes: total,
        damage,
    })
}

/// What `shoal repair` did.
#[derive(Debug, Clone, Serialize)]
pub struct Repaired {
    pub product: String,
    pub version: u64,
    pub damaged_files: usize,
    pub chunks_fetched: u32,
    pub bytes_fetched: u64,
    pub from_peers: u64,
    pub from_seeds: u64,
}

/// Fetches exactly the damaged chunks of the installed build.
pub async fn repair(settings: &Settings, dir: &Path) -> anyhow::Result<Repaired> {
    let install = open_install(settings, dir)?;
    let build = Arc::new(installed_build(&install)?);
    let damage = {
        let build = build.clone();
        tokio::task::spawn_blocking({
            let span = tracing::Span::current();
            move || span.in_scope(|| build.check(|_| {}))
        })
        .await?
    };
    let mut repaired = Repaired {
        product: build.record.product.clone(),
        version: build.record.version,
        damaged_files: damage.len(),
        chunks_fetched: 0,
        bytes_fetched: 0,
        from_peers: 0,
        from_seeds: 0,
    };
    if damage.is_empty() {
        return Ok(repaired);
    }
    let n = build.manifest().chunks.len() as u32;
    let mut good = Bitfield::full(n);
    for c in damage.iter().flat_map(|d| &d.chunks) {
        good.clear(*c);
    }
    repaired.chunks_fetched = n - good.count();
    let launcher = super::session::Launcher::new();
    let session = Session::open(
        &launcher,
        settings,
        &install,
        &build.record.product,
        &build.record.channel,
        false,
    )
    .await?;
    let ticket = &session.ticket;
    if ticket.swarm != build.record.release_id {
        return Err(with_exit(
            anyhow::anyhow!(
                "version {} is out; `shoal update` replaces damaged files as it updates",
                ticket.release.version
            ),
            Exit::BadInput,
        ));
    }
    build.prepare_repair().map_err(store_error)?;
    let counters: Arc<Counters> = Default::default();
    let serving = Arc::new(Serving::new(
        ticket.swarm,
        Held::Repair(build.clone(), Arc::new(RwLock::new(good))),
    ));
    let mut swarm = session
        .join(&launcher, settings, serving.clone(), counters.clone())
        .await?;
    let missing: u64 = damage
        .iter()
        .flat_map(|d| &d.chunks)
        .map(|&c| u64::from(build.wire_manifest().chunks[c as usize].len))
        .sum();
    swarm
        .fetch(
            settings,
            build.wire_manifest(),
            ticket,
            &serving,
            "repairing".into(),
            missing,
        )
        .await?;
    build.finish_repair().map_err(store_error)?;
    swarm.give_back(dir, Duration::ZERO, async {}).await?;
    repaired.from_peers = counters.from_peers.load(Ordering::Relaxed);
    repaired.from_seeds = counters.from_seeds.load(Ordering::Relaxed);
    repaired.bytes_fetched = counters.received();
    let left = build.check(|_| {});
    if !left.is_empty() {
        return Err(anyhow::anyhow!(
            "{} files are still damaged after the repair",
            left.len()
        ));
    }
    Ok(repaired)
}
