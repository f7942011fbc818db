//! Token requests against a real tracker: the full table of outcomes, the
//! audit log, and verification of the tokens it issues.

#![allow(clippy::unwrap_used)]

mod common;

use common::{T0, Tracker, peer, start};
use reqwest::StatusCode;
use serde_json::json;
use shoal_token::{Token, TokenError};
use shoal_tracker::Config;
use shoal_tracker::config::ScreeningConfig;

fn config() -> Config {
    Config {
        screening: ScreeningConfig {
            embargoed_countries: vec!["KP".into(), "IR".into()],
            denied_parties: vec!["Evil Corp".into()],
        },
        ..Config::default()
    }
}

async fn player(t: &Tracker, name: &str, country: &str) -> (String, String) {
    let id = t.account(name, country).await;
    let key = t.key(&id, "player").await;
    (id, key)
}

async fn entitle(t: &Tracker, account: &str, product: &str, expires_at: Option<u64>) -> String {
    let v = t
        .admin(
            "/v1/entitlements",
            json!({"account": account, "product": product, "expires_at": expires_at}),
        )
        .await;
    v["id"].as_str().unwrap().to_owned()
}

#[tokio::test]
async fn token_request_table() {
    let t = start(config()).await;
    let (publisher_api, publisher_key) = t.product("game", true, &["stable"]).await;
    t.admin(
        "/v1/products/game/channels",
        json!({"name": "qa", "private": true}),
    )
    .await;
    let (s, v) = t
        .register(
            &publisher_api,
            &common::manifest_bytes("game", "qa", "0.9", &publisher_key),
        )
        .await;
    assert_eq!(s, StatusCode::CREATED, "{v}");
    t.product("freegame", false, &["stable"]).await;
    t.admin("/v1/products/game/channels", json!({"name": "nightly"}))
        .await; // no release yet

    let (entitled, entitled_key) = player(&t, "Alice", "FR").await;
    entitle(&t, &entitled, "game", None).await;
    let (_, nobody_key) = player(&t, "Bob", "FR").await;
    let (expired, expired_key) = player(&t, "Carol", "FR").await;
    entitle(&t, &expired, "game", Some(T0 - 1)).await;
    let (revoked, revoked_key) = player(&t, "Dave", "FR").await;
    let grant = entitle(&t, &revoked, "game", None).await;
    let (s, _) = t
        .call(
            reqwest::Method::DELETE,
            &format!("/v1/entitlements/{grant}"),
            Some(&t.operator),
            None,
        )
        .await;
    assert_eq!(s, StatusCode::OK);
    let (embargoed, embargoed_key) = player(&t, "Erin", "KP").await;
    entitle(&t, &embargoed, "game", None).await;
    let (denied, denied_key) = player(&t, "EVIL CORP.", "FR").await;
    entitle(&t, &denied, "game", None).await;

    // organisation with two seats and an entitlement
    let org = t
        .admin(
            "/v1/accounts",
            json!({"name": "Studio LAN", "kind": "organisation", "country": "DE", "seats": 2}),
        )
        .await;
    let org = org["id"].as_str().unwrap().to_owned();
    entitle(&t, &org, "game", None).await;
    let mut members = Vec::new();
    for name in ["M1", "M2", "M3"] {
        members.push(player(&t, name, "DE").await);
    }
    t.admin(
        &format!("/v1/accounts/{org}/members"),
        json!({"account": members[0].0}),
    )
    .await;
    t.admin(
        &format!("/v1/accounts/{org}/members"),
        json!({"account": members[1].0}),
    )
    .await;
    let (s, v) = t
        .post(
            &format!("/v1/accounts/{org}/members"),
            &t.operator,
            json!({"account": members[2].0}),
        )
        .await;
    assert_eq!(
        (s, v["error"].as_str()),
        (StatusCode::CONFLICT, Some("no_seats_left")),
        "{v}"
    );

    // private channel: allow-list one player
    let (listed, listed_key) = player(&t, "Quinn", "FR").await;
    entitle(&t, &listed, "game", None).await;
    t.call(
        reqwest::Method::PUT,
        "/v1/products/game/channels/qa/allow",
        Some(&t.operator),
        Some(json!({"accounts": [listed]})),
    )
    .await;
    let (revoked_api_account, revoked_api_key) = player(&t, "Rita", "FR").await;
    entitle(&t, &revoked_api_account, "game", None).await;
    let key_id = revoked_api_key.split('.').next().unwrap().to_owned();
    t.call(
        reqwest::Method::DELETE,
        &format!("/v1/api-keys/{key_id}"),
        Some(&t.operator),
        None,
    )
    .await;

    let unknown_key = "key_999.000000000000000000000000000000000000000000000000".to_owned();
    let cases: Vec<(&str, &str, &str, &str, StatusCode, &str)> = vec![
        (
            "entitled",
            &entitled_key,
            "game",
            "stable",
            StatusCode::OK,
            "",
        ),
        (
            "not entitled",
            &nobody_key,
            "game",
            "stable",
            StatusCode::FORBIDDEN,
            "not_entitled",
        ),
        (
            "free product",
            &nobody_key,
            "freegame",
            "stable",
            StatusCode::OK,
            "",
        ),
        (
            "expired entitlement",
            &expired_key,
            "game",
            "stable",
            StatusCode::FORBIDDEN,
            "entitlement_expired",
        ),
        (
            "revoked entitlement",
            &revoked_key,
            "game",
            "stable",
            StatusCode::FORBIDDEN,
            "entitlement_revoked",
        ),
        (
            "org member within seats",
            &members[0].1,
            "game",
            "stable",
            StatusCode::OK,
            "",
        ),
        (
            "org member within seats 2",
            &members[1].1,
            "game",
            "stable",
            StatusCode::OK,
            "",
        ),
        (
            "beyond the seats",
            &members[2].1,
            "game",
            "stable",
            StatusCode::FORBIDDEN,
            "not_entitled",
        ),
        (
            "embargoed country",
            &embargoed_key,
            "game",
            "stable",
            StatusCode::FORBIDDEN,
            "embargoed_country",
        ),
        (
            "denied party",
            &denied_key,
            "freegame",
            "stable",
            StatusCode::FORBIDDEN,
            "denied_party",
        ),
        (
            "private channel, listed",
            &listed_key,
            "game",
            "qa",
            StatusCode::OK,
            "",
        ),
        (
            "private channel, not listed",
            &entitled_key,
            "game",
            "qa",
            StatusCode::FORBIDDEN,
            "not_on_allow_list",
        ),
        (
            "wrong role",
            &publisher_api,
            "game",
            "stable",
            StatusCode::FORBIDDEN,
            "wrong_role",
        ),
        (
            "unknown API key",
            &unknown_key,
            "game",
            "stable",
            StatusCode::UNAUTHORIZED,
            "unauthorized",
        ),
        (
            "revoked API key",
            &revoked_api_key,
            "game",
            "stable",
            StatusCode::UNAUTHORIZED,
            "unauthorized",
        ),
        (
            "unknown product",
            &entitled_key,
            "nogame",
            "stable",
            StatusCode::NOT_FOUND,
            "unknown_product",
        ),
        (
            "unknown channel",
            &entitled_key,
            "game",
            "alpha",
            StatusCode::NOT_FOUND,
            "unknown_channel",
        ),
        (
            "no release yet",
            &entitled_key,
            "game",
            "nightly",
            StatusCode::NOT_FOUND,
            "no_release",
        ),
    ];
    for (i, (name, key, product, channel, status, code)) in cases.iter().enumerate() {
        let (s, v) = t.token(key, product, channel, &peer(i as u32)).await;
        assert_eq!(s, *status, "{name}: {v}");
        if status.is_success() {
            assert!(
                v["token"].as_str().is_some_and(|t| !t.is_empty()),
                "{name}: {v}"
            );
            assert!(
                v["manifest_url"]
                    .as_str()
                    .unwrap()
                    .starts_with("/v1/releases/"),
                "{name}"
            );
        } else {
            assert_eq!(v["error"], *code, "{name}: {v}");
            assert!(
                v["detail"].as_str().is_some_and(|d| !d.is_empty()),
                "{name}: {v}"
            );
        }
    }

    // the audit log has every authenticated decision, with its reason
    let (s, log) = t.get("/v1/audit?limit=100", &t.operator).await;
    assert_eq!(s, StatusCode::OK);
    let log = log.as_array().unwrap();
    assert_eq!(
        log.len(),
        cases.len() - 2,
        "all but the two unauthenticated requests"
    );
    let reasons: Vec<&str> = log.iter().map(|e| e["reason"].as_str().unwrap()).collect();
    for reason in [
        "entitled",
        "free_product",
        "org_seat",
        "embargoed_country",
        "denied_party",
        "not_on_allow_list",
        "wrong_role",
        "entitlement_expired",
        "entitlement_revoked",
    ] {
        assert!(
            reasons.contains(&reason),
            "{reason} missing from {reasons:?}"
        );
    }
    let first = &log[0];
    assert_eq!(first["account"], entitled.as_str());
    assert_eq!(first["peer_id"], peer(0).as_str());
    assert_eq!(first["outcome"], "issued");
    assert_eq!(first["at"], T0);
    // filtered and exported as JSON lines
    let (_, refused) = t
        .get(&format!("/v1/audit?account={embargoed}"), &t.operator)
        .await;
    assert_eq!(refused.as_array().unwrap().len(), 1);
    let export = t
        .http
        .get(format!("{}/v1/audit/export", t.url))
        .bearer_auth(&t.operator)
        .send()
        .await
        .unwrap();
    assert_eq!(export.headers()["content-type"], "application/x-ndjson");
    let text = export.text().await.unwrap();
    assert_eq!(text.lines().count(), log.len());
    for line in text.lines() {
        let entry: serde_json::Value = serde_json::from_str(line).unwrap();
        assert!(entry["seq"].as_u64().is_some());
    }
    // players cannot read the audit log
    let (s, _) = t.get("/v1/audit", &entitled_key).await;
    assert_eq!(s, StatusCode::FORBIDDEN);
}

