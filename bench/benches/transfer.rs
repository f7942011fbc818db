//! One seed to one downloader over libp2p QUIC (verified and written to
//! disk), against plain quinn moving the same bytes between two processes,
//! in the same run; and peak RSS of every process at 256 MiB and 1 GiB.
//!
//! `cargo bench -p shoal-bench --bench transfer` (env: `SHOAL_BENCH_RUNS`,
//! default 3; `SHOAL_BENCH_DIR`). Each side runs as its own process (this
//! binary re-executed with `SHOAL_BENCH_ROLE`).

use anyhow::{Context as _, bail};
use shoal_bench::{Noise, median, scratch};
use shoal_manifest::{
    BuildOptions, Bundle, BundleWriter, ChunkParams, Manifest, Progress, SignedManifest,
    VerifiedChunk,
};
use shoal_net::ChunkSource;
use shoal_net::download::{ChunkStore, Job, Source, download};
use shoal_types::{Bitfield, Hash, SecretKey};
use std::io::{BufRead as _, Read as _, Write as _};
use std::os::unix::fs::FileExt as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

const TRACKER_SEED: [u8; 32] = [7; 32];
const NOW: u64 = 1_800_000_000;

fn env(name: &str) -> anyhow::Result<String> {
    std::env::var(name).with_context(|| format!("{name} not set"))
}

/// CPU seconds this process used so far (user + system, every thread),
/// from `/proc/self/stat` (in USER_HZ ticks, 100 per second on Linux).
fn cpu_secs() -> f64 {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    let after = stat.rsplit_once(')').map_or("", |(_, rest)| rest);
    let field = |i: usize| -> f64 {
        after
            .split_whitespace()
            .nth(i)
            .and_then(|v| v.parse().ok())
            .unwrap_or(0.0)
    };
    // After the command name: state is field 3, utime 14, stime 15.
    (field(11) + field(12)) / 100.0
}

/// Peak resident set of this process, KiB.
fn hwm_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap_or(0)
}

fn net_config(keypair: shoal_net::Keypair) -> shoal_net::Config {
    let listen = vec![
        "/ip4/127.0.0.1/udp/0/quic-v1"
            .parse()
            .expect("valid multiaddr"),
    ];
    shoal_net::Config::new(
        keypair,
        listen,
        SecretKey::from_seed(TRACKER_SEED).public(),
        Arc::new(|| NOW),
    )
}

struct BundleSource(Hash, Bundle);

impl ChunkSource for BundleSource {
    fn chunk(&self, swarm: &Hash, index: u32) -> Option<Vec<u8>> {
        (*swarm == self.0)
            .then(|| self.1.read_chunk(index).ok())
            .flatten()
    }
    fn bitfield(&self, swarm: &Hash) -> Option<Bitfield> {
        (*swarm == self.0).then(|| Bitfield::full(self.1.manifest().chunks.len() as u32))
    }
}

/// Verified chunks written straight to a file at their offsets.
struct FileStore {
    swarm: Hash,
    file: std::fs::File,
    offsets: Vec<u64>,
    have: Mutex<Bitfield>,
}

impl ChunkSource for FileStore {
    fn chunk(&self, swarm: &Hash, index: u32) -> Option<Vec<u8>> {
        if *swarm != self.swarm || !self.have.lock().ok()?.get(index) {
            return None;
        }
        let start = self.offsets[index as usize];
        let mut buf = vec![0; (self.offsets[index as usize + 1] - start) as usize];
        self.file.read_exact_at(&mut buf, start).ok()?;
        Some(buf)
    }
    fn bitfield(&self, swarm: &Hash) -> Option<Bitfield> {
        (*swarm == self.swarm)
            .then(|| self.have.lock().ok().map(|b| b.clone()))
            .flatten()
    }
}

impl ChunkStore for FileStore {
    fn put(&self, chunk: VerifiedChunk<'_>) -> std::io::Result<()> {
        self.file
            .write_all_at(chunk.data(), self.offsets[chunk.index() as usize])?;
        if let Ok(mut have) = self.have.lock() {
            have.set(chunk.index());
        }
        Ok(())
    }
}

