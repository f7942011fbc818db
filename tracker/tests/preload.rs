//! Encrypted releases on a real tracker: the content key uploaded and
//! checked, stored encrypted, refused before the unlock (with when) and
//! handed out from it to entitled accounts only, every decision audited.

#![allow(clippy::unwrap_used)]

mod common;

use common::{T0, Tracker, peer, start};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use shoal_manifest::seal::ContentKey;
use shoal_manifest::{BuildOptions, ChunkParams, DiscardChunks, Progress, SignedManifest};
use shoal_tracker::Config;
use shoal_types::{Hash, SecretKey};

const DAY: u64 = 86_400;

/// A signed encrypted manifest of a tiny build.
fn sealed_manifest(label: &str, publisher: &SecretKey, key: &ContentKey) -> Vec<u8> {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("game.bin"),
        format!("secret {label}").repeat(500),
    )
    .unwrap();
    let options = BuildOptions {
        product: "game".into(),
        channel: "stable".into(),
        version: label.into(),
        chunking: ChunkParams::default(),
        threads: 1,
    };
    let m = shoal_manifest::build_sealed(
        dir.path(),
        &options,
        key,
        &DiscardChunks,
        &Progress::default(),
    )
    .unwrap();
    SignedManifest::sign(&m, publisher).to_bytes()
}

fn hex(key: &ContentKey) -> String {
    Hash(*key.expose()).to_string()
}

async fn put(t: &Tracker, path: &str, api: &str, body: Value) -> (StatusCode, Value) {
    t.call(Method::PUT, path, Some(api), Some(body)).await
}

/// A paid product whose second release is encrypted; a buyer and a player
/// who did not buy it.
async fn setup() -> (Tracker, String, String, String, String, ContentKey) {
    let t = start(Config::default()).await;
    let (api, publisher) = t.product("game", true, &["stable"]).await;
    let key = ContentKey::generate();
    let (status, release) = t
        .register(&api, &sealed_manifest("2.0", &publisher, &key))
        .await;
    assert_eq!(status, StatusCode::CREATED, "{release}");
    assert!(release["key_check"].is_string(), "{release}");
    let id = release["id"].as_str().unwrap().to_owned();
    let buyer = t.account("buyer", "FR").await;
    t.admin(
        "/v1/entitlements",
        json!({"account": buyer, "product": "game"}),
    )
    .await;
    let buyer_key = t.key(&buyer, "player").await;
    let other = t.account("browser", "FR").await;
    let other_key = t.key(&other, "player").await;
    (t, api, id, buyer_key, other_key, key)
}

