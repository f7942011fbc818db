//! The real `shoal-tracker` binary: a grant acknowledged with 201 survives
//! kill -9, and release versions keep increasing across restarts.

#![allow(clippy::unwrap_used)]

mod common;

use serde_json::{Value, json};
use std::path::Path;
use std::process::{Child, Command};

const BIN: &str = env!("CARGO_BIN_EXE_shoal-tracker");

fn serve(data: &Path, config: &Path) -> (Child, String) {
    common::process::serve_binary(BIN, data, config)
}

async fn post(http: &reqwest::Client, url: &str, key: &str, body: Value) -> (u16, Value) {
    let resp = http
        .post(url)
        .bearer_auth(key)
        .json(&body)
        .send()
        .await
        .unwrap();
    (resp.status().as_u16(), resp.json().await.unwrap())
}

#[tokio::test]
async fn grants_survive_kill_9_and_versions_keep_increasing() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("tracker");
    // sled in the data directory, or a PostgreSQL cluster of its own
    let (config, _pg) = common::storage(shoal_tracker::Config::default());
    let config_file = dir.path().join("tracker.toml");
    let storage = match &_pg {
        Some(pg) => format!(
            "[storage]\nbackend = \"postgres\"\nurl = \"{}\"\n",
            pg.url()
        ),
        None => String::new(),
    };
    assert_eq!(
        config.storage.backend == shoal_tracker::config::Backend::Postgres,
        _pg.is_some()
    );
    std::fs::write(&config_file, storage).unwrap();
    let init = Command::new(BIN)
        .args(["init", "--data"])
        .arg(&data)
        .arg("--config")
        .arg(&config_file)
        .output()
        .unwrap();
    assert!(
        init.status.success(),
        "{}",
        String::from_utf8_lossy(&init.stderr)
    );
    let op = std::fs::read_to_string(data.join("operator.key"))
        .unwrap()
        .trim()
        .to_owned();
    use std::os::unix::fs::PermissionsExt as _;
    assert_eq!(
        std::fs::metadata(data.join("operator.key"))
            .unwrap()
            .permissions()
            .mode()
            & 0o777,
        0o600
    );
    // init refuses to run twice
    let again = Command::new(BIN)
        .args(["init", "--data"])
        .arg(&data)
        .arg("--config")
        .arg(&config_file)
        .output()
        .unwrap();
    assert!(!again.status.success());

    let http = reqwest::Client::new();
    let (mut child, url) = serve(&data, &config_file);
    let (_, account) = post(
        &http,
        &format!("{url}/v1/accounts"),
        &op,
        json!({"name": "Alice", "country": "FR"}),
    )
    .await;
    let account = account["id"].as_str().unwrap().to_owned();
    post(
        &http,
        &format!("{url}/v1/products"),
        &op,
        json!({"id": "game", "paid": true, "publishers": [account]}),
    )
    .await;
    let key = shoal_types::SecretKey::from_seed([4; 32]);
    post(
        &http,
        &format!("{url}/v1/products/game/publisher-keys"),
        &op,
        json!({"public_key": key.public()}),
    )
    .await;
    let (_, pubkey) = post(
        &http,
        &format!("{url}/v1/api-keys"),
        &op,
        json!({"account": account, "role": "publisher"}),
    )
    .await;
    let publisher = pubkey["key"].as_str().unwrap().to_owned();
    let register = |label: &str| {
        http.post(format!("{url}/v1/releases"))
            .bearer_auth(&publisher)
            .body(common::manifest_bytes("game", "stable", label, &key))
            .send()
    };
    let v1: Value = register("1").await.unwrap().json().await.unwrap();
    assert_eq!(v1["version"], 1);

    // grant, and kill -9 the moment the 201 arrives
    let (status, grant) = post(
        &http,
        &format!("{url}/v1/entitlements"),
        &op,
        json!({"account": account, "product": "game"}),
    )
    .await;
    assert_eq!(status, 201);
    child.kill().unwrap(); // SIGKILL on Unix
    child.wait().unwrap();

    let (mut child, url) = serve(&data, &config_file);
    let listed: Value = http
        .get(format!("{url}/v1/entitlements?account={account}"))
        .bearer_auth(&op)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(listed.as_array().unwrap().len(), 1, "{listed}");
    assert_eq!(listed[0]["id"], grant["id"]);
    // the operator and publisher keys still work, and versions continue
    let register = |label: &str| {
        http.post(format!("{url}/v1/releases"))
            .bearer_auth(&publisher)
            .body(common::manifest_bytes("game", "stable", label, &key))
            .send()
    };
    let v2: Value = register("2").await.unwrap().json().await.unwrap();
    assert_eq!(v2["version"], 2, "{v2}");
    child.kill().unwrap();
    child.wait().unwrap();
}
