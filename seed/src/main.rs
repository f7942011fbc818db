//! `shoal-seed`: import published releases and serve them.

use clap::{Parser, Subcommand};
use std::path::PathBuf;

/// Shoal seed server: serves releases to token holders over QUIC.
#[derive(Debug, Parser)]
#[command(name = "shoal-seed", version)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Add a bundle from `shoal publish` as release RELEASE (its id from `shoal admin releases register`).
    Import {
        #[arg(long)]
        data: PathBuf,
        #[arg(long)]
        release: shoal_types::Hash,
        bundle: PathBuf,
    },
    /// Serve every imported release and heartbeat to the tracker.
    Serve(Box<ServeArgs>),
}

#[derive(Debug, clap::Args)]
struct ServeArgs {
    /// TOML configuration (see seed/seed.example.toml); flags override it.
    #[arg(long)]
    config: Option<PathBuf>,
    /// Data directory: the seed's key and its imported releases.
    #[arg(long)]
    data: Option<PathBuf>,
    /// Tracker base URL, e.g. http://tracker:7070.
    #[arg(long)]
    tracker: Option<String>,
    /// The seed's API key (role `seed`). A flag shows in `ps` to every user
    /// of the machine: prefer SHOAL_SEED_API_KEY or --api-key-file.
    #[arg(long, env = "SHOAL_SEED_API_KEY", hide_env_values = true)]
    api_key: Option<String>,
    /// Read the seed's API key from this file (first line; keep it mode 0600).
    #[arg(long, conflicts_with = "api_key")]
    api_key_file: Option<PathBuf>,
    /// QUIC multiaddr to listen on (repeatable).
    #[arg(long)]
    listen: Vec<String>,
    /// The tracker's public key (hex), required unless the config sets it
    /// (`shoal-tracker public-key --data DIR` prints it).
    #[arg(long)]
    tracker_key: Option<shoal_types::PublicKey>,
    /// Name in the tracker's ops views.
    #[arg(long)]
    seed_id: Option<String>,
    /// Upload capacity reported to the tracker, megabits per second.
    #[arg(long)]
    capacity_mbit: Option<u64>,
    /// Cap uploads below the capacity, megabits per second (default: the capacity).
    #[arg(long)]
    upload_cap_mbit: Option<u64>,
    /// Most peers connected at once; further connections are closed.
    #[arg(long)]
    max_peers: Option<usize>,
    /// Serve Prometheus metrics at http://ADDR/metrics.
    #[arg(long)]
    metrics: Option<String>,
    /// Super-seeding window in seconds (0: off).
    #[arg(long)]
    super_seed_secs: Option<u64>,
    /// Accept releases pushed by `shoal publish --seed` on http://ADDR/v1/push.
    #[arg(long)]
    push_listen: Option<String>,
    /// The key publishers present to the push API.
    #[arg(long, env = "SHOAL_SEED_PUSH_KEY", hide_env_values = true)]
    push_key: Option<String>,
}

/// The first line of a key file, which must not be empty.
fn read_key_file(path: &std::path::Path) -> anyhow::Result<String> {
    use anyhow::Context as _;
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("reading the API key from {}", path.display()))?;
    let key = text.lines().next().unwrap_or_default().trim();
    anyhow::ensure!(!key.is_empty(), "{} holds no API key", path.display());
    Ok(key.to_owned())
}