#[tokio::test]
async fn the_key_unlocks_at_its_time_for_entitled_accounts_only() {
    let (t, api, id, buyer, other, key) = setup().await;
    let path = format!("/v1/releases/{id}/key");

    // Not scheduled and no key yet: preload, no key.
    let (status, answer) = t.token(&buyer, "game", "stable", &peer(1)).await;
    assert_eq!(status, StatusCode::OK, "{answer}");
    assert_eq!(answer["sealed"], true);
    assert!(answer.get("content_key").is_none(), "{answer}");
    // Unlocking without a key is refused.
    let (status, v) = put(&t, &format!("/v1/releases/{id}/unlock"), &api, json!({})).await;
    assert_eq!(
        (status.as_u16(), v["error"].as_str()),
        (409, Some("no_key")),
        "{v}"
    );

    // The wrong key is refused; so is a malformed one.
    let (status, v) = put(
        &t,
        &path,
        &api,
        json!({"content_key": hex(&ContentKey::generate())}),
    )
    .await;
    assert_eq!(
        (status.as_u16(), v["error"].as_str()),
        (422, Some("wrong_key")),
        "{v}"
    );
    let (status, v) = put(&t, &path, &api, json!({"content_key": "zz"})).await;
    assert_eq!(status.as_u16(), 400, "{v}");

    // The right key, unlocking in ten days.
    let unlock_at = T0 + 10 * DAY;
    let (status, v) = put(
        &t,
        &path,
        &api,
        json!({"content_key": hex(&key), "unlock_at": unlock_at}),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{v}");
    assert_eq!(v["key_stored"], true);
    assert_eq!(v["unlock_at"], unlock_at);
    assert!(
        !v.to_string().contains(&hex(&key)),
        "a record never shows the key"
    );
    // At rest the key is wrapped: the database alone does not hold it.
    let stored = t
        .state
        .db
        .content_key(&v["manifest_hash"].as_str().unwrap().parse().unwrap())
        .await
        .unwrap()
        .unwrap();
    assert!(!stored.windows(32).any(|w| w == key.expose()));

    // Before the preload window (7 days): refused, saying when, audited.
    let (status, v) = t.token(&buyer, "game", "stable", &peer(1)).await;
    assert_eq!(
        (status.as_u16(), v["error"].as_str()),
        (403, Some("preload_not_open")),
        "{v}"
    );
    assert!(
        v["detail"]
            .as_str()
            .unwrap()
            .contains(&unlock_at.to_string()),
        "{v}"
    );
    // Within it: a preload token, no key, and when it unlocks.
    t.advance(3 * DAY + 1);
    let (status, v) = t.token(&buyer, "game", "stable", &peer(1)).await;
    assert_eq!(status, StatusCode::OK, "{v}");
    assert_eq!(v["unlocks_at"], unlock_at);
    assert!(v.get("content_key").is_none(), "{v}");
    // Someone not entitled gets neither the swarm nor the key.
    let (status, v) = t.token(&other, "game", "stable", &peer(2)).await;
    assert_eq!(
        (status.as_u16(), v["error"].as_str()),
        (403, Some("not_entitled")),
        "{v}"
    );

    // From the unlock: the key, to the entitled only.
    t.advance(7 * DAY);
    let (status, v) = t.token(&buyer, "game", "stable", &peer(1)).await;
    assert_eq!(status, StatusCode::OK, "{v}");
    assert_eq!(v["content_key"].as_str(), Some(hex(&key).as_str()));
    let (status, v) = t.token(&other, "game", "stable", &peer(2)).await;
    assert_eq!(status.as_u16(), 403, "{v}");
    assert!(v.get("content_key").is_none());
    // An unlock that happened cannot be moved back.
    let (status, v) = put(
        &t,
        &format!("/v1/releases/{id}/unlock"),
        &api,
        json!({"at": T0 + 30 * DAY}),
    )
    .await;
    assert_eq!(
        (status.as_u16(), v["error"].as_str()),
        (409, Some("already_unlocked")),
        "{v}"
    );

    // Every decision is in the audit log, the early refusal included.
    let (_, audit) = t.get("/v1/audit?limit=100", &t.operator.clone()).await;
    let reasons: Vec<&str> = audit
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["reason"].as_str().unwrap())
        .collect();
    assert!(reasons.contains(&"preload_not_open"), "{reasons:?}");
    assert!(reasons.contains(&"not_entitled"), "{reasons:?}");
}

#[tokio::test]
async fn a_publisher_schedules_and_unlocks_and_a_restart_keeps_the_key() {
    let (t, api, id, buyer, _, key) = setup().await;
    let (status, v) = put(
        &t,
        &format!("/v1/releases/{id}/key"),
        &api,
        json!({"content_key": hex(&key)}),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{v}");
    // A channel's own window.
    let (status, v) = put(
        &t,
        &format!("/v1/releases/{id}/unlock"),
        &api,
        json!({"at": T0 + 2 * DAY}),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{v}");
    let (status, _) = t.token(&buyer, "game", "stable", &peer(1)).await;
    assert_eq!(status, StatusCode::OK, "inside the default 7 days");
    // Another publisher cannot touch it; a player cannot either.
    let (other_api, _) = t.product("other", false, &["stable"]).await;
    let (status, _) = put(
        &t,
        &format!("/v1/releases/{id}/unlock"),
        &other_api,
        json!({}),
    )
    .await;
    assert_eq!(status.as_u16(), 404);
    let (status, _) = put(&t, &format!("/v1/releases/{id}/unlock"), &buyer, json!({})).await;
    assert_eq!(status.as_u16(), 403);
    // Unlock now; a cold cache (a restarted replica) reads the key from
    // the database and opens it.
    let (status, v) = put(&t, &format!("/v1/releases/{id}/unlock"), &api, json!({})).await;
    assert_eq!(status, StatusCode::OK, "{v}");
    assert_eq!(v["unlock_at"], T0);
    let fresh = shoal_tracker::State::new(
        t.state.db.clone(),
        t.state.key.clone(),
        t.state.config.clone(),
        std::sync::Arc::new(|| T0),
    );
    let manifest: Hash = v["manifest_hash"].as_str().unwrap().parse().unwrap();
    let got = shoal_tracker::content_keys::get(&fresh, &manifest)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(got.expose(), key.expose());
    let (_, v) = t.token(&buyer, "game", "stable", &peer(1)).await;
    assert_eq!(v["content_key"].as_str(), Some(hex(&key).as_str()));
}
