//! The `shoal` command's logic, kept out of `main.rs` so tests drive it
//! directly: key generation, publishing, manifest inspection, the player's
//! launcher and the admin commands. It links no tracker or seed server:
//! `shoal-demo` wires those together with this launcher.

mod admin;
pub mod cli;
pub mod config;
pub mod human;
pub mod keygen;
mod launch_cmd;
pub mod launcher;
mod manifest_cmd;
mod ops_cmd;
pub mod progress;
mod publish;
mod push;
pub mod tracker;

use cli::{Cli, Command};
use std::fmt;

/// Runs one parsed command line.
pub fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Keygen(args) => keygen::run(&args),
        Command::Publish(args) => publish::run(&args),
        Command::Push(args) => publish::push(&args),
        Command::Manifest(cmd) => manifest_cmd::run(&cmd),
        Command::Admin(args) => admin::run(&args),
        Command::Ops(args) => ops_cmd::run(&args),
        Command::Install(args) => launch_cmd::install(&args),
        Command::Update(args) => launch_cmd::update(&args),
        Command::Preload(args) => launch_cmd::preload(&args),
        Command::Verify(args) => launch_cmd::verify(&args),
        Command::Repair(args) => launch_cmd::repair(&args),
        Command::Status(args) => launch_cmd::status(&args),
    }
}

/// A binary's `main`: logs to stderr at `log_filter` (RUST_LOG overrides
/// it), runs `command`, and turns its error into one `error:` line and the
/// exit status it carries. The `shoal` and `shoal-demo` binaries share it.
pub fn main_with(
    log_filter: &str,
    command: impl FnOnce() -> anyhow::Result<()>,
) -> std::process::ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(log_filter)),
        )
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    match command() {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("error: {}", one_line(&err));
            std::process::ExitCode::from(exit_code(&err))
        }
    }
}

/// An error's chain of causes on one line, leaving out a cause whose text
/// the message already carries (many errors print their source themselves).
pub fn one_line(err: &anyhow::Error) -> String {
    let mut line = String::new();
    for cause in err.chain() {
        let text = cause.to_string();
        if !line.contains(&text) {
            if !line.is_empty() {
                line.push_str(": ");
            }
            line.push_str(&text);
        }
    }
    line.replace('\n', " ")
}

/// The process exit status for a failed command: the [`Exit`] attached to
/// the error, or 1.
pub fn exit_code(err: &anyhow::Error) -> u8 {
    err.chain()
        .find_map(|e| e.downcast_ref::<Coded>())
        .map_or(1, |c| c.code as u8)
}

/// Exit statuses with a meaning of their own (2 is clap's usage error).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum Exit {
    /// Bad input: a path rule, an unusable build tree, a bad key or manifest file.
    BadInput = 3,
    /// The output already exists and would be overwritten.
    OutputExists = 4,
    /// The tracker could not be reached.
    TrackerUnreachable = 5,
    /// The tracker refused the request (4xx): its code and detail are printed.
    TrackerRefused = 6,
    /// The tracker failed (5xx).
    TrackerFailed = 7,
    /// The account is not entitled to the product (the tracker's reason is printed).
    NotEntitled = 8,
    /// Refused by export screening (embargoed country or denied party).
    ExportRefused = 9,
    /// No peer or seed could be reached, or the swarm stopped delivering.
    NoSources = 10,
    /// Not enough disk space (the bytes needed and free are printed).
    DiskFull = 11,
    /// The release is older than one this install already accepted.
    Rollback = 12,
    /// A signature or hash did not check out: release metadata, token or manifest.
    SignatureInvalid = 13,
    /// The release metadata has expired (a stale or frozen tracker answer).
    MetadataExpired = 14,
    /// `shoal verify` found damaged or missing files.
    Damaged = 15,
    /// `shoal ops status`: alerts are active.
    Alerts = 16,
    /// A seed refused or failed a push (its code and detail are printed).
    SeedFailed = 17,
    /// The release is encrypted and its preload has not opened yet (the
    /// tracker's answer says when it unlocks).
    PreloadNotOpen = 18,
}

/// Wraps `err` so that the process exits with `code`, keeping its message.
pub fn with_exit(err: impl Into<anyhow::Error>, code: Exit) -> anyhow::Error {
    Coded {
        code,
        source: err.into(),
    }
    .into()
}

/// An error carrying an exit status; displays as its source's whole chain.
#[derive(Debug)]
struct Coded {
    code: Exit,
    source: anyhow::Error,
}

impl fmt::Display for Coded {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&one_line(&self.source))
    }
}

impl std::error::Error for Coded {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        Some(self.source.as_ref())
    }
}
