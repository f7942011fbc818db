//! Every task we spawn runs in a tracing span.

use shoal_tests::spans::{Unspanned, check_workspace, unspanned};

#[test]
fn every_spawned_task_has_a_span() -> anyhow::Result<()> {
    let (files, found) = check_workspace()?;
    anyhow::ensure!(files >= 50, "only {files} source files found");
    let text: Vec<String> = found
        .iter()
        .map(|u| format!("{}: {}", u.place, u.call))
        .collect();
    anyhow::ensure!(
        found.is_empty(),
        "spawned without a span:\n{}",
        text.join("\n")
    );
    Ok(())
}

/// The checker finds a bare spawn among spanned ones, through nested
/// brackets, and a thread that enters no span.
#[test]
fn checker_finds_a_bare_spawn() {
    let text = "fn f() {\n    tokio::spawn(async move { g((1, 2)).await }.instrument(span));\n    tokio::spawn(async move {\n        h([3]).await\n    });\n    std::thread::spawn(move || work());\n    std::thread::spawn(move || span.in_scope(work));\n    tokio::task::spawn_blocking(move || read());\n}\n";
    assert_eq!(
        unspanned("x.rs", text),
        vec![
            Unspanned {
                place: "x.rs:3".into(),
                call: "tokio::spawn(async move {".into(),
            },
            Unspanned {
                place: "x.rs:6".into(),
                call: "std::thread::spawn(move || work());".into(),
            },
            Unspanned {
                place: "x.rs:8".into(),
                call: "tokio::task::spawn_blocking(move || read());".into(),
            },
        ]
    );
}
