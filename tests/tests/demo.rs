//! `shoal-demo` as a newcomer runs it: the real binary, a real tracker, seed
//! and clients on loopback, checked through its JSON summary and exit code.

use serde_json::Value;

fn demo(args: &[&str]) -> anyhow::Result<(std::process::ExitStatus, Value)> {
    let out = std::process::Command::new(shoal_tests::demo_bin()?)
        .args(args)
        .arg("--json")
        .output()?;
    let stdout = String::from_utf8_lossy(&out.stdout);
    let summary = serde_json::from_str(&stdout).map_err(|e| {
        anyhow::anyhow!(
            "{e}: stdout {stdout:?}, stderr {}",
            String::from_utf8_lossy(&out.stderr)
        )
    })?;
    Ok((out.status, summary))
}

#[test]
fn demo_distributes_and_updates_with_caps() -> anyhow::Result<()> {
    let (status, s) = demo(&[
        "--clients",
        "3",
        "--size",
        "8MiB",
        "--seed-up",
        "40Mbit",
        "--peer-up",
        "20Mbit",
        "--peer-down",
        "100Mbit",
    ])?;
    assert!(status.success(), "{s}");
    let phases = s["phases"].as_array().expect("phases");
    assert_eq!(phases.len(), 2, "{s}");
    for p in phases {
        assert_eq!(p["all_identical"], true, "{p}");
        let per_client = p["per_client_bytes"].as_u64().expect("bytes");
        assert!(per_client > 0);
        assert_eq!(p["delivered_bytes"].as_u64(), Some(3 * per_client), "{p}");
        assert!(p["peer_bytes"].as_u64() > Some(0), "peers shared: {p}");
        assert!(p["offload"].as_f64() > Some(0.0), "{p}");
        let bound = p["fluid_bound_secs"].as_f64().expect("caps set: a bound");
        let ratio = p["ratio_to_bound"].as_f64().expect("and a ratio");
        assert!(
            bound > 0.0 && ratio >= 1.0,
            "nothing beats the fluid bound: {p}"
        );
    }
    assert!(
        phases[1]["per_client_bytes"].as_u64() < phases[0]["per_client_bytes"].as_u64(),
        "the update fetches less than the install"
    );
    Ok(())
}

#[test]
fn demo_refuses_bad_flags_with_a_clear_line() -> anyhow::Result<()> {
    let out = std::process::Command::new(shoal_tests::demo_bin()?)
        .args(["--peer-up", "fast"])
        .output()?;
    assert_eq!(out.status.code(), Some(3));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("--peer-up") && err.lines().count() == 1,
        "{err}"
    );
    Ok(())
}
