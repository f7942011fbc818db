//! A whole Shoal on loopback in one process: an embedded tracker (sled on
//! disk, real HTTP), a seed (real QUIC) and players with their own config
//! directories and peer keys. `shoal-demo` runs on it; so do the launcher's
//! end-to-end tests. Nothing here is a stand-in: it is the same code the
//! daemons run, wired together.

use anyhow::Context as _;
use serde_json::{Value, json};
use shoal_client::config::{self, Settings};
use shoal_client::tracker::Tracker;
use shoal_manifest::seal::ContentKey;
use shoal_manifest::{BuildOptions, BundleWriter, ChunkParams, Manifest, Progress, SignedManifest};
use shoal_types::{Hash, PublicKey, SecretKey};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;
use tracing::Instrument as _;

/// How to set the lab up.
#[derive(Debug, Clone)]
pub struct Options {
    pub product: String,
    pub channel: String,
    /// Seed upload cap, bytes per second (`None`: uncapped).
    pub seed_upload: Option<u64>,
    /// Seed super-seeding window (0: off).
    pub super_seed_secs: u64,
    /// How often players announce.
    pub announce_interval_secs: u64,
    /// Chunk sizes for publishing (smaller than the default suits small builds).
    pub chunking: ChunkParams,
    /// Seconds added to the tracker's clock: negative plays a tracker that
    /// replays stale data (its release metadata arrives already expired).
    pub tracker_clock_offset_secs: i64,
    /// The product needs an entitlement.
    pub paid: bool,
    /// Where the seed serves `/metrics`, if anywhere.
    pub seed_metrics: Option<String>,
    /// The seed's push API: address and key.
    pub seed_push: Option<(String, String)>,
}

impl Default for Options {
    fn default() -> Options {
        Options {
            product: "demo-game".into(),
            channel: "stable".into(),
            seed_upload: None,
            super_seed_secs: 10,
            announce_interval_secs: 2,
            chunking: ChunkParams::default(),
            tracker_clock_offset_secs: 0,
            paid: false,
            seed_metrics: None,
            seed_push: None,
        }
    }
}

/// A published and registered release.
#[derive(Debug, Clone)]
pub struct Published {
    pub release_id: Hash,
    pub version: u64,
    pub manifest: Manifest,
    pub bundle: PathBuf,
}

/// A running tracker and seed.
#[derive(Debug)]
pub struct Lab {
    pub root: PathBuf,
    pub options: Options,
    /// Tracker base URL.
    pub url: String,
    pub tracker_key: PublicKey,
    /// Operator API key.
    pub operator: Tracker,
    publisher_key: SecretKey,
    /// The publisher's account.
    studio: String,
    publisher: Tracker,
    seed_data: PathBuf,
    pub releases: Arc<shoal_seed::Releases>,
    stop: watch::Sender<bool>,
    tasks: Vec<tokio::task::JoinHandle<anyhow::Result<()>>>,
}

/// A player's config file, as `shoal` reads it.
fn toml_of(f: &config::File) -> String {
    let mut out = String::new();
    let mut line = |k: &str, v: &Option<String>| {
        if let Some(v) = v {
            out.push_str(&format!("{k} = {v:?}\n"));
        }
    };
    line("tracker", &f.tracker);
    line("tracker_key", &f.tracker_key);
    line("api_key", &f.api_key);
    line(
        "install_root",
        &f.install_root.as_ref().map(|p| p.display().to_string()),
    );
    if let Some(l) = &f.listen {
        out.push_str(&format!("listen = {l:?}\n"));
    }
    out
}

/// Creates product `id` of `studio`, signed by `publisher_key`.
async fn add_product(
    operator: &Tracker,
    options: &Options,
    id: &str,
    studio: &str,
    publisher_key: &SecretKey,
) -> anyhow::Result<()> {
    let body = json!({
        "id": id,
        "paid": options.paid,
        "channels": [options.channel],
        "publishers": [studio],
    });
    operator
        .call(reqwest::Method::POST, "/v1/products", Some(&body))
        .await
        .context("POST /v1/products")?;
    operator
        .call(
            reqwest::Method::POST,
            &format!("/v1/products/{id}/publisher-keys"),
            Some(&json!({"public_key": publisher_key.public()})),
        )
        .await?;
    Ok(())
}

