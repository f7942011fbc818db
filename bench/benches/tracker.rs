//! Tracker load: token requests and announces from 64 concurrent keep-alive
//! connections against real `shoal-tracker` processes holding 10,000 peers in
//! 10 swarms; `/v1/health` on the same connections is the baseline. Three
//! setups in one run: one tracker on sled, one on PostgreSQL, and two
//! replicas on PostgreSQL behind nginx (a throwaway cluster from the
//! distribution's server binaries, as the tests start).
//!
//! `cargo build --release -p shoal-tracker && cargo bench -p shoal-bench --bench tracker`
//! (env: `SHOAL_BENCH_PEERS` default 10000, `SHOAL_BENCH_SECS` default 10,
//! `SHOAL_BENCH_CONNS` default 64, `SHOAL_BENCH_SETUPS` default `sled,pg,pg2`).

use anyhow::{Context as _, bail};
use serde_json::{Value, json};
use shoal_bench::median;
use shoal_bench::peer_id;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::TcpStream;

#[allow(clippy::unwrap_used, dead_code)]
#[path = "../../tracker/tests/common/pg.rs"]
mod pg;
#[allow(clippy::unwrap_used, clippy::expect_used, dead_code)]
#[path = "../../tracker/tests/common/process.rs"]
mod process;

fn env_usize(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// One keep-alive HTTP/1.1 connection with just enough parsing for our API.
struct Conn {
    stream: TcpStream,
    host: String,
    buf: Vec<u8>,
    chunk: Box<[u8]>,
}

impl Conn {
    async fn open(addr: &str) -> anyhow::Result<Conn> {
        let stream = TcpStream::connect(addr).await?;
        stream.set_nodelay(true)?;
        Ok(Conn {
            stream,
            host: addr.to_owned(),
            buf: Vec::with_capacity(64 << 10),
            chunk: vec![0; 16 << 10].into_boxed_slice(),
        })
    }

    /// Sends a request and returns (status, body).
    async fn request(
        &mut self,
        method: &str,
        path: &str,
        key: Option<&str>,
        body: Option<&[u8]>,
    ) -> anyhow::Result<(u16, Vec<u8>)> {
        let mut req = format!("{method} {path} HTTP/1.1\r\nhost: {}\r\n", self.host);
        if let Some(k) = key {
            req.push_str(&format!("authorization: Bearer {k}\r\n"));
        }
        let body = body.unwrap_or_default();
        if !body.is_empty() {
            req.push_str(&format!(
                "content-type: application/json\r\ncontent-length: {}\r\n",
                body.len()
            ));
        }
        req.push_str("\r\n");
        let mut bytes = req.into_bytes();
        bytes.extend_from_slice(body);
        self.stream.write_all(&bytes).await?;
        // read headers
        self.buf.clear();
        let header_end = loop {
            if let Some(i) = self.buf.windows(4).position(|w| w == b"\r\n\r\n") {
                break i + 4;
            }
            let n = self.stream.read(&mut self.chunk).await?;
            if n == 0 {
                bail!("connection closed");
            }
            self.buf.extend_from_slice(&self.chunk[..n]);
        };
        let head = std::str::from_utf8(&self.buf[..header_end])?;
        let status: u16 = head.get(9..12).context("short status line")?.parse()?;
        let len: usize = head
            .lines()
            .find_map(|l| {
                l.to_ascii_lowercase()
                    .strip_prefix("content-length:")
                    .map(|v| v.trim().to_owned())
            })
            .context("no content-length")?
            .parse()?;
        while self.buf.len() < header_end + len {
            let n = self.stream.read(&mut self.chunk).await?;
            if n == 0 {
                bail!("connection closed mid-body");
            }
            self.buf.extend_from_slice(&self.chunk[..n]);
        }
        Ok((status, self.buf[header_end..header_end + len].to_vec()))
    }

    async fn json(
        &mut self,
        method: &str,
        path: &str,
        key: Option<&str>,
        body: Value,
    ) -> anyhow::Result<Value> {
        let (status, bytes) = self
            .request(method, path, key, Some(&serde_json::to_vec(&body)?))
            .await?;
        let v: Value = serde_json::from_slice(&bytes)?;
        anyhow::ensure!(
            (200..300).contains(&status),
            "{method} {path}: {status} {v}"
        );
        Ok(v)
    }
}

/// The release build beside the bench, or `SHOAL_BENCH_TRACKER` (another
/// build, e.g. the previous commit's, to interleave runs against).
fn tracker_binary() -> anyhow::Result<PathBuf> {
    if let Some(bin) = std::env::var_os("SHOAL_BENCH_TRACKER") {
        return Ok(PathBuf::from(bin));
    }
    let exe = std::env::current_exe()?;
    let dir = exe
        .parent()
        .and_then(|d| d.parent())
        .context("bench exe has no target dir")?;
    let bin = dir.join("shoal-tracker");
    anyhow::ensure!(
        bin.exists(),
        "{} missing: run `cargo build --release -p shoal-tracker` first",
        bin.display()
    );
    Ok(bin)
}

fn rss_kib(pid: u32) -> (u64, u64) {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let field = |name: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.split_whitespace().next()?.parse().ok())
            .unwrap_or(0)
    };
    (field("VmRSS:"), field("VmHWM:"))
}

