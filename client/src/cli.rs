//! Command-line definitions for `shoal`.

use clap::{Args, Parser, Subcommand};
use std::path::PathBuf;

/// Shoal: peer-assisted patch distribution.
///
/// Publishers chunk and sign builds with `shoal publish`; players install and
/// update through a swarm of peers and seeds.
#[derive(Debug, Parser)]
#[command(name = "shoal", version)]
pub struct Cli {
    /// More log output (-v: debug, -vv: trace). RUST_LOG overrides this.
    #[arg(short, long, global = true, action = clap::ArgAction::Count)]
    pub verbose: u8,

    #[command(subcommand)]
    pub command: Command,
}

impl Cli {
    /// The log filter implied by `-v` flags.
    pub fn log_filter(&self) -> &'static str {
        match self.verbose {
            0 => "warn,shoal=info",
            1 => "info,shoal=debug",
            _ => "debug,shoal=trace",
        }
    }
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Create an ed25519 key for signing releases (publisher) or other roles.
    Keygen(KeygenArgs),
    /// Chunk a build directory, sign its manifest and write a bundle a seed can serve.
    Publish(PublishArgs),
    /// Register a bundle with the tracker and push it to running seeds.
    ///
    /// Resumable: each seed lists the chunks it still lacks, so a rerun
    /// after a failure uploads only the rest, and a patch only what the
    /// seed does not hold for an earlier release. Registering the channel's
    /// newest manifest again returns the same release.
    Push(PushArgs),
    /// Inspect and compare manifests.
    #[command(subcommand)]
    Manifest(ManifestCommand),
    /// Install a product through the swarm, then keep seeding for a while.
    ///
    /// Gets a swarm token and signed release metadata from the tracker,
    /// checks them (tracker signature, expiry, no rollback) and the
    /// publisher-signed manifest, checks free disk space, downloads from
    /// peers (seeds only as fallback), verifies every chunk, and swaps the
    /// build in atomically: the game lives in DIR/current. Interrupted runs
    /// resume where they stopped.
    Install(InstallArgs),
    /// Update an installed product to the newest release of its channel,
    /// fetching only the chunks the installed version lacks.
    Update(InstallArgs),
    /// Download a release ahead of time without swapping it in: for an
    /// encrypted release before it unlocks, the ciphertext is fetched and
    /// verified into the install's staging (nothing on disk is readable as
    /// the game, and the installed build, if any, stays playable). From the
    /// unlock on, `shoal install` opens it with the key the tracker then
    /// hands out, without downloading. (`shoal install` of a locked release
    /// preloads too.)
    Preload(InstallArgs),
    /// Rehash an install against its manifest and list damaged or missing files.
    Verify(DirArgs),
    /// Fetch exactly the damaged chunks of an install from the swarm.
    Repair(RepairArgs),
    /// Show what is installed in a directory, and whether it is seeding.
    Status(DirArgs),
    /// Watch a tracker: swarms, seeds and alerts (operator key).
    Ops(OpsArgs),
    /// Operate a tracker: accounts, seats, API keys, products, channels,
    /// publisher keys, entitlements, releases, the audit log and ops views.
    Admin(AdminArgs),
}

/// Which tracker, and the API key to present (`shoal admin`, `shoal ops`).
#[derive(Debug, Args)]
pub struct TrackerAccess {
    /// Tracker base URL; several replicas' separated by commas are tried in
    /// turn when one is unreachable or failing.
    #[arg(
        long,
        env = "SHOAL_TRACKER",
        default_value = "http://127.0.0.1:7070",
        global = true
    )]
    pub tracker: String,
    /// API key: an operator's (a publisher's for `shoal admin releases`).
    #[arg(long, env = "SHOAL_API_KEY", hide_env_values = true, global = true)]
    pub api_key: Option<String>,
    /// Read the API key from a file (e.g. the tracker's operator.key).
    #[arg(long, global = true, conflicts_with = "api_key")]
    pub api_key_file: Option<PathBuf>,
}

