//! Tracker replicas under a real install: two `shoal-tracker` processes on
//! one throwaway PostgreSQL cluster, a seed that heartbeats to both, and
//! launchers given both URLs. Replica A is killed with SIGKILL while the
//! players download; they go on through B and every install completes,
//! byte for byte. Everything runs on loopback as separate processes.

// The tracker's own test fixtures (they panic with what went wrong).
#[path = "../../tracker/tests/common/pg.rs"]
#[allow(dead_code, clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod pg;
#[path = "../../tracker/tests/common/process.rs"]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod process;

use serde_json::Value;
use shoal_demo::lab::sample;
use shoal_tests::netns::run;
use shoal_tests::process::{Proc, until};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

const MIB: u64 = 1 << 20;
const PLAYERS: usize = 3;

/// `shoal admin --json args…` against `tracker` with `key`.
fn admin(shoal: &Path, tracker: &str, key: &str, args: &[&str]) -> anyhow::Result<Value> {
    let out = run(Command::new(shoal)
        .args(["admin", "--json"])
        .args(args)
        .env("SHOAL_TRACKER", tracker)
        .env("SHOAL_API_KEY", key))?;
    Ok(serde_json::from_str(&out)?)
}

fn id(v: &Value) -> String {
    v["id"].as_str().unwrap_or_default().to_owned()
}

