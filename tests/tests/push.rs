//! `shoal publish --seed` and `shoal push` end to end: the real `shoal`
//! binary registers releases with a real tracker and uploads them over HTTP
//! to a running seed, which serves them to players over QUIC at once.

use serde_json::Value;
use shoal_client::launcher::{self, Request};
use shoal_demo::lab::{Lab, Options, sample};
use std::path::{Path, PathBuf};
use std::time::Duration;

const MIB: u64 = 1 << 20;
const PUSH_KEY: &str = "push-secret";

struct Run {
    code: Option<i32>,
    stdout: String,
    stderr: String,
}

impl Run {
    fn json(&self) -> anyhow::Result<Value> {
        anyhow::ensure!(
            self.code == Some(0),
            "exit {:?}: {}",
            self.code,
            self.stderr
        );
        Ok(serde_json::from_str(self.stdout.trim())?)
    }
}

/// Runs `shoal ARGS` with the publisher's and the seed's keys in the environment.
async fn shoal(lab: &Lab, seed_key: &str, args: Vec<String>) -> anyhow::Result<Run> {
    let bin = shoal_tests::shoal_bin()?;
    let api_key = lab.publisher_api_key().unwrap_or_default().to_owned();
    let seed_key = seed_key.to_owned();
    let out = tokio::task::spawn_blocking(move || {
        std::process::Command::new(bin)
            .args(&args)
            .env("SHOAL_API_KEY", api_key)
            .env("SHOAL_SEED_PUSH_KEY", seed_key)
            .env_remove("RUST_LOG")
            .output()
    })
    .await??;
    Ok(Run {
        code: out.status.code(),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    })
}

fn strings(args: &[&str]) -> Vec<String> {
    args.iter().map(|s| (*s).to_owned()).collect()
}

struct Setup {
    lab: Lab,
    key: PathBuf,
    seed_url: String,
}

impl Setup {
    /// A lab whose seed takes pushes, and the publisher's key file.
    async fn start(root: &Path) -> anyhow::Result<Setup> {
        let push_addr = format!("127.0.0.1:{}", shoal_tests::free_port()?);
        let lab = Lab::start(
            root,
            Options {
                chunking: shoal_manifest::ChunkParams {
                    min: 64 << 10,
                    avg: 256 << 10,
                    max: 1 << 20,
                },
                announce_interval_secs: 1,
                seed_push: Some((push_addr.clone(), PUSH_KEY.into())),
                ..Options::default()
            },
        )
        .await?;
        let key = root.join("publisher.key");
        lab.write_publisher_key(&key)?;
        let s = Setup {
            lab,
            key,
            seed_url: format!("http://{push_addr}"),
        };
        Ok(s)
    }

    fn publish_args(&self, build: &Path, version: &str, out: &Path, seed: bool) -> Vec<String> {
        let mut args = strings(&[
            "publish",
            &build.display().to_string(),
            "--product",
            &self.lab.options.product,
            "--channel",
            &self.lab.options.channel,
            "--version",
            version,
            "--key",
            &self.key.display().to_string(),
            "--out",
            &out.display().to_string(),
            "--min-chunk",
            "64K",
            "--avg-chunk",
            "256K",
            "--max-chunk",
            "1M",
            "--tracker",
            &self.lab.url,
            "--json",
        ]);
        if seed {
            args.extend(strings(&["--seed", &self.seed_url]));
        }
        args
    }

    fn push_args(&self, bundle: &Path) -> Vec<String> {
        strings(&[
            "push",
            &bundle.display().to_string(),
            "--tracker",
            &self.lab.url,
            "--seed",
            &self.seed_url,
            "--json",
        ])
    }
}