#[derive(Debug, Args)]
pub struct AdminArgs {
    #[command(flatten)]
    pub access: TrackerAccess,
    /// Print the tracker's JSON answer.
    #[arg(long, global = true)]
    pub json: bool,
    #[command(subcommand)]
    pub command: AdminCommand,
}

#[derive(Debug, Subcommand)]
pub enum AdminCommand {
    /// Player, publisher, operator and seed accounts.
    #[command(subcommand)]
    Accounts(AccountsCommand),
    /// Organisations and their seats.
    #[command(subcommand)]
    Orgs(OrgsCommand),
    /// API keys (shown once when created, stored hashed).
    #[command(subcommand)]
    Keys(KeysCommand),
    /// Products, free or paid.
    #[command(subcommand)]
    Products(ProductsCommand),
    /// Channels of a product, public or private.
    #[command(subcommand)]
    Channels(ChannelsCommand),
    /// Which ed25519 keys may sign a product's manifests.
    #[command(subcommand, name = "publisher-keys")]
    PublisherKeys(PublisherKeysCommand),
    /// Which accounts' publisher API keys may register, list and roll back
    /// a product's releases (a publisher key acts on its own products only).
    #[command(subcommand)]
    Publishers(PublishersCommand),
    /// Grants of products to accounts and organisations.
    #[command(subcommand)]
    Entitlements(EntitlementsCommand),
    /// Register, list and roll back releases.
    #[command(subcommand)]
    Releases(ReleasesCommand),
    /// Token decisions, issued and refused.
    Audit(AuditArgs),
    /// Swarm and seed views.
    #[command(subcommand)]
    Ops(OpsCommand),
}

#[derive(Debug, Subcommand)]
pub enum AccountsCommand {
    /// Create an individual account (or an organisation with --seats).
    Create {
        #[arg(long)]
        name: String,
        /// ISO 3166-1 alpha-2 country code (used by export screening).
        #[arg(long)]
        country: String,
        /// Create an organisation with this many seats.
        #[arg(long)]
        seats: Option<u32>,
    },
    List,
    Show {
        id: String,
    },
}

#[derive(Debug, Subcommand)]
pub enum OrgsCommand {
    /// Give ACCOUNT a seat in ORG (refused when all seats are taken).
    AddMember {
        org: String,
        account: String,
    },
    RemoveMember {
        org: String,
        account: String,
    },
}

#[derive(Debug, Subcommand)]
pub enum KeysCommand {
    /// Create an API key for ACCOUNT with ROLE (operator, publisher, player, seed).
    Create {
        #[arg(long)]
        account: String,
        #[arg(long)]
        role: String,
    },
    List,
    Revoke {
        id: String,
    },
}

#[derive(Debug, Subcommand)]
pub enum ProductsCommand {
    Create {
        id: String,
        #[arg(long)]
        name: Option<String>,
        /// The product needs an entitlement (default: free).
        #[arg(long)]
        paid: bool,
        /// Public channels to create (default: stable).
        #[arg(long = "channel")]
        channels: Vec<String>,
        /// An account that publishes the product (repeatable); its
        /// publisher API keys may then register releases of it.
        #[arg(long = "publisher")]
        publishers: Vec<String>,
    },
    List,
    Show {
        id: String,
    },
}

#[derive(Debug, Subcommand)]
pub enum PublishersCommand {
    /// Let ACCOUNT's publisher keys act on PRODUCT.
    Add { product: String, account: String },
    /// Stop ACCOUNT's publisher keys acting on PRODUCT.
    Remove { product: String, account: String },
}