async fn listen_addr(client: &shoal_net::Client) -> anyhow::Result<shoal_net::Addr> {
    for _ in 0..200 {
        if let Some(a) = client.listen_addrs().await?.into_iter().next() {
            return Ok(a);
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    bail!("node never listened")
}

async fn role_seed() -> anyhow::Result<()> {
    let bundle = Bundle::open(Path::new(&env("BUNDLE")?))?;
    let swarm: Hash = env("SWARM")?.parse()?;
    let (client, mut events) = shoal_net::spawn(
        net_config(shoal_net::generate_keypair()),
        Arc::new(BundleSource(swarm, bundle)),
    )
    .map_err(|e| anyhow::anyhow!("{e}"))?;
    tokio::spawn(async move { while events.recv().await.is_some() {} });
    println!("ADDR {} {}", listen_addr(&client).await?, client.peer_id());
    std::io::stdout().flush()?;
    // serve until the parent closes our stdin
    tokio::task::spawn_blocking(|| std::io::stdin().read_to_end(&mut Vec::new())).await??;
    println!("HWM {} {}", hwm_kib(), cpu_secs());
    Ok(())
}

async fn role_fetch() -> anyhow::Result<()> {
    let bundle = Bundle::open(Path::new(&env("BUNDLE")?))?;
    let manifest: Manifest = bundle.manifest().clone();
    drop(bundle);
    let swarm: Hash = env("SWARM")?.parse()?;
    let addr: shoal_net::Addr = env("ADDR")?.parse()?;
    let peer: shoal_net::Peer = env("PEER")?.parse()?;
    let out = PathBuf::from(env("OUT")?);
    let mut offsets = vec![0u64];
    for c in &manifest.chunks {
        offsets.push(offsets.last().copied().unwrap_or(0) + u64::from(c.len));
    }
    let file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(true)
        .read(true)
        .write(true)
        .open(&out)?;
    file.set_len(manifest.unique_size())?;
    let store = Arc::new(FileStore {
        swarm,
        file,
        offsets,
        have: Mutex::new(Bitfield::new(manifest.chunks.len() as u32)),
    });
    let (client, mut events) =
        shoal_net::spawn(net_config(shoal_net::generate_keypair()), store.clone())
            .map_err(|e| anyhow::anyhow!("{e}"))?;
    let claims = shoal_token::Claims {
        version: shoal_token::token_version(),
        swarm,
        product: "bench".into(),
        account: "bench".into(),
        key: "key_1".into(),
        peer_id: client.peer_id().to_base58(),
        role: shoal_token::Role::Client,
        issued_at: NOW,
        expires_at: NOW + 3600,
    };
    let token = shoal_token::Token::issue(&claims, &SecretKey::from_seed(TRACKER_SEED));
    let sources = [Source {
        peer,
        addrs: vec![addr],
        kind: shoal_scheduler::PeerKind::Seed,
        fills: false,
    }];
    // Requests in flight to the lone seed (SHOAL_BENCH_DEPTH, default 8).
    let depth = std::env::var("SHOAL_BENCH_DEPTH")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(8);
    let scheduler = shoal_scheduler::Config {
        seed_in_flight: depth,
        ..Default::default()
    };
    let start = Instant::now();
    let job = Job {
        manifest: &manifest,
        swarm,
        token: &token,
        sources: &sources,
        store: &*store,
        scheduler,
        download_rate: None,
        stall: Duration::from_secs(60),
        more_sources: None,
        counters: Default::default(),
        renewed: None,
    };
    let report = download(&client, &mut events, job).await?;
    store.file.sync_data()?;
    println!(
        "DONE {} {} {} {}",
        start.elapsed().as_secs_f64(),
        report.from_seeds,
        hwm_kib(),
        cpu_secs()
    );
    Ok(())
}

async fn role_qserve() -> anyhow::Result<()> {
    let path = PathBuf::from(env("FILE")?);
    let cert = rcgen::generate_simple_self_signed(vec!["localhost".into()])?;
    let der = cert.cert.der().to_vec();
    let key = rustls::pki_types::PrivatePkcs8KeyDer::from(cert.key_pair.serialize_der());
    let config = quinn::ServerConfig::with_single_cert(vec![der.clone().into()], key.into())?;
    let endpoint = quinn::Endpoint::server(config, "127.0.0.1:0".parse()?)?;
    let hex: String = der.iter().map(|b| format!("{b:02x}")).collect();
    println!("ADDR {} {hex}", endpoint.local_addr()?);
    std::io::stdout().flush()?;
    let conn = endpoint.accept().await.context("no connection")?.await?;
    let mut send = conn.open_uni().await?;
    let mut file = std::fs::File::open(&path)?;
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = file.read(&mut buf)?;
        if n == 0 {
            break;
        }
        send.write_all(&buf[..n]).await?;
    }
    send.finish()?;
    conn.closed().await;
    println!("HWM {} {}", hwm_kib(), cpu_secs());
    Ok(())
}

async fn role_qfetch() -> anyhow::Result<()> {
    let addr: std::net::SocketAddr = env("ADDR")?.parse()?;
    let cert_hex = env("CERT")?;
    let der: Vec<u8> = (0..cert_hex.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&cert_hex[i..i + 2], 16))
        .collect::<Result<_, _>>()?;
    let mut roots = rustls::RootCertStore::empty();
    roots.add(der.into())?;
    // With CHACHA set, offer libp2p-tls's order: ChaCha20-Poly1305 first
    // (AES-128-GCM stays for QUIC's Initial packets).
    let mut provider = rustls::crypto::aws_lc_rs::default_provider();
    if std::env::var_os("CHACHA").is_some() {
        use rustls::crypto::aws_lc_rs::cipher_suite as cs;
        provider.cipher_suites = vec![
            cs::TLS13_CHACHA20_POLY1305_SHA256,
            cs::TLS13_AES_128_GCM_SHA256,
        ];
    }
    let tls = rustls::ClientConfig::builder_with_provider(Arc::new(provider))
        .with_protocol_versions(&[&rustls::version::TLS13])?
        .with_root_certificates(roots)
        .with_no_client_auth();
    let client_config = quinn::ClientConfig::new(Arc::new(
        quinn::crypto::rustls::QuicClientConfig::try_from(tls)?,
    ));
    let mut endpoint = quinn::Endpoint::client("127.0.0.1:0".parse()?)?;
    endpoint.set_default_client_config(client_config);
    let mut out = std::fs::File::create(env("OUT")?)?;
    let start = Instant::now();
    let conn = endpoint.connect(addr, "localhost")?.await?;
    let mut recv = conn.accept_uni().await?;
    let mut buf = vec![0u8; 1 << 20];
    let mut total = 0u64;
    while let Some(n) = recv.read(&mut buf).await? {
        out.write_all(&buf[..n])?;
        total += n as u64;
    }
    out.sync_data()?;
    let secs = start.elapsed().as_secs_f64();
    conn.close(0u32.into(), b"done");
    endpoint.wait_idle().await;
    println!("DONE {secs} {total} {} {}", hwm_kib(), cpu_secs());
    Ok(())
}

