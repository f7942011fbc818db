//! The push API: a publisher (`shoal publish --seed`, `shoal push`) uploads a
//! registered release to a running seed over HTTP, which serves it as soon
//! as the last chunk is in.
//!
//! The seed trusts no manifest from the pusher: it fetches the signed
//! manifest of the release id from the tracker (with its own key), checks
//! the publisher's signature, and checks every uploaded chunk's length and
//! BLAKE3 hash against it before the chunk is written. Pushes are staged in
//! `releases/.<id>.push/` and resume after a failure or a restart: `begin`
//! lists only the chunks still missing, after taking every chunk this seed
//! already holds in other releases (a patch uploads only what is new).
//!
//! Routes (bearer `push_key`; errors are JSON `{error, detail}` with 4xx):
//! - `POST /v1/push/{release}`: begin or resume; answers what is missing.
//! - `PUT /v1/push/{release}/chunks/{index}`: one chunk's bytes.
//! - `POST /v1/push/{release}/commit`: moves the release into place and serves it.

use crate::{RELEASES_DIR, Releases};
use axum::Json;
use axum::body::Bytes;
use axum::extract::{Path as UrlPath, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use shoal_manifest::{Manifest, SignedManifest, bundle, verify};
use shoal_types::{Bitfield, Hash};
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use tracing::Instrument as _;

/// Largest chunk body accepted (the manifest's length is checked too).
pub const MAX_CHUNK_BODY: usize = 64 << 20;

/// Where the seed asks about releases.
#[derive(Clone)]
pub struct TrackerLink {
    pub http: reqwest::Client,
    pub base: String,
    pub api_key: String,
}

impl std::fmt::Debug for TrackerLink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TrackerLink")
            .field("base", &self.base)
            .finish_non_exhaustive()
    }
}

/// Shared state of the push API.
pub struct Push {
    data: PathBuf,
    releases: Arc<Releases>,
    tracker: TrackerLink,
    key_hash: Hash,
    sessions: tokio::sync::Mutex<HashMap<Hash, Arc<Session>>>,
    /// One commit at a time (two at once would race for the rename).
    committing: tokio::sync::Mutex<()>,
}

impl std::fmt::Debug for Push {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Push")
            .field("data", &self.data)
            .field("tracker", &self.tracker)
            .finish_non_exhaustive()
    }
}

struct Session {
    release: Hash,
    manifest: Manifest,
    signed_bytes: Vec<u8>,
    dir: PathBuf,
    have: Mutex<Bitfield>,
    tmp_seq: AtomicU64,
}

/// An API error: status, machine code and human detail.
#[derive(Debug)]
pub struct PushError {
    status: StatusCode,
    code: &'static str,
    detail: String,
}

impl PushError {
    fn new(status: u16, code: &'static str, detail: impl Into<String>) -> PushError {
        PushError {
            status: StatusCode::from_u16(status).unwrap_or(StatusCode::BAD_REQUEST),
            code,
            detail: detail.into(),
        }
    }

    fn internal(e: impl std::fmt::Display) -> PushError {
        tracing::error!(error = %e, "push failed on the seed");
        PushError::new(500, "internal", e.to_string())
    }
}

impl IntoResponse for PushError {
    fn into_response(self) -> Response {
        (
            self.status,
            Json(serde_json::json!({"error": self.code, "detail": self.detail})),
        )
            .into_response()
    }
}

type PushResult<T> = Result<T, PushError>;

/// What `begin` answers.
#[derive(Debug, Serialize)]
pub struct Status {
    pub release: Hash,
    pub product: String,
    pub channel: String,
    pub version: String,
    pub chunks: u32,
    /// Chunks already in place (uploaded before, or held in other releases).
    pub have: u32,
    pub missing: Vec<u32>,
    pub missing_bytes: u64,
    /// The release is already imported and served.
    pub complete: bool,
}

fn push_dir(data: &Path, release: &Hash) -> PathBuf {
    data.join(RELEASES_DIR).join(format!(".{release}.push"))
}

fn sync_dir(path: &Path) -> std::io::Result<()> {
    std::fs::File::open(path).and_then(|d| d.sync_all())
}

impl Push {
    pub fn new(
        data: PathBuf,
        releases: Arc<Releases>,
        tracker: TrackerLink,
        push_key: &str,
    ) -> Push {
        Push {
            data,
            releases,
            tracker,
            key_hash: Hash::of(push_key.as_bytes()),
            sessions: tokio::sync::Mutex::new(HashMap::new()),
            committing: tokio::sync::Mutex::new(()),
        }
    }