fn cpu_secs(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let fields: Vec<&str> = stat
        .rsplit(')')
        .next()
        .unwrap_or_default()
        .split_whitespace()
        .collect();
    let ticks: f64 = fields.get(11).and_then(|v| v.parse().ok()).unwrap_or(0.0)
        + fields.get(12).and_then(|v| v.parse().ok()).unwrap_or(0.0);
    ticks / 100.0
}

struct Phase {
    name: &'static str,
    requests: usize,
    secs: f64,
    latencies_us: Vec<f64>,
}

impl Phase {
    fn row(&self) -> String {
        let mut l = self.latencies_us.clone();
        l.sort_by(f64::total_cmp);
        let q = |p: f64| {
            l.get(((l.len().saturating_sub(1)) as f64 * p) as usize)
                .copied()
                .unwrap_or(f64::NAN)
                / 1000.0
        };
        format!(
            "| {} | {} | {:.0} | {:.2} | {:.2} | {:.2} |",
            self.name,
            self.requests,
            self.requests as f64 / self.secs,
            median(&self.latencies_us) / 1000.0,
            q(0.99),
            q(1.0)
        )
    }
}

/// Runs `conns` workers for `secs` (or until each finishes its `jobs`), each
/// calling `make(worker, i)` for its i-th request.
async fn drive<F>(
    addr: &str,
    conns: usize,
    secs: Option<f64>,
    jobs_per_conn: usize,
    name: &'static str,
    make: Arc<F>,
) -> anyhow::Result<Phase>
where
    F: Fn(usize, usize) -> (&'static str, String, Option<String>, Option<Vec<u8>>)
        + Send
        + Sync
        + 'static,
{
    let start = Instant::now();
    let deadline = secs.map(|s| start + Duration::from_secs_f64(s));
    let mut tasks = Vec::new();
    for w in 0..conns {
        let make = Arc::clone(&make);
        let addr = addr.to_owned();
        tasks.push(tokio::spawn(async move {
            let mut conn = Conn::open(&addr).await?;
            let mut lat = Vec::new();
            for i in 0.. {
                if deadline.is_none() && i >= jobs_per_conn {
                    break;
                }
                if deadline.is_some_and(|d| Instant::now() >= d) {
                    break;
                }
                let (method, path, key, body) = make(w, i);
                let t = Instant::now();
                let (status, resp) = conn
                    .request(method, &path, key.as_deref(), body.as_deref())
                    .await?;
                lat.push(t.elapsed().as_secs_f64() * 1e6);
                anyhow::ensure!(
                    status == 200,
                    "{path}: {status} {}",
                    String::from_utf8_lossy(&resp)
                );
            }
            anyhow::Ok(lat)
        }));
    }
    let mut latencies_us = Vec::new();
    for t in tasks {
        latencies_us.extend(t.await??);
    }
    Ok(Phase {
        name,
        requests: latencies_us.len(),
        secs: start.elapsed().as_secs_f64(),
        latencies_us,
    })
}

/// CPU seconds of `root` and every process under it (the PostgreSQL
/// server's backends under its postmaster).
fn tree_cpu_secs(root: u32) -> f64 {
    let mut parent = std::collections::HashMap::new();
    for e in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
        let Some(pid) = e.file_name().to_str().and_then(|p| p.parse::<u32>().ok()) else {
            continue;
        };
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
        let ppid = stat
            .rsplit(')')
            .next()
            .unwrap_or_default()
            .split_whitespace()
            .nth(1)
            .and_then(|p| p.parse::<u32>().ok())
            .unwrap_or(0);
        parent.insert(pid, ppid);
    }
    let under = |mut p: u32| {
        for _ in 0..64 {
            if p == root {
                return true;
            }
            match parent.get(&p) {
                Some(&pp) if pp != 0 => p = pp,
                _ => return false,
            }
        }
        false
    };
    parent
        .keys()
        .filter(|&&p| under(p))
        .map(|&p| cpu_secs(p))
        .sum()
}

