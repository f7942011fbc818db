//! Two tracker replicas on one real PostgreSQL database, over real HTTP:
//! the last seat goes to exactly one of two simultaneous requests, a token
//! one replica issued is honoured by the other, and an announce at one is
//! in the other's peer lists within a second or two. PostgreSQL is
//! required (see tests/common/pg.rs).

#![allow(clippy::unwrap_used)]

mod common;

use common::{Tracker, launch, peer, pg::Pg};
use reqwest::StatusCode;
use serde_json::{Value, json};
use shoal_tracker::Config;
use std::time::{Duration, Instant};

async fn two_replicas() -> (Tracker, Tracker) {
    let pg = Pg::start();
    let mut config = Config::default();
    config.storage.backend = shoal_tracker::config::Backend::Postgres;
    config.storage.url = pg.url();
    let a = launch(config.clone(), Some(pg), None).await;
    let b = launch(config, None, Some(&a)).await;
    (a, b)
}

fn announce_body(token: &str, port: u32) -> Value {
    json!({
        "token": token,
        "listen_addrs": [format!("/ip4/127.0.0.1/udp/{port}/quic-v1")],
        "have": 1, "complete": false, "uploaded": 0, "downloaded": 0, "downloaded_from_seeds": 0,
    })
}

/// Peer `t` (a token answer) announces at `tracker` from `port`.
async fn announce(tracker: &Tracker, t: &Value, port: u32) -> (StatusCode, Value) {
    let body = announce_body(t["token"].as_str().unwrap(), port);
    tracker
        .call(reqwest::Method::POST, "/v1/announce", None, Some(body))
        .await
}

#[tokio::test]
async fn the_last_seat_goes_to_exactly_one_of_two_replicas() {
    let (a, b) = two_replicas().await;
    for round in 0..8 {
        let org = a
            .admin(
                "/v1/accounts",
                json!({"name": format!("Studio {round}"), "country": "SE", "kind": "organisation", "seats": 1}),
            )
            .await["id"]
            .as_str()
            .unwrap()
            .to_owned();
        let x = a.account(&format!("x{round}"), "SE").await;
        let y = b.account(&format!("y{round}"), "SE").await;
        let path = format!("/v1/accounts/{org}/members");
        let (ra, rb) = tokio::join!(
            a.post(&path, &a.operator, json!({"account": x})),
            b.post(&path, &b.operator, json!({"account": y})),
        );
        let statuses = [ra.0, rb.0];
        assert_eq!(
            statuses.iter().filter(|s| **s == StatusCode::OK).count(),
            1,
            "round {round}: {ra:?} {rb:?}"
        );
        let loser = if ra.0 == StatusCode::OK { &rb } else { &ra };
        assert_eq!(loser.0, StatusCode::CONFLICT, "{loser:?}");
        assert_eq!(loser.1["error"], "no_seats_left", "{loser:?}");
        // both replicas read the same organisation: one member
        for t in [&a, &b] {
            let (_, o) = t.get(&format!("/v1/accounts/{org}"), &t.operator).await;
            assert_eq!(o["members"].as_array().unwrap().len(), 1, "{o}");
        }
    }
}

