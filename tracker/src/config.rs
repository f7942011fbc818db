//! Tracker configuration: a TOML file (see `tracker.example.toml`) with
//! defaults for everything; command-line flags override it.

use serde::Deserialize;
use std::path::Path;

/// Export screening settings.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(default, deny_unknown_fields)]
pub struct ScreeningConfig {
    /// ISO 3166-1 alpha-2 codes whose accounts get no tokens.
    pub embargoed_countries: Vec<String>,
    /// Party names (or account ids) that get no tokens; matched after folding
    /// case and punctuation.
    pub denied_parties: Vec<String>,
}

impl Default for ScreeningConfig {
    fn default() -> Self {
        ScreeningConfig {
            embargoed_countries: ["CU", "IR", "KP", "SY"].map(String::from).to_vec(),
            denied_parties: Vec::new(),
        }
    }
}

/// Where the durable records live.
#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq, Default)]
#[serde(rename_all = "lowercase")]
pub enum Backend {
    /// Embedded, in the data directory: one tracker process.
    #[default]
    Sled,
    /// A PostgreSQL database that any number of replicas share.
    Postgres,
}

/// The `[storage]` table.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(default, deny_unknown_fields)]
pub struct StorageConfig {
    pub backend: Backend,
    /// The PostgreSQL connection, as a URL (`postgres://user@host/db`) or
    /// libpq key=value string. `SHOAL_TRACKER_DATABASE_URL` in the
    /// environment overrides it, so a password need not sit in the file.
    pub url: String,
    /// Most connections one replica holds.
    pub pool_size: usize,
    /// How long a request waits for a connection before answering 503.
    pub timeout_secs: u64,
}

impl Default for StorageConfig {
    fn default() -> Self {
        StorageConfig {
            backend: Backend::Sled,
            url: String::new(),
            pool_size: 16,
            timeout_secs: 5,
        }
    }
}

impl StorageConfig {
    /// The database URL: the environment's, else the file's.
    pub fn url(&self) -> String {
        std::env::var("SHOAL_TRACKER_DATABASE_URL").unwrap_or_else(|_| self.url.clone())
    }
}

/// Everything the tracker can be told.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// Address to listen on.
    pub listen: String,
    /// Lifetime of swarm tokens.
    pub token_lifetime_secs: u64,
    /// Lifetime of signed release metadata (freeze protection): clients refuse
    /// metadata older than this, so a tracker cannot pin them to a stale build.
    pub release_metadata_ttl_secs: u64,
    /// How often peers announce; a peer missing two intervals drops out.
    pub announce_interval_secs: u64,
    /// A seed is stale after this long without a heartbeat.
    pub seed_timeout_secs: u64,
    /// With fewer complete peers than this, announces also list seeds.
    pub min_complete_peers: usize,
    /// Most peers in one announce answer.
    pub max_peers: usize,
    /// Peers in a token answer's bootstrap list (seeds are added after them).
    pub bootstrap_peers: usize,
    /// Distinct peer identities one account may hold live tokens for at
    /// once (a player's launchers on several machines); a further identity
    /// is refused `too_many_peers` until one's token expires.
    pub max_peers_per_account: usize,
    /// Token requests one API key may make per minute (each writes a
    /// durable audit entry); past it the tracker answers 429.
    pub token_requests_per_minute: u32,
    /// Seed ids one seed account may register.
    pub max_seeds_per_account: usize,
    /// A seed silent this long is forgotten (its id and metrics series go).
    pub seed_forget_secs: u64,
    /// `/metrics` names products, channels, releases and seeds only to a
    /// caller with this bearer token or an operator API key; everyone else
    /// sees totals. Empty: only operator keys.
    pub metrics_token: String,
    /// Show the named series to anyone (a tracker on a private network).
    pub metrics_public_detail: bool,
    /// Behind a reverse proxy: take a client's address from the last entry
    /// of `X-Forwarded-For` (the one the proxy added) instead of the TCP
    /// connection's. Players announcing from one address are paired as
    /// being behind one router; without this, every player behind the proxy
    /// would look like one site. Only turn it on when a proxy always sets
    /// the header.
    pub trust_forwarded_for: bool,
    /// The origin budget of a release registered without one: copies of
    /// its payload its seeds may send in total (`1.05`, `2`, `"unlimited"`).
    pub origin_budget: shoal_api::OriginBudget,
    pub screening: ScreeningConfig,
    pub storage: StorageConfig,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            listen: "127.0.0.1:7070".into(),
            token_lifetime_secs: 30 * 60,
            release_metadata_ttl_secs: 7 * 24 * 3600,
            announce_interval_secs: 30,
            seed_timeout_secs: 90,
            min_complete_peers: 4,
            max_peers: 50,
            bootstrap_peers: 8,
            max_peers_per_account: 8,
            token_requests_per_minute: 120,
            max_seeds_per_account: 16,
            seed_forget_secs: 3600,
            metrics_token: String::new(),
            metrics_public_detail: false,
            trust_forwarded_for: false,
            origin_budget: shoal_api::OriginBudget::DEFAULT,
            screening: ScreeningConfig::default(),
            storage: StorageConfig::default(),
        }
    }
}