/// Starts `shoal-tracker serve`; returns the child and its address.
fn serve(
    bin: &std::path::Path,
    data: &std::path::Path,
    config: &std::path::Path,
) -> anyhow::Result<(Child, String)> {
    let bin = bin
        .to_str()
        .context("the tracker binary's path is not UTF-8")?;
    let (child, url) = process::serve_logging(bin, data, config, "warn,shoal_tracker=info");
    Ok((child, url.trim_start_matches("http://").to_owned()))
}

/// nginx on a free loopback port in front of `upstreams` (one worker: the
/// machine has two cores for everything).
fn nginx(dir: &std::path::Path, upstreams: &[String]) -> anyhow::Result<(Child, String)> {
    let port = std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port();
    let d = dir.display();
    let servers: String = upstreams.iter().map(|u| format!("server {u};")).collect();
    let root = std::fs::read_to_string("/proc/self/status")
        .unwrap_or_default()
        .lines()
        .any(|l| l.starts_with("Uid:") && l.split_whitespace().nth(1) == Some("0"));
    let user = if root { "user root;" } else { "" };
    let conf = format!(
        "{user} worker_processes 1; daemon off; pid {d}/nginx.pid; error_log {d}/nginx.err warn;
         events {{ worker_connections 4096; }}
         http {{ access_log off; keepalive_requests 100000000; keepalive_timeout 600s; client_body_temp_path {d}/cb; proxy_temp_path {d}/px;
           fastcgi_temp_path {d}/fc; uwsgi_temp_path {d}/uw; scgi_temp_path {d}/sc;
           client_max_body_size 64m;
           upstream t {{ {servers} keepalive 128; keepalive_requests 100000000; }}
           server {{ listen 127.0.0.1:{port}; location / {{ proxy_pass http://t;
             proxy_http_version 1.1; proxy_set_header Connection \"\";
             proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;
             proxy_next_upstream error timeout http_502 http_503 http_504; }} }} }}"
    );
    let path = dir.join("nginx.conf");
    std::fs::write(&path, conf)?;
    let child = Command::new("nginx")
        .arg("-c")
        .arg(&path)
        .arg("-p")
        .arg(dir)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .context("starting nginx (apt-get install nginx)")?;
    let addr = format!("127.0.0.1:{port}");
    let started = Instant::now();
    while std::net::TcpStream::connect(&addr).is_err() {
        anyhow::ensure!(
            started.elapsed() < Duration::from_secs(10),
            "nginx did not listen"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    Ok((child, addr))
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> anyhow::Result<()> {
    if std::env::args().any(|a| a == "--list") {
        return Ok(());
    }
    let peers = env_usize("SHOAL_BENCH_PEERS", 10_000);
    let secs = env_usize("SHOAL_BENCH_SECS", 10) as f64;
    let conns = env_usize("SHOAL_BENCH_CONNS", 64);
    let setups = std::env::var("SHOAL_BENCH_SETUPS").unwrap_or_else(|_| "sled,pg,pg2".into());
    let swarms = 10;
    let bin = tracker_binary()?;
    println!(
        "tracker load: {conns} connections, {peers} peers in {swarms} swarms, 2 cores shared by the load generator, the trackers, PostgreSQL and nginx"
    );
    for setup in setups.split(',') {
        let (replicas, postgres) = match setup {
            "sled" => (1, false),
            "pg" => (1, true),
            "pg2" => (2, true),
            other => bail!("SHOAL_BENCH_SETUPS: unknown setup {other:?} (sled, pg, pg2)"),
        };
        let dir = shoal_bench::scratch()?;
        let cluster = postgres.then(pg::Pg::start);
        // One player key stands for every simulated peer here, so the
        // per-key token rate and per-account identity bounds are lifted.
        let mut text =
            "max_peers_per_account = 100000000\ntoken_requests_per_minute = 1000000000\n"
                .to_owned();
        if let Some(c) = &cluster {
            text += &format!(
                "[storage]\nbackend = \"postgres\"\nurl = \"{}\"\npool_size = 32\n",
                c.url()
            );
        }
        let config = dir.path().join("tracker.toml");
        std::fs::write(&config, text)?;
        let data = dir.path().join("tracker");
        let out = Command::new(&bin)
            .args(["init", "--data"])
            .arg(&data)
            .arg("--config")
            .arg(&config)
            .output()?;
        anyhow::ensure!(
            out.status.success(),
            "init failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let op = std::fs::read_to_string(data.join("operator.key"))?
            .trim()
            .to_owned();
        let mut children = Vec::new();
        let mut addrs = Vec::new();
        for r in 0..replicas {
            let d = dir.path().join(format!("replica{r}"));
            let d = if r == 0 {
                data.clone()
            } else {
                std::fs::create_dir_all(&d)?;
                std::fs::copy(data.join("tracker.key"), d.join("tracker.key"))?;
                d
            };
            let (child, addr) = serve(&bin, &d, &config)?;
            children.push(child);
            addrs.push(addr);
        }
        let mut lb = None;
        let addr = if replicas > 1 {
            let (child, addr) = nginx(dir.path(), &addrs)?;
            lb = Some(child);
            addr
        } else {
            addrs[0].clone()
        };
        let mut pids: Vec<u32> = children.iter().map(Child::id).collect();
        if let Some(l) = &lb {
            pids.push(l.id());
        }
        let db_pid = cluster.as_ref().and_then(|c| {
            std::fs::read_to_string(c.dir().join("data/postmaster.pid"))
                .ok()?
                .lines()
                .next()?
                .trim()
                .parse::<u32>()
                .ok()
        });
        let title = match setup {
            "sled" => "one tracker on sled",
            "pg" => "one tracker on PostgreSQL",
            _ => "two replicas on PostgreSQL behind nginx",
        };
        println!();
        println!("### {title}");
        let result = run(&addr, &op, &pids, db_pid, peers, swarms, secs, conns).await;
        for mut c in children {
            let _ = c.kill();
            let _ = c.wait();
        }
        // nginx's master stops its workers on SIGTERM (a SIGKILL would
        // leave them running, holding the port and our stdout).
        if let Some(mut l) = lb {
            let _ = Command::new("kill")
                .args(["-TERM", &l.id().to_string()])
                .status();
            let deadline = Instant::now() + Duration::from_secs(5);
            while Instant::now() < deadline && l.try_wait().ok().flatten().is_none() {
                std::thread::sleep(Duration::from_millis(20));
            }
            let _ = l.kill();
            let _ = l.wait();
        }
        result?;
    }
    Ok(())
}

#[allow(clippy::too_many_arguments)]
async fn run(
    addr: &str,
    op: &str,
    pids: &[u32],
    db_pid: Option<u32>,
    peers: usize,
    swarms: usize,
    secs: f64,
    conns: usize,
) -> anyhow::Result<()> {
    // Setup: a free product with 10 channels, each with a release.
    let mut c = Conn::open(addr).await?;
    let channels: Vec<String> = (0..swarms).map(|i| format!("c{i}")).collect();
    c.json(
        "POST",
        "/v1/products",
        Some(op),
        json!({"id": "game", "paid": false, "channels": channels}),
    )
    .await?;
    let key = shoal_types::SecretKey::from_seed([1; 32]);
    c.json(
        "POST",
        "/v1/products/game/publisher-keys",
        Some(op),
        json!({"public_key": key.public()}),
    )
    .await?;
    let studio = c
        .json(
            "POST",
            "/v1/accounts",
            Some(op),
            json!({"name": "studio", "country": "SE"}),
        )
        .await?;
    c.json(
        "POST",
        "/v1/products/game/publishers",
        Some(op),
        json!({"account": studio["id"]}),
    )
    .await?;
    let publisher = c
        .json(
            "POST",
            "/v1/api-keys",
            Some(op),
            json!({"account": studio["id"], "role": "publisher"}),
        )
        .await?["key"]
        .as_str()
        .context("key")?
        .to_owned();
    for ch in &channels {
        let tmp = tempfile::tempdir()?;
        std::fs::write(tmp.path().join("f"), ch.repeat(1000))?;
        let opts = shoal_manifest::BuildOptions {
            product: "game".into(),
            channel: ch.clone(),
            version: "1".into(),
            chunking: Default::default(),
            threads: 1,
        };
        let m = shoal_manifest::build(
            tmp.path(),
            &opts,
            &shoal_manifest::DiscardChunks,
            &Default::default(),
        )?;
        let bytes = shoal_manifest::SignedManifest::sign(&m, &key).to_bytes();
        let mut req = format!("POST /v1/releases HTTP/1.1\r\nhost: x\r\nauthorization: Bearer {publisher}\r\ncontent-type: application/octet-stream\r\ncontent-length: {}\r\n\r\n", bytes.len()).into_bytes();
        req.extend_from_slice(&bytes);
        let mut rc = Conn::open(addr).await?;
        rc.stream.write_all(&req).await?;
        let mut buf = [0u8; 4096];
        let n = rc.stream.read(&mut buf).await?;
        anyhow::ensure!(
            buf[..n].starts_with(b"HTTP/1.1 201"),
            "release: {}",
            String::from_utf8_lossy(&buf[..n])
        );
    }
    let player = c
        .json(
            "POST",
            "/v1/accounts",
            Some(op),
            json!({"name": "players", "country": "FR"}),
        )
        .await?;
    let pkey = c
        .json(
            "POST",
            "/v1/api-keys",
            Some(op),
            json!({"account": player["id"], "role": "player"}),
        )
        .await?["key"]
        .as_str()
        .context("key")?
        .to_owned();

    let cpu = || pids.iter().map(|&p| tree_cpu_secs(p)).sum::<f64>();
    let db_cpu = || db_pid.map_or(0.0, tree_cpu_secs);
    let (cpu0, db0) = (cpu(), db_cpu());
    // Baseline: the cheapest endpoint, same connections.
    let health = drive(
        addr,
        conns,
        Some(secs / 2.0),
        0,
        "baseline: GET /v1/health",
        Arc::new(|_: usize, _: usize| ("GET", "/v1/health".to_owned(), None, None)),
    )
    .await?;

    // Token requests: one per peer (each is audited and fsynced).
    let per_conn = peers.div_ceil(conns);
    let tokens = Arc::new(std::sync::Mutex::new(vec![String::new(); peers]));
    let pk = pkey.clone();
    let token_phase = {
        let tokens = Arc::clone(&tokens);
        let _ = &tokens;
        drive(addr, conns, None, per_conn, "POST /v1/tokens (audited, fsynced)", Arc::new(move |w: usize, i: usize| {
            let n = (w * per_conn + i).min(peers - 1);
            let body = json!({"product": "game", "channel": format!("c{}", n % 10), "peer_id": peer_id(n)});
            ("POST", "/v1/tokens".to_owned(), Some(pk.clone()), Some(serde_json::to_vec(&body).unwrap_or_default()))
        }))
        .await?
    };
    // The driver discards bodies; fetch the tokens themselves once more per peer
    // on a few connections (not timed).
    let mut handles = Vec::new();
    for w in 0..8 {
        let addr = addr.to_owned();
        let pkey = pkey.clone();
        let tokens = Arc::clone(&tokens);
        handles.push(tokio::spawn(async move {
            let mut conn = Conn::open(&addr).await?;
            for n in (w..peers).step_by(8) {
                let v = conn.json("POST", "/v1/tokens", Some(&pkey), json!({"product": "game", "channel": format!("c{}", n % 10), "peer_id": peer_id(n)})).await?;
                tokens.lock().map_err(|_| anyhow::anyhow!("poisoned"))?[n] = v["token"].as_str().unwrap_or_default().to_owned();
            }
            anyhow::Ok(())
        }));
    }
    for h in handles {
        h.await??;
    }
    let tokens: Arc<Vec<String>> = Arc::new(std::mem::take(
        &mut *tokens.lock().map_err(|_| anyhow::anyhow!("poisoned"))?,
    ));
    let bodies: Arc<Vec<Vec<u8>>> = Arc::new(
        (0..peers)
            .map(|n| {
                serde_json::to_vec(&json!({
                    "token": tokens[n], "listen_addrs": [format!("/ip4/10.{}.{}.{}/udp/4433/quic-v1", n >> 16 & 255, n >> 8 & 255, n & 255)],
                    "have": n % 100, "complete": n % 7 == 0, "uploaded": n, "downloaded": 2 * n, "downloaded_from_seeds": n / 2,
                }))
                .unwrap_or_default()
            })
            .collect(),
    );
    // Join: every peer announces once, so the swarms hold all 10,000.
    let b = Arc::clone(&bodies);
    drive(
        addr,
        conns,
        None,
        per_conn,
        "join",
        Arc::new(move |w: usize, i: usize| {
            let n = (w * per_conn + i).min(peers - 1);
            ("POST", "/v1/announce".to_owned(), None, Some(b[n].clone()))
        }),
    )
    .await?;
    // Steady state: announces from random peers for `secs`.
    let b = Arc::clone(&bodies);
    let announce = drive(
        addr,
        conns,
        Some(secs),
        0,
        "POST /v1/announce (50 peers back)",
        Arc::new(move |w: usize, i: usize| {
            let n = (w.wrapping_mul(7919) + i.wrapping_mul(104_729)) % peers;
            ("POST", "/v1/announce".to_owned(), None, Some(b[n].clone()))
        }),
    )
    .await?;
    let cpu = cpu() - cpu0;
    let db_cpu = db_cpu() - db0;
    let (rss, hwm) = pids
        .iter()
        .map(|&p| rss_kib(p))
        .fold((0, 0), |(a, b), (c, d)| (a + c, b + d));

    let mut probe = Conn::open(addr).await?;
    let (_, swarms_view) = probe
        .request("GET", "/v1/ops/swarms", Some(op), None)
        .await?;
    let view: Value = serde_json::from_slice(&swarms_view)?;
    let held: u64 = view
        .as_array()
        .map(|a| a.iter().filter_map(|s| s["peers"].as_u64()).sum())
        .unwrap_or(0);

    println!("tracker holds {held} members (as one replica lists them)");
    println!();
    println!("| phase | requests | req/s | p50 ms | p99 ms | max ms |");
    println!("|---|---|---|---|---|---|");
    println!("{}", health.row());
    println!("{}", token_phase.row());
    println!("{}", announce.row());
    println!();
    println!(
        "announce / baseline throughput: {:.2}; tracker RSS {} MiB (peak {} MiB); tracker (and nginx) CPU {:.1} s, PostgreSQL CPU {:.1} s over the run",
        (announce.requests as f64 / announce.secs) / (health.requests as f64 / health.secs),
        rss / 1024,
        hwm / 1024,
        cpu,
        db_cpu
    );
    Ok(())
}
