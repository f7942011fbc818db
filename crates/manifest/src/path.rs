//! The path rules every manifest entry obeys, so an install can never write
//! outside its directory or collide on a case-insensitive file system.

/// Longest path accepted, in bytes.
pub const MAX_PATH_LEN: usize = 4096;

/// Why a relative path is not acceptable in a manifest.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PathRule {
    /// The path is empty.
    #[error("path is empty")]
    Empty,
    /// The path is longer than [`MAX_PATH_LEN`].
    #[error("path is longer than {MAX_PATH_LEN} bytes")]
    TooLong,
    /// The path starts with `/`.
    #[error("path is absolute")]
    Absolute,
    /// A component is `..`.
    #[error("path contains `..`")]
    ParentComponent,
    /// A component is `.` or empty (`a//b`, a trailing `/`).
    #[error("path contains an empty or `.` component")]
    EmptyComponent,
    /// The path contains `\`, which Windows treats as a separator.
    #[error("path contains a backslash")]
    Backslash,
    /// The path contains a NUL or another control character.
    #[error("path contains a control character")]
    ControlCharacter,
}

/// Checks one `/`-separated relative path against the rules.
pub fn check_path(path: &str) -> Result<(), PathRule> {
    if path.is_empty() {
        return Err(PathRule::Empty);
    }
    if path.len() > MAX_PATH_LEN {
        return Err(PathRule::TooLong);
    }
    if path.starts_with('/') {
        return Err(PathRule::Absolute);
    }
    if path.contains('\\') {
        return Err(PathRule::Backslash);
    }
    if path.chars().any(char::is_control) {
        return Err(PathRule::ControlCharacter);
    }
    for component in path.split('/') {
        match component {
            ".." => return Err(PathRule::ParentComponent),
            "" | "." => return Err(PathRule::EmptyComponent),
            _ => {}
        }
    }
    Ok(())
}

/// The directory that holds `path`, or `None` at the top of the tree.
pub fn parent(path: &str) -> Option<&str> {
    path.rfind('/').map(|i| &path[..i])
}

/// Resolves a symlink `target` relative to the directory holding `link`,
/// without touching the file system. Returns the in-tree path it points to
/// (empty for the tree root), or `None` if it is absolute or escapes the tree.
pub fn resolve_link(link: &str, target: &str) -> Option<String> {
    if target.is_empty() || target.starts_with('/') || target.contains('\\') {
        return None;
    }
    let mut parts: Vec<&str> = parent(link)
        .map(|p| p.split('/').collect())
        .unwrap_or_default();
    for component in target.split('/') {
        match component {
            "" | "." => {}
            ".." => {
                parts.pop()?;
            }
            c => parts.push(c),
        }
    }
    Some(parts.join("/"))
}

/// Most symlinks followed while resolving one path (Linux's own limit).
pub const MAX_LINK_HOPS: usize = 40;

/// Resolves a symlink `target` relative to the directory holding `link`
/// the way the kernel will on the player's machine: every component that
/// names one of the tree's own symlinks (`links`: path → target) is
/// replaced by that link's target, up to [`MAX_LINK_HOPS`] times. Returns
/// the in-tree path it finally names (empty for the tree root), or `None`
/// if any step is absolute or climbs above the tree, or the chain is too
/// long (a loop). Checking each link alone is not enough: with `d/s -> ..`,
/// the lexically harmless `d/s/d/s/../../../x` climbs out of the tree. Nor
/// is the chain alone: it never accepts a target [`resolve_link`] refuses
/// (with `a -> x/y`, the kernel would take `l -> a/../../z` to `z`, but the
/// target alone climbs out, and a tree is not trusted to keep `a` a link).
pub fn resolve_link_in<'a>(
    link: &str,
    target: &str,
    links: impl Fn(&str) -> Option<&'a str>,
) -> Option<String> {
    let lexical_ok = |t: &str| {
        !(t.is_empty() || t.starts_with('/') || t.contains('\\') || t.chars().any(char::is_control))
    };
    if !lexical_ok(target) || resolve_link(link, target).is_none() {
        return None;
    }
    let mut parts: Vec<String> = parent(link)
        .map(|p| p.split('/').map(str::to_owned).collect())
        .unwrap_or_default();
    let mut pending: std::collections::VecDeque<String> =
        target.split('/').map(str::to_owned).collect();
    let mut hops = 0;
    while let Some(component) = pending.pop_front() {
        match component.as_str() {
            "" | "." => {}
            ".." => {
                parts.pop()?;
            }
            _ => {
                parts.push(component);
                if let Some(next) = links(&parts.join("/")) {
                    hops += 1;
                    if hops > MAX_LINK_HOPS || !lexical_ok(next) {
                        return None;
                    }
                    // The link is replaced by its target, read from the
                    // directory that holds it.
                    parts.pop();
                    for c in next.split('/').rev() {
                        pending.push_front(c.to_owned());
                    }
                }
            }
        }
    }
    Some(parts.join("/"))
}

