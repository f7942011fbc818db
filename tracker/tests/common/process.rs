//! The real `shoal-tracker` binary as a child process, for the tests and
//! the tracker bench (which includes this file).

/// Starts the `shoal-tracker` binary at `bin` serving `data` with
/// `config` on a free port; returns the child and its URL.
pub fn serve_binary(
    bin: &str,
    data: &std::path::Path,
    config: &std::path::Path,
) -> (std::process::Child, String) {
    serve_logging(bin, data, config, "info")
}

/// [`serve_binary`] with `RUST_LOG=rust_log`.
pub fn serve_logging(
    bin: &str,
    data: &std::path::Path,
    config: &std::path::Path,
    rust_log: &str,
) -> (std::process::Child, String) {
    use std::io::BufRead as _;
    let mut child = std::process::Command::new(bin)
        .args(["serve", "--data"])
        .arg(data)
        .arg("--config")
        .arg(config)
        .args(["--listen", "127.0.0.1:0"])
        .env("RUST_LOG", rust_log)
        .stderr(std::process::Stdio::piped())
        .stdout(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let stderr = child.stderr.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(stderr)
            .lines()
            .map_while(Result::ok)
        {
            if let Some(rest) = line.split("addr=").nth(1) {
                let _ = tx.send(
                    rest.split_whitespace()
                        .next()
                        .unwrap_or_default()
                        .to_owned(),
                );
            }
        }
    });
    let addr = rx
        .recv_timeout(std::time::Duration::from_secs(20))
        .expect("tracker did not log its address");
    (child, format!("http://{addr}"))
}
