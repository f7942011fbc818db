//! The launcher's configuration: `~/.config/shoal/config.toml`, then
//! `SHOAL_*` environment variables, then flags, resolved once into
//! [`Settings`]. The peer identity is created on first use and kept beside
//! the config file.

use crate::{Exit, human, with_exit};
use anyhow::Context as _;
use serde::Deserialize;
use shoal_types::{PublicKey, SecretKey};
use std::path::{Path, PathBuf};
use std::time::Duration;

pub const CONFIG_FILE: &str = "config.toml";
pub const PEER_KEY_FILE: &str = "peer.key";

/// The config file, every key optional.
#[derive(Debug, Default, Clone, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct File {
    /// Tracker base URL, or several replicas' separated by commas.
    pub tracker: Option<String>,
    /// The tracker's public key (hex): pins who may sign tokens and releases.
    pub tracker_key: Option<String>,
    /// The player's API key.
    pub api_key: Option<String>,
    /// Where `shoal install PRODUCT` puts a product when `--dir` is not given.
    pub install_root: Option<PathBuf>,
    /// Caps, e.g. `100Mbit` or `10MB/s`.
    pub max_download: Option<String>,
    pub max_upload: Option<String>,
    /// QUIC multiaddrs to listen on for other peers.
    pub listen: Option<Vec<String>>,
    /// Find players on the LAN with mDNS (default true): they then swap
    /// over the LAN even when the tracker cannot tell they share a site.
    pub lan_discovery: Option<bool>,
}

/// Everything resolved: what the launcher runs with.
#[derive(Debug, Clone)]
pub struct Settings {
    pub tracker: String,
    pub api_key: Option<String>,
    /// `None`: trust the key the tracker reports (with a warning).
    pub tracker_key: Option<PublicKey>,
    pub peer_key: SecretKey,
    /// The file `peer_key` came from: a launcher process locks it while its
    /// node runs, so a second process at once takes a fresh identity for
    /// its run rather than share one (`None`: never locked).
    pub peer_key_file: Option<PathBuf>,
    pub install_root: PathBuf,
    pub max_download: Option<u64>,
    pub max_upload: Option<u64>,
    pub listen: Vec<String>,
    /// mDNS on the LAN.
    pub lan_discovery: bool,
    /// Give up when no chunk arrives for this long.
    pub stall: Duration,
    /// Draw progress (a bar on a terminal, log lines otherwise).
    pub progress: bool,
    /// Fault injection for tests: writes fail as "disk full" after this many bytes.
    pub fail_writes_after: Option<u64>,
    /// Serve Prometheus metrics here while downloading and seeding.
    pub metrics: Option<String>,
}

/// Where the config and the peer key live: `$SHOAL_CONFIG_DIR`, else
/// `$XDG_CONFIG_HOME/shoal`, else `~/.config/shoal`.
pub fn config_dir() -> PathBuf {
    if let Some(d) = std::env::var_os("SHOAL_CONFIG_DIR") {
        return PathBuf::from(d);
    }
    if let Some(d) = std::env::var_os("XDG_CONFIG_HOME") {
        return PathBuf::from(d).join("shoal");
    }
    let home = std::env::var_os("HOME").map_or_else(|| PathBuf::from("."), PathBuf::from);
    home.join(".config/shoal")
}