fn install_dir(dir: &Path, n: usize) -> PathBuf {
    dir.join(format!("p{n}")).join("install")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn players_install_through_a_replica_killed_mid_download() -> anyhow::Result<()> {
    let pg = pg::Pg::start();
    let tmp = tempfile::tempdir()?;
    let dir = tmp.path();
    let tracker_bin = shoal_tests::tracker_bin()?;
    let tracker = tracker_bin.to_string_lossy().into_owned();
    let shoal = shoal_tests::shoal_bin()?;
    let config = dir.join("tracker.toml");
    std::fs::write(
        &config,
        format!(
            "announce_interval_secs = 2\n[storage]\nbackend = \"postgres\"\nurl = \"{}\"\n",
            pg.url()
        ),
    )?;
    let (data_a, data_b) = (dir.join("a"), dir.join("b"));
    run(Command::new(&tracker_bin)
        .args(["init", "--data"])
        .arg(&data_a)
        .arg("--config")
        .arg(&config))?;
    // Both replicas sign with the one tracker key.
    std::fs::create_dir_all(&data_b)?;
    std::fs::copy(data_a.join("tracker.key"), data_b.join("tracker.key"))?;
    let op = std::fs::read_to_string(data_a.join("operator.key"))?
        .trim()
        .to_owned();
    let tracker_key = run(Command::new(&tracker_bin)
        .args(["public-key", "--data"])
        .arg(&data_a))?
    .trim()
    .to_owned();
    let (child_a, url_a) = process::serve_binary(&tracker, &data_a, &config);
    let replica_a = Proc::adopt(child_a);
    let (child_b, url_b) = process::serve_binary(&tracker, &data_b, &config);
    let _replica_b = Proc::adopt(child_b);
    let both = format!("{url_a},{url_b}");

    // A studio publishes through A; the seed imports the bundle.
    // An account made at one replica with a key of `role` made at another
    // (`at`): (id, key).
    let account_with_key =
        |at: [&str; 2], name: &str, role: &str| -> anyhow::Result<(String, String)> {
            let account = admin(
                &shoal,
                at[0],
                &op,
                &["accounts", "create", "--name", name, "--country", "SE"],
            )?;
            let key = admin(
                &shoal,
                at[1],
                &op,
                &["keys", "create", "--account", &id(&account), "--role", role],
            )?;
            Ok((
                id(&account),
                key["key"].as_str().unwrap_or_default().to_owned(),
            ))
        };
    let (studio, publisher) = account_with_key([&url_a, &url_a], "studio", "publisher")?;
    admin(
        &shoal,
        &url_a,
        &op,
        &[
            "products",
            "create",
            "lab",
            "--channel",
            "stable",
            "--publisher",
            &studio,
        ],
    )?;
    let keygen = run(Command::new(&shoal)
        .args(["keygen", "--json", "--out"])
        .arg(dir.join("publisher.key")))?;
    let pubkey: Value = serde_json::from_str(&keygen)?;
    admin(
        &shoal,
        &url_a,
        &op,
        &[
            "publisher-keys",
            "add",
            "lab",
            pubkey["public_key"].as_str().unwrap_or_default(),
        ],
    )?;
    let build = dir.join("build");
    sample::build(&build, 24 * MIB, 5)?;
    let bundle = dir.join("bundle");
    shoal_tests::publish_lab(&shoal, &build, &dir.join("publisher.key"), &bundle)?;
    let release = admin(
        &shoal,
        &url_a,
        &publisher,
        &["releases", "register", &bundle.to_string_lossy()],
    )?;
    let release_id = id(&release);
    let seed_bin = shoal_tests::seed_bin()?;
    run(Command::new(&seed_bin)
        .args(["import", "--data"])
        .arg(dir.join("seed"))
        .args(["--release", &release_id])
        .arg(&bundle))?;
    let (_, seed_key) = account_with_key([&url_a, &url_b], "seed", "seed")?;
    // Capped, so that the install takes long enough to lose A midway.
    let _seed = Proc::start(
        Command::new(&seed_bin)
            .arg("serve")
            .arg("--data")
            .arg(dir.join("seed"))
            .args(["--tracker", &both, "--tracker-key", &tracker_key])
            .args(["--listen", "/ip4/127.0.0.1/udp/0/quic-v1"])
            .args(["--capacity-mbit", "16"])
            .env("SHOAL_SEED_API_KEY", &seed_key)
            .env("RUST_LOG", "info"),
        dir.join("seed.log"),
    )?;
    // Seeds live in each replica's memory: the seed heartbeats to both.
    for url in [&url_a, &url_b] {
        until(
            "the seed's heartbeat at both replicas",
            Duration::from_secs(30),
            || {
                admin(&shoal, url, &op, &["ops", "seeds"])
                    .is_ok_and(|v| v.to_string().contains(&release_id))
            },
        )
        .await?;
    }

    let mut players = Vec::new();
    for n in 1..=PLAYERS {
        let (_, key) = account_with_key([&url_a, &url_b], &format!("player{n}"), "player")?;
        let cfg = dir.join(format!("p{n}")).join("config");
        std::fs::create_dir_all(&cfg)?;
        std::fs::write(
            cfg.join("config.toml"),
            format!(
                "tracker = \"{both}\"\ntracker_key = \"{tracker_key}\"\napi_key = \"{}\"\n\
                 listen = [\"/ip4/127.0.0.1/udp/0/quic-v1\"]\n",
                key
            ),
        )?;
        players.push(Proc::start(
            Command::new(&shoal)
                .args(["install", "lab", "--seed-for", "60m", "--json", "--dir"])
                .arg(install_dir(dir, n))
                .env("SHOAL_CONFIG_DIR", &cfg)
                .env("RUST_LOG", "info"),
            dir.join(format!("p{n}.log")),
        )?);
    }
    let installed = |n: usize| {
        run(Command::new(&shoal)
            .args(["status", "--json", "--dir"])
            .arg(install_dir(dir, n)))
        .ok()
        .and_then(|s| serde_json::from_str::<Value>(&s).ok())
        .is_some_and(|v| v["installed"].is_object())
    };
    // Every player is in the swarm (it announced, with a token from A or
    // B), and none has finished: then A dies.
    until("every player announced", Duration::from_secs(60), || {
        admin(&shoal, &url_b, &op, &["ops", "swarms"])
            .is_ok_and(|v| v.to_string().contains(&format!("\"peers\":{PLAYERS}")))
    })
    .await?;
    assert!(
        !(1..=PLAYERS).any(installed),
        "a player finished before replica A was killed; the test proves nothing"
    );
    drop(replica_a); // SIGKILL
    let waited = until("every player installed", Duration::from_secs(180), || {
        (1..=PLAYERS).all(installed)
    })
    .await;
    let mut outcomes = Vec::new();
    for (i, p) in players.into_iter().enumerate() {
        let out = p.stop()?;
        let log = std::fs::read_to_string(dir.join(format!("p{}.log", i + 1))).unwrap_or_default();
        let v: Value = serde_json::from_str(&out).map_err(|e| {
            anyhow::anyhow!("player {} printed no outcome ({e}); its log:\n{log}", i + 1)
        })?;
        outcomes.push(v);
    }
    waited.map_err(|e| anyhow::anyhow!("{e}: {outcomes:#?}"))?;
    for n in 1..=PLAYERS {
        sample::same(&build, &install_dir(dir, n).join("current"))?
            .map_err(|e| anyhow::anyhow!("player {n}: {e}"))?;
    }
    // B kept serving announces: the swarm is still listed there.
    let swarms = admin(&shoal, &url_b, &op, &["ops", "swarms"])?;
    assert!(swarms.to_string().contains(&release_id), "{swarms}");
    Ok(())
}