async fn install_into(lab: &Lab, name: &str, dir: &Path, update: bool) -> anyhow::Result<u64> {
    let (settings, _) = lab.player(name).await?;
    let req = Request {
        product: lab.options.product.clone(),
        channel: None,
        dir: dir.to_owned(),
        seed_for: Duration::ZERO,
        update,
        preload: false,
        until_unlock: false,
        seeding: Default::default(),
    };
    let outcome = launcher::install(&settings, &req, None, std::future::pending()).await?;
    Ok(outcome.version)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn publish_pushes_to_a_running_seed_that_serves_at_once() -> anyhow::Result<()> {
    let tmp = tempfile::tempdir()?;
    let s = Setup::start(tmp.path()).await?;

    // v1: built, registered and pushed in one command; the seed serves it.
    let v1 = tmp.path().join("build-v1");
    sample::build(&v1, 6 * MIB, 1)?;
    let out1 = tmp.path().join("bundle-v1");
    let r = shoal(&s.lab, PUSH_KEY, s.publish_args(&v1, "1.0", &out1, true))
        .await?
        .json()?;
    let chunks = r["chunks"].as_u64().unwrap_or(0);
    assert!(chunks > 10, "{r}");
    assert_eq!(r["registered"]["version"], 1, "{r}");
    assert_eq!(
        r["seeds"][0]["uploaded_chunks"].as_u64(),
        Some(chunks),
        "{r}"
    );
    assert_eq!(r["seeds"][0]["reused_chunks"], 0, "{r}");
    let id1: shoal_types::Hash = r["registered"]["release_id"]
        .as_str()
        .unwrap_or("")
        .parse()?;
    assert!(s.lab.releases.ids().contains(&id1));
    let install = tmp.path().join("install");
    assert_eq!(install_into(&s.lab, "p1", &install, false).await?, 1);
    sample::same(&v1, &install.join("current"))?.map_err(anyhow::Error::msg)?;

    // v2, a patch: only the chunks the seed does not hold for v1 go up.
    let v2 = tmp.path().join("build-v2");
    sample::patch(&v1, &v2, 2)?;
    let out2 = tmp.path().join("bundle-v2");
    let r = shoal(&s.lab, PUSH_KEY, s.publish_args(&v2, "2.0", &out2, true))
        .await?
        .json()?;
    let (chunks2, uploaded2) = (
        r["chunks"].as_u64().unwrap_or(0),
        r["seeds"][0]["uploaded_chunks"].as_u64().unwrap_or(0),
    );
    assert_eq!(r["registered"]["version"], 2, "{r}");
    let (m1, m2) = (
        shoal_manifest::Bundle::open(&out1)?,
        shoal_manifest::Bundle::open(&out2)?,
    );
    let fresh = m2
        .manifest()
        .chunks
        .iter()
        .filter(|c| !m1.manifest().chunks.iter().any(|o| o.hash == c.hash))
        .count() as u64;
    assert!(fresh > 0 && fresh < chunks2, "{r}");
    assert_eq!(uploaded2, fresh, "exactly the chunks v1 lacks: {r}");
    assert_eq!(
        r["seeds"][0]["reused_chunks"].as_u64(),
        Some(chunks2 - uploaded2),
        "{r}"
    );
    let id2 = r["registered"]["release_id"].clone();
    assert_eq!(install_into(&s.lab, "p2", &install, true).await?, 2);
    sample::same(&v2, &install.join("current"))?.map_err(anyhow::Error::msg)?;

    // Pushing again: the same release, nothing uploaded.
    let r = shoal(&s.lab, PUSH_KEY, s.push_args(&out2)).await?.json()?;
    assert_eq!(r["registered"]["release_id"], id2, "{r}");
    assert_eq!(r["registered"]["version"], 2, "{r}");
    assert_eq!(r["seeds"][0]["uploaded_chunks"], 0, "{r}");

    // A wrong push key: exit 17 and the seed's reason.
    let r = shoal(&s.lab, "not-the-key", s.push_args(&out2)).await?;
    assert_eq!(r.code, Some(17), "{}", r.stderr);
    assert!(r.stderr.contains("wrong push key"), "{}", r.stderr);
    let r = shoal(
        &s.lab,
        PUSH_KEY,
        strings(&["push", "/nonexistent", "--seed", &s.seed_url]),
    )
    .await?;
    assert_eq!(r.code, Some(3), "--seed without --tracker: {}", r.stderr);

    // The push API itself: errors are JSON 4xx, bad chunks are refused,
    // commit waits for every chunk, and a push resumes where it stopped.
    let v3 = tmp.path().join("build-v3");
    sample::patch(&v2, &v3, 3)?;
    let out3 = tmp.path().join("bundle-v3");
    let mut args = s.publish_args(&v3, "3.0", &out3, false);
    args.retain(|a| a != "--json");
    let r = shoal(&s.lab, PUSH_KEY, args).await?;
    assert_eq!(r.code, Some(0), "{}", r.stderr);
    let bundle = shoal_manifest::Bundle::open(&out3)?;
    let list: Value = reqwest::Client::new()
        .get(format!(
            "{}/v1/products/{}/channels/stable/releases",
            s.lab.url, s.lab.options.product
        ))
        .bearer_auth(s.lab.publisher_api_key().unwrap_or_default())
        .send()
        .await?
        .json()
        .await?;
    let id3 = list[0]["id"].as_str().unwrap_or_default().to_owned();
    assert_eq!(list[0]["version"], 3, "{list}");
    let http = reqwest::Client::new();
    let api = |path: &str| format!("{}/v1/push/{id3}{path}", s.seed_url);

    let r = http.post(api("")).send().await?;
    assert_eq!(r.status(), 401);
    assert_eq!(r.json::<Value>().await?["error"], "unauthorised");
    let r = http
        .post(format!("{}/v1/push/{}", s.seed_url, "ab".repeat(32)))
        .bearer_auth(PUSH_KEY)
        .send()
        .await?;
    assert_eq!(r.status(), 404);
    assert_eq!(r.json::<Value>().await?["error"], "unknown_release");
    let r = http
        .post(format!("{}/v1/push/not-a-hash", s.seed_url))
        .bearer_auth(PUSH_KEY)
        .send()
        .await?;
    assert_eq!(r.status(), 400);

    let post = |path: &str| http.post(api(path)).bearer_auth(PUSH_KEY).send();
    let begun: Value = post("").await?.json().await?;
    let missing: Vec<u32> = serde_json::from_value(begun["missing"].clone())?;
    assert!(missing.len() >= 2, "{begun}");
    assert!(
        begun["have"].as_u64() > Some(0),
        "v2's chunks are reused: {begun}"
    );
    let first = missing[0];
    let good = bundle.read_chunk(first)?;
    let mut bad = good.clone();
    bad[0] ^= 1;
    let put = |bytes: Vec<u8>, index: u32| {
        http.put(api(&format!("/chunks/{index}")))
            .bearer_auth(PUSH_KEY)
            .body(bytes)
            .send()
    };
    let r = put(bad, first).await?;
    assert_eq!(r.status(), 422);
    assert_eq!(r.json::<Value>().await?["error"], "chunk_rejected");
    let r = put(good.clone(), u32::MAX).await?;
    assert_eq!(r.status(), 404);
    let r = post("/commit").await?;
    assert_eq!(r.status(), 409);
    assert_eq!(r.json::<Value>().await?["error"], "incomplete");
    assert_eq!(put(good, first).await?.status(), 204);
    let again: Value = post("").await?.json().await?;
    assert_eq!(
        again["missing"].as_array().map(Vec::len),
        Some(missing.len() - 1),
        "resumes: {again}"
    );
    let r = shoal(&s.lab, PUSH_KEY, s.push_args(&out3)).await?.json()?;
    assert_eq!(
        r["seeds"][0]["uploaded_chunks"].as_u64(),
        Some(missing.len() as u64 - 1),
        "{r}"
    );
    assert!(s.lab.releases.ids().iter().any(|id| id.to_string() == id3));
    s.lab.stop().await
}

/// `shoal publish --encrypt` as a process: the key file is written beside
/// the bundle (owner-only, never overwritten), the bundle and the seed hold
/// only ciphertext, the key goes to the tracker, players preload, and
/// `shoal admin releases unlock` lets them open it.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn publish_encrypt_keeps_the_key_out_of_the_bundle_and_unlocks_by_command()
-> anyhow::Result<()> {
    use std::os::unix::fs::PermissionsExt as _;
    let tmp = tempfile::tempdir()?;
    let s = Setup::start(tmp.path()).await?;
    let build = tmp.path().join("build");
    sample::build(&build, 4 * MIB, 3)?;
    let secret = b"the final boss is the tutorial's narrator".repeat(50);
    std::fs::write(build.join("story.txt"), &secret)?;
    let out = tmp.path().join("bundle");
    let mut args = s.publish_args(&build, "1.0", &out, true);
    args.push("--encrypt".into());
    let r = shoal(&s.lab, PUSH_KEY, args.clone()).await?.json()?;
    let key_file = tmp.path().join("bundle.content-key");
    assert_eq!(r["content_key"].as_str(), key_file.to_str(), "{r}");
    let mode = std::fs::metadata(&key_file)?.permissions().mode() & 0o777;
    assert_eq!(mode, 0o600, "the content key is owner-only");
    let release: shoal_types::Hash = r["registered"]["release_id"]
        .as_str()
        .unwrap_or("")
        .parse()?;
    // Neither the bundle nor the seed's copy holds the key or the plaintext.
    let key_text = std::fs::read_to_string(&key_file)?;
    let key_bytes = key_text.trim().parse::<shoal_types::Hash>()?.0;
    for dir in [&out, &tmp.path().join("seed")] {
        assert!(
            !shoal_tests::holds_anywhere(dir, &secret[..40]),
            "{}",
            dir.display()
        );
        assert!(
            !shoal_tests::holds_anywhere(dir, key_text.trim().as_bytes()),
            "{}",
            dir.display()
        );
        assert!(
            !shoal_tests::holds_anywhere(dir, &key_bytes),
            "{}",
            dir.display()
        );
    }
    // Publishing again never overwrites the key.
    let again = shoal(&s.lab, PUSH_KEY, {
        let mut a = args.clone();
        let i = a.iter().position(|x| x == "--out").unwrap_or(0) + 1;
        a[i] = tmp.path().join("bundle2").display().to_string();
        a.extend(strings(&["--content-key", &key_file.display().to_string()]));
        a
    })
    .await?;
    assert_eq!(again.code, Some(4), "{}", again.stderr);
    assert!(
        again.stderr.contains("never overwritten"),
        "{}",
        again.stderr
    );
    assert_eq!(std::fs::read_to_string(&key_file)?, key_text);
    // A key named inside the bundle is refused; an --out with a trailing
    // slash still puts the key beside the bundle.
    let with_out = |out: &str, extra: &[&str]| {
        let mut a = s.publish_args(&build, "1.0", Path::new(out), false);
        let t = a.iter().position(|x| x == "--tracker").unwrap_or(a.len());
        a.drain(t..(t + 2).min(a.len()));
        a.push("--encrypt".into());
        a.extend(strings(extra));
        a
    };
    let inside = tmp.path().join("bundle3");
    let inside_key = inside.join("key");
    let r = shoal(
        &s.lab,
        PUSH_KEY,
        with_out(
            inside.to_str().unwrap_or_default(),
            &["--content-key", inside_key.to_str().unwrap_or_default()],
        ),
    )
    .await?;
    assert_eq!(r.code, Some(3), "{}", r.stderr);
    assert!(r.stderr.contains("inside the bundle"), "{}", r.stderr);
    let slashed = format!("{}/", tmp.path().join("bundle4").display());
    shoal(&s.lab, PUSH_KEY, with_out(&slashed, &[]))
        .await?
        .json()?;
    assert!(tmp.path().join("bundle4.content-key").is_file());
    assert!(!tmp.path().join("bundle4/.content-key").exists());

    // Not scheduled: players preload.
    let (settings, _) = s.lab.player("p1").await?;
    let dir = tmp.path().join("install");
    let mut req = Request {
        product: s.lab.options.product.clone(),
        channel: None,
        dir: dir.clone(),
        seed_for: Duration::ZERO,
        update: false,
        preload: true,
        until_unlock: false,
        seeding: Default::default(),
    };
    let o = launcher::install(&settings, &req, None, std::future::pending()).await?;
    assert!(
        o.preloaded && o.encrypted && o.unlocks_at.is_none(),
        "{o:#?}"
    );

    // The publisher unlocks it by command; the next install opens it.
    let unlock = shoal(
        &s.lab,
        PUSH_KEY,
        strings(&[
            "admin",
            "--tracker",
            &s.lab.url,
            "releases",
            "unlock",
            &release.to_string(),
        ]),
    )
    .await?;
    assert_eq!(unlock.code, Some(0), "{}", unlock.stderr);
    req.preload = false;
    let o = launcher::install(&settings, &req, None, std::future::pending()).await?;
    assert!(o.unlock_secs.is_some(), "{o:#?}");
    assert_eq!(o.from_peers + o.from_seeds, 0, "{o:#?}");
    sample::same(&build, &dir.join("current"))?.map_err(anyhow::Error::msg)?;
    s.lab.stop().await
}
