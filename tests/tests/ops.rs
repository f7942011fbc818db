//! Ops end to end: metrics from the tracker, a seed and a seeding launcher;
//! the swarm and seed views with alerts through `shoal ops status`; and the
//! dashboard in a real browser (headless Chromium).

use serde_json::Value;
use shoal_client::launcher::{self, Request};
use shoal_demo::lab::{Lab, Options, sample};
use std::path::Path;
use std::time::Duration;

async fn get(url: &str) -> anyhow::Result<String> {
    get_as(url, None).await
}

async fn get_as(url: &str, key: Option<&str>) -> anyhow::Result<String> {
    let mut req = reqwest::Client::new().get(url);
    if let Some(k) = key {
        req = req.bearer_auth(k);
    }
    let r = req.send().await?;
    anyhow::ensure!(r.status().is_success(), "{url}: {}", r.status());
    Ok(r.text().await?)
}

/// The value of the first sample of `metric` whose labels contain `labels`.
fn sample_value(text: &str, metric: &str, labels: &str) -> Option<f64> {
    text.lines()
        .filter(|l| l.starts_with(metric) && l.contains(labels))
        .find_map(|l| l.rsplit(' ').next()?.parse().ok())
}

struct Running {
    lab: Lab,
    stop: tokio::sync::watch::Sender<bool>,
    tasks: Vec<tokio::task::JoinHandle<anyhow::Result<launcher::Outcome>>>,
    client_metrics: String,
    seed_metrics: String,
    _tmp: tempfile::TempDir,
}

