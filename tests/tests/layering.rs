//! Pure crates must not depend on tokio, libp2p, quinn, axum or sled.

use serde_json::json;
use shoal_tests::layering::{Violation, check, workspace_metadata};

#[test]
fn pure_crates_have_no_io_dependencies() -> anyhow::Result<()> {
    let metadata = workspace_metadata()?;
    let (found, violations) = check(&metadata)?;
    for required in ["shoal-manifest", "shoal-types"] {
        anyhow::ensure!(
            found.iter().any(|f| f == required),
            "{required} missing from the workspace"
        );
    }
    let text: Vec<String> = violations
        .iter()
        .map(|v| format!("{}: {}", v.pure_crate, v.chain.join(" -> ")))
        .collect();
    anyhow::ensure!(
        violations.is_empty(),
        "layering violated:\n{}",
        text.join("\n")
    );
    Ok(())
}

/// The checker itself finds a forbidden crate two hops away, and ignores
/// dev-dependencies.
#[test]
fn checker_catches_transitive_dependency() -> anyhow::Result<()> {
    let normal = json!([{ "kind": null, "target": null }]);
    let dev = json!([{ "kind": "dev", "target": null }]);
    let metadata = json!({
        "packages": [
            { "id": "m", "name": "shoal-manifest" },
            { "id": "h", "name": "helper" },
            { "id": "t", "name": "tokio" },
            { "id": "s", "name": "sled" },
            { "id": "y", "name": "shoal-types" },
        ],
        "resolve": { "nodes": [
            { "id": "m", "deps": [{ "pkg": "h", "dep_kinds": normal }] },
            { "id": "h", "deps": [{ "pkg": "t", "dep_kinds": normal }] },
            { "id": "t", "deps": [] },
            { "id": "y", "deps": [{ "pkg": "s", "dep_kinds": dev }] },
            { "id": "s", "deps": [] },
        ]},
    });
    let (found, violations) = check(&metadata)?;
    assert_eq!(found, vec!["shoal-manifest", "shoal-types"]);
    assert_eq!(
        violations,
        vec![Violation {
            pure_crate: "shoal-manifest".into(),
            chain: vec!["shoal-manifest".into(), "helper".into(), "tokio".into()],
        }]
    );
    Ok(())
}