#[tokio::test]
async fn tokens_and_announces_cross_replicas() {
    let (a, b) = two_replicas().await;
    a.product("game", false, &["stable"]).await;
    let player = a.account("P", "FR").await;
    let created = a
        .admin("/v1/api-keys", json!({"account": player, "role": "player"}))
        .await;
    let key = created["key"].as_str().unwrap().to_owned();
    // release versions are numbered once for both: b sees a's release
    let (s, t1) = a.token(&key, "game", "stable", &peer(1)).await;
    assert_eq!(s, StatusCode::OK, "{t1}");
    let (s, t2) = b.token(&key, "game", "stable", &peer(2)).await;
    assert_eq!(s, StatusCode::OK, "{t2}");
    assert_eq!(t1["swarm"], t2["swarm"]);

    // a token from a, announced at b: honoured (one signing key)
    let (s, v) = announce(&b, &t1, 4001).await;
    assert_eq!(s, StatusCode::OK, "{v}");

    // peer 2 announces at a; peer 1, announcing at b, hears of it soon
    let (s, v) = announce(&a, &t2, 4002).await;
    assert_eq!(s, StatusCode::OK, "{v}");
    let started = Instant::now();
    loop {
        let (s, v) = announce(&b, &t1, 4001).await;
        assert_eq!(s, StatusCode::OK, "{v}");
        let listed = v["peers"]
            .as_array()
            .unwrap()
            .iter()
            .any(|p| p["peer_id"] == peer(2));
        if listed {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "b never listed the peer that announced at a: {v}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let took = started.elapsed();
    // far inside one announce interval (30 s)
    assert!(took < Duration::from_secs(5), "{took:?}");

    // peer 2 stops at a: b drops it too
    let mut stop = announce_body(t2["token"].as_str().unwrap(), 4002);
    stop["stopped"] = json!(true);
    let (s, _) = a
        .call(reqwest::Method::POST, "/v1/announce", None, Some(stop))
        .await;
    assert_eq!(s, StatusCode::OK);
    let started = Instant::now();
    loop {
        let (_, v) = announce(&b, &t1, 4001).await;
        if !v["peers"]
            .as_array()
            .unwrap()
            .iter()
            .any(|p| p["peer_id"] == peer(2))
        {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "b kept a stopped peer: {v}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    // a revocation at a is honoured at b too
    let (s, v) = a
        .call(
            reqwest::Method::DELETE,
            &format!("/v1/api-keys/{}", created["id"].as_str().unwrap()),
            Some(&a.operator),
            None,
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    // (b keeps what announces read for a second: within that)
    let started = Instant::now();
    loop {
        let (s, v) = announce(&b, &t1, 4001).await;
        if (s, v["error"].as_str()) == (StatusCode::UNAUTHORIZED, Some("key_revoked")) {
            break;
        }
        assert_eq!(s, StatusCode::OK, "{v}");
        assert!(
            started.elapsed() < shoal_tracker::Recent::<String, ()>::TTL + Duration::from_secs(2),
            "b still honours a key revoked at a: {v}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The real binary, twice, on one database: replica a is killed with
/// SIGKILL while grants pour in; every grant a acknowledged with 201 is
/// there when b is asked, and b goes on granting.
#[tokio::test]
async fn a_replica_killed_mid_load_loses_no_acknowledged_grant() {
    const BIN: &str = env!("CARGO_BIN_EXE_shoal-tracker");
    let pg = Pg::start();
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("tracker.toml");
    std::fs::write(
        &config,
        format!(
            "[storage]\nbackend = \"postgres\"\nurl = \"{}\"\n",
            pg.url()
        ),
    )
    .unwrap();
    let (data_a, data_b) = (dir.path().join("a"), dir.path().join("b"));
    let init = std::process::Command::new(BIN)
        .args(["init", "--data"])
        .arg(&data_a)
        .arg("--config")
        .arg(&config)
        .output()
        .unwrap();
    assert!(
        init.status.success(),
        "{}",
        String::from_utf8_lossy(&init.stderr)
    );
    std::fs::create_dir_all(&data_b).unwrap();
    std::fs::copy(data_a.join("tracker.key"), data_b.join("tracker.key")).unwrap();
    let op = std::fs::read_to_string(data_a.join("operator.key"))
        .unwrap()
        .trim()
        .to_owned();
    let (mut child_a, url_a) = common::process::serve_binary(BIN, &data_a, &config);
    let (mut child_b, url_b) = common::process::serve_binary(BIN, &data_b, &config);
    let http = reqwest::Client::new();
    let post = {
        let http = http.clone();
        let op = op.clone();
        move |url: String, body: Value| {
            let http = http.clone();
            let op = op.clone();
            async move {
                let r = http.post(url).bearer_auth(op).json(&body).send().await?;
                let status = r.status();
                let v: Value = r.json().await?;
                Ok::<_, reqwest::Error>((status, v))
            }
        }
    };
    let (_, acc) = post(
        format!("{url_a}/v1/accounts"),
        json!({"name": "Alice", "country": "FR"}),
    )
    .await
    .unwrap();
    let account = acc["id"].as_str().unwrap().to_owned();
    let (s, v) = post(
        format!("{url_b}/v1/products"),
        json!({"id": "game", "paid": true}),
    )
    .await
    .unwrap();
    assert_eq!(s, StatusCode::CREATED, "{v}");

    // four clients granting as fast as a answers
    let acknowledged = std::sync::Arc::new(std::sync::Mutex::new(Vec::<String>::new()));
    let mut load = Vec::new();
    for _ in 0..4 {
        let acknowledged = std::sync::Arc::clone(&acknowledged);
        let post = post.clone();
        let url = format!("{url_a}/v1/entitlements");
        let account = account.clone();
        load.push(tokio::spawn(async move {
            while let Ok((s, v)) =
                post(url.clone(), json!({"account": account, "product": "game"})).await
            {
                if s == StatusCode::CREATED {
                    acknowledged
                        .lock()
                        .unwrap()
                        .push(v["id"].as_str().unwrap().to_owned());
                }
            }
        }));
    }
    let started = Instant::now();
    while acknowledged.lock().unwrap().len() < 50 {
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "a granted too slowly"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    child_a.kill().unwrap(); // SIGKILL
    child_a.wait().unwrap();
    for l in load {
        l.await.unwrap(); // each ends at its first failed request
    }
    let acknowledged = acknowledged.lock().unwrap().clone();
    let listed: Value = http
        .get(format!("{url_b}/v1/entitlements?account={account}"))
        .bearer_auth(&op)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let present: std::collections::HashSet<&str> = listed
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["id"].as_str().unwrap())
        .collect();
    for id in &acknowledged {
        assert!(
            present.contains(id.as_str()),
            "acknowledged grant {id} is gone"
        );
    }
    // b goes on: a fresh grant is numbered after every one a made
    let (s, v) = post(
        format!("{url_b}/v1/entitlements"),
        json!({"account": account, "product": "game"}),
    )
    .await
    .unwrap();
    assert_eq!(s, StatusCode::CREATED, "{v}");
    assert!(!present.contains(v["id"].as_str().unwrap()));
    child_b.kill().unwrap();
    child_b.wait().unwrap();
}
