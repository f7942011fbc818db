//! The tracker's HTTP/JSON API as types: what each `/v1/` endpoint takes and
//! answers, and the error body every refusal carries. The tracker's
//! handlers decode and encode these, and the launcher and seeds build and
//! read the same ones, so a field renamed on one side fails to compile on
//! the other instead of vanishing on the wire.
//!
//! Pure: serde and `shoal-types` only (`tests/tests/layering.rs`).

mod admin;
pub mod budget;
mod ops;
mod records;

pub use admin::*;
pub use budget::*;
pub use ops::*;
pub use records::*;

use serde::{Deserialize, Serialize};
use shoal_types::{Hash, Reachability};

/// The body of every 4xx and 5xx answer: a stable machine-readable `error`
/// code (`not_entitled`, `token_expired`, `invalid_field`…) and a sentence
/// for people.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ErrorBody {
    pub error: String,
    pub detail: String,
}

/// `POST /v1/tokens`: a swarm token for one product and channel, bound to
/// the peer id the caller will present to peers.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct TokenRequest {
    #[cfg_attr(
        feature = "openapi",
        schema(pattern = "^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
    )]
    pub product: String,
    #[cfg_attr(
        feature = "openapi",
        schema(pattern = "^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
    )]
    pub channel: String,
    /// A libp2p PeerId in base58.
    #[cfg_attr(feature = "openapi", schema(pattern = "^[1-9A-HJ-NP-Za-km-z]{8,128}$"))]
    pub peer_id: String,
    /// For the channel's newest release even while it is encrypted and
    /// locked (to preload it). Without it the token is for the newest
    /// release that plays now, and the answer names what is coming.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub preload: bool,
}

/// An encrypted release newer than the one a token answer is for, not yet
/// unlocked: what a player can preload.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Upcoming {
    pub version: u64,
    /// When it unlocks (seconds since the epoch), if scheduled.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub unlocks_at: Option<u64>,
    /// When its preload opens (seconds since the epoch); absent when it
    /// is open with no unlock scheduled.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub preload_opens_at: Option<u64>,
    /// Whether a token request with `preload` gets it now.
    pub preload_open: bool,
}

/// A multiaddr as the tracker takes it: `/…`, at most 256 characters.
#[cfg(feature = "openapi")]
#[derive(utoipa::ToSchema)]
#[schema(pattern = "^/[!-~]{0,255}$")]
#[allow(dead_code)]
struct Multiaddr(String);

/// The answer to [`TokenRequest`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct TokenAnswer {
    /// The swarm token (hex).
    pub token: String,
    pub expires_at: u64,
    /// The release id, which names the swarm.
    pub swarm: Hash,
    /// Release metadata signed by the tracker (hex), freshly dated.
    pub release: String,
    pub version: u64,
    pub manifest_hash: Hash,
    /// Where the publisher-signed manifest is (`/v1/releases/{id}/manifest`).
    pub manifest_url: String,
    pub total_size: u64,
    /// A few peers, then seeds.
    #[serde(default)]
    pub bootstrap: Vec<PeerInfo>,
    /// Seconds between announces.
    pub announce_interval: u64,
    /// An encrypted release: its chunks are ciphertext, opened with
    /// `content_key` once it unlocks.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub sealed: bool,
    /// When an encrypted release unlocks (seconds since the epoch), as the
    /// tracker's clock decides; absent when it is not scheduled.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub unlocks_at: Option<u64>,
    /// Before its unlock: seconds from this answer until `unlocks_at` by
    /// the tracker's clock, so a launcher waiting for it need not trust
    /// its own.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub unlocks_in: Option<u64>,
    /// An unlocked encrypted release's content key (64 hex digits), for
    /// entitled accounts only, from `unlocks_at` on.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub content_key: Option<String>,
    /// A newer encrypted release, still locked, when this token is for an
    /// older one that plays now.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub upcoming: Option<Upcoming>,
}

/// A peer or seed handed out in a peer list.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct PeerInfo {
    pub peer_id: String,
    /// Multiaddrs: direct ones, and a `/p2p-circuit` one through a relay for
    /// a peer behind a NAT.
    pub addrs: Vec<String>,
    #[serde(default)]
    pub seed: bool,
    #[serde(default)]
    pub reachability: Reachability,
    /// It announced from the requester's own address (behind the same
    /// router): dial its LAN addresses, not its relayed one.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub same_site: bool,
    /// A seed whose swarm has origin budget to spare (more than a quarter
    /// copy beyond one copy and what was sent): ask it for chunks peers
    /// hold too, not only for those no peer holds.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub fills: bool,
}

