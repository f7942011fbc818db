//! The launcher's failures as exit statuses: tracker refusals, store and
//! download errors, signatures that do not check out.

use crate::tracker::Refusal;
use crate::{Exit, with_exit};
use shoal_net::download::DownloadError;
use shoal_store::StoreError;

/// Turns a tracker refusal into the launcher's exit codes.
pub(super) fn classify(err: anyhow::Error) -> anyhow::Error {
    let code = err
        .chain()
        .find_map(|e| e.downcast_ref::<Refusal>())
        .map(|r| r.code.clone());
    match code.as_deref() {
        Some("embargoed_country" | "denied_party") => with_exit(err, Exit::ExportRefused),
        Some(
            "not_entitled"
            | "entitlement_expired"
            | "entitlement_revoked"
            | "not_on_allow_list"
            | "unknown_product"
            | "unknown_channel"
            | "no_release"
            | "wrong_role",
        ) => with_exit(err, Exit::NotEntitled),
        Some("preload_not_open") => with_exit(err, Exit::PreloadNotOpen),
        _ => err,
    }
}

pub(super) fn store_error(e: StoreError) -> anyhow::Error {
    match e {
        StoreError::NotOurs(_) | StoreError::Busy(_) => with_exit(e, Exit::BadInput),
        StoreError::Unlock(_) => with_exit(e, Exit::SignatureInvalid),
        e if e.is_disk_full() => with_exit(
            anyhow::Error::new(e).context("the disk is full"),
            Exit::DiskFull,
        ),
        e => anyhow::Error::new(e),
    }
}

pub(super) fn invalid(msg: impl std::fmt::Display) -> anyhow::Error {
    with_exit(anyhow::anyhow!("{msg}"), Exit::SignatureInvalid)
}

pub(super) fn download_error(e: DownloadError) -> anyhow::Error {
    match e {
        DownloadError::NoSources | DownloadError::Stalled(_) => with_exit(e, Exit::NoSources),
        DownloadError::Store(io) if shoal_store::is_disk_full(&io) => with_exit(
            anyhow::Error::new(io).context("the disk is full; the installed build is untouched"),
            Exit::DiskFull,
        ),
        e => anyhow::Error::new(e),
    }
}