fn key_of(v: &Value) -> anyhow::Result<String> {
    v["key"]
        .as_str()
        .map(str::to_owned)
        .context("the tracker returned no key")
}

impl Lab {
    /// Starts a tracker on 127.0.0.1, creates a free product with a
    /// publisher, and starts a seed that heartbeats to the tracker.
    pub async fn start(root: &Path, options: Options) -> anyhow::Result<Lab> {
        let tdir = root.join("tracker");
        let init = shoal_tracker::init(&tdir).await?;
        let tconfig = shoal_tracker::Config {
            listen: "127.0.0.1:0".into(),
            announce_interval_secs: options.announce_interval_secs,
            ..Default::default()
        };
        let mut state = shoal_tracker::open(&tdir, tconfig).await?;
        if options.tracker_clock_offset_secs != 0 {
            let offset = options.tracker_clock_offset_secs;
            let system = shoal_tracker::system_clock();
            state.clock = Arc::new(move || system().saturating_add_signed(offset));
        }
        let state = Arc::new(state);
        let tracker_key = state.key.public();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let url = format!("http://{}", listener.local_addr()?);
        let (stop, stopped) = watch::channel(false);
        let wait = |mut rx: watch::Receiver<bool>| async move {
            let _ = rx.wait_for(|s| *s).await;
        };
        let mut tasks = vec![tokio::spawn(
            shoal_tracker::serve(listener, state, wait(stopped.clone()))
                .instrument(tracing::info_span!("tracker")),
        )];
        let operator = Tracker::new(&url, Some(init.operator_key.clone()))?;
        let post = |path: &'static str, body: Value| {
            let operator = operator.clone();
            async move {
                operator
                    .call(reqwest::Method::POST, path, Some(&body))
                    .await
                    .with_context(|| format!("POST {path}"))
            }
        };
        let publisher_key = SecretKey::generate()?;
        let studio = post("/v1/accounts", json!({"name": "Studio", "country": "SE"})).await?;
        let studio = studio["id"].as_str().context("no account id")?.to_owned();
        add_product(
            &operator,
            &options,
            &options.product,
            &studio,
            &publisher_key,
        )
        .await?;
        let publisher = post(
            "/v1/api-keys",
            json!({"account": studio, "role": "publisher"}),
        )
        .await?;
        let seed_account = post("/v1/accounts", json!({"name": "seed", "country": "SE"})).await?;
        let seed_key = post(
            "/v1/api-keys",
            json!({"account": seed_account["id"], "role": "seed"}),
        )
        .await?;

