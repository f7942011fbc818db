//! Swarm tokens and signed release metadata from arbitrary bytes and text.
//! Nothing panics, and nothing verifies under a key that signed nothing.
#![no_main]

use libfuzzer_sys::fuzz_target;
use shoal_token::{SignedRelease, Token};
use shoal_types::SecretKey;

fuzz_target!(|data: &[u8]| {
    let tracker = SecretKey::from_seed([7; 32]).public();
    if let Ok(t) = Token::from_bytes(data) {
        assert!(t.verify_signature(&tracker).is_err(), "a forged token verified");
        let _ = format!("{t:?}");
    }
    if let Ok(r) = SignedRelease::from_bytes(data) {
        assert!(r.open(&tracker).is_err(), "forged release metadata verified");
    }
    if let Ok(text) = std::str::from_utf8(data) {
        let _ = Token::from_text(text);
        let _ = SignedRelease::from_text(text);
        let _ = shoal_token::check_peer_id(text);
    }
});