/// The key under which two paths collide on a case-insensitive file system.
pub fn case_fold(path: &str) -> String {
    path.to_lowercase()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(path: &str, expected: Result<(), PathRule>) {
        assert_eq!(check_path(path), expected, "path {path:?}");
    }

    #[test]
    fn accepted_paths() {
        check("a", Ok(()));
        check("data/pak0.pak", Ok(()));
        check("a/.hidden/..x/y..", Ok(()));
        check("résumé/日本語.txt", Ok(()));
    }

    #[test]
    fn refused_paths() {
        check("", Err(PathRule::Empty));
        check("/etc/passwd", Err(PathRule::Absolute));
        check("../x", Err(PathRule::ParentComponent));
        check("a/../../x", Err(PathRule::ParentComponent));
        check("a/..", Err(PathRule::ParentComponent));
        check("a//b", Err(PathRule::EmptyComponent));
        check("a/./b", Err(PathRule::EmptyComponent));
        check("a/", Err(PathRule::EmptyComponent));
        check("a\\b", Err(PathRule::Backslash));
        check("a\0b", Err(PathRule::ControlCharacter));
        check("a\nb", Err(PathRule::ControlCharacter));
        check(&"x".repeat(MAX_PATH_LEN + 1), Err(PathRule::TooLong));
    }

    #[test]
    fn link_chains_resolve_through_the_trees_own_links() {
        let links: std::collections::HashMap<&str, &str> = [
            ("d/s", ".."),
            ("loop/a", "b"),
            ("loop/b", "a"),
            ("lib", "real/lib"),
            ("up", "d/s"),
        ]
        .into();
        let resolve =
            |link: &str, target: &str| resolve_link_in(link, target, |p| links.get(p).copied());
        // the probe's case: each link alone stays inside, the chain escapes
        assert_eq!(resolve("deep", "d/s/d/s/d/s/../../../etc/passwd"), None);
        assert_eq!(resolve("deep", "d/s/../etc/passwd"), None);
        assert_eq!(resolve("deep", "up/.."), None);
        // chains that stay inside resolve to where the kernel would go
        assert_eq!(
            resolve("x", "d/s/d/s/game.bin").as_deref(),
            Some("game.bin")
        );
        assert_eq!(
            resolve("bin/run", "../lib/x.so").as_deref(),
            Some("real/lib/x.so")
        );
        assert_eq!(resolve("x", "up").as_deref(), Some(""));
        // a target that climbs out on its own is refused, even where a
        // link would take the kernel deeper first (fuzzing found
        // `))uu -> )//../../%` with `)` a link)
        assert_eq!(resolve("x", "lib/../../y"), None);
        assert_eq!(resolve_link("x", "lib/../../y"), None);
        // loops end; targets follow the path rules' characters too
        assert_eq!(resolve("x", "loop/a"), None);
        assert_eq!(resolve("x", "game\n.bin"), None);
        // with no links it is the lexical rule
        let none = |_: &str| None;
        assert_eq!(resolve_link_in("a/b/c", "../..", none).as_deref(), Some(""));
        assert_eq!(resolve_link_in("a/b", "../../x", none), None);
    }

    #[test]
    fn link_resolution() {
        assert_eq!(
            resolve_link("bin/run", "../lib/x.so").as_deref(),
            Some("lib/x.so")
        );
        assert_eq!(resolve_link("run", "lib/./x").as_deref(), Some("lib/x"));
        assert_eq!(resolve_link("a/b/c", "../..").as_deref(), Some(""));
        assert_eq!(resolve_link("a/b", "../../x"), None);
        assert_eq!(resolve_link("run", "../x"), None);
        assert_eq!(resolve_link("run", "/usr/lib/x"), None);
    }
}