#[derive(Debug, Subcommand)]
pub enum ChannelsCommand {
    /// Add a channel to PRODUCT.
    Add {
        product: String,
        name: String,
        /// Only allow-listed accounts (or their organisations) get tokens.
        #[arg(long)]
        private: bool,
        #[arg(long = "allow")]
        allow: Vec<String>,
        /// The origin budget of releases registered on it without one
        /// (copies of the payload seeds may send: `1.05`, `2`, `unlimited`).
        #[arg(long, value_parser = budget_arg)]
        origin_budget: Option<shoal_api::OriginBudget>,
        /// Days before an encrypted release unlocks that its entitled
        /// players may preload it (0 to 90; default 7).
        #[arg(long, value_parser = clap::value_parser!(u32).range(0..=90))]
        preload_days: Option<u32>,
    },
    /// Replace a private channel's allow-list.
    Allow {
        product: String,
        name: String,
        accounts: Vec<String>,
    },
}

#[derive(Debug, Subcommand)]
pub enum PublisherKeysCommand {
    /// Authorise a publisher public key (hex, as `shoal keygen` prints).
    Add {
        product: String,
        public_key: String,
    },
    Remove {
        product: String,
        public_key: String,
    },
}

#[derive(Debug, Subcommand)]
pub enum EntitlementsCommand {
    Grant {
        #[arg(long)]
        account: String,
        #[arg(long)]
        product: String,
        /// Only this channel (default: every channel of the product).
        #[arg(long)]
        channel: Option<String>,
        /// Expiry as Unix seconds.
        #[arg(long, conflicts_with = "expires_in")]
        expires_at: Option<u64>,
        /// Expiry from now, e.g. `30d`, `12h`, `90m`.
        #[arg(long, value_parser = parse_duration)]
        expires_in: Option<u64>,
    },
    List {
        #[arg(long)]
        account: String,
    },
    Revoke {
        id: String,
    },
}

#[derive(Debug, Subcommand)]
pub enum ReleasesCommand {
    /// Register a published bundle (or its manifest.shoal) with the tracker (publisher key).
    Register {
        bundle: PathBuf,
        /// Copies of the payload the seeds may send to the swarm in total
        /// (`1.05`, `2`, `unlimited`); default: the tracker's.
        #[arg(long, value_parser = budget_arg)]
        origin_budget: Option<shoal_api::OriginBudget>,
    },
    /// Change a release's origin budget (operator key): the copies of its
    /// payload seeds may send to its swarm in total, e.g. `2` to speed up a
    /// launch, `1.05` to cut egress, `unlimited`. Seeds hear it with their
    /// next heartbeat.
    Budget {
        /// The release id (64 hex digits; `shoal admin releases list` shows it).
        release: String,
        #[arg(value_parser = budget_arg)]
        origin_budget: shoal_api::OriginBudget,
    },
    List {
        product: String,
        channel: String,
    },
    /// Upload an encrypted release's content key (publisher key): the file
    /// `shoal publish --encrypt` wrote. The tracker checks it against the
    /// manifest and stores it encrypted; players get it when the release
    /// unlocks, never before.
    Key {
        /// The release id (64 hex digits).
        release: String,
        /// The content key file.
        #[arg(long)]
        key_file: PathBuf,
        /// Unlock at this time (seconds since the epoch).
        #[arg(long)]
        unlock_at: Option<u64>,
    },
    /// Unlock an encrypted release now: from this moment entitled players'
    /// launchers get its key and open their preloaded build.
    Unlock {
        /// The release id (64 hex digits).
        release: String,
    },
    /// Schedule (or move) an encrypted release's unlock. Its preload opens
    /// the channel's preload days before. An unlock that has happened
    /// cannot be moved.
    Schedule {
        /// The release id (64 hex digits).
        release: String,
        /// Seconds since the epoch.
        #[arg(
            long,
            conflicts_with = "unlock_in",
            required_unless_present = "unlock_in"
        )]
        unlock_at: Option<u64>,
        /// Seconds from now.
        #[arg(long)]
        unlock_in: Option<u64>,
    },
    /// Serve an older build again, as a new (higher) release version.
    Rollback {
        product: String,
        channel: String,
        #[arg(long)]
        version: u64,
    },
}

