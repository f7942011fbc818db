//! The tracker's answers about its records: accounts, products and their
//! channels, entitlements, releases, API keys (never their secrets) and
//! audit entries. The tracker stores the same records (as JSON) and
//! answers them as they are.

use crate::{AccountKind, Role};
use serde::{Deserialize, Serialize};
use shoal_types::{Hash, PublicKey};

/// A player, a publisher, an operator, a seed, or an organisation with seats.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Account {
    pub id: String,
    pub name: String,
    pub kind: AccountKind,
    /// ISO 3166-1 alpha-2 country code, upper case.
    pub country: String,
    /// Organisations: how many member accounts the organisation may have.
    #[serde(default)]
    pub seats: u32,
    /// Organisations: member account ids (at most `seats`).
    #[serde(default)]
    pub members: Vec<String>,
    /// Individuals: the organisation they hold a seat in, if any.
    #[serde(default)]
    pub org: Option<String>,
    pub created_at: u64,
}

/// A release channel of a product.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Channel {
    pub name: String,
    /// Private channels admit only allow-listed accounts (or their organisations).
    #[serde(default)]
    pub private: bool,
    #[serde(default)]
    pub allow: Vec<String>,
    /// The origin budget of a release registered on this channel without
    /// one (absent: the tracker's `origin_budget`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub origin_budget: Option<crate::OriginBudget>,
    /// Days before an encrypted release's `unlock_at` its entitled players
    /// may preload it (absent: [`DEFAULT_PRELOAD_DAYS`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub preload_days: Option<u32>,
}

/// The preload window of a channel that does not set one.
pub const DEFAULT_PRELOAD_DAYS: u32 = 7;

/// A product: paid or free, its channels and who may publish it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Product {
    pub id: String,
    pub name: String,
    pub paid: bool,
    #[serde(default)]
    pub channels: Vec<Channel>,
    #[serde(default)]
    pub publisher_keys: Vec<PublicKey>,
    /// Accounts whose publisher API keys act on this product (register,
    /// list and roll back releases, read its manifests).
    #[serde(default)]
    pub publishers: Vec<String>,
    pub created_at: u64,
}

/// A grant of a product (optionally one channel, optionally until a time) to
/// an account or an organisation.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Entitlement {
    pub id: String,
    pub account: String,
    pub product: String,
    #[serde(default)]
    pub channel: Option<String>,
    #[serde(default)]
    pub expires_at: Option<u64>,
    pub granted_at: u64,
    #[serde(default)]
    pub revoked_at: Option<u64>,
}

/// A registered release of (product, channel).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ReleaseRecord {
    /// `shoal_token::Release::id`: names the swarm.
    pub id: Hash,
    pub product: String,
    pub channel: String,
    pub version: u64,
    pub manifest_hash: Hash,
    pub total_size: u64,
    pub publisher: PublicKey,
    /// The publisher's build label from the manifest.
    pub label: String,
    pub published_at: u64,
    /// Copies of the payload its seeds may send to its swarm in total
    /// (records from before budgets have the default).
    #[serde(default)]
    pub origin_budget: crate::OriginBudget,
    /// Bytes of its chunks the channel's previous release did not have
    /// (the patch its updating players need); absent for a first release,
    /// a rollback, or a record from before it was kept: the whole release.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub patch_bytes: Option<u64>,
    /// For an encrypted release: its manifest's `key_check`, which an
    /// uploaded content key must match.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key_check: Option<Hash>,
    /// Whether its content key has been uploaded (the key itself is in the
    /// tracker's key table, encrypted at rest, never in a record).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub key_stored: bool,
    /// When an encrypted release unlocks (seconds since the epoch): from
    /// then its token answers carry the content key; before, they admit to
    /// the swarm for preload only, within the channel's preload window.
    /// Absent: not scheduled yet.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub unlock_at: Option<u64>,
}

impl ReleaseRecord {
    /// The chunk bytes its seeds may send to its swarm in total (`None`: no
    /// bound): the budget's copies of the patch, plus one copy of what the
    /// previous release already had, for players installing afresh. For a
    /// first release that is the budget's copies of the whole.
    pub fn budget_bytes(&self) -> Option<u64> {
        let patch = self
            .patch_bytes
            .unwrap_or(self.total_size)
            .min(self.total_size);
        self.origin_budget
            .bytes(patch)
            .map(|b| b.saturating_add(self.total_size - patch))
    }
}

/// Outcome of a token request.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "lowercase")]
pub enum Outcome {
    Issued,
    Refused,
}

/// One token decision, as written to the audit log.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct AuditEntry {
    pub seq: u64,
    pub at: u64,
    pub account: String,
    pub product: String,
    pub channel: String,
    pub peer_id: String,
    pub outcome: Outcome,
    /// `entitled`, `free_product`, or the refusal code.
    pub reason: String,
}

impl Product {
    pub fn channel(&self, name: &str) -> Option<&Channel> {
        self.channels.iter().find(|c| c.name == name)
    }
}

/// A release as the API shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ReleaseView {
    #[serde(flatten)]
    pub record: ReleaseRecord,
    pub manifest_url: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct CreatedKey {
    #[serde(flatten)]
    pub record: KeyView,
    /// Shown once; only its hash is stored.
    pub key: String,
}

/// An API key without its secret hash.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct KeyView {
    pub id: String,
    pub account: String,
    pub role: Role,
    pub created_at: u64,
    pub revoked_at: Option<u64>,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn release(total: u64, patch: Option<u64>, budget: crate::OriginBudget) -> ReleaseRecord {
        ReleaseRecord {
            id: shoal_types::Hash::of(b"r"),
            product: "game".into(),
            channel: "stable".into(),
            version: 2,
            manifest_hash: shoal_types::Hash::of(b"m"),
            total_size: total,
            publisher: shoal_types::SecretKey::from_seed([1; 32]).public(),
            label: "2".into(),
            published_at: 0,
            origin_budget: budget,
            patch_bytes: patch,
            key_check: None,
            key_stored: false,
            unlock_at: None,
        }
    }

    #[test]
    fn a_budget_counts_copies_of_the_patch_and_one_copy_of_the_rest() {
        let two = crate::OriginBudget::parse("2").expect("budget");
        // a first release: two copies of the whole
        assert_eq!(release(1000, None, two).budget_bytes(), Some(2000));
        // an update changing 100 of 1000 bytes: two copies of the patch,
        // one of the 900 unchanged bytes for fresh installs
        assert_eq!(release(1000, Some(100), two).budget_bytes(), Some(1100));
        // a patch record larger than the release (corrupt) counts the release
        assert_eq!(release(1000, Some(5000), two).budget_bytes(), Some(2000));
        let unlimited = crate::OriginBudget::Unlimited;
        assert_eq!(release(1000, Some(100), unlimited).budget_bytes(), None);
    }
}
