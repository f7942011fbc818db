//! The path rules on arbitrary text: lines are `link<TAB>target` pairs of a
//! tree. Nothing panics; a path the rules accept has no `..`, is relative
//! and free of control characters; a link that resolves names a path the
//! rules accept (or the root); and the chain rule never accepts what the
//! single-link rule refuses.
#![no_main]

use libfuzzer_sys::fuzz_target;
use shoal_manifest::path::{check_path, resolve_link, resolve_link_in};
use std::collections::HashMap;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    let mut links: HashMap<&str, &str> = HashMap::new();
    for line in text.lines().take(64) {
        if check_path(line).is_ok() {
            assert!(!line.starts_with('/') && !line.split('/').any(|c| c == ".." || c.is_empty()));
        }
        if let Some((link, target)) = line.split_once('\t') {
            links.insert(link, target);
        }
    }
    for (link, target) in &links {
        let chained = resolve_link_in(link, target, |p| links.get(p).copied());
        if resolve_link(link, target).is_none() {
            assert!(chained.is_none(), "the chain rule accepted {link:?} -> {target:?}");
        }
        if let Some(p) = chained
            && !p.is_empty()
            && check_path(link).is_ok()
        {
            match check_path(&p) {
                // a chain may add up to more than one path may hold; the
                // kernel refuses such a link too
                Ok(()) | Err(shoal_manifest::path::PathRule::TooLong) => {}
                Err(rule) => panic!("{link:?} -> {target:?} resolved to {p:?}: {rule}"),
            }
        }
    }
});