    fn authorise(&self, headers: &HeaderMap) -> PushResult<()> {
        let given = headers
            .get(axum::http::header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .ok_or_else(|| PushError::new(401, "unauthorised", "a push key is required"))?;
        // Comparing hashes keeps the comparison's timing independent of the key.
        if Hash::of(given.as_bytes()) != self.key_hash {
            return Err(PushError::new(401, "unauthorised", "wrong push key"));
        }
        Ok(())
    }

    /// The signed manifest the tracker holds for `release`.
    async fn fetch_manifest(&self, release: &Hash) -> PushResult<Vec<u8>> {
        let url = format!("{}/v1/releases/{release}/manifest", self.tracker.base);
        let resp = self
            .tracker
            .http
            .get(&url)
            .bearer_auth(&self.tracker.api_key)
            .send()
            .await
            .map_err(|e| {
                PushError::new(
                    502,
                    "tracker_unreachable",
                    format!("asking the tracker about {release}: {e}"),
                )
            })?;
        match resp.status().as_u16() {
            200 => {}
            404 => {
                return Err(PushError::new(
                    404,
                    "unknown_release",
                    format!("the tracker has no release {release}; register it first"),
                ));
            }
            s => {
                return Err(PushError::new(
                    502,
                    "tracker_refused",
                    format!("the tracker answered {s} for release {release}"),
                ));
            }
        }
        resp.bytes().await.map(|b| b.to_vec()).map_err(|e| {
            PushError::new(502, "tracker_unreachable", format!("reading manifest: {e}"))
        })
    }

    async fn session(&self, release: &Hash) -> PushResult<Arc<Session>> {
        self.sessions
            .lock()
            .await
            .get(release)
            .cloned()
            .ok_or_else(|| {
                PushError::new(
                    409,
                    "not_begun",
                    format!("no push of {release} is open; POST /v1/push/{release} first"),
                )
            })
    }

    async fn begin(&self, release: Hash) -> PushResult<Status> {
        if let Some(served) = self.releases.bundle(&release) {
            // Already served: nothing to stage.
            let n = served.manifest().chunks.len() as u32;
            return Ok(status_of(
                release,
                served.manifest(),
                &Bitfield::full(n),
                true,
            ));
        }
        let mut sessions = self.sessions.lock().await;
        let session = match sessions.get(&release) {
            Some(s) => s.clone(),
            None => {
                let bytes = self.fetch_manifest(&release).await?;
                let manifest = SignedManifest::from_bytes(&bytes)
                    .and_then(|signed| signed.open())
                    .map_err(|e| {
                        PushError::new(502, "bad_manifest", format!("tracker's manifest: {e}"))
                    })?;
                let dir = push_dir(&self.data, &release);
                let others = self.other_chunk_dirs(&release);
                let (dir2, manifest2) = (dir.clone(), manifest.clone());
                let have = tokio::task::spawn_blocking({
                    let span = tracing::Span::current();
                    move || span.in_scope(|| prepare(&dir2, &manifest2, &others))
                })
                .await
                .map_err(PushError::internal)?
                .map_err(PushError::internal)?;
                let s = Arc::new(Session {
                    release,
                    manifest,
                    signed_bytes: bytes,
                    dir,
                    have: Mutex::new(have),
                    tmp_seq: AtomicU64::new(0),
                });
                sessions.insert(release, s.clone());
                s
            }
        };
        drop(sessions);
        Ok(session.status())
    }

    /// Chunk directories of the releases already served (for reuse).
    fn other_chunk_dirs(&self, release: &Hash) -> Vec<PathBuf> {
        self.releases
            .ids()
            .into_iter()
            .filter(|id| id != release)
            .map(|id| {
                self.data
                    .join(RELEASES_DIR)
                    .join(id.to_string())
                    .join(bundle::CHUNKS_DIR)
            })
            .collect()
    }

    async fn put_chunk(&self, release: Hash, index: u32, body: Bytes) -> PushResult<()> {
        let session = self.session(&release).await?;
        let info = *session.manifest.chunks.get(index as usize).ok_or_else(|| {
            PushError::new(
                404,
                "no_such_chunk",
                format!(
                    "release {release} has {} chunks; there is no chunk {index}",
                    session.manifest.chunks.len()
                ),
            )
        })?;
        let s = session.clone();
        tokio::task::spawn_blocking({
            let span = tracing::Span::current();
            move || {
                span.in_scope(|| -> PushResult<()> {
                    verify(&s.manifest, index, &body)
                        .map_err(|e| PushError::new(422, "chunk_rejected", e.to_string()))?;
                    if s.have.lock().unwrap_or_else(|p| p.into_inner()).get(index) {
                        return Ok(());
                    }
                    let path = bundle::chunk_path(&s.dir.join(bundle::CHUNKS_DIR), &info.hash);
                    let seq = s.tmp_seq.fetch_add(1, Ordering::Relaxed);
                    write_chunk(&path, &body, seq).map_err(|e| {
                        if shoal_store::is_disk_full(&e) {
                            PushError::new(
                                507,
                                "disk_full",
                                format!("the seed's disk is full: {e}"),
                            )
                        } else {
                            PushError::internal(e)
                        }
                    })?;
                    // Manifest chunk tables hold each hash once.
                    s.have.lock().unwrap_or_else(|p| p.into_inner()).set(index);
                    Ok(())
                })
            }
        })
        .await
        .map_err(PushError::internal)?
    }

    async fn commit(&self, release: Hash) -> PushResult<Status> {
        let _one_at_a_time = self.committing.lock().await;
        if self.releases.ids().contains(&release) {
            // Committed before (a retried commit): nothing left to do.
            return self.begin(release).await;
        }
        let session = self.session(&release).await?;
        let status = session.status();
        if !status.missing.is_empty() {
            return Err(PushError::new(
                409,
                "incomplete",
                format!(
                    "{} of {} chunks are still missing ({} bytes)",
                    status.missing.len(),
                    status.chunks,
                    status.missing_bytes
                ),
            ));
        }
        let target = self.data.join(RELEASES_DIR).join(release.to_string());
        let s = session.clone();
        let target2 = target.clone();
        tokio::task::spawn_blocking({
            let span = tracing::Span::current();
            move || {
                span.in_scope(|| -> std::io::Result<()> {
                    let manifest_path = s.dir.join(bundle::MANIFEST_FILE);
                    std::fs::write(&manifest_path, &s.signed_bytes)?;
                    std::fs::File::open(&manifest_path)?.sync_all()?;
                    let chunks = s.dir.join(bundle::CHUNKS_DIR);
                    for entry in std::fs::read_dir(&chunks)? {
                        sync_dir(&entry?.path())?;
                    }
                    sync_dir(&chunks)?;
                    sync_dir(&s.dir)?;
                    std::fs::rename(&s.dir, &target2)?;
                    sync_dir(target2.parent().unwrap_or(Path::new(".")))
                })
            }
        })
        .await
        .map_err(PushError::internal)?
        .map_err(PushError::internal)?;
        self.releases
            .adopt(release, &target)
            .map_err(PushError::internal)?;
        self.sessions.lock().await.remove(&release);
        tracing::info!(%release, chunks = status.chunks, "pushed release committed and served");
        Ok(Status {
            complete: true,
            ..status
        })
    }
}

impl Session {
    fn status(&self) -> Status {
        let have = self.have.lock().unwrap_or_else(|p| p.into_inner());
        status_of(self.release, &self.manifest, &have, false)
    }
}

fn status_of(release: Hash, manifest: &Manifest, have: &Bitfield, complete: bool) -> Status {
    let missing: Vec<u32> = (0..have.len()).filter(|&i| !have.get(i)).collect();
    Status {
        release,
        product: manifest.product.clone(),
        channel: manifest.channel.clone(),
        version: manifest.version.clone(),
        chunks: have.len(),
        have: have.len() - missing.len() as u32,
        missing_bytes: missing
            .iter()
            .map(|&i| u64::from(manifest.chunks[i as usize].len))
            .sum(),
        missing,
        complete,
    }
}

/// Creates (or reopens) the staging directory and finds what it holds:
/// chunks uploaded before, then chunks this seed keeps for other releases
/// (hard-linked, or copied across file systems). Every chunk counted is
/// checked by length; uploaded ones were hashed before they were written,
/// and reused ones are verified on every read like any served chunk.
fn prepare(dir: &Path, manifest: &Manifest, others: &[PathBuf]) -> std::io::Result<Bitfield> {
    let chunks = dir.join(bundle::CHUNKS_DIR);
    std::fs::create_dir_all(&chunks)?;
    let n = manifest.chunks.len() as u32;
    let mut have = Bitfield::new(n);
    for (i, info) in manifest.chunks.iter().enumerate() {
        let path = bundle::chunk_path(&chunks, &info.hash);
        let len_ok = |p: &Path| {
            std::fs::metadata(p).is_ok_and(|m| m.is_file() && m.len() == u64::from(info.len))
        };
        if len_ok(&path) {
            have.set(i as u32);
            continue;
        }
        for other in others {
            let src = bundle::chunk_path(other, &info.hash);
            if !len_ok(&src) {
                continue;
            }
            if let Some(parent) = path.parent() {
                std::fs::create_dir_all(parent)?;
            }
            let _ = std::fs::remove_file(&path);
            if std::fs::hard_link(&src, &path).is_err() {
                let bytes = std::fs::read(&src)?;
                write_chunk(&path, &bytes, u64::from(n) + i as u64)?;
            }
            have.set(i as u32);
            break;
        }
    }
    Ok(have)
}

/// Writes a chunk file durably under a temporary name, then renames it, so
/// a file at `path` is always whole.
fn write_chunk(path: &Path, bytes: &[u8], seq: u64) -> std::io::Result<()> {
    use std::io::Write as _;
    let parent = path.parent().unwrap_or(Path::new("."));
    std::fs::create_dir_all(parent)?;
    let tmp = parent.join(format!(".tmp-{}-{seq}", std::process::id()));
    let result = (|| {
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(bytes)?;
        f.sync_data()?;
        std::fs::rename(&tmp, path)
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result
}

fn parse_release(text: &str) -> PushResult<Hash> {
    text.parse()
        .map_err(|e| PushError::new(400, "bad_path", format!("release id {text:?}: {e}")))
}

/// The caller's key and the release id, checked.
fn authorised_release(push: &Push, headers: &HeaderMap, release: &str) -> PushResult<Hash> {
    push.authorise(headers)?;
    parse_release(release)
}

async fn begin_route(
    State(push): State<Arc<Push>>,
    headers: HeaderMap,
    UrlPath(release): UrlPath<String>,
) -> PushResult<Json<Status>> {
    let release = authorised_release(&push, &headers, &release)?;
    push.begin(release).await.map(Json)
}

async fn chunk_route(
    State(push): State<Arc<Push>>,
    headers: HeaderMap,
    UrlPath((release, index)): UrlPath<(String, String)>,
    body: axum::body::Body,
) -> PushResult<StatusCode> {
    let release = authorised_release(&push, &headers, &release)?;
    let index: u32 = index
        .parse()
        .map_err(|e| PushError::new(400, "bad_path", format!("chunk index {index:?}: {e}")))?;
    let body = axum::body::to_bytes(body, MAX_CHUNK_BODY)
        .await
        .map_err(|e| {
            PushError::new(
                413,
                "too_large",
                format!("a chunk is at most {MAX_CHUNK_BODY} bytes: {e}"),
            )
        })?;
    push.put_chunk(release, index, body).await?;
    Ok(StatusCode::NO_CONTENT)
}

async fn commit_route(
    State(push): State<Arc<Push>>,
    headers: HeaderMap,
    UrlPath(release): UrlPath<String>,
) -> PushResult<Json<Status>> {
    let release = authorised_release(&push, &headers, &release)?;
    push.commit(release).await.map(Json)
}

async fn fallback() -> PushError {
    PushError::new(404, "not_found", "no such route")
}

/// The push API's routes.
pub fn router(push: Arc<Push>) -> axum::Router {
    use axum::routing::{post, put};
    axum::Router::new()
        .route("/v1/push/{release}", post(begin_route))
        .route("/v1/push/{release}/chunks/{index}", put(chunk_route))
        .route("/v1/push/{release}/commit", post(commit_route))
        .fallback(fallback)
        .layer(axum::extract::DefaultBodyLimit::disable())
        .with_state(push)
}

/// Binds `addr` and serves the push API in the background.
pub async fn spawn(addr: &str, push: Arc<Push>) -> anyhow::Result<std::net::SocketAddr> {
    use anyhow::Context as _;
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .with_context(|| format!("binding the push API to {addr}"))?;
    let local = listener.local_addr()?;
    let app = router(push);
    tokio::spawn(
        async move {
            if let Err(e) = axum::serve(listener, app).await {
                tracing::error!(error = %e, "push API stopped");
            }
        }
        .instrument(tracing::info_span!("push_api", addr = %local)),
    );
    Ok(local)
}
