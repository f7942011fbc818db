//! The operators' and publishers' requests: accounts and seats, API keys,
//! products, channels, publisher keys, entitlements, rollbacks. The tracker
//! decodes them (`deny_unknown_fields`: a misspelt field is a 4xx, not
//! ignored) and `shoal admin` sends them.

use serde::{Deserialize, Serialize};
use shoal_types::PublicKey;

/// What an account is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "lowercase")]
pub enum AccountKind {
    #[default]
    Individual,
    Organisation,
}

/// What an API key may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "lowercase")]
pub enum Role {
    Operator,
    Publisher,
    Player,
    Seed,
}

/// `POST /v1/accounts`: a player, publisher, operator or seed account, or an
/// organisation with `seats` member accounts.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct NewAccount {
    #[cfg_attr(
        feature = "openapi",
        schema(
            min_length = 1,
            max_length = 200,
            pattern = "^[^\\x00-\\x1f\\x7f]*[^\\s\\x00-\\x1f\\x7f][^\\x00-\\x1f\\x7f]*$"
        )
    )]
    pub name: String,
    #[serde(default)]
    pub kind: AccountKind,
    /// ISO 3166-1 alpha-2.
    #[cfg_attr(feature = "openapi", schema(pattern = "^[A-Za-z]{2}$"))]
    pub country: String,
    #[serde(default)]
    pub seats: u32,
}

/// `POST /v1/accounts/{id}/members`: gives `account` a seat in the organisation.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct NewMember {
    pub account: String,
}

/// `POST /v1/api-keys`: a key with `role` for `account` (shown once).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct NewApiKey {
    pub account: String,
    pub role: Role,
}

/// `POST /v1/products`: a product, free or paid, with its public channels.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct NewProduct {
    #[cfg_attr(
        feature = "openapi",
        schema(pattern = "^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
    )]
    pub id: String,
    #[serde(default)]
    pub name: Option<String>,
    pub paid: bool,
    /// Public channels to create; default `["stable"]`.
    #[serde(default)]
    pub channels: Option<Vec<String>>,
    /// Accounts whose publisher keys may register, list and roll back its
    /// releases.
    #[serde(default)]
    pub publishers: Vec<String>,
}

/// `POST /v1/products/{id}/publishers`: lets `account` publish the product.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct NewPublisher {
    pub account: String,
}

/// `POST /v1/products/{id}/channels`: a channel, public or private (allow-listed).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct NewChannel {
    #[cfg_attr(
        feature = "openapi",
        schema(pattern = "^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
    )]
    pub name: String,
    #[serde(default)]
    pub private: bool,
    #[serde(default)]
    pub allow: Vec<String>,
    /// The origin budget of releases registered on it without one.
    #[serde(default)]
    pub origin_budget: Option<crate::OriginBudget>,
    /// Days before an encrypted release unlocks that its entitled players
    /// may preload it (0..=90; absent: 7).
    #[serde(default)]
    pub preload_days: Option<u32>,
}

/// Most days a channel's preload window may open before an unlock.
pub const MAX_PRELOAD_DAYS: u32 = 90;

/// `PUT /v1/releases/{id}/key`: an encrypted release's content key, from
/// its publisher. Stored encrypted at rest; never shown again, never logged.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct SetContentKey {
    /// The 32-byte key, 64 hex digits (what `shoal publish --encrypt` wrote).
    #[cfg_attr(feature = "openapi", schema(pattern = "^[0-9a-f]{64}$"))]
    pub content_key: String,
    /// When the release unlocks (seconds since the epoch); absent: leave
    /// it as it is (not scheduled, for a first upload).
    #[serde(default)]
    pub unlock_at: Option<u64>,
}

impl std::fmt::Debug for SetContentKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SetContentKey")
            .field("content_key", &"..")
            .field("unlock_at", &self.unlock_at)
            .finish()
    }
}

/// `PUT /v1/releases/{id}/unlock`: when an encrypted release unlocks.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct SetUnlock {
    /// Seconds since the epoch; absent: now.
    #[serde(default)]
    pub at: Option<u64>,
}

/// `PUT /v1/products/{id}/channels/{channel}/allow`: who may use a private channel.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct AllowList {
    pub accounts: Vec<String>,
}

/// `POST /v1/products/{id}/publisher-keys`: a key that may sign the product's manifests.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct NewPublisherKey {
    pub public_key: PublicKey,
}

/// `POST /v1/entitlements`: grants `product` (one channel, or all) to an
/// account or organisation, until `expires_at` if given.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct NewEntitlement {
    pub account: String,
    pub product: String,
    #[serde(default)]
    pub channel: Option<String>,
    #[serde(default)]
    pub expires_at: Option<u64>,
}

/// `POST /v1/products/{id}/channels/{channel}/rollback`: serve `version`'s build
/// again, as a new, higher release.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct Rollback {
    /// The older version whose build the channel should serve again.
    pub version: u64,
}
