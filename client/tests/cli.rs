//! The `shoal` binary end to end: keygen, publish, manifest show and diff,
//! and the errors a publisher meets, each one line with its exit status.

#![allow(clippy::unwrap_used)]

use serde_json::Value;
use shoal_testkit::noise;
use std::fs;
use std::os::unix::fs::PermissionsExt as _;
use std::path::Path;
use std::process::{Command, Output};

fn shoal(dir: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_shoal"))
        .args(args)
        .current_dir(dir)
        .env_remove("RUST_LOG")
        .output()
        .unwrap()
}

fn stdout_json(out: &Output) -> Value {
    assert!(
        out.status.success(),
        "stderr: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

/// Asserts a failure with `code` and a single `error:` line mentioning `needle`.
fn assert_fails(out: &Output, code: i32, needle: &str) {
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(code), "stderr: {stderr}");
    assert_eq!(stderr.lines().count(), 1, "one line expected: {stderr}");
    assert!(
        stderr.starts_with("error: ") && stderr.contains(needle),
        "{stderr}"
    );
}

fn write_build(root: &Path, edit: bool) {
    fs::create_dir_all(root.join("paks")).unwrap();
    let mut big = noise(6 << 20, 1);
    if edit {
        big.splice(3 << 20..3 << 20, noise(4096, 9));
    }
    fs::write(root.join("paks/main.pak"), big).unwrap();
    fs::write(root.join("paks/copy.pak"), noise(2 << 20, 2)).unwrap();
    fs::write(root.join("game.exe"), noise(300_000, 3)).unwrap();
    if !edit {
        fs::write(root.join("old.txt"), b"removed in v2").unwrap();
    }
}

const PUBLISH: &[&str] = &[
    "publish",
    "build",
    "--product",
    "game",
    "--channel",
    "stable",
];

#[test]
fn keygen_publish_show_diff() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let key = stdout_json(&shoal(dir, &["keygen", "--out", "pub.key", "--json"]));
    let public = key["public_key"].as_str().unwrap().to_owned();
    assert_eq!(public.len(), 64);
    let mode = fs::metadata(dir.join("pub.key"))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600);

    write_build(&dir.join("build"), false);
    let args = [
        PUBLISH,
        &[
            "--version",
            "1.0",
            "--key",
            "pub.key",
            "--out",
            "v1",
            "--json",
        ],
    ]
    .concat();
    let v1 = stdout_json(&shoal(dir, &args));
    assert_eq!(v1["files"], 4);
    assert_eq!(v1["publisher"], public.as_str());
    let total = (6 << 20) + (2 << 20) + 300_000 + 13;
    assert_eq!(v1["total_bytes"], total);
    assert!(dir.join("v1/manifest.shoal").is_file());

    let shown = stdout_json(&shoal(dir, &["manifest", "show", "v1", "--json"]));
    assert_eq!(shown["manifest_hash"], v1["manifest_hash"]);
    assert_eq!(shown["product"], "game");
    assert_eq!(shown["signature"], "valid");
    assert_eq!(
        shown["list"].as_array().unwrap().len(),
        5,
        "4 files and 1 directory"
    );

    fs::remove_dir_all(dir.join("build")).unwrap();
    write_build(&dir.join("build"), true);
    let args = [
        PUBLISH,
        &[
            "--version",
            "2.0",
            "--key",
            "pub.key",
            "--out",
            "v2",
            "--json",
        ],
    ]
    .concat();
    stdout_json(&shoal(dir, &args));
    let d = stdout_json(&shoal(
        dir,
        &["manifest", "diff", "v1", "v2/manifest.shoal", "--json"],
    ));
    assert_eq!(d["removed"], serde_json::json!(["old.txt"]));
    assert_eq!(d["changed"], serde_json::json!(["paks/main.pak"]));
    let fetch = d["fetch_bytes"].as_u64().unwrap();
    assert!(
        fetch > 4096 && fetch < 4096 + 2 * (4 << 20),
        "fetch {fetch}"
    );

    // human output names the essentials
    let human = shoal(dir, &["manifest", "show", "v2"]);
    let text = String::from_utf8_lossy(&human.stdout);
    assert!(
        text.contains("game/stable 2.0") && text.contains("signature valid"),
        "{text}"
    );
}

