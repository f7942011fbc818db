//! `shoal-tracker`: initialise a data directory, or serve the tracker API.

use anyhow::Context as _;
use clap::{Parser, Subcommand};
use std::path::PathBuf;
use std::sync::Arc;

/// The Shoal tracker: accounts, entitlements, releases, swarm tokens and announce.
#[derive(Debug, Parser)]
#[command(name = "shoal-tracker", version)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Create the tracker's signing key in DIR and a first operator API key
    /// in the storage the config names (sled in DIR by default; with
    /// PostgreSQL, run this once and copy DIR/tracker.key to every replica).
    Init {
        #[arg(long)]
        data: PathBuf,
        /// TOML configuration (see tracker.example.toml).
        #[arg(long)]
        config: Option<PathBuf>,
    },
    /// Bring the PostgreSQL schema to this tracker's version (`serve` also
    /// does at start; replicas starting together apply each step once).
    Migrate {
        /// TOML configuration naming the database (`[storage]`).
        #[arg(long)]
        config: PathBuf,
    },
    /// Print the tracker's public key, which players pin as `tracker_key`
    /// (never the secret key).
    PublicKey {
        #[arg(long)]
        data: PathBuf,
    },
    /// Serve the HTTP API.
    Serve {
        #[arg(long)]
        data: PathBuf,
        /// Address to listen on (overrides the config file).
        #[arg(long)]
        listen: Option<String>,
        /// TOML configuration (see tracker.example.toml).
        #[arg(long)]
        config: Option<PathBuf>,
    },
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
        Command::Init { data, config } => {
            let config = load_config(config.as_deref())?;
            let done = shoal_tracker::init_with(&data, &config).await?;
            println!("tracker public key: {}", done.public_key);
            println!(
                "operator API key (shown once; also in {}): {}",
                done.operator_key_file.display(),
                done.operator_key
            );
        }
        Command::Migrate { config } => {
            let config = load_config(Some(&config))?;
            anyhow::ensure!(
                config.storage.backend == shoal_tracker::config::Backend::Postgres,
                "[storage] backend: only the postgres backend has a schema to migrate (sled needs none)"
            );
            let pg = shoal_tracker::store::postgres::PgStore::connect(
                &shoal_tracker::store::postgres::PgOptions {
                    url: config.storage.url(),
                    pool_size: 1,
                    timeout: std::time::Duration::from_secs(config.storage.timeout_secs),
                },
            )?;
            let before = pg.schema_version().await?;
            let applied = pg.migrate().await?;
            if applied.is_empty() {
                println!("schema version {before}: up to date");
            } else {
                println!(
                    "schema version {before} -> {}: applied {applied:?}",
                    shoal_tracker::store::postgres::SCHEMA_VERSION
                );
            }
        }
        Command::PublicKey { data } => {
            println!("{}", shoal_tracker::public_key(&data)?);
        }
        Command::Serve {
            data,
            listen,
            config,
        } => {
            let mut config = load_config(config.as_deref())?;
            if let Some(listen) = listen {
                config.listen = listen;
            }
            let addr = config.listen.clone();
            let state = Arc::new(shoal_tracker::open(&data, config).await?);
            let listener = tokio::net::TcpListener::bind(&addr)
                .await
                .with_context(|| format!("binding {addr}"))?;
            tracing::info!(addr = %listener.local_addr()?, public_key = %state.key.public(), "tracker listening");
            shoal_tracker::serve(listener, state, shutdown_signal()).await?;
            tracing::info!("tracker stopped");
        }
    }
    Ok(())
}

fn load_config(path: Option<&std::path::Path>) -> anyhow::Result<shoal_tracker::Config> {
    match path {
        Some(path) => shoal_tracker::Config::load(path),
        None => Ok(shoal_tracker::Config::default()),
    }
}

async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(s) => s,
                Err(_) => return ctrl_c.await.unwrap_or(()),
            };
        tokio::select! {
            _ = ctrl_c => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    let _ = ctrl_c.await;
}
