//! Peer messages from arbitrary bytes: the first byte picks the message
//! type. Decoding never panics, never accepts more than the type's cap, and
//! what decodes re-encodes to a stable form that decodes again. (bincode's
//! varints accept non-minimal encodings, so the bytes need not be the ones
//! read: peer messages are never hashed or signed, unlike manifests, whose
//! decoder refuses anything but the canonical encoding.)
#![no_main]

use libfuzzer_sys::fuzz_target;
use shoal_wire::{AuthRequest, AuthResponse, ChunkRequest, ChunkResponse, HaveAck, HaveMessage, Message};

fn check<M: Message>(bytes: &[u8]) {
    if let Ok(m) = M::decode(bytes) {
        assert!(bytes.len() <= M::MAX);
        let once = m.encode();
        let again = M::decode(&once).expect("an encoded message decodes").encode();
        assert_eq!(once, again, "re-encoding is not stable");
    }
}

fuzz_target!(|data: &[u8]| {
    let Some((&kind, bytes)) = data.split_first() else { return };
    match kind % 7 {
        0 => check::<AuthRequest>(bytes),
        1 => check::<AuthResponse>(bytes),
        2 => check::<HaveMessage>(bytes),
        3 => check::<HaveAck>(bytes),
        4 => check::<ChunkRequest>(bytes),
        5 => check::<ChunkResponse>(bytes),
        _ => {
            if bytes.len() >= 4 {
                let _ = shoal_wire::check_frame_len([bytes[0], bytes[1], bytes[2], bytes[3]], 1 << 20);
            }
            let _ = ChunkResponse::parse_data_header(bytes);
        }
    }
});