impl File {
    /// Reads the config file; a missing file is an empty config.
    pub fn load(dir: &Path) -> anyhow::Result<File> {
        let path = dir.join(CONFIG_FILE);
        match std::fs::read_to_string(&path) {
            Ok(text) => toml::from_str(&text)
                .with_context(|| format!("parsing {}", path.display()))
                .map_err(|e| with_exit(e, Exit::BadInput)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(File::default()),
            Err(e) => Err(e).with_context(|| format!("reading {}", path.display())),
        }
    }

    /// Environment variables override the file.
    pub fn with_env(mut self, env: impl Fn(&str) -> Option<String>) -> File {
        let set = |slot: &mut Option<String>, name: &str| {
            if let Some(v) = env(name).filter(|v| !v.is_empty()) {
                *slot = Some(v);
            }
        };
        set(&mut self.tracker, "SHOAL_TRACKER");
        set(&mut self.tracker_key, "SHOAL_TRACKER_KEY");
        set(&mut self.api_key, "SHOAL_API_KEY");
        set(&mut self.max_download, "SHOAL_MAX_DOWNLOAD");
        set(&mut self.max_upload, "SHOAL_MAX_UPLOAD");
        if let Some(v) = env("SHOAL_INSTALL_ROOT").filter(|v| !v.is_empty()) {
            self.install_root = Some(v.into());
        }
        self
    }

    /// Checks every value once; errors name the setting.
    pub fn resolve(self, dir: &Path) -> anyhow::Result<Settings> {
        let bad = |e: String| with_exit(anyhow::anyhow!(e), Exit::BadInput);
        let rate = |name: &str, v: &Option<String>| -> anyhow::Result<Option<u64>> {
            match v.as_deref() {
                None | Some("0" | "none" | "unlimited") => Ok(None),
                Some(t) => human::parse_rate(t)
                    .map(Some)
                    .map_err(|e| bad(format!("{name}: {e}"))),
            }
        };
        let tracker_key = match &self.tracker_key {
            Some(t) => Some(
                t.parse::<PublicKey>()
                    .map_err(|e| bad(format!("tracker_key: {e}")))?,
            ),
            None => None,
        };
        let home = std::env::var_os("HOME").map_or_else(|| PathBuf::from("."), PathBuf::from);
        Ok(Settings {
            tracker: self
                .tracker
                .unwrap_or_else(|| "http://127.0.0.1:7070".into()),
            api_key: self.api_key,
            tracker_key,
            peer_key: peer_key(dir)?,
            peer_key_file: Some(dir.join(PEER_KEY_FILE)),
            install_root: self
                .install_root
                .unwrap_or_else(|| home.join("Games/shoal")),
            max_download: rate("max_download", &self.max_download)?,
            max_upload: rate("max_upload", &self.max_upload)?,
            listen: self
                .listen
                .unwrap_or_else(|| vec!["/ip4/0.0.0.0/udp/0/quic-v1".into()]),
            lan_discovery: self.lan_discovery.unwrap_or(true),
            stall: Duration::from_secs(120),
            progress: true,
            fail_writes_after: None,
            metrics: None,
        })
    }
}

/// The peer identity in `dir`, created (mode 0600) on first use.
pub fn peer_key(dir: &Path) -> anyhow::Result<SecretKey> {
    use std::io::Write as _;
    use std::os::unix::fs::OpenOptionsExt as _;
    let path = dir.join(PEER_KEY_FILE);
    match std::fs::read_to_string(&path) {
        Ok(text) => SecretKey::from_file_text(&text)
            .with_context(|| format!("peer key {}", path.display()))
            .map_err(|e| with_exit(e, Exit::BadInput)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
            let key = SecretKey::generate()?;
            let tmp = dir.join(format!("{PEER_KEY_FILE}.tmp"));
            let mut f = std::fs::OpenOptions::new()
                .write(true)
                .create(true)
                .truncate(true)
                .mode(0o600)
                .open(&tmp)
                .with_context(|| format!("creating {}", tmp.display()))?;
            f.write_all(key.to_file_text().as_bytes())?;
            f.sync_all()?;
            // Two launchers starting at once: the first key wins for both.
            if std::fs::hard_link(&tmp, &path).is_err() {
                let _ = std::fs::remove_file(&tmp);
                return peer_key(dir);
            }
            let _ = std::fs::remove_file(&tmp);
            tracing::info!(path = %path.display(), "created a peer identity");
            Ok(key)
        }
        Err(e) => Err(e).with_context(|| format!("reading {}", path.display())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn env_overrides_file_and_values_are_checked() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join(CONFIG_FILE),
            "tracker = \"http://file:1\"\nmax_upload = \"20Mbit\"\n",
        )
        .unwrap();
        let file = File::load(dir.path()).unwrap();
        assert_eq!(file.tracker.as_deref(), Some("http://file:1"));
        let env = |k: &str| (k == "SHOAL_TRACKER").then(|| "http://env:2".to_owned());
        let s = file.with_env(env).resolve(dir.path()).unwrap();
        assert_eq!(s.tracker, "http://env:2");
        assert_eq!(s.max_upload, Some(2_500_000));
        assert_eq!(s.max_download, None);

        // The peer key is created once and kept.
        let again = File::default().resolve(dir.path()).unwrap();
        assert_eq!(again.peer_key.public(), s.peer_key.public());

        let bad = File {
            max_upload: Some("lots".into()),
            ..File::default()
        };
        let err = bad.resolve(dir.path()).unwrap_err();
        assert!(err.to_string().contains("max_upload"), "{err}");
        std::fs::write(dir.path().join(CONFIG_FILE), "trackr = \"x\"\n").unwrap();
        assert!(File::load(dir.path()).is_err(), "typos are refused");
    }
}
