//! The player's launcher: `shoal install`, `update`, `verify`, `repair` and
//! `status`. Install and update get a token and signed release metadata
//! from the tracker, check them and the publisher-signed manifest, stage
//! what is missing (copying what the installed build already has), download
//! the rest through the swarm, swap the new build in atomically, then keep
//! seeding for a while.
//!
//! Rooms: `trust` (what is checked against which key), `errors` (failures
//! as exit statuses), `session` (the one join → fetch → give back sequence
//! install, update and repair share), `node` (what the node serves, the
//! announce loop), then one room per command: `install` (and update),
//! `verify` (and repair), `status`; `view` draws progress.

mod errors;
mod install;
mod node;
mod session;
mod status;
mod trust;
mod verify;
pub mod view;

pub use install::{NatReport, Outcome, Request, SeedAsks, check_space, install, install_with};
pub use node::{Held, Serving};
pub use session::Launcher;
pub use status::{Status, StatusBuild, status};
pub use verify::{Repaired, Verified, repair, verify};

use crate::config::Settings;
use crate::{Exit, with_exit};
use errors::store_error;
use shoal_store::{Build, Install};
use std::path::Path;

fn now_secs() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// Opens the install and the settings every command shares.
fn open_install(settings: &Settings, dir: &Path) -> anyhow::Result<Install> {
    let install = Install::open(dir).map_err(store_error)?;
    if let Some(b) = settings.fail_writes_after {
        install.fail_writes_after(b);
    }
    Ok(install)
}

/// The installed build, or a clear error.
fn installed_build(install: &Install) -> anyhow::Result<Build> {
    install.installed().map_err(store_error)?.ok_or_else(|| {
        with_exit(
            anyhow::anyhow!("nothing is installed in {}", install.root().display()),
            Exit::BadInput,
        )
    })
}