#[derive(Debug, Args)]
pub struct AuditArgs {
    /// Only this account.
    #[arg(long)]
    pub account: Option<String>,
    /// Only `issued` or `refused` decisions.
    #[arg(long)]
    pub outcome: Option<String>,
    /// Entries after this sequence number.
    #[arg(long, default_value_t = 0)]
    pub after: u64,
    #[arg(long, default_value_t = 100)]
    pub limit: usize,
    /// Write every matching entry as JSON lines to FILE (`-` for stdout).
    #[arg(long)]
    pub export: Option<PathBuf>,
}

#[derive(Debug, Subcommand)]
pub enum OpsCommand {
    Swarms,
    Seeds,
}

/// Parses `90s`, `15m`, `12h`, `30d` into seconds.
pub fn parse_duration(text: &str) -> Result<u64, String> {
    let t = text.trim();
    let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (digits, unit) = t.split_at(split);
    let n: u64 = digits
        .parse()
        .map_err(|_| format!("{text:?} is not a duration"))?;
    let mult = match unit {
        "" | "s" => 1,
        "m" => 60,
        "h" => 3600,
        "d" => 86_400,
        _ => {
            return Err(format!(
                "{text:?}: unknown unit {unit:?} (use s, m, h or d)"
            ));
        }
    };
    n.checked_mul(mult)
        .ok_or_else(|| format!("{text:?} is too long"))
}

/// A product or channel id, checked against the one id grammar before any
/// command acts on it (so `shoal install ../../x` touches nothing).
pub fn id_arg(text: &str) -> Result<String, String> {
    if shoal_types::id::is_valid(text) {
        Ok(text.to_owned())
    } else {
        Err(format!("{text:?} is not an id: {}", shoal_types::id::RULE))
    }
}

#[derive(Debug, Args)]
pub struct KeygenArgs {
    /// Where to write the secret key (created with mode 0600; never overwritten).
    #[arg(long)]
    pub out: PathBuf,
    /// Print the result as JSON.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct PublishArgs {
    /// The build directory to publish.
    pub build_dir: PathBuf,
    /// Product id, e.g. `starfall` (letters, digits, '.', '_', '-').
    #[arg(long, value_parser = id_arg)]
    pub product: String,
    /// Channel, e.g. `stable` or `beta`.
    #[arg(long)]
    pub channel: String,
    /// The build's version label, e.g. `1.4.2`. The tracker numbers releases itself.
    #[arg(long)]
    pub version: String,
    /// The publisher's secret key file (from `shoal keygen`).
    #[arg(long)]
    pub key: PathBuf,
    /// Output directory for the bundle; must not exist or be empty.
    #[arg(long)]
    pub out: PathBuf,
    /// Minimum chunk size (bytes; K, M suffixes allowed).
    #[arg(long, default_value = "256K", value_parser = parse_size)]
    pub min_chunk: u32,
    /// Average chunk size.
    #[arg(long, default_value = "1M", value_parser = parse_size)]
    pub avg_chunk: u32,
    /// Maximum chunk size.
    #[arg(long, default_value = "4M", value_parser = parse_size)]
    pub max_chunk: u32,
    /// Hashing threads (default: one per core).
    #[arg(long, default_value_t = 0)]
    pub threads: usize,
    /// Encrypt the release for preload: every chunk is sealed under a new
    /// content key, written to --content-key (never into the bundle).
    /// Players can download it before it unlocks, and play it only once
    /// the tracker hands them the key (see `shoal admin releases unlock`).
    #[arg(long)]
    pub encrypt: bool,
    /// Print the summary as one JSON object.
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub target: PushTarget,
}