/// `POST /v1/announce`: a member's progress, presenting its swarm token.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct AnnounceRequest {
    pub token: String,
    /// The multiaddrs it can be reached at (at most 8 of 256 characters).
    #[cfg_attr(feature = "openapi", schema(max_items = 8, inline, value_type = Vec<Multiaddr>))]
    pub listen_addrs: Vec<String>,
    /// Chunks held.
    pub have: u64,
    pub complete: bool,
    pub uploaded: u64,
    pub downloaded: u64,
    pub downloaded_from_seeds: u64,
    #[serde(default)]
    pub region: Option<String>,
    /// The client cannot get chunks from peers fast enough: list seeds.
    #[serde(default)]
    pub starving: bool,
    /// The client is leaving the swarm.
    #[serde(default)]
    pub stopped: bool,
    /// Whether others can dial the client (its AutoNAT verdict).
    #[serde(default)]
    pub reachability: Reachability,
}

/// The answer to [`AnnounceRequest`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct AnnounceAnswer {
    /// Seconds until the next announce is due.
    pub interval: u64,
    /// Peers to connect to, then seeds when the swarm needs them.
    #[serde(default)]
    pub peers: Vec<PeerInfo>,
    /// Relays to reserve a slot on (the member is behind a NAT and holds none).
    #[serde(default)]
    pub relays: Vec<PeerInfo>,
    /// The swarm's totals.
    pub swarm: SwarmStats,
    /// A renewed token, when the old one nears its expiry.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token_expires_at: Option<u64>,
}

/// Aggregates of one swarm.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct SwarmStats {
    pub peers: usize,
    pub complete: usize,
    /// Chunks held, summed over members.
    pub have_chunks: u64,
    pub uploaded: u64,
    pub downloaded: u64,
    pub downloaded_from_seeds: u64,
    /// Members whose AutoNAT verdict is that nobody can dial them.
    pub unreachable: usize,
}

/// `POST /v1/seeds/heartbeat`: what a seed reports (seed API key).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct SeedReport {
    #[cfg_attr(
        feature = "openapi",
        schema(pattern = "^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
    )]
    pub seed_id: String,
    #[cfg_attr(feature = "openapi", schema(pattern = "^[1-9A-HJ-NP-Za-km-z]{8,128}$"))]
    pub peer_id: String,
    #[cfg_attr(feature = "openapi", schema(max_items = 8, inline, value_type = Vec<Multiaddr>))]
    pub addrs: Vec<String>,
    /// Upload capacity, bits per second.
    pub capacity_bps: u64,
    /// Current upload rate, bits per second.
    pub egress_bps: u64,
    pub peers: u32,
    pub free_disk: u64,
    /// Release ids the seed holds.
    pub releases: Vec<Hash>,
    /// It runs a circuit relay: players behind NATs may reserve a slot.
    #[serde(default)]
    pub relay: bool,
    /// Chunk bytes it sent to each swarm since it started (at most one
    /// entry per release it holds).
    #[serde(default)]
    pub sent: Vec<SwarmSent>,
}

/// The answer to a [`SeedReport`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct HeartbeatAnswer {
    /// Seconds until the next heartbeat is due.
    pub interval: u64,
    /// Releases the seed does not name but holds the build of (a rollback
    /// is a new release of an older manifest): serve `release` from `held`.
    #[serde(default)]
    pub aliases: Vec<Alias>,
    /// Its share of each swarm's origin budget (releases it reported).
    #[serde(default)]
    pub allowances: Vec<SwarmAllowance>,
}

/// One release a seed serves from the content of another.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Alias {
    pub release: Hash,
    pub held: Hash,
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What an older or newer launcher leaves out still decodes, and what
    /// the tracker leaves out on the wire (`same_site: false`, no renewed
    /// token) is absent rather than null.
    #[test]
    fn defaults_and_omissions() {
        let peer: PeerInfo = serde_json::from_str(r#"{"peer_id":"p","addrs":[]}"#).unwrap();
        assert!(!peer.seed && !peer.same_site);
        assert_eq!(peer.reachability, Reachability::Unknown);
        assert_eq!(
            serde_json::to_string(&peer).unwrap(),
            r#"{"peer_id":"p","addrs":[],"seed":false,"reachability":"unknown"}"#
        );
        let answer = AnnounceAnswer {
            interval: 30,
            peers: vec![],
            relays: vec![],
            swarm: SwarmStats::default(),
            token: None,
            token_expires_at: None,
        };
        let text = serde_json::to_string(&answer).unwrap();
        assert!(!text.contains("token"), "{text}");
        assert_eq!(
            serde_json::from_str::<AnnounceAnswer>(&text).unwrap(),
            answer
        );
    }

    #[test]
    fn requests_refuse_unknown_fields() {
        let bad = r#"{"product":"p","channel":"c","peer_id":"x","admin":true}"#;
        assert!(serde_json::from_str::<TokenRequest>(bad).is_err());
    }
}