/// Starts this binary in `role`; returns the child and its first stdout line.
fn child(
    role: &str,
    envs: &[(&str, String)],
    keep_stdin: bool,
) -> anyhow::Result<(
    Child,
    std::io::Lines<std::io::BufReader<std::process::ChildStdout>>,
)> {
    let mut cmd = Command::new(std::env::current_exe()?);
    cmd.env("SHOAL_BENCH_ROLE", role)
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit());
    cmd.stdin(if keep_stdin {
        Stdio::piped()
    } else {
        Stdio::null()
    });
    for (k, v) in envs {
        cmd.env(k, v);
    }
    let mut c = cmd.spawn()?;
    let lines = std::io::BufReader::new(c.stdout.take().context("stdout")?).lines();
    Ok((c, lines))
}

fn field(line: &str, i: usize) -> anyhow::Result<String> {
    line.split_whitespace()
        .nth(i)
        .map(str::to_owned)
        .with_context(|| format!("bad child line {line:?}"))
}

struct Run {
    secs: f64,
    server_kib: u64,
    client_kib: u64,
    /// CPU seconds both processes used, whole lifetimes.
    cpu: f64,
}

fn run_libp2p(bundle: &Path, swarm: Hash, out: &Path) -> anyhow::Result<Run> {
    let (mut seed, mut seed_out) = child(
        "seed",
        &[
            ("BUNDLE", bundle.display().to_string()),
            ("SWARM", swarm.to_string()),
        ],
        true,
    )?;
    let line = seed_out.next().context("seed said nothing")??;
    let (addr, peer) = (field(&line, 1)?, field(&line, 2)?);
    let (mut fetch, mut fetch_out) = child(
        "fetch",
        &[
            ("BUNDLE", bundle.display().to_string()),
            ("SWARM", swarm.to_string()),
            ("ADDR", addr),
            ("PEER", peer),
            ("OUT", out.display().to_string()),
        ],
        false,
    )?;
    let done = fetch_out.next().context("fetch said nothing")??;
    fetch.wait()?;
    drop(seed.stdin.take());
    let hwm = seed_out.next().context("seed gave no HWM")??;
    seed.wait()?;
    Ok(Run {
        secs: field(&done, 1)?.parse()?,
        client_kib: field(&done, 3)?.parse()?,
        server_kib: field(&hwm, 1)?.parse()?,
        cpu: field(&done, 4)?.parse::<f64>()? + field(&hwm, 2)?.parse::<f64>()?,
    })
}

