//! Registering a bundle with the tracker and pushing it to running seeds
//! (`shoal publish --seed`, `shoal push`).
//!
//! Registration is idempotent (the tracker answers the existing release
//! when the channel's newest manifest is registered again), and so is a
//! push: each seed lists the chunks it still lacks, so a rerun after a
//! failure uploads only the rest, and a patch only what the seed does not
//! already hold for an earlier release.

use crate::cli::PushTarget;
use crate::tracker::Tracker;
use crate::{Exit, human, progress, with_exit};
use anyhow::Context as _;
use futures::StreamExt as _;
use serde::{Deserialize, Serialize};
use shoal_manifest::Bundle;
use shoal_manifest::seal::ContentKey;
use shoal_types::Hash;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// Chunk uploads in flight per seed.
const CONCURRENCY: usize = 4;
/// Attempts per chunk before the push fails (transport errors and 5xx).
const ATTEMPTS: u32 = 4;

/// The registered release.
#[derive(Debug, Clone, Serialize)]
pub struct Registered {
    pub release_id: Hash,
    pub version: u64,
}

/// What one seed got.
#[derive(Debug, Clone, Serialize)]
pub struct Pushed {
    pub seed: String,
    pub chunks: u32,
    /// Chunks the seed already had (earlier pushes, other releases).
    pub reused_chunks: u32,
    pub uploaded_chunks: u32,
    pub uploaded_bytes: u64,
    pub seconds: f64,
}

/// What `begin` and `commit` answer (see the seed's `push` module).
#[derive(Debug, Deserialize)]
struct SeedStatus {
    chunks: u32,
    have: u32,
    missing: Vec<u32>,
    missing_bytes: u64,
    complete: bool,
}

/// Registers the bundle's manifest with the tracker (publisher key).
pub async fn register(target: &PushTarget, bundle: &Bundle) -> anyhow::Result<Registered> {
    let url = target
        .tracker
        .as_deref()
        .context("--tracker is needed to register the release")?;
    let key = target
        .api_key
        .clone()
        .context("--api-key (or SHOAL_API_KEY) is needed to register the release")?;
    let tracker = Tracker::new(url, Some(key))?;
    let answer = tracker
        .post_bytes(
            &crate::admin::register_path(target.origin_budget),
            bundle.signed().to_bytes(),
        )
        .await
        .context("registering the release")?;
    Ok(Registered {
        release_id: answer["id"]
            .as_str()
            .and_then(|s| s.parse().ok())
            .context("the tracker's answer has no release id")?,
        version: answer["version"]
            .as_u64()
            .context("the tracker's answer has no version")?,
    })
}

/// Uploads an encrypted release's content key (and unlock time).
async fn upload_key(
    target: &PushTarget,
    registered: &Registered,
    key: &ContentKey,
) -> anyhow::Result<()> {
    let url = target
        .tracker
        .as_deref()
        .context("--tracker is needed to upload the content key")?;
    let tracker = Tracker::new(url, target.api_key.clone())?;
    let body = shoal_api::SetContentKey {
        content_key: key.to_hex(),
        unlock_at: target.unlock_at,
    };
    tracker
        .send(
            reqwest::Method::PUT,
            &format!("/v1/releases/{}/key", registered.release_id),
            &body,
        )
        .await
        .context("uploading the content key")?;
    Ok(())
}

fn seed_error(seed: &str, e: impl std::fmt::Display) -> anyhow::Error {
    with_exit(anyhow::anyhow!("seed {seed}: {e}"), Exit::SeedFailed)
}

struct SeedApi {
    http: reqwest::Client,
    base: String,
    key: String,
}

enum Failure {
    /// Worth another try: the transport failed or the seed had a 5xx.
    Retry(String),
    /// The seed refused (4xx): its code and detail.
    Refused(String),
}

impl SeedApi {
    async fn send(&self, req: reqwest::RequestBuilder) -> Result<reqwest::Response, Failure> {
        let resp = req
            .bearer_auth(&self.key)
            .send()
            .await
            .map_err(|e| Failure::Retry(format!("unreachable: {e}")))?;
        let status = resp.status();
        if status.is_success() {
            return Ok(resp);
        }
        let body: serde_json::Value = resp.json().await.unwrap_or_default();
        let text = format!(
            "{} ({}, HTTP {})",
            body["detail"].as_str().unwrap_or("no detail"),
            body["error"].as_str().unwrap_or("error"),
            status.as_u16()
        );
        Err(if status.is_server_error() && status.as_u16() != 507 {
            Failure::Retry(text)
        } else {
            Failure::Refused(text)
        })
    }

