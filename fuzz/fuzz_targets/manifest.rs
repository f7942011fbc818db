//! Manifests and signed manifests from arbitrary bytes. Decoding never
//! panics; a decoded manifest is valid, canonical (re-encodes to the same
//! bytes) and so has one hash.
#![no_main]

use libfuzzer_sys::fuzz_target;
use shoal_manifest::{Manifest, SignedManifest};

fuzz_target!(|data: &[u8]| {
    if let Ok(m) = Manifest::decode(data) {
        m.validate().expect("decode only returns valid manifests");
        assert_eq!(m.encode(), data, "decode accepted a non-canonical encoding");
    }
    if let Ok(signed) = SignedManifest::from_bytes(data) {
        if let Ok(m) = signed.open() {
            m.validate().expect("open only returns valid manifests");
        }
    }
});
