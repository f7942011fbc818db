//! The one grammar for names that become paths, URLs or swarm labels:
//! product ids, channel names, version labels, account and seed ids.
//!
//! 1 to 64 ASCII letters, digits, `.`, `_` or `-`, starting with a letter or
//! a digit, so no name is `.`, `..`, a hidden file or a command-line flag.

/// Longest name accepted.
pub const MAX_LEN: usize = 64;

/// Whether `value` follows the grammar above.
pub fn is_valid(value: &str) -> bool {
    let bytes = value.as_bytes();
    (1..=MAX_LEN).contains(&bytes.len())
        && bytes[0].is_ascii_alphanumeric()
        && bytes
            .iter()
            .all(|b| b.is_ascii_alphanumeric() || b"._-".contains(b))
}

/// What to tell someone whose name was refused.
pub const RULE: &str =
    "1 to 64 letters, digits, '.', '_' or '-', starting with a letter or a digit";

#[cfg(test)]
mod tests {
    use super::*;

    fn check(value: &str, expected: bool) {
        assert_eq!(is_valid(value), expected, "{value:?}");
    }

    #[test]
    fn grammar() {
        for ok in [
            "game",
            "starfall",
            "1.4.2",
            "a",
            "beta-2",
            "x_y.z",
            &"a".repeat(64),
        ] {
            check(ok, true);
        }
        for bad in [
            "",
            ".",
            "..",
            ".hidden",
            "-rf",
            "_x",
            "a b",
            "a/b",
            "a\\b",
            "../x",
            "é",
            "a\0",
            &"a".repeat(65),
        ] {
            check(bad, false);
        }
    }
}
