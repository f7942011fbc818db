//! A real tracker on 127.0.0.1:0 with a temporary data directory and a clock
//! the test can move, plus helpers to drive it over HTTP.

#![allow(dead_code, clippy::unwrap_used)]

use reqwest::StatusCode;
use serde_json::{Value, json};
use shoal_manifest::{BuildOptions, ChunkParams, DiscardChunks, Progress, SignedManifest};
use shoal_tracker::{Config, State};
use shoal_types::SecretKey;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

pub mod pg;
pub mod process;

pub const T0: u64 = 1_800_000_000;

/// The storage backend the tracker tests run on: sled, unless
/// `SHOAL_TEST_STORAGE=postgres` (scripts/test runs the tracker's tests
/// once on each).
pub fn postgres() -> bool {
    match std::env::var("SHOAL_TEST_STORAGE").as_deref() {
        Ok("postgres") => true,
        Ok("sled") | Err(_) => false,
        Ok(other) => panic!("SHOAL_TEST_STORAGE={other}: say sled or postgres"),
    }
}

/// `config` pointed at a fresh PostgreSQL cluster when the tests run on
/// PostgreSQL (the cluster lives as long as the returned guard).
pub fn storage(mut config: Config) -> (Config, Option<pg::Pg>) {
    if !postgres() {
        return (config, None);
    }
    let pg = pg::Pg::start();
    config.storage.backend = shoal_tracker::config::Backend::Postgres;
    config.storage.url = pg.url();
    (config, Some(pg))
}

pub struct Tracker {
    pub url: String,
    pub operator: String,
    pub state: Arc<State>,
    pub clock: Arc<AtomicU64>,
    pub http: reqwest::Client,
    _dir: tempfile::TempDir,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    /// The PostgreSQL cluster, when the tests run on one (dropped last).
    pub pg: Option<pg::Pg>,
}

impl Drop for Tracker {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}

pub async fn start(config: Config) -> Tracker {
    let (config, pg) = storage(config);
    launch(config, pg, None).await
}

/// A tracker on `config`'s storage. With `replica_of`, it is another
/// replica of that tracker: its data directory gets a copy of the signing
/// key, and it shares the database (PostgreSQL) and the operator key.
pub async fn launch(config: Config, pg: Option<pg::Pg>, replica_of: Option<&Tracker>) -> Tracker {
    let dir = tempfile::tempdir().unwrap();
    let operator = match replica_of {
        None => {
            shoal_tracker::init_with(dir.path(), &config)
                .await
                .unwrap()
                .operator_key
        }
        Some(first) => {
            std::fs::copy(
                first._dir.path().join("tracker.key"),
                dir.path().join("tracker.key"),
            )
            .unwrap();
            first.operator.clone()
        }
    };
    let opened = shoal_tracker::open(dir.path(), config.clone())
        .await
        .unwrap();
    let clock = Arc::new(AtomicU64::new(T0));
    let c = Arc::clone(&clock);
    let state = Arc::new(State::new(
        opened.db.clone(),
        opened.key.clone(),
        config,
        Arc::new(move || c.load(Ordering::SeqCst)),
    ));
    drop(opened);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let (stop, stopped) = tokio::sync::oneshot::channel();
    tokio::spawn(shoal_tracker::serve(
        listener,
        Arc::clone(&state),
        async move {
            let _ = stopped.await;
        },
    ));
    Tracker {
        url,
        operator,
        state,
        clock,
        http: reqwest::Client::new(),
        _dir: dir,
        stop: Some(stop),
        pg,
    }
}

impl Tracker {
    pub fn advance(&self, secs: u64) {
        self.clock.fetch_add(secs, Ordering::SeqCst);
    }

    pub async fn call(
        &self,
        method: reqwest::Method,
        path: &str,
        key: Option<&str>,
        body: Option<Value>,
    ) -> (StatusCode, Value) {
        let mut req = self.http.request(method, format!("{}{path}", self.url));
        if let Some(k) = key {
            req = req.bearer_auth(k);
        }
        if let Some(b) = body {
            req = req.json(&b);
        }
        let resp = req.send().await.unwrap();
        let status = resp.status();
        let text = resp.text().await.unwrap();
        let value = serde_json::from_str(&text)
            .unwrap_or_else(|_| panic!("non-JSON answer {status}: {text:?}"));
        (status, value)
    }

    pub async fn post(&self, path: &str, key: &str, body: Value) -> (StatusCode, Value) {
        self.call(reqwest::Method::POST, path, Some(key), Some(body))
            .await
    }

    pub async fn get(&self, path: &str, key: &str) -> (StatusCode, Value) {
        self.call(reqwest::Method::GET, path, Some(key), None).await
    }

