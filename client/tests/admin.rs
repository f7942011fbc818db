//! `shoal admin` against a real tracker on 127.0.0.1: set up a product,
//! publisher, release and entitlement through the CLI; errors are one line
//! with the tracker's code and their own exit status.

#![allow(clippy::unwrap_used)]

use serde_json::Value;
use std::path::Path;
use std::process::{Command, Output};
use std::sync::Arc;

struct Server {
    url: String,
    operator: String,
    _stop: tokio::sync::oneshot::Sender<()>,
    _dir: tempfile::TempDir,
}

fn tracker() -> Server {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().to_owned();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async move {
            let init = shoal_tracker::init(&data).await.unwrap();
            let state = Arc::new(
                shoal_tracker::open(&data, shoal_tracker::Config::default())
                    .await
                    .unwrap(),
            );
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
            tx.send((listener.local_addr().unwrap(), init.operator_key))
                .unwrap();
            shoal_tracker::serve(listener, state, async move {
                let _ = stopped.await;
            })
            .await
            .unwrap();
        });
    });
    let (addr, operator) = rx.recv().unwrap();
    Server {
        url: format!("http://{addr}"),
        operator,
        _stop: stop,
        _dir: dir,
    }
}

fn shoal(dir: &Path, url: &str, key: &str, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_shoal"))
        .args(args)
        .current_dir(dir)
        .env("SHOAL_TRACKER", url)
        .env("SHOAL_API_KEY", key)
        .env_remove("RUST_LOG")
        .output()
        .unwrap()
}

