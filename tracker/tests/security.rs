//! The holes a hostile probe found, one test each (each fails without its
//! fix): revoked keys renewing tokens, keys on organisations and unbounded
//! peer identities, screening spellings, `/metrics` leaking names, the seed
//! registry, the audit export's cut-off, id grammar, and the token rate.

#![allow(clippy::unwrap_used)]

mod common;

use common::{T0, peer};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use shoal_tracker::Config;
use shoal_tracker::model::{AuditEntry, Outcome};

fn announce(token: &str) -> Value {
    json!({"token": token, "listen_addrs": ["/ip4/127.0.0.1/udp/1/quic-v1"], "have": 0,
        "complete": false, "uploaded": 0, "downloaded": 0, "downloaded_from_seeds": 0})
}

async fn player(t: &common::Tracker, name: &str) -> (String, String) {
    let account = t.account(name, "SE").await;
    let key = t
        .admin(
            "/v1/api-keys",
            json!({"account": account, "role": "player"}),
        )
        .await;
    (account, key["key"].as_str().unwrap().to_owned())
}

#[tokio::test]
async fn a_revoked_key_gets_no_announce_and_no_renewal() {
    let t = common::start(Config::default()).await;
    t.product("game", false, &["stable"]).await;
    let (_, key) = player(&t, "P").await;
    let key_id = key.split('.').next().unwrap().to_owned();
    let (s, tok) = t.token(&key, "game", "stable", &peer(1)).await;
    assert_eq!(s, StatusCode::OK);
    let token = tok["token"].as_str().unwrap();
    // near expiry, an announce renews while the key stands
    t.advance(25 * 60);
    let (s, v) = t.post("/v1/announce", &key, announce(token)).await;
    assert_eq!(s, StatusCode::OK, "{v}");
    let renewed = v["token"].as_str().expect("renewed").to_owned();
    t.call(
        Method::DELETE,
        &format!("/v1/api-keys/{key_id}"),
        Some(&t.operator),
        None,
    )
    .await;
    // neither the old token nor the renewed one gets anything now
    for tok in [token, renewed.as_str()] {
        let (s, v) = t.post("/v1/announce", &key, announce(tok)).await;
        assert_eq!(
            (s, v["error"].as_str()),
            (StatusCode::UNAUTHORIZED, Some("key_revoked")),
            "{v}"
        );
    }
    // and the key itself is refused for a new token
    let (s, _) = t.token(&key, "game", "stable", &peer(1)).await;
    assert_eq!(s, StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn keys_belong_to_members_and_identities_are_bounded() {
    let t = common::start(Config {
        max_peers_per_account: 3,
        ..Config::default()
    })
    .await;
    t.product("game", true, &["stable"]).await;
    let org = t
        .admin(
            "/v1/accounts",
            json!({"name": "Café", "country": "DE", "kind": "organisation", "seats": 2}),
        )
        .await["id"]
        .as_str()
        .unwrap()
        .to_owned();
    t.admin(
        "/v1/entitlements",
        json!({"account": org, "product": "game"}),
    )
    .await;
    // no key of any role on the organisation itself
    for role in ["player", "publisher", "seed", "operator"] {
        let (s, v) = t
            .post(
                "/v1/api-keys",
                &t.operator,
                json!({"account": org, "role": role}),
            )
            .await;
        assert_eq!(
            (s, v["error"].as_str()),
            (StatusCode::CONFLICT, Some("organisation_account")),
            "{v}"
        );
    }
    // a member with a seat gets tokens, for at most 3 launchers at once
    let (member, key) = player(&t, "Member").await;
    t.admin(
        &format!("/v1/accounts/{org}/members"),
        json!({"account": member}),
    )
    .await;
    for n in 0..3 {
        let (s, v) = t.token(&key, "game", "stable", &peer(n)).await;
        assert_eq!(s, StatusCode::OK, "{v}");
        assert_eq!(s, StatusCode::OK);
    }
    let (s, v) = t.token(&key, "game", "stable", &peer(3)).await;
    assert_eq!(
        (s, v["error"].as_str()),
        (StatusCode::FORBIDDEN, Some("too_many_peers")),
        "{v}"
    );
    // a launcher already admitted renews; the refusal is audited
    let (s, tok) = t.token(&key, "game", "stable", &peer(0)).await;
    assert_eq!(s, StatusCode::OK);
    let (_, audit) = t.get("/v1/audit?outcome=refused", &t.operator).await;
    assert!(
        audit
            .as_array()
            .unwrap()
            .iter()
            .any(|e| e["reason"] == "too_many_peers"),
        "{audit}"
    );
    // a launcher that stops frees its place at once
    let mut stop = announce(tok["token"].as_str().unwrap());
    stop["stopped"] = json!(true);
    let (s, _) = t.post("/v1/announce", &key, stop).await;
    assert_eq!(s, StatusCode::OK);
    let (s, v) = t.token(&key, "game", "stable", &peer(3)).await;
    assert_eq!(s, StatusCode::OK, "{v}");
    // and tokens expiring free places too
    t.advance(31 * 60);
    let (s, v) = t.token(&key, "game", "stable", &peer(9)).await;
    assert_eq!(s, StatusCode::OK, "{v}");
}

#[tokio::test]
async fn every_spelling_of_a_denied_party_is_refused_a_token() {
    let mut config = Config::default();
    config.screening.denied_parties = vec!["ACME Corp".into()];
    let t = common::start(config).await;
    t.product("game", false, &["stable"]).await;
    for (n, name) in [
        "A.C.M.E. Corp",
        "acme-corp",
        "ACME Corporation",
        "ÀCMÉ  corp.",
    ]
    .into_iter()
    .enumerate()
    {
        let (_, key) = player(&t, name).await;
        let (s, v) = t.token(&key, "game", "stable", &peer(n as u32)).await;
        assert_eq!(
            (s, v["error"].as_str()),
            (StatusCode::FORBIDDEN, Some("denied_party")),
            "{name}: {v}"
        );
    }
    let (_, key) = player(&t, "Acme Corp Two").await;
    let (s, _) = t.token(&key, "game", "stable", &peer(9)).await;
    assert_eq!(s, StatusCode::OK);
}

#[tokio::test]
async fn metrics_name_private_things_only_to_operators_and_the_metrics_token() {
    let secret = "a-metrics-token-of-some-length";
    let t = common::start(Config {
        metrics_token: secret.into(),
        ..Config::default()
    })
    .await;
    t.product("secretgame", false, &["stable"]).await;
    let (_, key) = player(&t, "P").await;
    let (_, tok) = t.token(&key, "secretgame", "stable", &peer(1)).await;
    let release = tok["swarm"].as_str().unwrap().to_owned();
    t.post(
        "/v1/announce",
        &key,
        announce(tok["token"].as_str().unwrap()),
    )
    .await;
    let metrics = |bearer: Option<String>| {
        let t = &t;
        async move {
            let mut req = t.http.get(format!("{}/metrics", t.url));
            if let Some(b) = bearer {
                req = req.bearer_auth(b);
            }
            let r = req.send().await.unwrap();
            assert_eq!(r.status(), StatusCode::OK);
            r.text().await.unwrap()
        }
    };
    for who in [
        None,
        Some(key.clone()),
        Some("wrong-token-wrong-token".into()),
    ] {
        let m = metrics(who.clone()).await;
        assert!(
            !m.contains("secretgame") && !m.contains(&release),
            "{who:?} saw names: {m}"
        );
        assert!(m.contains("shoal_tracker_members 1"), "{m}");
    }
    for who in [Some(t.operator.clone()), Some(secret.to_owned())] {
        let m = metrics(who).await;
        assert!(
            m.contains("product=\"secretgame\"") && m.contains(&release),
            "{m}"
        );
    }
}

#[tokio::test]
async fn seed_ids_are_bound_bounded_and_forgotten() {
    let t = common::start(Config {
        max_seeds_per_account: 2,
        seed_forget_secs: 600,
        ..Config::default()
    })
    .await;
    let seed_key = |name: &'static str| {
        let t = &t;
        async move {
            let a = t.account(name, "SE").await;
            t.key(&a, "seed").await
        }
    };
    let (a, b) = (seed_key("Seeds A").await, seed_key("Seeds B").await);
    let beat = |id: &str| {
        json!({"seed_id": id, "peer_id": peer(7), "addrs": [], "capacity_bps": 1,
            "egress_bps": 0, "peers": 0, "free_disk": 0, "releases": []})
    };
    let (s, v) = t.post("/v1/seeds/heartbeat", &a, beat("eu-1")).await;
    assert_eq!(s, StatusCode::OK, "{v}");
    // B cannot replace A's seed
    let (s, v) = t.post("/v1/seeds/heartbeat", &b, beat("eu-1")).await;
    assert_eq!(
        (s, v["error"].as_str()),
        (StatusCode::CONFLICT, Some("seed_id_taken")),
        "{v}"
    );
    // A registers at most two ids
    let (s, _) = t.post("/v1/seeds/heartbeat", &a, beat("eu-2")).await;
    assert_eq!(s, StatusCode::OK);
    let (s, v) = t.post("/v1/seeds/heartbeat", &a, beat("eu-3")).await;
    assert_eq!(
        (s, v["error"].as_str()),
        (StatusCode::FORBIDDEN, Some("too_many_seeds")),
        "{v}"
    );
    // ids outside the grammar are refused
    let (s, _) = t.post("/v1/seeds/heartbeat", &a, beat("../x")).await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
    // silent seeds are forgotten, and their ids are free again
    t.advance(601);
    t.state.expire_peers();
    let (_, seeds) = t.get("/v1/ops/seeds", &t.operator).await;
    assert_eq!(seeds.as_array().unwrap().len(), 0, "{seeds}");
    let (s, _) = t.post("/v1/seeds/heartbeat", &b, beat("eu-1")).await;
    assert_eq!(s, StatusCode::OK);
}

#[tokio::test]
async fn the_audit_export_reaches_the_end_of_a_long_log() {
    let t = common::start(Config::default()).await;
    let n = 12_345;
    for i in 0..n {
        t.state
            .db
            .append_audit(AuditEntry {
                seq: 0,
                at: T0 + i,
                account: format!("acc_{}", i % 7),
                product: "game".into(),
                channel: "stable".into(),
                peer_id: peer(i as u32),
                outcome: if i % 3 == 0 {
                    Outcome::Refused
                } else {
                    Outcome::Issued
                },
                reason: "entitled".into(),
            })
            .await
            .unwrap();
    }
    t.state.db.flush().await.unwrap();
    let export = |query: &str| {
        let url = format!("{}/v1/audit/export{query}", t.url);
        let req = t.http.get(url).bearer_auth(&t.operator);
        async move { req.send().await.unwrap().text().await.unwrap() }
    };
    let all = export("").await;
    let seqs: Vec<u64> = all
        .lines()
        .map(|l| {
            serde_json::from_str::<Value>(l).unwrap()["seq"]
                .as_u64()
                .unwrap()
        })
        .collect();
    assert_eq!(seqs.len() as u64, n, "every entry, not the first 10,000");
    assert!(seqs.windows(2).all(|w| w[0] < w[1]), "in order, none twice");
    // filters and a cursor still apply across pages
    let refused = export("?outcome=refused").await;
    assert_eq!(refused.lines().count() as u64, n.div_ceil(3));
    let tail = export(&format!("?after={}", seqs[10_000])).await;
    assert_eq!(tail.lines().count() as u64, n - 10_001);
    let limited = export("?limit=7").await;
    assert_eq!(limited.lines().count(), 7);
}

#[tokio::test]
async fn ids_follow_one_grammar() {
    let t = common::start(Config::default()).await;
    for id in [".", "..", ".hidden", "-rf", "a/b", "a b", ""] {
        let (s, v) = t
            .post(
                "/v1/products",
                &t.operator,
                json!({"id": id, "paid": false}),
            )
            .await;
        assert_eq!(
            (s, v["error"].as_str()),
            (StatusCode::BAD_REQUEST, Some("invalid_field")),
            "{id:?}: {v}"
        );
    }
    t.product("game", false, &["stable"]).await;
    let (s, v) = t
        .post(
            "/v1/products/game/channels",
            &t.operator,
            json!({"name": ".."}),
        )
        .await;
    assert_eq!(s, StatusCode::BAD_REQUEST, "{v}");
    let (_, key) = player(&t, "P").await;
    for (product, channel) in [("..", "stable"), ("game", ".."), ("game/../x", "stable")] {
        let (s, v) = t
            .post(
                "/v1/tokens",
                &key,
                json!({"product": product, "channel": channel, "peer_id": peer(1)}),
            )
            .await;
        assert_eq!(s, StatusCode::BAD_REQUEST, "{product:?}/{channel:?}: {v}");
    }
}

#[tokio::test]
async fn token_requests_are_rate_limited_per_key() {
    let t = common::start(Config {
        token_requests_per_minute: 5,
        ..Config::default()
    })
    .await;
    t.product("game", false, &["stable"]).await;
    let (_, key) = player(&t, "P").await;
    let (_, other) = player(&t, "Q").await;
    for _ in 0..5 {
        let (s, _) = t.token(&key, "game", "stable", &peer(1)).await;
        assert_eq!(s, StatusCode::OK);
    }
    let resp = t
        .http
        .post(format!("{}/v1/tokens", t.url))
        .bearer_auth(&key)
        .json(&json!({"product": "game", "channel": "stable", "peer_id": peer(1)}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::TOO_MANY_REQUESTS);
    let wait: u64 = resp.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((1..=12).contains(&wait), "{wait}");
    let v: Value = resp.json().await.unwrap();
    assert_eq!(v["error"], "rate_limited");
    // another key is not affected, and the limit refills with time
    let (s, _) = t.token(&other, "game", "stable", &peer(2)).await;
    assert_eq!(s, StatusCode::OK);
    t.advance(12);
    let (s, _) = t.token(&key, "game", "stable", &peer(1)).await;
    assert_eq!(s, StatusCode::OK);
    // rate-limited requests wrote no audit entry: 5 + 1 + 1 decisions
    let (_, audit) = t.get("/v1/audit", &t.operator).await;
    assert_eq!(audit.as_array().unwrap().len(), 7, "{audit}");
}