    /// Operator POST that must succeed.
    pub async fn admin(&self, path: &str, body: Value) -> Value {
        let (status, v) = self.post(path, &self.operator.clone(), body).await;
        assert!(status.is_success(), "{path}: {status} {v}");
        v
    }

    pub async fn account(&self, name: &str, country: &str) -> String {
        self.admin("/v1/accounts", json!({"name": name, "country": country}))
            .await["id"]
            .as_str()
            .unwrap()
            .to_owned()
    }

    pub async fn key(&self, account: &str, role: &str) -> String {
        self.admin("/v1/api-keys", json!({"account": account, "role": role}))
            .await["key"]
            .as_str()
            .unwrap()
            .to_owned()
    }

    /// Creates a product with `channels`, authorises a fresh publisher key,
    /// and registers a release on each channel. Returns the publisher's API key.
    pub async fn product(&self, id: &str, paid: bool, channels: &[&str]) -> (String, SecretKey) {
        let account = self.account(&format!("{id} studio"), "SE").await;
        self.admin(
            "/v1/products",
            json!({"id": id, "paid": paid, "channels": channels, "publishers": [account]}),
        )
        .await;
        let publisher_key = SecretKey::generate().unwrap();
        self.admin(
            &format!("/v1/products/{id}/publisher-keys"),
            json!({"public_key": publisher_key.public()}),
        )
        .await;
        let api = self.key(&account, "publisher").await;
        for c in channels {
            let (status, v) = self
                .register(&api, &manifest_bytes(id, c, "1.0", &publisher_key))
                .await;
            assert_eq!(status, StatusCode::CREATED, "{v}");
        }
        (api, publisher_key)
    }

    pub async fn register(&self, api: &str, bytes: &[u8]) -> (StatusCode, Value) {
        let resp = self
            .http
            .post(format!("{}/v1/releases", self.url))
            .bearer_auth(api)
            .body(bytes.to_vec())
            .send()
            .await
            .unwrap();
        let status = resp.status();
        (status, resp.json().await.unwrap())
    }

    pub async fn token(
        &self,
        key: &str,
        product: &str,
        channel: &str,
        peer: &str,
    ) -> (StatusCode, Value) {
        self.post(
            "/v1/tokens",
            key,
            json!({"product": product, "channel": channel, "peer_id": peer}),
        )
        .await
    }
}

/// A signed manifest of a tiny build whose content depends on `label`.
pub fn manifest_bytes(product: &str, channel: &str, label: &str, key: &SecretKey) -> Vec<u8> {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("game.bin"),
        format!("{product} {channel} {label}").repeat(100),
    )
    .unwrap();
    let options = BuildOptions {
        product: product.into(),
        channel: channel.into(),
        version: label.into(),
        chunking: ChunkParams::default(),
        threads: 1,
    };
    let m =
        shoal_manifest::build(dir.path(), &options, &DiscardChunks, &Progress::default()).unwrap();
    SignedManifest::sign(&m, key).to_bytes()
}

/// A syntactically valid libp2p PeerId text, distinct per `n`.
pub fn peer(n: u32) -> String {
    const B58: &[u8] = b"123456789ABCDEFGHJKLMNPQRSTUVWXYZabcdefghijkmnopqrstuvwxyz";
    let mut s = String::from("12D3KooW");
    let mut x = n as u64 + 1;
    for _ in 0..44 {
        s.push(B58[(x % 58) as usize] as char);
        x = x / 58 + 7 * (n as u64 + 3);
    }
    s
}

/// Every `.route(PATH, method(..)...)` in the router's source, as (METHOD, PATH).
pub fn routes_in_source() -> Vec<(String, String)> {
    let src = include_str!("../../src/api/mod.rs");
    let mut found = Vec::new();
    let mut rest = src;
    while let Some(i) = rest.find(".route(") {
        rest = &rest[i + ".route(".len()..];
        // the call's text, up to its matching parenthesis
        let mut depth = 1;
        let end = rest
            .char_indices()
            .find(|&(_, c)| {
                match c {
                    '(' => depth += 1,
                    ')' => depth -= 1,
                    _ => {}
                }
                depth == 0
            })
            .map(|(j, _)| j)
            .unwrap();
        let call = &rest[..end];
        let path = call.split('"').nth(1).unwrap().to_owned();
        for method in ["get", "post", "put", "delete", "patch"] {
            // `get(` as a call of its own, not the tail of a longer name
            let called = call.match_indices(&format!("{method}(")).any(|(j, _)| {
                j == 0 || {
                    let before = call.as_bytes()[j - 1];
                    !before.is_ascii_alphanumeric() && before != b'_'
                }
            });
            if called {
                found.push((method.to_uppercase(), path.clone()));
            }
        }
    }
    found
}