fn run_quinn(file: &Path, out: &Path, chacha: bool) -> anyhow::Result<Run> {
    let (mut server, mut server_out) =
        child("qserve", &[("FILE", file.display().to_string())], false)?;
    let line = server_out.next().context("server said nothing")??;
    let (addr, cert) = (field(&line, 1)?, field(&line, 2)?);
    let mut envs = vec![
        ("ADDR", addr),
        ("CERT", cert),
        ("OUT", out.display().to_string()),
    ];
    if chacha {
        envs.push(("CHACHA", "1".into()));
    }
    let (mut client, mut client_out) = child("qfetch", &envs, false)?;
    let done = client_out.next().context("client said nothing")??;
    client.wait()?;
    let hwm = server_out.next().context("server gave no HWM")??;
    server.wait()?;
    Ok(Run {
        secs: field(&done, 1)?.parse()?,
        client_kib: field(&done, 3)?.parse()?,
        server_kib: field(&hwm, 1)?.parse()?,
        cpu: field(&done, 4)?.parse::<f64>()? + field(&hwm, 2)?.parse::<f64>()?,
    })
}

fn file_hash(path: &Path) -> anyhow::Result<Hash> {
    let mut h = blake3::Hasher::new();
    let mut f = std::fs::File::open(path)?;
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = f.read(&mut buf)?;
        if n == 0 {
            break;
        }
        h.update(&buf[..n]);
    }
    Ok(h.finalize().into())
}

