//! API keys: `<id>.<secret>`; only the BLAKE3 hash of the secret is stored.

use crate::model::{ApiKey, Role};

/// A new key for `account`: the record to store and the text to show once.
pub fn new_key(
    id: String,
    account: &str,
    role: Role,
    now: u64,
) -> Result<(ApiKey, String), getrandom::Error> {
    let mut secret = [0u8; 24];
    getrandom::getrandom(&mut secret)?;
    let secret_hex: String = secret.iter().map(|b| format!("{b:02x}")).collect();
    let record = ApiKey {
        id: id.clone(),
        account: account.to_owned(),
        role,
        secret_hash: blake3::hash(secret_hex.as_bytes()).into(),
        created_at: now,
        revoked_at: None,
    };
    Ok((record, format!("{id}.{secret_hex}")))
}

/// Splits key text into (id, secret).
pub fn parse(text: &str) -> Option<(&str, &str)> {
    let (id, secret) = text.trim().split_once('.')?;
    (!id.is_empty() && id.len() <= 64 && secret.len() == 48).then_some((id, secret))
}

/// Whether `secret` matches the stored record (constant-time comparison).
pub fn matches(record: &ApiKey, secret: &str) -> bool {
    blake3::hash(secret.as_bytes()) == blake3::Hash::from_bytes(record.secret_hash.0)
}

/// Whether two secrets are equal, in time independent of where they differ
/// (both are hashed; `blake3::Hash` compares in constant time).
pub fn same_secret(a: &str, b: &str) -> bool {
    blake3::hash(a.trim().as_bytes()) == blake3::hash(b.as_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip() {
        let (record, text) = new_key("key_1".into(), "acc_1", Role::Player, 5).unwrap();
        let (id, secret) = parse(&text).unwrap();
        assert_eq!(id, "key_1");
        assert!(matches(&record, secret));
        let mut wrong = secret.to_owned();
        wrong.replace_range(0..1, if wrong.starts_with('0') { "1" } else { "0" });
        assert!(!matches(&record, &wrong));
        assert!(parse("nodot").is_none());
        assert!(parse("a.short").is_none());
    }
}
