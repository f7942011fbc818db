//! The tracker's records: accounts, API keys, products and channels,
//! entitlements, releases and audit entries. Stored as JSON by `store::Db`.
//! All but `ApiKey` (which holds a secret's hash) are the API's own types,
//! from `shoal-api`.

use serde::{Deserialize, Serialize};
use shoal_types::Hash;

pub use shoal_api::{
    Account, AccountKind, AuditEntry, Channel, Entitlement, Outcome, Product, ReleaseRecord, Role,
};

/// A stored API key: only the BLAKE3 hash of its secret is kept.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ApiKey {
    pub id: String,
    pub account: String,
    pub role: Role,
    pub secret_hash: Hash,
    pub created_at: u64,
    #[serde(default)]
    pub revoked_at: Option<u64>,
}
