//! Malformed requests get a 4xx with a JSON error body, never a 500; release
//! registration rules; announce and seed heartbeats.

#![allow(clippy::unwrap_used, clippy::type_complexity)]

mod common;

use common::{Tracker, manifest_bytes, peer, start};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use shoal_tracker::Config;

async fn raw(
    t: &Tracker,
    method: Method,
    path: &str,
    key: Option<&str>,
    content_type: Option<&str>,
    body: Vec<u8>,
) -> (StatusCode, Value) {
    let mut req = t
        .http
        .request(method, format!("{}{path}", t.url))
        .body(body);
    if let Some(k) = key {
        req = req.bearer_auth(k);
    }
    if let Some(ct) = content_type {
        req = req.header("content-type", ct);
    }
    let resp = req.send().await.unwrap();
    let status = resp.status();
    let text = resp.text().await.unwrap();
    let v: Value = serde_json::from_str(&text)
        .unwrap_or_else(|_| panic!("{path}: non-JSON {status}: {text:?}"));
    (status, v)
}

#[tokio::test]
async fn malformed_requests_get_json_4xx() {
    let t = start(Config::default()).await;
    t.product("game", false, &["stable"]).await;
    let player = t.account("P", "FR").await;
    let key = t.key(&player, "player").await;
    let op = t.operator.clone();
    let json_ct = Some("application/json");
    let huge = vec![b'x'; 200 << 10];
    let huge_json = format!(
        "{{\"name\": \"{}\", \"country\": \"FR\"}}",
        "n".repeat(100 << 10)
    )
    .into_bytes();
    let cases: Vec<(&str, Method, &str, Option<&str>, Option<&str>, Vec<u8>, u16, &str)> = vec![
        ("bad json", Method::POST, "/v1/tokens", Some(&key), json_ct, b"{not json".to_vec(), 400, "bad_json"),
        ("empty body", Method::POST, "/v1/tokens", Some(&key), json_ct, vec![], 400, "bad_json"),
        ("wrong types", Method::POST, "/v1/tokens", Some(&key), json_ct, br#"{"product": 5, "channel": [], "peer_id": null}"#.to_vec(), 422, "invalid_body"),
        ("missing field", Method::POST, "/v1/tokens", Some(&key), json_ct, br#"{"product": "game"}"#.to_vec(), 422, "invalid_body"),
        ("unknown field", Method::POST, "/v1/accounts", Some(&op), json_ct, br#"{"name": "x", "country": "FR", "admin": true}"#.to_vec(), 422, "invalid_body"),
        ("no content type", Method::POST, "/v1/tokens", Some(&key), None, br#"{}"#.to_vec(), 415, "unsupported_media_type"),
        ("huge body", Method::POST, "/v1/tokens", Some(&key), json_ct, huge.clone(), 413, "body_too_large"),
        ("huge json", Method::POST, "/v1/accounts", Some(&op), json_ct, huge_json, 413, "body_too_large"),
        ("bad peer id", Method::POST, "/v1/tokens", Some(&key), json_ct, br#"{"product": "game", "channel": "stable", "peer_id": "0OIl"}"#.to_vec(), 400, "invalid_field"),
        ("unknown product", Method::POST, "/v1/tokens", Some(&key), json_ct, format!(r#"{{"product": "nope", "channel": "stable", "peer_id": "{}"}}"#, peer(1)).into_bytes(), 404, "unknown_product"),
        ("no auth", Method::POST, "/v1/tokens", None, json_ct, b"{}".to_vec(), 401, "unauthorized"),
        ("garbage auth", Method::GET, "/v1/accounts", Some("garbage"), None, vec![], 401, "unauthorized"),
        ("player on admin", Method::GET, "/v1/accounts", Some(&key), None, vec![], 403, "wrong_role"),
        ("bad country", Method::POST, "/v1/accounts", Some(&op), json_ct, br#"{"name": "x", "country": "France"}"#.to_vec(), 400, "invalid_field"),
        ("seats for individual", Method::POST, "/v1/accounts", Some(&op), json_ct, br#"{"name": "x", "country": "FR", "seats": 3}"#.to_vec(), 400, "invalid_field"),
        ("bad product id", Method::POST, "/v1/products", Some(&op), json_ct, br#"{"id": "a b", "paid": true}"#.to_vec(), 400, "invalid_field"),
        ("duplicate product", Method::POST, "/v1/products", Some(&op), json_ct, br#"{"id": "game", "paid": true}"#.to_vec(), 409, "exists"),
        ("bad publisher key", Method::POST, "/v1/products/game/publisher-keys", Some(&op), json_ct, br#"{"public_key": "xyz"}"#.to_vec(), 422, "invalid_body"),
        ("unknown account", Method::GET, "/v1/accounts/acc_404", Some(&op), None, vec![], 404, "not_found"),
        ("entitle unknown product", Method::POST, "/v1/entitlements", Some(&op), json_ct, format!(r#"{{"account": "{player}", "product": "nope"}}"#).into_bytes(), 404, "not_found"),
        ("bad audit query", Method::GET, "/v1/audit?after=minus", Some(&op), None, vec![], 400, "bad_query"),
        ("bad release id", Method::GET, "/v1/releases/zz/manifest", Some(&key), None, vec![], 400, "bad_path"),
        ("unknown route", Method::GET, "/v1/nothing", Some(&key), None, vec![], 404, "not_found"),
        ("wrong method", Method::PUT, "/v1/tokens", Some(&key), json_ct, b"{}".to_vec(), 405, "method_not_allowed"),
        ("garbage manifest", Method::POST, "/v1/releases", Some(&op), None, b"garbage".to_vec(), 403, "wrong_role"),
        ("announce garbage token", Method::POST, "/v1/announce", None, json_ct, br#"{"token": "zz", "listen_addrs": [], "have": 0, "complete": false, "uploaded": 0, "downloaded": 0, "downloaded_from_seeds": 0}"#.to_vec(), 401, "bad_token"),
        ("announce negative", Method::POST, "/v1/announce", None, json_ct, br#"{"token": "00", "listen_addrs": [], "have": -1, "complete": false, "uploaded": 0, "downloaded": 0, "downloaded_from_seeds": 0}"#.to_vec(), 422, "invalid_body"),
        ("heartbeat as player", Method::POST, "/v1/seeds/heartbeat", Some(&key), json_ct, br#"{}"#.to_vec(), 422, "invalid_body"),
    ];
    for (name, method, path, auth, ct, body, status, code) in cases {
        let (s, v) = raw(&t, method, path, auth, ct, body).await;
        assert_eq!(s.as_u16(), status, "{name}: {v}");
        assert_eq!(v["error"], code, "{name}: {v}");
        assert!(v["detail"].is_string(), "{name}: {v}");
    }
    // the server is still fine
    let (s, v) = raw(&t, Method::GET, "/v1/health", None, None, vec![]).await;
    assert_eq!((s, v["status"].as_str()), (StatusCode::OK, Some("ok")));
}

#[tokio::test]
async fn release_registration_rules_and_versions() {
    let t = start(Config::default()).await;
    let (api, key) = t.product("game", true, &["stable", "beta"]).await;
    // versions increase per channel, independently
    for label in ["1.1", "1.2"] {
        let (s, v) = t
            .register(&api, &manifest_bytes("game", "stable", label, &key))
            .await;
        assert_eq!(s, StatusCode::CREATED, "{v}");
    }
    // the newest manifest again (a retried publish) is the same release
    let again = manifest_bytes("game", "stable", "1.2", &key);
    let (s1, first) = t.register(&api, &again).await;
    let (s2, second) = t.register(&api, &again).await;
    assert_eq!(
        (s1, s2),
        (StatusCode::OK, StatusCode::OK),
        "{first} {second}"
    );
    assert_eq!(
        (&first["id"], &first["version"]),
        (&second["id"], &json!(3))
    );
    let (_, v) = t
        .register(&api, &manifest_bytes("game", "beta", "2.0", &key))
        .await;
    assert_eq!(v["version"], 2, "beta had v1 from setup");
    let (_, list) = t
        .get("/v1/products/game/channels/stable/releases", &api)
        .await;
    let versions: Vec<u64> = list
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["version"].as_u64().unwrap())
        .collect();
    assert_eq!(versions, [3, 2, 1], "newest first");
    // rollback to v1 is a new, higher version with v1's manifest
    let (s, rb) = t
        .post(
            "/v1/products/game/channels/stable/rollback",
            &api,
            json!({"version": 1}),
        )
        .await;
    assert_eq!(s, StatusCode::CREATED, "{rb}");
    assert_eq!(rb["version"], 4);
    assert_eq!(rb["manifest_hash"], list[2]["manifest_hash"]);
    assert_ne!(rb["id"], list[2]["id"], "a new release, a new swarm");

    // a key that is not authorised for the product
    let stranger = shoal_types::SecretKey::from_seed([7; 32]);
    let (s, v) = t
        .register(&api, &manifest_bytes("game", "stable", "9.9", &stranger))
        .await;
    assert_eq!(
        (s, v["error"].as_str()),
        (StatusCode::FORBIDDEN, Some("key_not_authorised")),
        "{v}"
    );
    // a tampered manifest
    let mut bytes = manifest_bytes("game", "stable", "9.9", &key);
    let n = bytes.len();
    bytes[n - 10] ^= 1;
    let (s, v) = t.register(&api, &bytes).await;
    assert!(
        s == StatusCode::FORBIDDEN || s == StatusCode::UNPROCESSABLE_ENTITY,
        "{s} {v}"
    );
    // garbage
    let (s, v) = t.register(&api, b"garbage").await;
    assert_eq!(
        (s, v["error"].as_str()),
        (StatusCode::UNPROCESSABLE_ENTITY, Some("invalid_manifest"))
    );
    // unknown channel
    let (s, _) = t
        .register(&api, &manifest_bytes("game", "alpha", "1", &key))
        .await;
    assert_eq!(s, StatusCode::NOT_FOUND);
    // the stored manifest is served byte for byte
    let id = rb["id"].as_str().unwrap();
    let player = t.account("P", "FR").await;
    let pkey = t.key(&player, "player").await;
    // the manifest names every file of the build: not for the unentitled
    let (s, v) = t.get(&format!("/v1/releases/{id}/manifest"), &pkey).await;
    assert_eq!(
        (s, v["error"].as_str()),
        (StatusCode::FORBIDDEN, Some("not_entitled")),
        "{v}"
    );
    t.admin(
        "/v1/entitlements",
        json!({"account": player, "product": "game"}),
    )
    .await;
    let bytes = t
        .http
        .get(format!("{}/v1/releases/{id}/manifest", t.url))
        .bearer_auth(&pkey)
        .send()
        .await
        .unwrap()
        .bytes()
        .await
        .unwrap();
    let signed = shoal_manifest::SignedManifest::from_bytes(&bytes).unwrap();
    assert_eq!(
        signed.hash().to_string(),
        rb["manifest_hash"].as_str().unwrap()
    );
}

fn announce_body(token: &str, port: u32, complete: bool) -> Value {
    json!({
        "token": token,
        "listen_addrs": [format!("/ip4/127.0.0.1/udp/{port}/quic-v1")],
        "have": 1, "complete": complete, "uploaded": 10, "downloaded": 100, "downloaded_from_seeds": 25,
    })
}

#[tokio::test]
async fn announce_lists_peers_then_seeds_and_drops_the_silent() {
    let config = Config {
        min_complete_peers: 2,
        announce_interval_secs: 30,
        ..Config::default()
    };
    let t = start(config).await;
    t.product("game", false, &["stable"]).await;
    let player = t.account("P", "FR").await;
    let key = t.key(&player, "player").await;
    let mut tokens = Vec::new();
    for i in 0..5 {
        let (_, v) = t.token(&key, "game", "stable", &peer(i)).await;
        tokens.push(v);
    }
    let swarm = tokens[0]["swarm"].as_str().unwrap().to_owned();
    // a seed holding the release
    let seed_account = t.account("seed-1", "SE").await;
    let seed_key = t.key(&seed_account, "seed").await;
    let hb = json!({
        "seed_id": "seed-1", "peer_id": peer(100), "addrs": ["/ip4/127.0.0.1/udp/9000/quic-v1"],
        "capacity_bps": 1_000_000_000u64, "egress_bps": 100_000_000u64, "peers": 3, "free_disk": 1u64 << 40,
        "releases": [swarm],
    });
    let (s, v) = t.post("/v1/seeds/heartbeat", &seed_key, hb.clone()).await;
    assert_eq!(s, StatusCode::OK, "{v}");
    let (s, _) = t.post("/v1/seeds/heartbeat", &key, hb).await;
    assert_eq!(s, StatusCode::FORBIDDEN, "players cannot heartbeat");

    for (i, v) in tokens.iter().enumerate() {
        let (s, a) = t
            .call(
                Method::POST,
                "/v1/announce",
                None,
                Some(announce_body(
                    v["token"].as_str().unwrap(),
                    4000 + i as u32,
                    false,
                )),
            )
            .await;
        assert_eq!(s, StatusCode::OK, "{a}");
    }
    // peer 0 sees the 4 others, then the seed (no complete peers yet)
    let (_, a) = t
        .call(
            Method::POST,
            "/v1/announce",
            None,
            Some(announce_body(
                tokens[0]["token"].as_str().unwrap(),
                4000,
                false,
            )),
        )
        .await;
    let peers = a["peers"].as_array().unwrap();
    assert_eq!(peers.len(), 5, "{a}");
    assert!(peers[..4].iter().all(|p| p["seed"] == false));
    assert_eq!(peers[4]["seed"], true);
    assert!(peers.iter().all(|p| p["peer_id"] != peer(0).as_str()));
    assert_eq!(a["swarm"]["peers"], 5);

    // once two peers are complete, seeds are listed only to starving peers
    for i in [1, 2] {
        t.call(
            Method::POST,
            "/v1/announce",
            None,
            Some(announce_body(
                tokens[i]["token"].as_str().unwrap(),
                4000 + i as u32,
                true,
            )),
        )
        .await;
    }
    let (_, a) = t
        .call(
            Method::POST,
            "/v1/announce",
            None,
            Some(announce_body(
                tokens[0]["token"].as_str().unwrap(),
                4000,
                false,
            )),
        )
        .await;
    assert!(
        a["peers"]
            .as_array()
            .unwrap()
            .iter()
            .all(|p| p["seed"] == false),
        "{a}"
    );
    let mut starving = announce_body(tokens[0]["token"].as_str().unwrap(), 4000, false);
    starving["starving"] = json!(true);
    let (_, a) = t
        .call(Method::POST, "/v1/announce", None, Some(starving))
        .await;
    assert!(
        a["peers"]
            .as_array()
            .unwrap()
            .iter()
            .any(|p| p["seed"] == true),
        "{a}"
    );

    // ops views aggregate
    let (_, swarms) = t.get("/v1/ops/swarms", &t.operator).await;
    assert_eq!(swarms[0]["peers"], 5);
    assert_eq!(swarms[0]["complete"], 2);
    assert_eq!(swarms[0]["seeds"], 1);
    assert_eq!(swarms[0]["product"], "game");
    assert!((swarms[0]["offload"].as_f64().unwrap() - 0.75).abs() < 1e-9);
    let (_, seeds) = t.get("/v1/ops/seeds", &t.operator).await;
    assert_eq!(seeds[0]["seed_id"], "seed-1");
    assert!((seeds[0]["utilisation"].as_f64().unwrap() - 0.1).abs() < 1e-9);

    // peers that miss two intervals drop out; peer 0 keeps announcing
    t.advance(45);
    t.call(
        Method::POST,
        "/v1/announce",
        None,
        Some(announce_body(
            tokens[0]["token"].as_str().unwrap(),
            4000,
            false,
        )),
    )
    .await;
    t.advance(20);
    assert_eq!(t.state.expire_peers(), 4);
    let (_, a) = t
        .call(
            Method::POST,
            "/v1/announce",
            None,
            Some(announce_body(
                tokens[0]["token"].as_str().unwrap(),
                4000,
                false,
            )),
        )
        .await;
    assert_eq!(a["swarm"]["peers"], 1, "{a}");
    // the seed is stale after its timeout
    t.advance(100);
    let (_, seeds) = t.get("/v1/ops/seeds", &t.operator).await;
    assert_eq!(seeds[0]["stale"], true);
    // and an expired token is refused
    t.advance(3600);
    let (s, a) = t
        .call(
            Method::POST,
            "/v1/announce",
            None,
            Some(announce_body(
                tokens[0]["token"].as_str().unwrap(),
                4000,
                false,
            )),
        )
        .await;
    assert_eq!(
        (s, a["error"].as_str()),
        (StatusCode::UNAUTHORIZED, Some("token_expired"))
    );
}

#[tokio::test]
async fn announce_renews_tokens_and_rechecks_entitlement() {
    let t = start(Config::default()).await;
    t.product("game", true, &["stable"]).await;
    let player = t.account("P", "FR").await;
    let key = t.key(&player, "player").await;
    let grant = t
        .admin(
            "/v1/entitlements",
            json!({"account": player, "product": "game"}),
        )
        .await;
    let (_, v) = t.token(&key, "game", "stable", &peer(1)).await;
    let token = v["token"].as_str().unwrap().to_owned();
    // early in its life: no renewal
    let (_, a) = t
        .call(
            Method::POST,
            "/v1/announce",
            None,
            Some(announce_body(&token, 1, false)),
        )
        .await;
    assert!(a.get("token").is_none());
    // in its last third: a fresh token, same swarm
    t.advance(1500);
    let (_, a) = t
        .call(
            Method::POST,
            "/v1/announce",
            None,
            Some(announce_body(&token, 1, false)),
        )
        .await;
    let renewed = shoal_token::Token::from_text(a["token"].as_str().unwrap()).unwrap();
    let claims = renewed.verify_signature(&t.state.key.public()).unwrap();
    assert_eq!(claims.swarm.to_string(), v["swarm"].as_str().unwrap());
    assert_eq!(
        claims.expires_at,
        common::T0 + 1500 + Config::default().token_lifetime_secs
    );
    // revoked: the next renewal is refused and the peer leaves the swarm
    t.call(
        Method::DELETE,
        &format!("/v1/entitlements/{}", grant["id"].as_str().unwrap()),
        Some(&t.operator),
        None,
    )
    .await;
    let (s, a) = t
        .call(
            Method::POST,
            "/v1/announce",
            None,
            Some(announce_body(&token, 1, false)),
        )
        .await;
    assert_eq!(
        (s, a["error"].as_str()),
        (StatusCode::FORBIDDEN, Some("entitlement_revoked"))
    );
}

/// Bootstrap lists hand out the least-loaded fresh seeds with capacity left:
/// never a stale seed, and a full one only when every seed is full.
#[tokio::test]
async fn bootstrap_prefers_seeds_with_capacity_and_never_stale_ones() {
    let config = Config {
        seed_timeout_secs: 90,
        ..Config::default()
    };
    let t = start(config).await;
    t.product("game", false, &["stable"]).await;
    let player = t.account("P", "FR").await;
    let key = t.key(&player, "player").await;
    let (_, first) = t.token(&key, "game", "stable", &peer(1)).await;
    let swarm = first["swarm"].as_str().unwrap().to_owned();
    let heartbeat = |id: &str, n: u32, egress: u64| {
        json!({
            "seed_id": id, "peer_id": peer(100 + n), "addrs": [format!("/ip4/127.0.0.1/udp/{}/quic-v1", 9000 + n)],
            "capacity_bps": 1_000_000_000u64, "egress_bps": egress, "peers": 1, "free_disk": 1u64 << 40,
            "releases": [swarm],
        })
    };
    let seed_account = t.account("seeds", "SE").await;
    let seed_key = t.key(&seed_account, "seed").await;
    let listed = |v: &Value| -> Vec<String> {
        v["bootstrap"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|p| p["seed"] == true)
            .map(|p| p["peer_id"].as_str().unwrap().to_owned())
            .collect()
    };
    // "old" goes stale; "full" has no capacity left; "busy" and "idle" have some.
    t.post("/v1/seeds/heartbeat", &seed_key, heartbeat("old", 0, 0))
        .await;
    t.advance(120);
    for (id, n, egress) in [
        ("full", 1, 995_000_000),
        ("busy", 2, 600_000_000),
        ("idle", 3, 100_000_000),
    ] {
        let (s, v) = t
            .post("/v1/seeds/heartbeat", &seed_key, heartbeat(id, n, egress))
            .await;
        assert_eq!(s, StatusCode::OK, "{v}");
    }
    let (_, v) = t.token(&key, "game", "stable", &peer(2)).await;
    assert_eq!(
        listed(&v),
        [peer(103), peer(102)],
        "idle first, then busy: {v}"
    );

    // Only full seeds left fresh: the least loaded still go out.
    t.advance(60);
    t.post(
        "/v1/seeds/heartbeat",
        &seed_key,
        heartbeat("full", 1, 995_000_000),
    )
    .await;
    t.post(
        "/v1/seeds/heartbeat",
        &seed_key,
        heartbeat("fuller", 4, 999_000_000),
    )
    .await;
    t.advance(40);
    let (_, v) = t.token(&key, "game", "stable", &peer(3)).await;
    assert_eq!(listed(&v), [peer(101), peer(104)], "{v}");
    let (_, o) = t.get("/v1/ops/overview", &t.operator).await;
    let kinds: Vec<&str> = o["alerts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["kind"].as_str().unwrap())
        .collect();
    assert!(
        kinds.contains(&"seed_stale") && kinds.contains(&"seed_hot"),
        "{o}"
    );
}

/// What peer `i` announces: its reachability and, if `circuit`, an address
/// through the seed's relay.
fn announce_reach(token: &str, i: u32, reachability: &str, circuit: bool) -> Value {
    let mut addrs = vec![format!("/ip4/10.0.0.{i}/udp/4000/quic-v1")];
    if circuit {
        addrs.push(format!(
            "/ip4/127.0.0.1/udp/9000/quic-v1/p2p/{}/p2p-circuit/p2p/{}",
            peer(100),
            peer(i)
        ));
    }
    json!({
        "token": token, "listen_addrs": addrs, "have": 0, "complete": false,
        "uploaded": 0, "downloaded": 0, "downloaded_from_seeds": 0,
        "reachability": reachability,
    })
}

#[tokio::test]
async fn players_behind_nats_get_reachable_peers_first_and_a_relay_to_reserve_on() {
    let t = start(Config::default()).await;
    t.product("game", false, &["stable"]).await;
    let player = t.account("P", "FR").await;
    let key = t.key(&player, "player").await;
    let mut tokens = Vec::new();
    for i in 0..5 {
        let (_, v) = t.token(&key, "game", "stable", &peer(i)).await;
        tokens.push(v["token"].as_str().unwrap().to_owned());
    }
    let (_, first) = t.token(&key, "game", "stable", &peer(0)).await;
    let swarm = first["swarm"].as_str().unwrap().to_owned();
    let seed_account = t.account("seed-1", "SE").await;
    let seed_key = t.key(&seed_account, "seed").await;
    let hb = json!({
        "seed_id": "seed-1", "peer_id": peer(100), "addrs": ["/ip4/127.0.0.1/udp/9000/quic-v1"],
        "capacity_bps": 1_000_000_000u64, "egress_bps": 0u64, "peers": 0, "free_disk": 1u64 << 40,
        "releases": [swarm], "relay": true,
    });
    let (s, v) = t.post("/v1/seeds/heartbeat", &seed_key, hb).await;
    assert_eq!(s, StatusCode::OK, "{v}");
    let announce = async |i: usize, reach: &str, circuit: bool| {
        let (s, a) = t
            .call(
                Method::POST,
                "/v1/announce",
                None,
                Some(announce_reach(&tokens[i], i as u32, reach, circuit)),
            )
            .await;
        assert_eq!(s, StatusCode::OK, "{a}");
        a
    };
    // 1: behind a NAT with no relay slot (can only dial out); 2: behind a
    // NAT with a slot; 3: reachable; 4: not probed yet.
    announce(1, "private", false).await;
    announce(2, "private", true).await;
    announce(3, "public", false).await;
    announce(4, "unknown", false).await;
    // Player 0, behind a NAT: the reachable peer first, then the unprobed,
    // then the one behind a relay; never the one nobody can dial. And the
    // seed's relay, since it has no slot yet.
    let a = announce(0, "private", false).await;
    let order: Vec<&str> = a["peers"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|p| p["seed"] == false)
        .map(|p| p["peer_id"].as_str().unwrap())
        .collect();
    assert_eq!(order, [peer(3), peer(4), peer(2)], "{a}");
    assert_eq!(a["peers"][0]["reachability"], "public");
    assert_eq!(a["relays"][0]["peer_id"], peer(100).as_str(), "{a}");
    assert_eq!(a["swarm"]["unreachable"], 3, "players 0, 1 and 2");
    // With a slot announced, no more relays; reachable players get none.
    let a = announce(0, "private", true).await;
    assert_eq!(a["relays"], json!([]), "{a}");
    let a = announce(3, "public", false).await;
    assert_eq!(a["relays"], json!([]), "{a}");
    // An unknown verdict is refused as a bad field, not a 5xx.
    let (s, v) = t
        .call(
            Method::POST,
            "/v1/announce",
            None,
            Some(announce_reach(&tokens[0], 0, "sideways", false)),
        )
        .await;
    assert_eq!(s.as_u16() / 100, 4, "{v}");
    assert!(v["error"].is_string(), "{v}");
}

/// Behind a reverse proxy that names clients in `X-Forwarded-For` (and only
/// when the operator says to trust it): players announcing from one address
/// are listed to each other first, marked `same_site`, even when nobody
/// outside can dial them; others never get them.
#[tokio::test]
async fn players_behind_one_router_are_paired_through_a_trusted_proxy() {
    let t = start(Config {
        trust_forwarded_for: true,
        ..Config::default()
    })
    .await;
    t.product("game", false, &["stable"]).await;
    let player = t.account("P", "FR").await;
    let key = t.key(&player, "player").await;
    let mut tokens = Vec::new();
    for i in 0..4 {
        let (_, v) = t.token(&key, "game", "stable", &peer(i)).await;
        tokens.push(v["token"].as_str().unwrap().to_owned());
    }
    let announce = async |i: usize, from: &str, reach: &str| -> Value {
        let resp = t
            .http
            .post(format!("{}/v1/announce", t.url))
            .header("x-forwarded-for", format!("198.51.100.9, {from}"))
            .json(&announce_reach(&tokens[i], i as u32, reach, false))
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), StatusCode::OK);
        resp.json().await.unwrap()
    };
    // 0 and 1 share a home router; 2 is reachable elsewhere; 3 is behind
    // another router.
    announce(0, "203.0.113.5", "private").await;
    announce(2, "192.0.2.80", "public").await;
    announce(3, "203.0.113.99", "private").await;
    let a = announce(1, "203.0.113.5", "private").await;
    let peers: Vec<(&str, bool)> = a["peers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| (p["peer_id"].as_str().unwrap(), p["same_site"] == true))
        .collect();
    assert_eq!(
        peers,
        [(peer(0).as_str(), true), (peer(2).as_str(), false)],
        "{a}"
    );
    let a = announce(3, "203.0.113.99", "private").await;
    assert!(
        a["peers"]
            .as_array()
            .unwrap()
            .iter()
            .all(|p| p["same_site"] != true),
        "{a}"
    );
}

/// The origin budget: chosen at registration (or the tracker's default),
/// changed by an operator, and shared between the seeds holding the build,
/// whose heartbeats say what they sent; the ops view shows what is used.
#[tokio::test]
async fn origin_budgets_are_chosen_changed_and_shared_between_seeds() {
    let t = start(Config::default()).await;
    let (api, key) = t.product("game", false, &["stable"]).await;
    let register = |query: &'static str, label: &'static str| {
        let (t, api, key) = (&t, &api, &key);
        async move {
            let resp = t
                .http
                .post(format!("{}/v1/releases{query}", t.url))
                .bearer_auth(api)
                .body(manifest_bytes("game", "stable", label, key))
                .send()
                .await
                .unwrap();
            let status = resp.status();
            (status, resp.json::<Value>().await.unwrap())
        }
    };
    let (s, v) = register("?origin_budget=0.5", "2.0").await;
    assert_eq!(
        (s, v["error"].as_str()),
        (StatusCode::BAD_REQUEST, Some("invalid_field")),
        "{v}"
    );
    assert!(
        v["detail"].as_str().unwrap().contains("at least 1 copy"),
        "{v}"
    );
    let (s, v) = register("", "2.0").await;
    assert_eq!(
        (s, &v["origin_budget"]),
        (StatusCode::CREATED, &json!(1.05)),
        "the default: {v}"
    );
    // A channel's default applies to releases registered on it without one.
    t.admin(
        "/v1/products/game/channels",
        json!({"name": "launch", "origin_budget": "unlimited"}),
    )
    .await;
    let resp = t
        .http
        .post(format!("{}/v1/releases", t.url))
        .bearer_auth(&api)
        .body(manifest_bytes("game", "launch", "1.0", &key))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::CREATED);
    let v: Value = resp.json().await.unwrap();
    assert_eq!(v["origin_budget"], json!("unlimited"), "{v}");
    let (s, v) = register("?origin_budget=2", "2.1").await;
    assert_eq!(
        (s, &v["origin_budget"]),
        (StatusCode::CREATED, &json!(2.0)),
        "{v}"
    );
    let id = v["id"].as_str().unwrap().to_owned();
    let size = v["total_size"].as_u64().unwrap();

    // An operator changes it; a bad value or an unknown release is refused.
    let budget = |release: String, body: Value| {
        let t = &t;
        async move {
            let path = format!("/v1/releases/{release}/budget");
            t.call(Method::PUT, &path, Some(&t.operator), Some(body))
                .await
        }
    };
    let (s, v) = budget(id.clone(), json!({"origin_budget": "unlimited"})).await;
    assert_eq!(
        (s, &v["origin_budget"]),
        (StatusCode::OK, &json!("unlimited")),
        "{v}"
    );
    let (s, v) = budget(id.clone(), json!({"origin_budget": 0})).await;
    assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY, "{v}");
    let (s, _) = budget("00".repeat(32), json!({"origin_budget": 2})).await;
    assert_eq!(s, StatusCode::NOT_FOUND);
    let (s, v) = budget("nope".into(), json!({"origin_budget": 2})).await;
    assert_eq!(
        (s, v["error"].as_str()),
        (StatusCode::BAD_REQUEST, Some("bad_path"))
    );
    let (s, _) = budget(id.clone(), json!({"origin_budget": 2})).await;
    assert_eq!(s, StatusCode::OK);

    // Two seeds share what is left of 2 copies.
    let seed_account = t.account("seeds", "SE").await;
    let seed_key = t.key(&seed_account, "seed").await;
    let heartbeat = |seed: &'static str, n: u32, sent: u64| {
        let (t, seed_key, id) = (&t, &seed_key, id.clone());
        async move {
            let body = json!({
                "seed_id": seed, "peer_id": peer(100 + n),
                "addrs": [format!("/ip4/127.0.0.1/udp/{}/quic-v1", 9000 + n)],
                "capacity_bps": 1_000_000_000u64, "egress_bps": 0, "peers": 0,
                "free_disk": 1u64 << 40, "releases": [id],
                "sent": [{"release": id, "bytes": sent}],
            });
            let (s, v) = t.post("/v1/seeds/heartbeat", seed_key, body).await;
            assert_eq!(s, StatusCode::OK, "{v}");
            assert_eq!(v["allowances"][0]["release"], json!(id), "{v}");
            v["allowances"][0]["bytes"].as_u64().unwrap()
        }
    };
    // Alone, "a" may send all of it.
    assert_eq!(heartbeat("a", 1, size).await, 2 * size);
    // With "b" serving too, what is left (one copy) is split.
    assert_eq!(heartbeat("b", 2, 0).await, size / 2);
    assert_eq!(heartbeat("a", 1, size).await, size + size / 2);
    // "a" restarted (its count starts again): what it sent before counts.
    assert_eq!(heartbeat("a", 1, 10).await, size + 10 + (size - 10) / 2);
    // Unlimited: no bound in the answer.
    budget(id.clone(), json!({"origin_budget": "unlimited"})).await;
    let body = json!({
        "seed_id": "b", "peer_id": peer(102), "addrs": ["/ip4/127.0.0.1/udp/9002/quic-v1"],
        "capacity_bps": 1u64, "egress_bps": 0, "peers": 0, "free_disk": 1u64,
        "releases": [id],
    });
    let (_, v) = t.post("/v1/seeds/heartbeat", &seed_key, body).await;
    assert_eq!(v["allowances"][0]["bytes"], Value::Null, "{v}");
    budget(id.clone(), json!({"origin_budget": 2})).await;

    // The ops view of the swarm (once it has a member) shows what was used.
    let player = t.account("P", "FR").await;
    let pkey = t.key(&player, "player").await;
    let (s, tok) = t.token(&pkey, "game", "stable", &peer(1)).await;
    assert_eq!(s, StatusCode::OK, "{tok}");
    assert_eq!(tok["swarm"], json!(id));
    // With a quarter copy to spare beyond one, seeds are listed as filling in.
    let seeds: Vec<&Value> = tok["bootstrap"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|p| p["seed"] == true)
        .collect();
    assert!(
        !seeds.is_empty() && seeds.iter().all(|p| p["fills"] == true),
        "{tok}"
    );
    budget(id.clone(), json!({"origin_budget": 1.05})).await;
    let (_, frugal) = t.token(&pkey, "game", "stable", &peer(2)).await;
    assert!(
        frugal["bootstrap"]
            .as_array()
            .unwrap()
            .iter()
            .all(|p| p.get("fills").is_none()),
        "a frugal budget's seeds do not fill in: {frugal}"
    );
    budget(id.clone(), json!({"origin_budget": 2})).await;
    let (s, a) = t
        .post(
            "/v1/announce",
            &pkey,
            announce_body(tok["token"].as_str().unwrap(), 1, false),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{a}");
    let (_, swarms) = t.get("/v1/ops/swarms", &t.operator).await;
    let view = swarms
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["swarm"] == json!(id))
        .unwrap_or_else(|| panic!("{swarms}"));
    assert_eq!(view["origin_budget"], json!(2.0), "{view}");
    assert_eq!(view["origin_sent_bytes"], json!(size + 10), "{view}");
    let used = view["origin_budget_used"].as_f64().unwrap();
    assert!(
        (used - (size + 10) as f64 / (2 * size) as f64).abs() < 1e-9,
        "{view}"
    );
    let metrics = t
        .http
        .get(format!("{}/metrics", t.url))
        .bearer_auth(&t.operator)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        metrics.contains("shoal_tracker_swarm_origin_budget_used_ratio"),
        "{metrics}"
    );
}