fn json(out: &Output) -> Value {
    assert!(
        out.status.success(),
        "stderr: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

#[test]
fn admin_sets_up_a_product_end_to_end() {
    let server = tracker();
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let op = server.operator.as_str();
    let admin = |args: &[&str]| shoal(dir, &server.url, op, &[&["admin", "--json"], args].concat());

    let alice = json(&admin(&[
        "accounts",
        "create",
        "--name",
        "Alice",
        "--country",
        "fr",
    ]));
    assert_eq!(alice["country"], "FR");
    let alice = alice["id"].as_str().unwrap().to_owned();
    let product = json(&admin(&[
        "products",
        "create",
        "game",
        "--paid",
        "--channel",
        "stable",
        "--channel",
        "beta",
    ]));
    assert_eq!(product["channels"].as_array().unwrap().len(), 2);
    json(&admin(&[
        "channels",
        "add",
        "game",
        "qa",
        "--private",
        "--allow",
        &alice,
    ]));

    // a publisher: key pair, authorisation, API key, then publish and register
    let key = json(&shoal(
        dir,
        &server.url,
        op,
        &["keygen", "--out", "pub.key", "--json"],
    ));
    json(&admin(&[
        "publisher-keys",
        "add",
        "game",
        key["public_key"].as_str().unwrap(),
    ]));
    let studio = json(&admin(&[
        "accounts",
        "create",
        "--name",
        "Studio",
        "--country",
        "SE",
    ]));
    json(&admin(&[
        "publishers",
        "add",
        "game",
        studio["id"].as_str().unwrap(),
    ]));
    let publisher = json(&admin(&[
        "keys",
        "create",
        "--account",
        studio["id"].as_str().unwrap(),
        "--role",
        "publisher",
    ]));
    let publisher_key = publisher["key"].as_str().unwrap().to_owned();
    std::fs::create_dir(dir.join("build")).unwrap();
    std::fs::write(dir.join("build/game.bin"), vec![7u8; 100_000]).unwrap();
    json(&shoal(
        dir,
        &server.url,
        op,
        &[
            "publish",
            "build",
            "--product",
            "game",
            "--channel",
            "stable",
            "--version",
            "1.0",
            "--key",
            "pub.key",
            "--out",
            "v1",
            "--json",
        ],
    ));
    let release = json(&shoal(
        dir,
        &server.url,
        &publisher_key,
        &["admin", "--json", "releases", "register", "v1"],
    ));
    assert_eq!(release["version"], 1);
    let listed = json(&shoal(
        dir,
        &server.url,
        &publisher_key,
        &["admin", "--json", "releases", "list", "game", "stable"],
    ));
    assert_eq!(listed[0]["id"], release["id"]);

    // entitlements with a relative expiry
    let grant = json(&admin(&[
        "entitlements",
        "grant",
        "--account",
        &alice,
        "--product",
        "game",
        "--expires-in",
        "30d",
    ]));
    let expires = grant["expires_at"].as_u64().unwrap();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    assert!(expires > now + 29 * 86_400 && expires <= now + 30 * 86_400 + 5);
    let list = json(&admin(&["entitlements", "list", "--account", &alice]));
    assert_eq!(list.as_array().unwrap().len(), 1);

    // seats
    let org = json(&admin(&[
        "accounts",
        "create",
        "--name",
        "LAN",
        "--country",
        "DE",
        "--seats",
        "1",
    ]));
    let org = org["id"].as_str().unwrap().to_owned();
    json(&admin(&["orgs", "add-member", &org, &alice]));
    let bob = json(&admin(&[
        "accounts",
        "create",
        "--name",
        "Bob",
        "--country",
        "DE",
    ]));
    let full = admin(&["orgs", "add-member", &org, bob["id"].as_str().unwrap()]);
    assert_eq!(full.status.code(), Some(6));
    let err = String::from_utf8_lossy(&full.stderr);
    assert!(
        err.starts_with("error: tracker refused:")
            && err.contains("no_seats_left")
            && err.lines().count() == 1,
        "{err}"
    );

    // human output is a table
    let human = shoal(dir, &server.url, op, &["admin", "accounts", "list"]);
    let text = String::from_utf8_lossy(&human.stdout);
    assert!(
        text.starts_with("COUNTRY") || text.contains("NAME"),
        "{text}"
    );
    assert!(text.contains("Alice") && text.contains("Studio"), "{text}");

    // audit export writes JSON lines (none yet: no token was requested)
    let export = shoal(
        dir,
        &server.url,
        op,
        &["admin", "audit", "--export", "audit.jsonl"],
    );
    assert!(export.status.success());
    assert_eq!(
        std::fs::read_to_string(dir.join("audit.jsonl")).unwrap(),
        ""
    );
    let ops = json(&admin(&["ops", "swarms"]));
    assert!(ops.as_array().unwrap().is_empty());

    // errors: duplicate, wrong key, unreachable tracker
    let dup = admin(&["products", "create", "game"]);
    assert_eq!(dup.status.code(), Some(6));
    let wrong = shoal(
        dir,
        &server.url,
        "key_1.000000000000000000000000000000000000000000000000",
        &["admin", "accounts", "list"],
    );
    assert_eq!(wrong.status.code(), Some(6));
    assert!(String::from_utf8_lossy(&wrong.stderr).contains("unauthorized"));
    let gone = shoal(
        dir,
        "http://127.0.0.1:9",
        op,
        &["admin", "accounts", "list"],
    );
    assert_eq!(gone.status.code(), Some(5));
    assert!(String::from_utf8_lossy(&gone.stderr).contains("unreachable"));
}

/// A list of tracker replicas: the first is down (nothing listens), so
/// every command goes on at the next; a list of only dead ones fails with
/// the unreachable exit status and names the last one tried.
#[test]
fn a_dead_replica_in_the_list_is_skipped() {
    let server = tracker();
    let tmp = tempfile::tempdir().unwrap();
    let dead = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        format!("http://{}", l.local_addr().unwrap())
    }; // closed again: connections are refused
    let urls = format!("{dead},{}", server.url);
    let out = shoal(
        tmp.path(),
        &urls,
        &server.operator,
        &[
            "admin",
            "--json",
            "accounts",
            "create",
            "--name",
            "Ann",
            "--country",
            "se",
        ],
    );
    assert_eq!(json(&out)["country"], "SE");
    let out = shoal(
        tmp.path(),
        &format!("{dead},{dead}/"),
        &server.operator,
        &["admin", "accounts", "list"],
    );
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("unreachable"), "{stderr}");
    let out = shoal(
        tmp.path(),
        "http://a:1,ftp://b",
        &server.operator,
        &["admin", "accounts", "list"],
    );
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("must start with http"));
}