#[test]
fn bad_input_fails_cleanly() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    stdout_json(&shoal(dir, &["keygen", "--out", "pub.key", "--json"]));
    let before = fs::read(dir.join("pub.key")).unwrap();
    assert_fails(
        &shoal(dir, &["keygen", "--out", "pub.key"]),
        4,
        "refusing to overwrite",
    );
    assert_eq!(fs::read(dir.join("pub.key")).unwrap(), before);

    write_build(&dir.join("build"), false);
    let publish = |extra: &[&str]| shoal(dir, &[PUBLISH, &["--version", "1"], extra].concat());

    // missing build directory
    let out = shoal(
        dir,
        &[
            "publish",
            "nope",
            "--product",
            "g",
            "--channel",
            "c",
            "--version",
            "1",
            "--key",
            "pub.key",
            "--out",
            "o",
        ],
    );
    assert_fails(&out, 3, "nope");
    // key file that is not a key
    fs::write(dir.join("junk.key"), b"hello").unwrap();
    assert_fails(
        &publish(&["--key", "junk.key", "--out", "o"]),
        3,
        "not a shoal secret key file",
    );
    assert_fails(
        &publish(&["--key", "absent.key", "--out", "o"]),
        3,
        "absent.key",
    );
    // bad path inside the tree
    fs::write(dir.join("build/Game.exe"), b"case twin").unwrap();
    assert_fails(
        &publish(&["--key", "pub.key", "--out", "o"]),
        3,
        "differ only by case",
    );
    fs::remove_file(dir.join("build/Game.exe")).unwrap();
    // existing, non-empty output is left untouched
    fs::create_dir(dir.join("full")).unwrap();
    fs::write(dir.join("full/keep"), b"mine").unwrap();
    assert_fails(
        &publish(&["--key", "pub.key", "--out", "full"]),
        4,
        "not an empty directory",
    );
    assert_eq!(fs::read(dir.join("full/keep")).unwrap(), b"mine");
    // bad chunk sizes
    assert_fails(
        &publish(&["--key", "pub.key", "--out", "o", "--min-chunk", "7"]),
        3,
        "chunk sizes",
    );
    // corrupt manifest
    fs::write(dir.join("bad.shoal"), b"SHOALMF\x01garbage").unwrap();
    assert_fails(
        &shoal(dir, &["manifest", "show", "bad.shoal"]),
        3,
        "malformed",
    );

    // none of the failures left an output or partial directory behind
    let mut names: Vec<String> = fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    names.sort();
    assert_eq!(names, ["bad.shoal", "build", "full", "junk.key", "pub.key"]);
}

#[test]
fn help_explains_publish() {
    let tmp = tempfile::tempdir().unwrap();
    let out = shoal(tmp.path(), &["publish", "--help"]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success());
    for needle in [
        "--product",
        "--channel",
        "--version",
        "--key",
        "--out",
        "--json",
    ] {
        assert!(text.contains(needle), "{needle} missing from help");
    }
}

/// Every file and directory under `root`.
fn tree(root: &Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                stack.push(p.clone());
            }
            out.push(p);
        }
    }
    out.sort();
    out
}

#[test]
fn product_ids_outside_the_grammar_touch_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    let home = tmp.path().join("a/b/c");
    fs::create_dir_all(home.join("config")).unwrap();
    let before = tree(tmp.path());
    for product in ["../../x", "..", ".", "-rf", "a/b"] {
        let out = Command::new(env!("CARGO_BIN_EXE_shoal"))
            .args(["install", product, "--no-seed"])
            .current_dir(&home)
            .env("SHOAL_CONFIG_DIR", home.join("config"))
            .env("SHOAL_INSTALL_ROOT", home.join("games"))
            .env("SHOAL_TRACKER", "http://127.0.0.1:9")
            .env("SHOAL_API_KEY", "key_1.x")
            .env_remove("RUST_LOG")
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{product}: {stderr}");
        assert!(
            stderr.contains("is not an id") || stderr.contains("unexpected argument"),
            "{product}: {stderr}"
        );
        assert_eq!(tree(tmp.path()), before, "{product} created something");
    }
}

#[test]
fn an_unpinned_launcher_refuses_to_start_and_says_how_to_pin() {
    let tmp = tempfile::tempdir().unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_shoal"))
        .args(["install", "game", "--no-seed"])
        .current_dir(tmp.path())
        .env("SHOAL_CONFIG_DIR", tmp.path().join("config"))
        .env("SHOAL_INSTALL_ROOT", tmp.path().join("games"))
        .env("SHOAL_TRACKER", "http://127.0.0.1:9")
        .env("SHOAL_API_KEY", "key_1.x")
        .env_remove("SHOAL_TRACKER_KEY")
        .env_remove("RUST_LOG")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(3), "{stderr}");
    assert!(stderr.contains("error: no tracker key pinned"), "{stderr}");
    assert!(stderr.contains("shoal-tracker public-key"), "{stderr}");
    assert!(
        !tmp.path().join("games").exists(),
        "nothing is installed before the key is known"
    );
}