/// Where a published bundle goes: the tracker that registers it and the
/// seeds that serve it.
#[derive(Debug, Clone, Args)]
pub struct PushTarget {
    /// Register the release with this tracker (e.g. http://tracker:7070).
    #[arg(long)]
    pub tracker: Option<String>,
    /// Publisher API key for the tracker.
    #[arg(long, env = "SHOAL_API_KEY", hide_env_values = true)]
    pub api_key: Option<String>,
    /// Push the release to this seed's push API (e.g. http://seed:9102;
    /// repeatable). Needs --tracker: seeds take only registered releases.
    #[arg(long)]
    pub seed: Vec<String>,
    /// The seeds' push key.
    #[arg(long, env = "SHOAL_SEED_PUSH_KEY", hide_env_values = true)]
    pub seed_key: Option<String>,
    /// Copies of the payload the seeds may send to the swarm in total:
    /// `2` for a launch night (faster), `1.05` for a routine patch (less
    /// origin egress), `unlimited` for the fastest swarm. Default: the
    /// tracker's `origin_budget` (1.05 unless configured).
    #[arg(long, value_parser = budget_arg)]
    pub origin_budget: Option<shoal_api::OriginBudget>,
    /// An encrypted release's content key file: where `publish --encrypt`
    /// writes the new key (default: beside the bundle, OUT.content-key; it
    /// is never overwritten), and what is uploaded to --tracker after
    /// registering. Keep it secret and keep it safe: without it the release
    /// can never be unlocked.
    #[arg(long)]
    pub content_key: Option<std::path::PathBuf>,
    /// When the encrypted release unlocks (seconds since the epoch), set
    /// with its key. Without it the release preloads until
    /// `shoal admin releases schedule` or `unlock`.
    #[arg(long)]
    pub unlock_at: Option<u64>,
}

fn budget_arg(s: &str) -> Result<shoal_api::OriginBudget, String> {
    shoal_api::OriginBudget::parse(s)
}