fn parent() -> anyhow::Result<()> {
    let runs: usize = std::env::var("SHOAL_BENCH_RUNS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(3);
    let dir = scratch()?;
    println!(
        "| size | transport | MiB/s (median) | CPU s per GiB, both sides (median) | runs | seed/server peak RSS MiB | downloader/client peak RSS MiB |"
    );
    println!("|---|---|---|---|---|---|---|");
    for (size, n_runs) in [(256u64 << 20, 1), (1u64 << 30, runs)] {
        let build = dir.path().join(format!("build{size}"));
        std::fs::create_dir_all(&build)?;
        let file = build.join("data.pak");
        {
            let mut f = std::fs::File::create(&file)?;
            let mut noise = Noise::new(size);
            let mut buf = vec![0u8; 8 << 20];
            let mut left = size;
            while left > 0 {
                let n = left.min(buf.len() as u64) as usize;
                noise.fill(&mut buf[..n]);
                f.write_all(&buf[..n])?;
                left -= n as u64;
            }
        }
        let bundle = dir.path().join(format!("bundle{size}"));
        let writer = BundleWriter::create(&bundle)?;
        let options = BuildOptions {
            product: "bench".into(),
            channel: "stable".into(),
            version: "1".into(),
            chunking: ChunkParams::default(),
            threads: 0,
        };
        let m = shoal_manifest::build(&build, &options, &writer, &Progress::default())?;
        writer.finish(&SignedManifest::sign(&m, &SecretKey::from_seed([2; 32])))?;
        let swarm = Hash::of(b"bench-release");
        let source_hash = file_hash(&file)?;
        let (mut ours, mut plain, mut chacha) = (Vec::new(), Vec::new(), Vec::new());
        // CPU seconds per GiB moved, both sides together.
        let (mut ours_cpu, mut plain_cpu, mut chacha_cpu) = (Vec::new(), Vec::new(), Vec::new());
        let gib = size as f64 / f64::from(1u32 << 30);
        let (mut ours_rss, mut plain_rss) = ((0, 0), (0, 0));
        for _ in 0..n_runs {
            let out = dir.path().join("out.bin");
            let r = run_libp2p(&bundle, swarm, &out)?;
            anyhow::ensure!(
                file_hash(&out)? == source_hash,
                "libp2p output differs from the source"
            );
            ours.push(size as f64 / 1048576.0 / r.secs);
            ours_cpu.push(r.cpu / gib);
            ours_rss = (ours_rss.0.max(r.server_kib), ours_rss.1.max(r.client_kib));
            std::fs::remove_file(&out)?;
            for (cipher_is_chacha, speeds, cpus) in [
                (false, &mut plain, &mut plain_cpu),
                (true, &mut chacha, &mut chacha_cpu),
            ] {
                let r = run_quinn(&file, &out, cipher_is_chacha)?;
                anyhow::ensure!(
                    file_hash(&out)? == source_hash,
                    "quinn output differs from the source"
                );
                speeds.push(size as f64 / 1048576.0 / r.secs);
                cpus.push(r.cpu / gib);
                plain_rss = (plain_rss.0.max(r.server_kib), plain_rss.1.max(r.client_kib));
                std::fs::remove_file(&out)?;
            }
            eprintln!(
                "{} MiB: libp2p {:.0} MiB/s, quinn {:.0} MiB/s, quinn with ChaCha20 {:.0} MiB/s",
                size >> 20,
                ours.last().copied().unwrap_or(0.0),
                plain.last().copied().unwrap_or(0.0),
                chacha.last().copied().unwrap_or(0.0)
            );
        }
        println!(
            "| {} MiB | shoal-net (libp2p QUIC, verified, written) | {:.0} | {:.2} | {n_runs} | {} | {} |",
            size >> 20,
            median(&ours),
            median(&ours_cpu),
            ours_rss.0 / 1024,
            ours_rss.1 / 1024
        );
        println!(
            "| {} MiB | plain quinn (one stream, written) | {:.0} | {:.2} | {n_runs} | {} | {} |",
            size >> 20,
            median(&plain),
            median(&plain_cpu),
            plain_rss.0 / 1024,
            plain_rss.1 / 1024
        );
        println!(
            "| {} MiB | plain quinn, ChaCha20-Poly1305 (libp2p-tls's first suite) | {:.0} | {:.2} | {n_runs} | | |",
            size >> 20,
            median(&chacha),
            median(&chacha_cpu),
        );
        println!(
            "| {} MiB | ratio shoal-net / quinn | {:.2} | {:.2} | | | |",
            size >> 20,
            median(&ours) / median(&plain),
            median(&ours_cpu) / median(&plain_cpu)
        );
        println!(
            "| {} MiB | ratio shoal-net / quinn with ChaCha20 | {:.2} | {:.2} | | | |",
            size >> 20,
            median(&ours) / median(&chacha),
            median(&ours_cpu) / median(&chacha_cpu)
        );
        std::fs::remove_dir_all(&build)?;
        std::fs::remove_dir_all(&bundle)?;
    }
    Ok(())
}

fn main() -> anyhow::Result<()> {
    if std::env::args().any(|a| a == "--list") {
        return Ok(());
    }
    let role = std::env::var("SHOAL_BENCH_ROLE").unwrap_or_default();
    if role.is_empty() {
        return parent();
    }
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    rt.block_on(async {
        match role.as_str() {
            "seed" => role_seed().await,
            "fetch" => role_fetch().await,
            "qserve" => role_qserve().await,
            "qfetch" => role_qfetch().await,
            other => bail!("unknown role {other}"),
        }
    })
}
