//! The layering rules: pure crates depend on no tokio, libp2p, quinn, axum
//! or sled; only shoal-net touches libp2p and quinn; the player's launcher
//! links no tracker or seed.

use serde_json::json;
use shoal_tests::layering::{
    Violation, check, check_launcher, check_network_owner, check_testkit_dev_only,
    workspace_metadata,
};

#[test]
fn froms_have_no_io_dependencies() -> anyhow::Result<()> {
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
        .map(|v| format!("{}: {}", v.from, v.chain.join(" -> ")))
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
            from: "shoal-manifest".into(),
            chain: vec!["shoal-manifest".into(), "helper".into(), "tokio".into()],
        }]
    );
    Ok(())
}

fn listed(violations: &[Violation]) -> String {
    violations
        .iter()
        .map(|v| format!("{}: {}", v.from, v.chain.join(" -> ")))
        .collect::<Vec<_>>()
        .join("\n")
}

#[test]
fn only_shoal_net_touches_libp2p_and_quinn() -> anyhow::Result<()> {
    let metadata = workspace_metadata()?;
    let (members, violations) = check_network_owner(&metadata)?;
    anyhow::ensure!(members >= 10, "only {members} workspace members found");
    anyhow::ensure!(
        violations.is_empty(),
        "a crate other than shoal-net reaches a network stack:\n{}",
        listed(&violations)
    );
    Ok(())
}

#[test]
fn the_launcher_links_no_server() -> anyhow::Result<()> {
    let violations = check_launcher(&workspace_metadata()?)?;
    anyhow::ensure!(
        violations.is_empty(),
        "the player's launcher links a server crate:\n{}",
        listed(&violations)
    );
    Ok(())
}

#[test]
fn the_test_fixtures_are_a_dev_dependency_only() -> anyhow::Result<()> {
    let violations = check_testkit_dev_only(&workspace_metadata()?)?;
    anyhow::ensure!(
        violations.is_empty(),
        "shoal-testkit outside [dev-dependencies]:\n{}",
        listed(&violations)
    );
    Ok(())
}

/// The network-owner check walks past `shoal-net` but finds a stack reached
/// beside it, and the launcher check finds a server two hops away.
#[test]
fn checkers_catch_a_stack_beside_shoal_net_and_a_server_behind_a_helper() -> anyhow::Result<()> {
    let normal = json!([{ "kind": null, "target": null }]);
    let metadata = json!({
        "packages": [
            { "id": "c", "name": "shoal-client" },
            { "id": "n", "name": "shoal-net" },
            { "id": "h", "name": "helper" },
            { "id": "q", "name": "libp2p-quic" },
            { "id": "r", "name": "shoal-tracker" },
        ],
        "workspace_members": ["c", "n"],
        "resolve": { "nodes": [
            { "id": "c", "deps": [
                { "pkg": "n", "dep_kinds": normal },
                { "pkg": "h", "dep_kinds": normal },
            ] },
            { "id": "n", "deps": [{ "pkg": "q", "dep_kinds": normal }] },
            { "id": "h", "deps": [
                { "pkg": "q", "dep_kinds": normal },
                { "pkg": "r", "dep_kinds": normal },
            ] },
            { "id": "q", "deps": [] },
            { "id": "r", "deps": [] },
        ]},
    });
    let (members, violations) = check_network_owner(&metadata)?;
    assert_eq!(members, 2);
    assert_eq!(
        violations,
        vec![Violation {
            from: "shoal-client".into(),
            chain: vec!["shoal-client".into(), "helper".into(), "libp2p-quic".into()],
        }]
    );
    assert_eq!(
        check_launcher(&metadata)?,
        vec![Violation {
            from: "shoal-client".into(),
            chain: vec![
                "shoal-client".into(),
                "helper".into(),
                "shoal-tracker".into()
            ],
        }]
    );
    Ok(())
}