    /// Sends the request `make` builds, again after transport errors and
    /// 5xx (with back-off), up to [`ATTEMPTS`] times; `what` names it in errors.
    async fn retrying(
        &self,
        what: &str,
        make: impl Fn() -> reqwest::RequestBuilder,
    ) -> anyhow::Result<reqwest::Response> {
        let mut last = String::new();
        for attempt in 0..ATTEMPTS {
            if attempt > 0 {
                tokio::time::sleep(Duration::from_millis(500 << attempt)).await;
            }
            match self.send(make()).await {
                Ok(resp) => return Ok(resp),
                Err(Failure::Refused(t)) => {
                    return Err(seed_error(&self.base, format!("{what}: {t}")));
                }
                Err(Failure::Retry(t)) => last = t,
            }
        }
        Err(seed_error(&self.base, format!("{what}: {last}")))
    }

    /// `POST`s to `path` (begin or commit) and reads the seed's status.
    async fn status(&self, what: &str, path: &str) -> anyhow::Result<SeedStatus> {
        let url = format!("{}{path}", self.base);
        self.retrying(what, || self.http.post(&url))
            .await?
            .json()
            .await
            .map_err(|e| seed_error(&self.base, format!("{what}: bad answer: {e}")))
    }

    async fn put_chunk(&self, release: &Hash, index: u32, bytes: Vec<u8>) -> anyhow::Result<()> {
        let url = format!("{}/v1/push/{release}/chunks/{index}", self.base);
        // Bytes: each attempt shares the chunk instead of copying it.
        let bytes = bytes::Bytes::from(bytes);
        self.retrying(&format!("chunk {index}"), || {
            self.http.put(&url).body(bytes.clone())
        })
        .await
        .map(drop)
    }
}

/// Uploads what `seed` lacks of the release and commits it there.
pub async fn push(
    seed: &str,
    key: &str,
    bundle: Arc<Bundle>,
    release: Hash,
    done: &AtomicU64,
    total: &AtomicU64,
) -> anyhow::Result<Pushed> {
    let start = Instant::now();
    let base = crate::tracker::http_base("seed", seed)?;
    let api = SeedApi {
        http: reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(10))
            .timeout(Duration::from_secs(120))
            .build()?,
        base,
        key: key.to_owned(),
    };
    let begun = api.status("begin", &format!("/v1/push/{release}")).await?;
    let reused = begun.have;
    // What the seed already holds never needs sending.
    total.fetch_sub(
        bundle
            .manifest()
            .unique_size()
            .saturating_sub(begun.missing_bytes),
        Ordering::Relaxed,
    );
    if begun.complete {
        return Ok(Pushed {
            seed: seed.to_owned(),
            chunks: begun.chunks,
            reused_chunks: reused,
            uploaded_chunks: 0,
            uploaded_bytes: 0,
            seconds: start.elapsed().as_secs_f64(),
        });
    }
    tracing::info!(
        seed,
        chunks = begun.chunks,
        missing = begun.missing.len(),
        missing_bytes = begun.missing_bytes,
        "pushing"
    );
    let uploads = futures::stream::iter(begun.missing.iter().copied())
        .map(|index| {
            let (api, bundle) = (&api, bundle.clone());
            async move {
                // Read (and verify) on a blocking thread: a damaged bundle never leaves.
                let bytes = tokio::task::spawn_blocking({
                    let span = tracing::Span::current();
                    move || span.in_scope(|| bundle.read_chunk(index))
                })
                .await?
                .with_context(|| format!("reading chunk {index} of the bundle"))?;
                let len = bytes.len() as u64;
                api.put_chunk(&release, index, bytes).await?;
                done.fetch_add(len, Ordering::Relaxed);
                anyhow::Ok(len)
            }
        })
        .buffer_unordered(CONCURRENCY);
    futures::pin_mut!(uploads);
    let mut uploaded_bytes = 0;
    while let Some(r) = uploads.next().await {
        uploaded_bytes += r?;
    }
    let committed = api
        .status("commit", &format!("/v1/push/{release}/commit"))
        .await?;
    if !committed.complete {
        return Err(seed_error(seed, "the seed did not take the release"));
    }
    Ok(Pushed {
        seed: seed.to_owned(),
        chunks: committed.chunks,
        reused_chunks: reused,
        uploaded_chunks: begun.missing.len() as u32,
        uploaded_bytes,
        seconds: start.elapsed().as_secs_f64(),
    })
}