        let seed_data = root.join("seed");
        let releases = Arc::new(shoal_seed::Releases::open(&seed_data)?);
        let mbit = options
            .seed_upload
            .map_or(100_000, |b| (b * 8).div_ceil(1_000_000));
        let seed_config = shoal_seed::Config {
            data: seed_data.clone(),
            listen: vec!["/ip4/127.0.0.1/udp/0/quic-v1".into()],
            tracker: url.clone(),
            api_key: key_of(&seed_key)?,
            tracker_key: Some(tracker_key),
            seed_id: "seed-1".into(),
            capacity_mbit: mbit,
            upload_cap_mbit: Some(mbit),
            max_peers: 500,
            super_seed_secs: options.super_seed_secs,
            metrics: options.seed_metrics.clone(),
            push_listen: options.seed_push.as_ref().map(|(a, _)| a.clone()),
            push_key: options.seed_push.as_ref().map(|(_, k)| k.clone()),
            relay: Default::default(),
        };
        tasks.push(tokio::spawn(
            shoal_seed::run_with(seed_config, releases.clone(), wait(stopped))
                .instrument(tracing::info_span!("seed")),
        ));
        Ok(Lab {
            root: root.to_owned(),
            options,
            url: url.clone(),
            tracker_key,
            publisher: Tracker::new(&url, Some(key_of(&publisher)?))?,
            operator,
            publisher_key,
            studio,
            seed_data,
            releases,
            stop,
            tasks,
        })
    }

    /// Publishes `build` (chunk, sign, bundle), registers it with the
    /// tracker and imports it into the seed, which tells the tracker.
    pub async fn publish(&self, build: &Path, label: &str) -> anyhow::Result<Published> {
        self.publish_to(&self.options.product, build, label).await
    }

    /// Another product of the same publisher, like the first (free or
    /// paid, one channel, the same signing key).
    pub async fn add_product(&self, id: &str) -> anyhow::Result<()> {
        add_product(
            &self.operator,
            &self.options,
            id,
            &self.studio,
            &self.publisher_key,
        )
        .await
    }

    /// [`Lab::publish`] for `product`.
    pub async fn publish_to(
        &self,
        product: &str,
        build: &Path,
        label: &str,
    ) -> anyhow::Result<Published> {
        self.publish_with(product, build, label, None).await
    }

    /// [`Lab::publish`] encrypted under `key` (as `shoal publish --encrypt`
    /// does); the key is not uploaded: see [`Lab::set_content_key`].
    pub async fn publish_sealed(
        &self,
        build: &Path,
        label: &str,
        key: &ContentKey,
    ) -> anyhow::Result<Published> {
        self.publish_with(&self.options.product, build, label, Some(key))
            .await
    }

    /// The publisher uploads `release`'s content key (and unlock time).
    pub async fn set_content_key(
        &self,
        release: &Hash,
        key: &ContentKey,
        unlock_at: Option<u64>,
    ) -> anyhow::Result<Value> {
        self.publisher
            .call(
                reqwest::Method::PUT,
                &format!("/v1/releases/{release}/key"),
                Some(&json!({
                    "content_key": key.to_hex(),
                    "unlock_at": unlock_at,
                })),
            )
            .await
    }

    /// The publisher unlocks `release` now (or schedules it `at`).
    pub async fn unlock(&self, release: &Hash, at: Option<u64>) -> anyhow::Result<Value> {
        self.publisher
            .call(
                reqwest::Method::PUT,
                &format!("/v1/releases/{release}/unlock"),
                Some(&json!({ "at": at })),
            )
            .await
    }

    async fn publish_with(
        &self,
        product: &str,
        build: &Path,
        label: &str,
        content_key: Option<&ContentKey>,
    ) -> anyhow::Result<Published> {
        let n = self.root.join("bundles").join(product);
        std::fs::create_dir_all(&n)?;
        let out = n.join(label);
        let options = BuildOptions {
            product: product.to_owned(),
            channel: self.options.channel.clone(),
            version: label.to_owned(),
            chunking: self.options.chunking,
            threads: 0,
        };
        let (manifest, out) = {
            let key = self.publisher_key.clone();
            let build = build.to_owned();
            let content_key = content_key.cloned();
            tokio::task::spawn_blocking({
                let span = tracing::Span::current();
                move || {
                    span.in_scope(|| -> anyhow::Result<_> {
                        let writer = BundleWriter::create(&out)?;
                        let progress = Progress::default();
                        let manifest = match &content_key {
                            Some(k) => shoal_manifest::build_sealed(
                                &build, &options, k, &writer, &progress,
                            )?,
                            None => shoal_manifest::build(&build, &options, &writer, &progress)?,
                        };
                        writer.finish(&SignedManifest::sign(&manifest, &key))?;
                        Ok((manifest, out))
                    })
                }
            })
            .await??
        };
        let bytes = std::fs::read(out.join(shoal_manifest::bundle::MANIFEST_FILE))?;
        let release = self.publisher.post_bytes("/v1/releases", bytes).await?;
        let release_id: Hash = release["id"].as_str().context("no release id")?.parse()?;
        let version = release["version"].as_u64().context("no version")?;
        let (releases, data, bundle) = (self.releases.clone(), self.seed_data.clone(), out.clone());
        tokio::task::spawn_blocking({
            let span = tracing::Span::current();
            move || span.in_scope(|| releases.import(&data, &bundle, release_id))
        })
        .await??;
        self.wait_for_seed(&release_id).await?;
        Ok(Published {
            release_id,
            version,
            manifest,
            bundle: out,
        })
    }

    /// Waits until the tracker lists the seed as holding `release`.
    async fn wait_for_seed(&self, release: &Hash) -> anyhow::Result<()> {
        let want = release.to_string();
        for _ in 0..400 {
            let seeds = self
                .operator
                .call(reqwest::Method::GET, "/v1/ops/seeds", None)
                .await?;
            let held = seeds.as_array().is_some_and(|a| {
                a.iter().any(|s| {
                    s["releases"]
                        .as_array()
                        .is_some_and(|r| r.iter().any(|x| x == &Value::String(want.clone())))
                })
            });
            if held {
                return Ok(());
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
        anyhow::bail!("the seed never reported release {release} to the tracker")
    }

    /// A new player: an account, a player API key, and a config directory
    /// with its own peer key. Returns the launcher settings.
    pub async fn player(&self, name: &str) -> anyhow::Result<(Settings, String)> {
        self.player_in(name, "FR").await
    }

    /// [`Lab::player`] with an account in `country` (ISO 3166-1 alpha-2).
    pub async fn player_in(&self, name: &str, country: &str) -> anyhow::Result<(Settings, String)> {
        let (id, key) = self.player_account(name, country).await?;
        let dir = self.root.join("players").join(name);
        let file = config::File {
            tracker: Some(self.url.clone()),
            tracker_key: Some(self.tracker_key.to_string()),
            api_key: Some(key),
            install_root: Some(dir.join("games")),
            listen: Some(vec!["/ip4/127.0.0.1/udp/0/quic-v1".into()]),
            ..Default::default()
        };
        let config_dir = dir.join("config");
        std::fs::create_dir_all(&config_dir)?;
        std::fs::write(config_dir.join(config::CONFIG_FILE), toml_of(&file))?;
        let mut settings = file.resolve(&config_dir)?;
        settings.progress = false;
        settings.stall = Duration::from_secs(60);
        Ok((settings, id))
    }

    /// A player account's API key, without a launcher config (for load
    /// generators standing in for many players).
    pub async fn player_key(&self, name: &str) -> anyhow::Result<String> {
        Ok(self.player_account(name, "FR").await?.1)
    }

    /// A new player account in `country` and its API key: (id, key).
    async fn player_account(&self, name: &str, country: &str) -> anyhow::Result<(String, String)> {
        let account = self
            .operator
            .call(
                reqwest::Method::POST,
                "/v1/accounts",
                Some(&json!({"name": name, "country": country})),
            )
            .await?;
        let id = account["id"].as_str().context("no account id")?.to_owned();
        let key = self
            .operator
            .call(
                reqwest::Method::POST,
                "/v1/api-keys",
                Some(&json!({"account": id, "role": "player"})),
            )
            .await?;
        Ok((id, key_of(&key)?))
    }

    /// The operator's API key (for `shoal admin`).
    pub fn operator_key(&self) -> Option<&str> {
        self.operator.key()
    }

    /// The publisher's API key (for `shoal publish --tracker`).
    pub fn publisher_api_key(&self) -> Option<&str> {
        self.publisher.key()
    }

    /// Writes the publisher's signing key where `shoal publish --key` reads it.
    pub fn write_publisher_key(&self, path: &Path) -> anyhow::Result<()> {
        shoal_client::keygen::write_key_file(path, &self.publisher_key)
    }

    /// Stops the seed and the tracker.
    pub async fn stop(self) -> anyhow::Result<()> {
        let _ = self.stop.send(true);
        for t in self.tasks {
            t.await??;
        }
        Ok(())
    }
}

/// Sample game builds: a few large pak-like files and many small ones, and a
/// realistic patch of them (edits inside paks, a new pak, changed and
/// removed small files). Deterministic for a given size and seed.
pub mod sample {
    use shoal_types::Rng;
    use std::path::Path;

    fn fill(rng: &mut Rng, len: usize) -> Vec<u8> {
        let mut v = Vec::with_capacity(len + 8);
        while v.len() < len {
            v.extend_from_slice(&rng.next_u64().to_le_bytes());
        }
        v.truncate(len);
        v
    }

    /// Writes a build of about `size` bytes into `dir` (which must not exist).
    pub fn build(dir: &Path, size: u64, seed: u64) -> std::io::Result<()> {
        let mut rng = Rng::new(seed);
        let small_total = (size / 16).min(8 << 20);
        let paks = 4u64;
        let pak = (size - small_total) / paks;
        std::fs::create_dir_all(dir.join("paks"))?;
        std::fs::create_dir_all(dir.join("config"))?;
        std::fs::create_dir_all(dir.join("bin"))?;
        for i in 0..paks {
            std::fs::write(
                dir.join(format!("paks/data{i}.pak")),
                fill(&mut rng, pak as usize),
            )?;
        }
        let mut left = small_total as usize;
        let mut n = 0;
        while left > 0 {
            let len = (1024 + (rng.next_u64() % (64 << 10)) as usize).min(left);
            let sub = if n % 3 == 0 { "config" } else { "bin" };
            std::fs::write(
                dir.join(format!("{sub}/file{n:04}.dat")),
                fill(&mut rng, len),
            )?;
            left -= len;
            n += 1;
        }
        std::fs::write(dir.join("game.sh"), b"#!/bin/sh\necho playing\n")?;
        use std::os::unix::fs::PermissionsExt as _;
        std::fs::set_permissions(dir.join("game.sh"), std::fs::Permissions::from_mode(0o755))?;
        Ok(())
    }

    /// Copies `from` to `to` and patches it: edits in every pak (about 2% of
    /// each, some inserted), one new pak of 5% of the build, a few small files
    /// changed and a few removed.
    pub fn patch(from: &Path, to: &Path, seed: u64) -> std::io::Result<()> {
        let mut rng = Rng::new(seed);
        copy_tree(from, to)?;
        let mut total = 0u64;
        for entry in std::fs::read_dir(to.join("paks"))? {
            let path = entry?.path();
            let mut data = std::fs::read(&path)?;
            total += data.len() as u64;
            for _ in 0..4 {
                let len = data.len() / 200;
                let at = (rng.next_u64() as usize) % (data.len() - len);
                let new = fill(&mut rng, len);
                if rng.next_u64().is_multiple_of(2) {
                    data[at..at + len].copy_from_slice(&new);
                } else {
                    data.splice(at..at, new);
                }
            }
            std::fs::write(&path, data)?;
        }
        std::fs::write(
            to.join("paks/patch1.pak"),
            fill(&mut rng, (total / 20) as usize),
        )?;
        let mut small: Vec<_> = std::fs::read_dir(to.join("bin"))?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .collect();
        small.sort();
        for (i, path) in small.iter().enumerate().take(12) {
            if i % 3 == 0 {
                std::fs::remove_file(path)?;
            } else {
                let len = std::fs::metadata(path)?.len() as usize;
                std::fs::write(path, fill(&mut rng, len))?;
            }
        }
        Ok(())
    }

    fn copy_tree(from: &Path, to: &Path) -> std::io::Result<()> {
        std::fs::create_dir_all(to)?;
        for entry in std::fs::read_dir(from)? {
            let entry = entry?;
            let target = to.join(entry.file_name());
            if entry.file_type()?.is_dir() {
                copy_tree(&entry.path(), &target)?;
            } else {
                std::fs::copy(entry.path(), &target)?;
            }
        }
        Ok(())
    }

    /// Whether two trees hold the same files with the same bytes.
    pub fn same(a: &Path, b: &Path) -> std::io::Result<Result<(), String>> {
        let mut left = Vec::new();
        let mut right = Vec::new();
        walk(a, a, &mut left)?;
        walk(b, b, &mut right)?;
        if left.len() != right.len() {
            return Ok(Err(format!("{} files against {}", left.len(), right.len())));
        }
        for ((pa, ha), (pb, hb)) in left.iter().zip(&right) {
            if pa != pb {
                return Ok(Err(format!("{pa} against {pb}")));
            }
            if ha != hb {
                return Ok(Err(format!("{pa} differs")));
            }
        }
        Ok(Ok(()))
    }

    fn walk(
        root: &Path,
        dir: &Path,
        out: &mut Vec<(String, shoal_types::Hash)>,
    ) -> std::io::Result<()> {
        let mut entries: Vec<_> = std::fs::read_dir(dir)?.collect::<Result<_, _>>()?;
        entries.sort_by_key(|e| e.file_name());
        for e in entries {
            let path = e.path();
            let rel = path
                .strip_prefix(root)
                .map_or_else(|_| path.display().to_string(), |p| p.display().to_string());
            let kind = e.file_type()?;
            if kind.is_dir() {
                walk(root, &path, out)?;
            } else if kind.is_symlink() {
                let t = std::fs::read_link(&path)?;
                out.push((rel, shoal_types::Hash::of(t.to_string_lossy().as_bytes())));
            } else {
                out.push((rel, shoal_types::Hash::of(&std::fs::read(&path)?)));
            }
        }
        Ok(())
    }
}