#[derive(Debug, Args)]
pub struct PushArgs {
    /// The bundle directory `shoal publish` wrote.
    pub bundle: PathBuf,
    #[command(flatten)]
    pub target: PushTarget,
    /// Print the outcome as one JSON object.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Subcommand)]
pub enum ManifestCommand {
    /// Show a signed manifest (a `manifest.shoal` file or a bundle directory).
    Show {
        file: PathBuf,
        /// List every entry, not only the summary.
        #[arg(long)]
        entries: bool,
        #[arg(long)]
        json: bool,
    },
    /// What updating from OLD to NEW would fetch and reuse.
    Diff {
        old: PathBuf,
        new: PathBuf,
        #[arg(long)]
        json: bool,
    },
}

/// Parses `1048576`, `256K`, `1M`, `4MiB` into bytes.
pub fn parse_size(text: &str) -> Result<u32, String> {
    let t = text.trim();
    let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (digits, unit) = t.split_at(split);
    let n: u64 = digits
        .parse()
        .map_err(|_| format!("{text:?} is not a size"))?;
    let mult: u64 = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "k" | "kb" | "kib" => 1 << 10,
        "m" | "mb" | "mib" => 1 << 20,
        _ => return Err(format!("{text:?}: unknown unit {unit:?} (use K or M)")),
    };
    u32::try_from(n * mult).map_err(|_| format!("{text:?} is too large"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes() {
        assert_eq!(parse_size("1024"), Ok(1024));
        assert_eq!(parse_size("256K"), Ok(256 << 10));
        assert_eq!(parse_size("4MiB"), Ok(4 << 20));
        assert!(parse_size("x").is_err());
        assert!(parse_size("9G").is_err());
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration("90"), Ok(90));
        assert_eq!(parse_duration("15m"), Ok(900));
        assert_eq!(parse_duration("30d"), Ok(30 * 86_400));
        assert!(parse_duration("1y").is_err());
    }

    #[test]
    fn cli_is_consistent() {
        use clap::CommandFactory as _;
        Cli::command().debug_assert();
    }
}

/// Launcher settings: each overrides `config.toml` in the config directory
/// ($SHOAL_CONFIG_DIR, else ~/.config/shoal).
#[derive(Debug, Clone, Args)]
pub struct LauncherArgs {
    /// Tracker base URL; several replicas' separated by commas
    /// (`http://a:7070,http://b:7070`) are tried in turn when one is
    /// unreachable or failing, so an install goes on when a replica dies.
    #[arg(long, env = "SHOAL_TRACKER")]
    pub tracker: Option<String>,
    /// The player's API key.
    #[arg(long, env = "SHOAL_API_KEY", hide_env_values = true)]
    pub api_key: Option<String>,
    /// The tracker's public key (hex), pinned.
    #[arg(long, env = "SHOAL_TRACKER_KEY")]
    pub tracker_key: Option<String>,
    /// Download cap, e.g. `100Mbit` or `10MB/s`.
    #[arg(long, env = "SHOAL_MAX_DOWNLOAD")]
    pub max_download: Option<String>,
    /// Upload cap while downloading and seeding, e.g. `20Mbit`.
    #[arg(long, env = "SHOAL_MAX_UPLOAD")]
    pub max_upload: Option<String>,
    /// QUIC multiaddr to listen on for peers (repeatable).
    #[arg(long = "listen")]
    pub listen: Vec<String>,
    /// Serve Prometheus metrics at http://ADDR/metrics while downloading and seeding.
    #[arg(long)]
    pub metrics: Option<String>,
    /// Print the result as JSON.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct InstallArgs {
    /// The product id (letters, digits, '.', '_', '-'; starts with a letter
    /// or digit). Several are fetched at once through one peer node, each
    /// into install_root/PRODUCT; one failing does not stop the others.
    #[arg(value_parser = id_arg, required = true, num_args = 1..)]
    pub products: Vec<String>,
    /// The channel (default: the installed build's, else stable; update
    /// switches channel when given one).
    #[arg(long, value_parser = id_arg)]
    pub channel: Option<String>,
    /// The install directory (default: install_root/PRODUCT from the
    /// config); only with a single product.
    #[arg(long)]
    pub dir: Option<PathBuf>,
    /// Keep serving the release to other players this long afterwards (e.g. 5m, 0).
    #[arg(long, default_value = "3m")]
    pub seed_for: String,
    /// Do not seed afterwards.
    #[arg(long, conflicts_with = "seed_for")]
    pub no_seed: bool,
    /// For an encrypted release that is locked: preload it, keep serving
    /// its ciphertext to other players until it unlocks (by the tracker's
    /// clock, not this machine's), then open it at once (`preload`: stop
    /// there). Leave it running on launch eve; Ctrl-C stops it, and a later
    /// run resumes.
    #[arg(long)]
    pub until_unlock: bool,
    #[command(flatten)]
    pub launcher: LauncherArgs,
}

#[derive(Debug, Args)]
pub struct DirArgs {
    /// The install directory.
    #[arg(long)]
    pub dir: PathBuf,
    /// Print the result as JSON.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct RepairArgs {
    /// The install directory.
    #[arg(long)]
    pub dir: PathBuf,
    #[command(flatten)]
    pub launcher: LauncherArgs,
}

#[derive(Debug, Args)]
pub struct OpsArgs {
    #[command(flatten)]
    pub access: TrackerAccess,
    #[command(subcommand)]
    pub command: OpsTopCommand,
}

#[derive(Debug, Subcommand)]
pub enum OpsTopCommand {
    /// Swarms (peers, completion, seeds, bytes from peers and seeds, offload,
    /// ETA), seeds (capacity, egress, utilisation, peers, free disk,
    /// heartbeat) and active alerts. Exits 16 while any alert is active.
    Status {
        /// Print the tracker's overview as JSON.
        #[arg(long)]
        json: bool,
    },
}
