//! Child processes of the end-to-end tests: started with their stderr in a
//! log file, stopped with SIGTERM (their stdout returned), killed if a test
//! ends without stopping them; and waiting for a condition with a limit.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A child process, killed if the test ends without stopping it.
#[derive(Debug)]
pub struct Proc {
    child: Child,
    /// Where its stderr goes.
    pub log: PathBuf,
}

impl Proc {
    /// Starts `cmd` with stdin closed, stdout kept for [`Proc::stop`] and
    /// stderr written to `log`.
    pub fn start(cmd: &mut Command, log: PathBuf) -> anyhow::Result<Proc> {
        let err = std::fs::File::create(&log)?;
        let child = cmd
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(err)
            .spawn()?;
        Ok(Proc { child, log })
    }

    /// Wraps a child started elsewhere (its log unknown).
    pub fn adopt(child: Child) -> Proc {
        Proc {
            child,
            log: PathBuf::new(),
        }
    }

    /// SIGTERM (SIGKILL after 30 s), then what it printed on stdout.
    pub fn stop(mut self) -> anyhow::Result<String> {
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        let deadline = Instant::now() + Duration::from_secs(30);
        while self.child.try_wait()?.is_none() {
            if Instant::now() > deadline {
                self.child.kill()?;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let mut out = String::new();
        use std::io::Read as _;
        if let Some(mut s) = self.child.stdout.take() {
            s.read_to_string(&mut out)?;
        }
        Ok(out)
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Polls `ok` every 200 ms until it holds; an error naming `what` after
/// `limit`.
pub async fn until(
    what: &str,
    limit: Duration,
    mut ok: impl FnMut() -> bool,
) -> anyhow::Result<()> {
    let deadline = Instant::now() + limit;
    while Instant::now() < deadline {
        if ok() {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    anyhow::bail!("timed out waiting for {what}")
}