/// A tracker, a seed and two players who installed and keep seeding, plus
/// a second seed that reports itself 90% busy.
async fn running_swarm() -> anyhow::Result<Running> {
    let tmp = tempfile::tempdir()?;
    let seed_metrics = format!("127.0.0.1:{}", shoal_tests::free_port()?);
    let lab = Lab::start(
        tmp.path(),
        Options {
            chunking: shoal_manifest::ChunkParams {
                min: 64 << 10,
                avg: 256 << 10,
                max: 1 << 20,
            },
            announce_interval_secs: 1,
            seed_metrics: Some(seed_metrics.clone()),
            ..Options::default()
        },
    )
    .await?;
    let build = tmp.path().join("build");
    sample::build(&build, 4 << 20, 9)?;
    lab.publish(&build, "1.0").await?;
    let (stop, stop_rx) = tokio::sync::watch::channel(false);
    let client_metrics = format!("127.0.0.1:{}", shoal_tests::free_port()?);
    let mut tasks = Vec::new();
    for i in 0..2 {
        let (mut settings, _) = lab.player(&format!("p{i}")).await?;
        if i == 0 {
            settings.metrics = Some(client_metrics.clone());
        }
        let req = Request {
            product: lab.options.product.clone(),
            channel: None,
            dir: tmp.path().join(format!("install{i}")),
            seed_for: Duration::from_secs(600),
            update: false,
            preload: false,
            until_unlock: false,
            seeding: Default::default(),
        };
        let mut stop = stop_rx.clone();
        tasks.push(tokio::spawn(async move {
            launcher::install(&settings, &req, None, async move {
                let _ = stop.wait_for(|s| *s).await;
            })
            .await
        }));
    }
    for i in 0..2 {
        let dir = tmp.path().join(format!("install{i}"));
        for _ in 0..600 {
            if launcher::status(&dir)?.installed.is_some() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    // A second seed, 90% busy.
    let acc = lab
        .operator
        .call(
            reqwest::Method::POST,
            "/v1/accounts",
            Some(&serde_json::json!({"name": "seed-b", "country": "SE"})),
        )
        .await?;
    let key = lab
        .operator
        .call(
            reqwest::Method::POST,
            "/v1/api-keys",
            Some(&serde_json::json!({"account": acc["id"], "role": "seed"})),
        )
        .await?;
    let hot =
        shoal_client::tracker::Tracker::new(&lab.url, key["key"].as_str().map(str::to_owned))?;
    hot.call(
        reqwest::Method::POST,
        "/v1/seeds/heartbeat",
        Some(&serde_json::json!({
            "seed_id": "hot-seed", "peer_id": "12D3KooWJ1Pj9X5dZaNQrVheftSfdWAd5eRcAEX9NMpJgWDozJPU", "addrs": [], "capacity_bps": 1_000_000_000u64,
            "egress_bps": 900_000_000u64, "peers": 7, "free_disk": 5_000_000_000u64, "releases": []
        })),
    )
    .await?;
    // Let every member announce its final state.
    tokio::time::sleep(Duration::from_millis(2500)).await;
    Ok(Running {
        lab,
        stop,
        tasks,
        client_metrics,
        seed_metrics,
        _tmp: tmp,
    })
}

impl Running {
    async fn finish(self) -> anyhow::Result<()> {
        self.stop.send(true)?;
        for t in self.tasks {
            t.await??;
        }
        self.lab.stop().await
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn metrics_views_alerts_and_ops_status() -> anyhow::Result<()> {
    let r = running_swarm().await?;
    let product = r.lab.options.product.clone();

    // Tracker metrics: without credentials, totals only, and no name of a
    // product, channel, release or seed.
    let public = get(&format!("{}/metrics", r.lab.url)).await?;
    assert!(!public.contains(&product), "{public}");
    assert!(!public.contains("seed-1"), "{public}");
    assert_eq!(
        sample_value(&public, "shoal_tracker_members", ""),
        Some(2.0),
        "{public}"
    );
    let m = get_as(&format!("{}/metrics", r.lab.url), r.lab.operator_key()).await?;
    let issued = sample_value(
        &m,
        "shoal_tracker_token_decisions_total",
        "reason=\"free_product\"",
    );
    assert_eq!(issued, Some(2.0), "{m}");
    let swarm = format!("product=\"{product}\"");
    assert_eq!(
        sample_value(&m, "shoal_tracker_swarm_peers", &swarm),
        Some(2.0),
        "{m}"
    );
    assert_eq!(
        sample_value(&m, "shoal_tracker_swarm_complete", &swarm),
        Some(2.0),
        "{m}"
    );
    assert_eq!(
        sample_value(&m, "shoal_tracker_swarm_seeds_serving", &swarm),
        Some(1.0),
        "{m}"
    );
    assert_eq!(
        sample_value(&m, "shoal_tracker_seed_utilisation", "seed=\"hot-seed\""),
        Some(0.9),
        "{m}"
    );
    assert_eq!(
        sample_value(&m, "shoal_tracker_alerts", "kind=\"seed_hot\""),
        Some(1.0),
        "{m}"
    );
    assert!(
        sample_value(&m, "shoal_tracker_announces_total", "").is_some_and(|v| v >= 2.0),
        "{m}"
    );

    // Seed and launcher metrics.
    let s = get(&format!("http://{}/metrics", r.seed_metrics)).await?;
    assert!(
        sample_value(&s, "shoal_seed_egress_bytes_total", "").is_some_and(|v| v > 0.0),
        "{s}"
    );
    assert!(
        sample_value(&s, "shoal_seed_free_disk_bytes", "").is_some_and(|v| v > 0.0),
        "{s}"
    );
    let c = get(&format!("http://{}/metrics", r.client_metrics)).await?;
    assert_eq!(
        sample_value(&c, "shoal_client_download_progress_ratio", ""),
        Some(1.0),
        "{c}"
    );
    let received = sample_value(&c, "shoal_client_downloaded_from_peers_bytes_total", "")
        .unwrap_or(0.0)
        + sample_value(&c, "shoal_client_downloaded_from_seeds_bytes_total", "").unwrap_or(0.0);
    assert!(received > 0.0, "{c}");
    assert!(
        sample_value(&c, "shoal_client_chunks_verified_total", "").is_some_and(|v| v > 0.0),
        "{c}"
    );

    // Every metric the Grafana dashboard in deploy/ plots is one we export.
    let grafana = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/grafana/shoal-overview.json"),
    )?;
    let exported = format!("{m}{s}{c}");
    let mut names: Vec<&str> = grafana
        .match_indices("shoal_")
        .map(|(i, _)| {
            let rest = &grafana[i..];
            &rest[..rest
                .find(|ch: char| !(ch.is_ascii_alphanumeric() || ch == '_'))
                .unwrap_or(rest.len())]
        })
        .filter(|n| *n != "shoal_overview" && !n.starts_with("shoal_-"))
        .collect();
    names.sort_unstable();
    names.dedup();
    assert!(names.len() >= 15, "{names:?}");
    for name in names {
        assert!(
            exported.lines().any(|l| l.starts_with(name)),
            "the Grafana dashboard plots {name}, which nothing exports"
        );
    }

    // The views, as `shoal ops status` shows them: exit 16 while alerts are active.
    let out = std::process::Command::new(shoal_tests::shoal_bin()?)
        .args(["ops", "status", "--json", "--tracker", &r.lab.url])
        .env("SHOAL_API_KEY", r.lab.operator_key().unwrap_or_default())
        .output()?;
    assert_eq!(
        out.status.code(),
        Some(16),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let o: Value = serde_json::from_slice(&out.stdout)?;
    let w = &o["swarms"][0];
    assert_eq!(w["product"], product.as_str());
    assert_eq!(
        (w["peers"].as_u64(), w["complete"].as_u64()),
        (Some(2), Some(2))
    );
    assert_eq!(w["eta_secs"].as_f64(), Some(0.0), "a complete swarm: {w}");
    let offload = w["offload"]
        .as_f64()
        .expect("bytes moved, so an offload figure");
    assert!((0.0..=1.0).contains(&offload));
    let kinds: Vec<_> = o["alerts"]
        .as_array()
        .expect("alerts")
        .iter()
        .map(|a| a["kind"].clone())
        .collect();
    assert_eq!(kinds, [Value::from("seed_hot")]);
    let text = std::process::Command::new(shoal_tests::shoal_bin()?)
        .args(["ops", "status", "--tracker", &r.lab.url])
        .env("SHOAL_API_KEY", r.lab.operator_key().unwrap_or_default())
        .output()?;
    let text = String::from_utf8_lossy(&text.stdout);
    assert!(
        text.contains("seed hot-seed at 90.0% of capacity") && text.contains("seed-1"),
        "{text}"
    );
    r.finish().await
}

/// Chromium, headless: the page signs in, polls and shows the swarm and
/// seed rows, the offload figure and the alert.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn dashboard_in_a_real_browser() -> anyhow::Result<()> {
    let chromium = ["chromium", "chromium-browser", "google-chrome"]
        .into_iter()
        .find(|b| which(b))
        .ok_or_else(|| {
            anyhow::anyhow!("no chromium on PATH: apt-get install chromium (scripts/test does)")
        })?;
    let r = running_swarm().await?;
    let overview = r
        .lab
        .operator
        .call(reqwest::Method::GET, "/v1/ops/overview", None)
        .await?;
    let offload = overview["swarms"][0]["offload"]
        .as_f64()
        .expect("an offload figure");
    let url = format!(
        "{}/#key={}",
        r.lab.url,
        r.lab.operator_key().unwrap_or_default()
    );
    let profile = tempfile::tempdir()?;
    let dom = browse(chromium, profile.path(), &["--dump-dom"], &url)?;
    let row = |key: &str| {
        dom.split("<tr")
            .find(|tr| tr.contains(&format!("data-key=\"{key}\"")))
            .map(|tr| tr.to_owned())
    };
    let swarm = overview["swarms"][0]["swarm"].as_str().unwrap_or_default();
    let swarm_row = row(swarm).ok_or_else(|| anyhow::anyhow!("no swarm row in {dom}"))?;
    assert!(swarm_row.contains(&r.lab.options.product), "{swarm_row}");
    assert!(
        swarm_row.contains(&format!("<td>{:.1}%</td>", offload * 100.0)),
        "{swarm_row}"
    );
    assert!(swarm_row.contains("<td>2</td>"), "two peers: {swarm_row}");
    assert!(
        swarm_row.contains("of 1.05 copies"),
        "the default origin budget and its use: {swarm_row}"
    );
    let seed_row = row("seed-1").ok_or_else(|| anyhow::anyhow!("no seed row in {dom}"))?;
    assert!(seed_row.contains("fresh"), "{seed_row}");
    let hot_row = row("hot-seed").ok_or_else(|| anyhow::anyhow!("no hot seed row"))?;
    assert!(
        hot_row.contains("90.0%") && hot_row.contains("900.0 Mbit/s"),
        "{hot_row}"
    );
    assert!(dom.contains("data-kind=\"seed_hot\""), "the alert shows");

    let shot = profile.path().join("dashboard.png");
    browse(
        chromium,
        profile.path(),
        &[
            &format!("--screenshot={}", shot.display()),
            "--window-size=1280,1400",
        ],
        &url,
    )?;
    let png = std::fs::read(&shot)?;
    assert!(
        png.starts_with(b"\x89PNG") && png.len() > 10_000,
        "a real screenshot"
    );
    eprintln!("screenshot: {}", shot.display());
    r.finish().await
}

fn which(bin: &str) -> bool {
    std::env::var_os("PATH")
        .is_some_and(|p| std::env::split_paths(&p).any(|d| d.join(bin).is_file()))
}

/// Runs headless Chromium on `url` with a few seconds of virtual time for
/// the page's scripts and polls.
fn browse(chromium: &str, profile: &Path, extra: &[&str], url: &str) -> anyhow::Result<String> {
    let out = std::process::Command::new(chromium)
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-dev-shm-usage",
            "--no-first-run",
            "--virtual-time-budget=5000",
        ])
        .arg(format!(
            "--user-data-dir={}",
            profile.join("chromium").display()
        ))
        .args(extra)
        .arg(url)
        .output()?;
    anyhow::ensure!(
        out.status.success(),
        "chromium failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}