impl ServeArgs {
    /// The configuration: the TOML file if given, then every flag over it.
    fn resolve(self) -> anyhow::Result<shoal_seed::Config> {
        let ServeArgs {
            config,
            data,
            tracker,
            api_key,
            api_key_file,
            listen,
            tracker_key,
            seed_id,
            capacity_mbit,
            upload_cap_mbit,
            max_peers,
            metrics,
            super_seed_secs,
            push_listen,
            push_key,
        } = self;
        let api_key = match api_key_file {
            Some(path) => Some(read_key_file(&path)?),
            None => api_key,
        };
        let mut c = match config {
            Some(path) => shoal_seed::Config::load(&path)?,
            None => shoal_seed::Config {
                data: data
                    .clone()
                    .ok_or_else(|| anyhow::anyhow!("--data or --config is required"))?,
                listen: vec!["/ip4/0.0.0.0/udp/4433/quic-v1".into()],
                tracker: tracker
                    .clone()
                    .ok_or_else(|| anyhow::anyhow!("--tracker or --config is required"))?,
                api_key: api_key.clone().ok_or_else(|| {
                    anyhow::anyhow!(
                        "--api-key-file, SHOAL_SEED_API_KEY, --api-key or --config is required"
                    )
                })?,
                tracker_key: None,
                seed_id: "seed-1".into(),
                capacity_mbit: 1000,
                upload_cap_mbit: None,
                max_peers: 500,
                super_seed_secs: 10,
                metrics: None,
                push_listen: None,
                push_key: None,
                relay: Default::default(),
            },
        };
        c.data = data.unwrap_or(c.data);
        c.tracker = tracker.unwrap_or(c.tracker);
        c.api_key = api_key.unwrap_or(c.api_key);
        if !listen.is_empty() {
            c.listen = listen;
        }
        c.tracker_key = tracker_key.or(c.tracker_key);
        c.seed_id = seed_id.unwrap_or(c.seed_id);
        c.capacity_mbit = capacity_mbit.unwrap_or(c.capacity_mbit);
        c.upload_cap_mbit = upload_cap_mbit.or(c.upload_cap_mbit);
        c.max_peers = max_peers.unwrap_or(c.max_peers);
        c.metrics = metrics.or(c.metrics);
        c.super_seed_secs = super_seed_secs.unwrap_or(c.super_seed_secs);
        c.push_listen = push_listen.or(c.push_listen);
        c.push_key = push_key.or(c.push_key);
        Ok(c)
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    match Cli::parse().command {
        Command::Import {
            data,
            release,
            bundle,
        } => {
            let path = shoal_seed::import(&data, &bundle, release)?;
            println!("imported release {release} into {}", path.display());
        }
        Command::Serve(args) => {
            let c = args.resolve()?;
            let stop = shutdown_signal()?;
            shoal_seed::run(c, stop).await?;
            tracing::info!("seed stopped");
        }
    }
    Ok(())
}

/// Ctrl-C or SIGTERM (what systemd and container runtimes send), as the
/// tracker stops: the seed leaves its loop and the process exits 0.
/// SIGTERM is caught from the moment this is called, so a stop during
/// start-up is clean too.
fn shutdown_signal() -> anyhow::Result<impl std::future::Future<Output = ()>> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate())?;
    Ok(async move {
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = term.recv() => {}
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn serve(args: &[&str]) -> anyhow::Result<shoal_seed::Config> {
        let cli = Cli::try_parse_from(["shoal-seed", "serve"].iter().chain(args))?;
        match cli.command {
            Command::Serve(a) => a.resolve(),
            Command::Import { .. } => anyhow::bail!("parsed as import"),
        }
    }

    #[test]
    fn flags_override_the_config_file() -> anyhow::Result<()> {
        let dir = tempfile::tempdir()?;
        let file = dir.path().join("seed.toml");
        std::fs::write(
            &file,
            "data = \"/srv/a\"\ntracker = \"http://t:1\"\napi_key = \"k\"\n\
             capacity_mbit = 200\nupload_cap_mbit = 150\nmax_peers = 40\n",
        )?;
        let path = file.display().to_string();
        let c = serve(&["--config", &path])?;
        assert_eq!(
            (c.capacity_mbit, c.upload_cap_mbit, c.max_peers),
            (200, Some(150), 40)
        );
        let c = serve(&[
            "--config",
            &path,
            "--data",
            "/srv/b",
            "--listen",
            "/ip4/127.0.0.1/udp/9/quic-v1",
            "--capacity-mbit",
            "300",
            "--upload-cap-mbit",
            "250",
            "--max-peers",
            "7",
            "--push-listen",
            "127.0.0.1:9102",
        ])?;
        assert_eq!(c.data, std::path::PathBuf::from("/srv/b"));
        assert_eq!(c.listen, ["/ip4/127.0.0.1/udp/9/quic-v1"]);
        assert_eq!(
            (c.capacity_mbit, c.upload_cap_mbit, c.max_peers),
            (300, Some(250), 7)
        );
        assert_eq!(c.push_listen.as_deref(), Some("127.0.0.1:9102"));
        assert_eq!(c.tracker, "http://t:1", "kept from the file");
        Ok(())
    }

    #[test]
    fn without_a_file_the_essentials_are_required() {
        let err = serve(&["--tracker", "http://t:1", "--api-key", "k"]).unwrap_err();
        assert!(err.to_string().contains("--data"), "{err}");
        let c = serve(&["--data", "/d", "--tracker", "http://t:1", "--api-key", "k"]).unwrap();
        assert_eq!((c.capacity_mbit, c.max_peers), (1000, 500));
    }
}