/// Registers `bundle_dir` (when a tracker is given) and pushes it to every
/// `--seed`, with one progress line for all of them.
pub fn register_and_push(
    target: &PushTarget,
    bundle_dir: &Path,
    key: Option<&ContentKey>,
    json: bool,
) -> anyhow::Result<(Option<Registered>, Vec<Pushed>)> {
    if target.tracker.is_none() && target.seed.is_empty() {
        return Ok((None, Vec::new()));
    }
    if key.is_none() && target.unlock_at.is_some() {
        return Err(with_exit(
            anyhow::anyhow!("--unlock-at is set with the content key: give --content-key"),
            Exit::BadInput,
        ));
    }
    if !target.seed.is_empty() && target.tracker.is_none() {
        return Err(with_exit(
            anyhow::anyhow!("--seed needs --tracker: seeds take only registered releases"),
            Exit::BadInput,
        ));
    }
    let seed_key = match (&target.seed_key, target.seed.is_empty()) {
        (_, true) => String::new(),
        (Some(k), false) => k.clone(),
        (None, false) => {
            return Err(with_exit(
                anyhow::anyhow!("--seed needs --seed-key (or SHOAL_SEED_PUSH_KEY)"),
                Exit::BadInput,
            ));
        }
    };
    let bundle = Arc::new(
        Bundle::open(bundle_dir)
            .map_err(|e| with_exit(e, Exit::BadInput))
            .with_context(|| format!("opening bundle {}", bundle_dir.display()))?,
    );
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    rt.block_on(async {
        let registered = register(target, &bundle).await?;
        if !json {
            println!(
                "registered release {} as version {}",
                registered.release_id, registered.version
            );
        }
        if let Some(key) = key {
            upload_key(target, &registered, key).await?;
            if !json {
                match target.unlock_at {
                    Some(t) => println!("content key stored; the release unlocks at {t}"),
                    None => println!(
                        "content key stored; the release preloads until `shoal admin releases schedule` or `unlock`"
                    ),
                }
            }
        }
        let unique = bundle.manifest().unique_size();
        let done = Arc::new(AtomicU64::new(0));
        let total = Arc::new(AtomicU64::new(unique * target.seed.len() as u64));
        let stop = Arc::new(AtomicBool::new(false));
        let reporter = (!json).then(|| {
            let (done, total, stop) = (done.clone(), total.clone(), stop.clone());
            let span = tracing::debug_span!("progress_view");
            std::thread::spawn(move || {
                span.in_scope(|| progress::report("pushing", &done, &total, &stop))
            })
        });
        let results = futures::future::join_all(target.seed.iter().map(|seed| {
            let (bundle, done, total, key) = (bundle.clone(), &done, &total, &seed_key);
            async move { push(seed, key, bundle, registered.release_id, done, total).await }
        }))
        .await;
        stop.store(true, Ordering::Release);
        if let Some(r) = reporter {
            r.thread().unpark();
            let _ = r.join();
        }
        let mut pushed = Vec::new();
        let mut failed = None;
        for (seed, r) in target.seed.iter().zip(results) {
            match r {
                Ok(p) => {
                    if !json {
                        println!(
                            "pushed to {seed}: {} chunks, {} uploaded ({}), {} already there, {:.1} s",
                            p.chunks,
                            p.uploaded_chunks,
                            human::bytes(p.uploaded_bytes),
                            p.reused_chunks,
                            p.seconds
                        );
                    }
                    pushed.push(p);
                }
                Err(e) => {
                    eprintln!("push to {seed} failed: {}", crate::one_line(&e));
                    failed.get_or_insert(e);
                }
            }
        }
        if let Some(e) = failed {
            eprintln!(
                "the bundle and the registration are kept; `shoal push {} --tracker {} --seed ...` resumes",
                bundle_dir.display(),
                target.tracker.as_deref().unwrap_or_default()
            );
            return Err(e);
        }
        Ok((Some(registered), pushed))
    })
}
