//! `shoal-seed serve` as systemd runs it: SIGTERM stops it cleanly (exit 0,
//! "seed stopped" in its log), even while a heartbeat waits on a tracker
//! that accepted the connection and never answers.

use std::io::{BufRead as _, BufReader};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_shoal-seed");

#[test]
fn sigterm_stops_the_seed_cleanly_mid_heartbeat() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    // A tracker that takes the connection and never answers: the seed's
    // first heartbeat hangs until its 10 s request timeout.
    let silent = std::net::TcpListener::bind("127.0.0.1:0")?;
    let tracker = format!("http://{}", silent.local_addr()?);
    let tracker_key = shoal_types::SecretKey::generate()?.public().to_string();
    let mut child = Command::new(BIN)
        .args(["serve", "--data"])
        .arg(dir.path())
        .args(["--tracker", &tracker, "--tracker-key", &tracker_key])
        .args(["--listen", "/ip4/127.0.0.1/udp/0/quic-v1"])
        .env("SHOAL_SEED_API_KEY", "seed-key")
        .env("RUST_LOG", "info")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()?;
    let stderr = child.stderr.take().expect("piped");
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    let mut log = Vec::new();
    // Serving, and the heartbeat's connection is open.
    let deadline = Instant::now() + Duration::from_secs(60);
    while !log.iter().any(|l: &String| l.contains("seed serving")) {
        match rx.recv_timeout(deadline.saturating_duration_since(Instant::now())) {
            Ok(line) => log.push(line),
            Err(_) => {
                let _ = child.kill();
                anyhow::bail!("the seed did not start: {log:#?}");
            }
        }
    }
    let (_held, _) = silent.accept()?;

    Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()?;
    let sent = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait()? {
            break status;
        }
        if sent.elapsed() > Duration::from_secs(30) {
            let _ = child.kill();
            anyhow::bail!("the seed ignored SIGTERM for 30 s");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let waited = sent.elapsed();
    log.extend(rx.try_iter());
    // Its reader thread ends with the process; collect the last lines.
    std::thread::sleep(Duration::from_millis(100));
    log.extend(rx.try_iter());
    assert!(status.success(), "exit {status}: {log:#?}");
    assert!(
        log.iter().any(|l| l.contains("seed stopped")),
        "no stop line: {log:#?}"
    );
    // Well before the hanging heartbeat's own 10 s timeout.
    assert!(waited < Duration::from_secs(8), "stopped after {waited:?}");
    Ok(())
}
