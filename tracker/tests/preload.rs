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
    key.to_hex()
}

/// A token request for the channel's newest release, locked or not.
async fn preload_token(t: &Tracker, key: &str, n: u32) -> (StatusCode, Value) {
    t.post(
        "/v1/tokens",
        key,
        json!({"product": "game", "channel": "stable", "peer_id": peer(n), "preload": true}),
    )
    .await
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

    // Not scheduled and no key yet: a preload, no key. A player asking
    // for something to play gets v1, which plays, and hears of v2.
    let (status, answer) = preload_token(&t, &buyer, 1).await;
    assert_eq!(status, StatusCode::OK, "{answer}");
    assert_eq!(answer["sealed"], true);
    assert_eq!(answer["version"], 2);
    assert!(answer.get("content_key").is_none(), "{answer}");
    let (status, answer) = t.token(&buyer, "game", "stable", &peer(1)).await;
    assert_eq!(status, StatusCode::OK, "{answer}");
    assert_eq!(answer["version"], 1, "{answer}");
    assert!(answer.get("sealed").is_none(), "{answer}");
    assert_eq!(
        answer["upcoming"],
        json!({"version": 2, "preload_open": true}),
        "{answer}"
    );
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

    // Before the preload window (7 days): a preload is refused, saying
    // when, audited; v1 still plays, and its answer says when v2 comes.
    let (status, v) = preload_token(&t, &buyer, 1).await;
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
    let (status, v) = t.token(&buyer, "game", "stable", &peer(1)).await;
    assert_eq!((status, &v["version"]), (StatusCode::OK, &json!(1)), "{v}");
    assert_eq!(
        v["upcoming"],
        json!({"version": 2, "unlocks_at": unlock_at, "preload_opens_at": unlock_at - 7 * DAY, "preload_open": false}),
        "{v}"
    );
    // Within it: a preload token, no key, and when it unlocks.
    t.advance(3 * DAY + 1);
    let (status, v) = preload_token(&t, &buyer, 1).await;
    assert_eq!(status, StatusCode::OK, "{v}");
    assert_eq!(v["unlocks_at"], unlock_at);
    // ... and how long that is by the tracker's clock.
    assert_eq!(v["unlocks_in"], unlock_at - (T0 + 3 * DAY + 1), "{v}");
    assert!(v.get("content_key").is_none(), "{v}");
    let (_, v) = t.token(&buyer, "game", "stable", &peer(1)).await;
    assert_eq!(v["version"], 1, "{v}");
    assert_eq!(v["upcoming"]["preload_open"], true, "{v}");
    // Someone not entitled gets neither the swarm nor the key, nor hears
    // of what is coming.
    for (status, v) in [
        t.token(&other, "game", "stable", &peer(2)).await,
        preload_token(&t, &other, 2).await,
    ] {
        assert_eq!(
            (status.as_u16(), v["error"].as_str()),
            (403, Some("not_entitled")),
            "{v}"
        );
    }

    // From the unlock: the key, to the entitled only; v2 is what plays.
    t.advance(7 * DAY);
    let (status, v) = t.token(&buyer, "game", "stable", &peer(1)).await;
    assert_eq!(status, StatusCode::OK, "{v}");
    assert_eq!(v["version"], 2, "{v}");
    assert!(v.get("upcoming").is_none(), "{v}");
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
    let (status, _) = preload_token(&t, &buyer, 1).await;
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

/// An encrypted release scheduled weeks ahead takes nothing from the
/// version that plays: its players keep getting and renewing v1 tokens.
#[tokio::test]
async fn a_release_locked_weeks_ahead_leaves_the_playable_version_open() {
    let (t, api, id, buyer, _, key) = setup().await;
    let unlock_at = T0 + 30 * DAY;
    let (status, v) = put(
        &t,
        &format!("/v1/releases/{id}/key"),
        &api,
        json!({"content_key": hex(&key), "unlock_at": unlock_at}),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{v}");
    let (status, v) = t.token(&buyer, "game", "stable", &peer(1)).await;
    assert_eq!((status, &v["version"]), (StatusCode::OK, &json!(1)), "{v}");
    assert_eq!(v["upcoming"]["preload_open"], false, "{v}");
    // The v1 token renews in its last third: the renewal is about v1.
    let token = v["token"].as_str().unwrap().to_owned();
    t.advance(Config::default().token_lifetime_secs * 3 / 4);
    let (status, a) = t
        .call(
            Method::POST,
            "/v1/announce",
            None,
            Some(json!({
                "token": token,
                "listen_addrs": ["/ip4/127.0.0.1/udp/4001/quic-v1"],
                "have": 1, "complete": true, "uploaded": 0, "downloaded": 0, "downloaded_from_seeds": 0,
            })),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{a}");
    let renewed = shoal_token::Token::from_text(a["token"].as_str().unwrap()).unwrap();
    let claims = renewed.verify_signature(&t.state.key.public()).unwrap();
    assert_eq!(claims.swarm.to_string(), v["swarm"].as_str().unwrap());
    // A v1 manifest read stays open to the buyer.
    let resp = t
        .http
        .get(format!(
            "{}/v1/releases/{}/manifest",
            t.url,
            v["swarm"].as_str().unwrap()
        ))
        .bearer_auth(&buyer)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
}