impl Config {
    /// Reads a TOML file; unknown keys are errors, so typos do not pass silently.
    pub fn load(path: &Path) -> anyhow::Result<Config> {
        use anyhow::Context as _;
        let text =
            std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
        let config: Config =
            toml::from_str(&text).with_context(|| format!("parsing {}", path.display()))?;
        config.validate()?;
        Ok(config)
    }

    pub fn validate(&self) -> anyhow::Result<()> {
        anyhow::ensure!(
            self.token_lifetime_secs >= 60,
            "token_lifetime_secs must be at least 60"
        );
        anyhow::ensure!(
            self.announce_interval_secs >= 1,
            "announce_interval_secs must be at least 1"
        );
        anyhow::ensure!(
            (1..=200).contains(&self.max_peers),
            "max_peers must be 1..=200"
        );
        anyhow::ensure!(
            self.max_peers_per_account >= 1,
            "max_peers_per_account must be at least 1"
        );
        anyhow::ensure!(
            self.token_requests_per_minute >= 1,
            "token_requests_per_minute must be at least 1"
        );
        anyhow::ensure!(
            self.max_seeds_per_account >= 1,
            "max_seeds_per_account must be at least 1"
        );
        anyhow::ensure!(
            self.seed_forget_secs >= self.seed_timeout_secs,
            "seed_forget_secs must be at least seed_timeout_secs"
        );
        anyhow::ensure!(
            self.metrics_token.is_empty() || self.metrics_token.len() >= 16,
            "metrics_token must be at least 16 characters"
        );
        anyhow::ensure!(
            self.release_metadata_ttl_secs >= 60,
            "release_metadata_ttl_secs must be at least 60"
        );
        anyhow::ensure!(
            (1..=1000).contains(&self.storage.pool_size),
            "storage.pool_size must be 1..=1000"
        );
        anyhow::ensure!(
            (1..=300).contains(&self.storage.timeout_secs),
            "storage.timeout_secs must be 1..=300"
        );
        anyhow::ensure!(
            self.storage.backend != Backend::Postgres || !self.storage.url().is_empty(),
            "storage.url (or SHOAL_TRACKER_DATABASE_URL) is required with backend = \"postgres\""
        );
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn deploy_config_parses() {
        let config: Config = toml::from_str(include_str!("../../deploy/tracker.toml")).unwrap();
        config.validate().unwrap();
        assert_eq!(config.listen, "0.0.0.0:7070");
    }

    #[test]
    fn example_config_parses() {
        let text = include_str!("../tracker.example.toml");
        let config: Config = toml::from_str(text).unwrap();
        config.validate().unwrap();
        assert_eq!(config.listen, "127.0.0.1:7070");
    }

    #[test]
    fn unknown_keys_are_refused() {
        assert!(toml::from_str::<Config>("lisen = \"x\"").is_err());
    }
}
