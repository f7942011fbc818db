//! Tracker, seed and downloader together on loopback: a publisher registers a
//! release, the seed imports and serves it and heartbeats; a player gets a
//! token from the tracker, finds the seed in the bootstrap list, and
//! downloads the release over QUIC byte for byte.

#![allow(clippy::unwrap_used)]

use serde_json::{Value, json};
use shoal_manifest::{BuildOptions, BundleWriter, ChunkParams, Progress, SignedManifest};
use shoal_net::download::{Job, MemoryChunks, Source, download};
use shoal_scheduler::PeerKind;
use shoal_token::{SignedRelease, Token};
use shoal_types::{Hash, SecretKey};
use std::sync::Arc;
use std::time::Duration;

async fn post(http: &reqwest::Client, url: &str, key: &str, body: Value) -> Value {
    let r = http
        .post(url)
        .bearer_auth(key)
        .json(&body)
        .send()
        .await
        .unwrap();
    let status = r.status();
    let v: Value = r.json().await.unwrap();
    assert!(status.is_success(), "{url}: {status} {v}");
    v
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn publish_seed_and_download_through_the_tracker() {
    let tmp = tempfile::tempdir().unwrap();
    // tracker
    let tdir = tmp.path().join("tracker");
    let init = shoal_tracker::init(&tdir).await.unwrap();
    let state = Arc::new(
        shoal_tracker::open(&tdir, shoal_tracker::Config::default())
            .await
            .unwrap(),
    );
    let tracker_key = state.key.public();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(shoal_tracker::serve(
        listener,
        state,
        std::future::pending(),
    ));
    let http = reqwest::Client::new();
    let op = init.operator_key.as_str();

    // product, publisher, player, seed accounts
    let publisher_key = SecretKey::generate().unwrap();
    post(
        &http,
        &format!("{url}/v1/products"),
        op,
        json!({"id": "game", "paid": true}),
    )
    .await;
    post(
        &http,
        &format!("{url}/v1/products/game/publisher-keys"),
        op,
        json!({"public_key": publisher_key.public()}),
    )
    .await;
    let studio = post(
        &http,
        &format!("{url}/v1/accounts"),
        op,
        json!({"name": "Studio", "country": "SE"}),
    )
    .await;
    post(
        &http,
        &format!("{url}/v1/products/game/publishers"),
        op,
        json!({"account": studio["id"]}),
    )
    .await;
    let publisher = post(
        &http,
        &format!("{url}/v1/api-keys"),
        op,
        json!({"account": studio["id"], "role": "publisher"}),
    )
    .await;
    let player = post(
        &http,
        &format!("{url}/v1/accounts"),
        op,
        json!({"name": "Alice", "country": "FR"}),
    )
    .await;
    let player_key = post(
        &http,
        &format!("{url}/v1/api-keys"),
        op,
        json!({"account": player["id"], "role": "player"}),
    )
    .await;
    post(
        &http,
        &format!("{url}/v1/entitlements"),
        op,
        json!({"account": player["id"], "product": "game"}),
    )
    .await;
    let seed_account = post(
        &http,
        &format!("{url}/v1/accounts"),
        op,
        json!({"name": "seed", "country": "SE"}),
    )
    .await;
    let seed_key = post(
        &http,
        &format!("{url}/v1/api-keys"),
        op,
        json!({"account": seed_account["id"], "role": "seed"}),
    )
    .await;

    // publish and register
    let build = tmp.path().join("build");
    std::fs::create_dir_all(build.join("paks")).unwrap();
    let data: Vec<u8> = (0..3_000_000u32)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect();
    std::fs::write(build.join("paks/main.pak"), &data).unwrap();
    std::fs::write(build.join("game.exe"), b"binary").unwrap();
    let out = tmp.path().join("bundle");
    let writer = BundleWriter::create(&out).unwrap();
    let options = BuildOptions {
        product: "game".into(),
        channel: "stable".into(),
        version: "1.0".into(),
        chunking: ChunkParams {
            min: 16 << 10,
            avg: 64 << 10,
            max: 256 << 10,
        },
        threads: 2,
    };
    let manifest = shoal_manifest::build(&build, &options, &writer, &Progress::default()).unwrap();
    writer
        .finish(&SignedManifest::sign(&manifest, &publisher_key))
        .unwrap();
    let release: Value = http
        .post(format!("{url}/v1/releases"))
        .bearer_auth(publisher["key"].as_str().unwrap())
        .body(std::fs::read(out.join("manifest.shoal")).unwrap())
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let release_id: Hash = release["id"].as_str().unwrap().parse().unwrap();

    // the seed imports it (verifying every chunk) and serves
    let seed_data = tmp.path().join("seed");
    shoal_seed::import(&seed_data, &out, release_id).unwrap();
    assert!(
        shoal_seed::import(&seed_data, &out, release_id).is_err(),
        "no double import"
    );
    let config = shoal_seed::Config {
        data: seed_data.clone(),
        listen: vec!["/ip4/127.0.0.1/udp/0/quic-v1".into()],
        tracker: url.clone(),
        api_key: seed_key["key"].as_str().unwrap().to_owned(),
        tracker_key: Some(tracker_key),
        seed_id: "seed-test".into(),
        capacity_mbit: 500,
        upload_cap_mbit: None,
        max_peers: 50,
        super_seed_secs: 10,
        metrics: Some("127.0.0.1:0".into()),
        push_listen: None,
        push_key: None,
        relay: Default::default(),
    };
    tokio::spawn(shoal_seed::run(config, std::future::pending()));

    // wait for its heartbeat
    let mut seeds = Value::Null;
    for _ in 0..200 {
        seeds = http
            .get(format!("{url}/v1/ops/seeds"))
            .bearer_auth(op)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        if seeds.as_array().is_some_and(|a| !a.is_empty()) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    assert_eq!(seeds[0]["seed_id"], "seed-test", "{seeds}");
    assert_eq!(seeds[0]["releases"][0], release_id.to_string());
    assert_eq!(seeds[0]["capacity_bps"], 500_000_000);
    assert!(seeds[0]["free_disk"].as_u64().unwrap() > 0);

    // the player: node, token for its PeerId, bootstrap from the tracker
    let store = Arc::new(MemoryChunks::new(release_id, manifest.chunks.len()));
    let clock = Arc::new(|| {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs()
    });
    let listen = vec!["/ip4/127.0.0.1/udp/0/quic-v1".parse().unwrap()];
    let net = shoal_net::Config::new(shoal_net::generate_keypair(), listen, tracker_key, clock);
    let (me, mut events) = shoal_net::spawn(net, store.clone()).unwrap();
    let answer = post(
        &http,
        &format!("{url}/v1/tokens"),
        player_key["key"].as_str().unwrap(),
        json!({"product": "game", "channel": "stable", "peer_id": me.peer_id().to_base58()}),
    )
    .await;
    let token = Token::from_text(answer["token"].as_str().unwrap()).unwrap();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    SignedRelease::from_text(answer["release"].as_str().unwrap())
        .unwrap()
        .verify(&tracker_key, "game", "stable", now, None)
        .unwrap();
    let sources: Vec<Source> = answer["bootstrap"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| Source {
            peer: p["peer_id"].as_str().unwrap().parse().unwrap(),
            addrs: vec![p["addrs"][0].as_str().unwrap().parse().unwrap()],
            kind: if p["seed"] == true {
                PeerKind::Seed
            } else {
                PeerKind::Peer
            },
            fills: false,
        })
        .collect();
    assert_eq!(
        sources.len(),
        1,
        "the seed is the bootstrap source: {answer}"
    );
    let job = Job::new(&manifest, release_id, &token, &sources, &*store);
    let report = download(&me, &mut events, job).await.unwrap();
    assert_eq!(report.from_seeds, manifest.unique_size());
    for (path, _, chunks) in manifest.files() {
        let bytes: Vec<u8> = chunks.iter().flat_map(|&c| store.get(c).unwrap()).collect();
        assert_eq!(bytes, std::fs::read(build.join(path)).unwrap(), "{path}");
    }
}