#[tokio::test]
async fn issued_tokens_verify_only_as_bound() {
    let t = start(config()).await;
    t.product("freegame", false, &["stable", "beta"]).await;
    let (_, key) = player(&t, "Alice", "FR").await;
    let me = peer(1);
    let (_, v) = t.token(&key, "freegame", "stable", &me).await;
    let token = Token::from_text(v["token"].as_str().unwrap()).unwrap();
    let swarm: shoal_types::Hash = v["swarm"].as_str().unwrap().parse().unwrap();
    let tracker_key = t.state.key.public();
    let now = T0 + 10;

    let claims = token.verify(&tracker_key, now, &swarm, &me).unwrap();
    assert_eq!(
        claims.expires_at,
        T0 + Config::default().token_lifetime_secs
    );
    // wrong key
    let other = shoal_types::SecretKey::from_seed([9; 32]).public();
    assert_eq!(
        token.verify(&other, now, &swarm, &me),
        Err(TokenError::Signature)
    );
    // expired
    assert!(matches!(
        token.verify(&tracker_key, claims.expires_at + 3600, &swarm, &me),
        Err(TokenError::Expired { .. })
    ));
    // another peer id
    assert!(matches!(
        token.verify(&tracker_key, now, &swarm, &peer(2)),
        Err(TokenError::WrongPeer { .. })
    ));
    // another swarm: the beta channel's release
    let (_, beta) = t.token(&key, "freegame", "beta", &me).await;
    let beta_swarm: shoal_types::Hash = beta["swarm"].as_str().unwrap().parse().unwrap();
    assert_ne!(beta_swarm, swarm);
    assert!(matches!(
        token.verify(&tracker_key, now, &beta_swarm, &me),
        Err(TokenError::WrongSwarm { .. })
    ));
    // tampered claims
    let mut bytes = token.to_bytes();
    let mid = bytes.len() / 3;
    bytes[mid] ^= 0x01;
    let tampered = Token::from_bytes(&bytes).and_then(|t| t.verify(&tracker_key, now, &swarm, &me));
    assert!(tampered.is_err());

    // the release metadata is signed by the tracker and dated from now
    let release = shoal_token::SignedRelease::from_text(v["release"].as_str().unwrap()).unwrap();
    let r = release
        .verify(&tracker_key, "freegame", "stable", now, None)
        .unwrap();
    assert_eq!(r.version, 1);
    assert_eq!(r.id(), swarm);
    assert_eq!(
        r.expires_at,
        T0 + Config::default().release_metadata_ttl_secs
    );
}
