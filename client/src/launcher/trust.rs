//! What the launcher trusts and why: the pinned tracker key, the swarm token
//! and release metadata it signs (steps 1–2a), and the manifest the
//! publisher signs (step 2b).

use super::errors::{classify, invalid, store_error};
use super::node::PeerInfo;
use super::now_secs;
use crate::config::Settings;
use crate::tracker::Tracker;
use crate::{Exit, with_exit};
use shoal_api::{TokenAnswer, TokenRequest};
use shoal_manifest::SignedManifest;
use shoal_store::Install;
use shoal_token::{ReleaseError, SignedRelease, Token};
use shoal_types::{Hash, PublicKey};

/// The pinned tracker key. There is no fallback to the key the tracker
/// reports about itself: whoever answers as the tracker could then sign
/// tokens and releases, so an unpinned launcher refuses to start.
pub(super) fn tracker_key(settings: &Settings) -> anyhow::Result<PublicKey> {
    settings.tracker_key.ok_or_else(|| {
        with_exit(
            anyhow::anyhow!(
                "no tracker key pinned: set tracker_key in config.toml (or SHOAL_TRACKER_KEY, or --tracker-key). \
                 The tracker's operator has it: `shoal-tracker init` printed it, and \
                 `shoal-tracker public-key --data DIR` prints it again"
            ),
            Exit::BadInput,
        )
    })
}

/// A token and release metadata, checked: the right to join one swarm.
pub(super) struct Ticket {
    pub(super) token: Token,
    pub(super) swarm: Hash,
    pub(super) release: shoal_token::Release,
    pub(super) release_text: String,
    pub(super) manifest_url: String,
    pub(super) bootstrap: Vec<PeerInfo>,
    /// An unlocked encrypted release's content key (checked against the
    /// manifest's `key_check` before it opens anything).
    pub(super) content_key: Option<shoal_manifest::seal::ContentKey>,
    /// When an encrypted release unlocks, by the tracker's clock.
    pub(super) unlocks_at: Option<u64>,
    /// A newer encrypted release, still locked (this ticket is for the
    /// version that plays now).
    pub(super) upcoming: Option<shoal_api::Upcoming>,
    /// When a locked release unlocks, on this process's monotonic clock
    /// (from the tracker's `unlocks_in`, not from the wall clock here).
    pub(super) unlocks: Option<std::time::Instant>,
}

/// Steps 1–2a: a token and the release metadata, checked against the pinned
/// tracker key and the highest version this install accepted.
pub(super) async fn ticket(
    tracker: &Tracker,
    key: &PublicKey,
    install: &Install,
    product: &str,
    channel: &str,
    me: &shoal_net::Peer,
    preload: bool,
) -> anyhow::Result<Ticket> {
    let request = TokenRequest {
        product: product.into(),
        channel: channel.into(),
        peer_id: me.to_base58(),
        preload,
    };
    let answer: TokenAnswer = tracker
        .post("/v1/tokens", &request)
        .await
        .map_err(classify)?;
    let now = now_secs();
    let signed = SignedRelease::from_text(&answer.release).map_err(invalid)?;
    let highest = install
        .highest_accepted(product, channel)
        .map_err(store_error)?;
    let release = signed
        .verify(key, product, channel, now, highest)
        .map_err(|e| match e {
            ReleaseError::Rollback { .. } => with_exit(e, Exit::Rollback),
            ReleaseError::Expired { .. } => with_exit(e, Exit::MetadataExpired),
            e => invalid(e),
        })?;
    let swarm = release.id();
    if swarm != answer.swarm {
        return Err(invalid(
            "the token answer names another swarm than its release",
        ));
    }
    let token = Token::from_text(&answer.token).map_err(invalid)?;
    token
        .verify(key, now, &swarm, &me.to_base58())
        .map_err(|e| invalid(format!("swarm token: {e}")))?;
    let content_key = match &answer.content_key {
        Some(hex) => Some(
            shoal_manifest::seal::ContentKey::from_hex(hex)
                .ok_or_else(|| invalid("the token answer's content key is not 64 hex digits"))?,
        ),
        None => None,
    };
    // A preload is not an install: until it unlocks the tracker still
    // answers an install with the version that plays, which must not then
    // read as a rollback.
    if !answer.sealed || content_key.is_some() {
        install
            .accept(product, channel, release.version)
            .map_err(store_error)?;
    }
    Ok(Ticket {
        content_key,
        unlocks_at: answer.unlocks_at,
        unlocks: answer
            .unlocks_in
            .map(|s| std::time::Instant::now() + std::time::Duration::from_secs(s)),
        upcoming: answer.upcoming,
        token,
        swarm,
        release,
        release_text: answer.release,
        manifest_url: answer.manifest_url,
        bootstrap: answer.bootstrap,
    })
}

/// Step 2b: the manifest, signed by the publisher key the tracker vouches
/// for, and hashing to what the release metadata says.
pub(super) async fn fetch_manifest(
    tracker: &Tracker,
    ticket: &Ticket,
) -> anyhow::Result<(SignedManifest, shoal_manifest::Manifest)> {
    let bytes = tracker.get_bytes(&ticket.manifest_url).await?;
    let signed = SignedManifest::from_bytes(&bytes).map_err(invalid)?;
    let release = &ticket.release;
    if signed.hash() != release.manifest_hash {
        return Err(invalid("the manifest does not match the release metadata"));
    }
    if signed.publisher() != release.publisher {
        return Err(invalid(format!(
            "the manifest is signed by {}, not by the product's publisher key {}",
            signed.publisher(),
            release.publisher
        )));
    }
    let manifest = signed
        .open()
        .map_err(|e| invalid(format!("manifest: {e}")))?;
    if manifest.product != release.product {
        return Err(invalid(format!(
            "the manifest is for product {:?}, not {:?}",
            manifest.product, release.product
        )));
    }
    Ok((signed, manifest))
}
