//! Peer protocol messages and their encoding: bincode (pinned `=2.0.1`,
//! standard config) with a size cap per message type, checked before any
//! byte is decoded. Streams carry one message as a 4-byte big-endian length
//! followed by the encoded message.
//!
//! Protocols: `/shoal/auth/1` (present a swarm token), `/shoal/have/1`
//! (bitfield, then updates), `/shoal/chunk/2` (request by swarm and index;
//! version 2 added `last_resort`).

use serde::{Deserialize, Serialize, de::DeserializeOwned};
use shoal_types::{Bitfield, Hash};

pub const AUTH_PROTOCOL: &str = "/shoal/auth/1";
pub const HAVE_PROTOCOL: &str = "/shoal/have/1";
pub const CHUNK_PROTOCOL: &str = "/shoal/chunk/2";

/// Largest chunk any manifest may have: FastCDC's maximum, plus the 16-byte
/// tag an encrypted release's sealed chunks carry (`shoal_manifest::seal`).
pub const MAX_CHUNK_LEN: usize = (16 << 20) + 16;

/// Why bytes were refused as a message.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WireError {
    #[error("message of {len} bytes exceeds the {max}-byte limit")]
    TooLarge { len: usize, max: usize },
    #[error("malformed message")]
    Malformed,
    #[error("message has {0} trailing bytes")]
    Trailing(usize),
}

/// A message type with its own size cap.
pub trait Message: Serialize + DeserializeOwned {
    /// Largest encoded size accepted.
    const MAX: usize;

    fn encode(&self) -> Vec<u8> {
        bincode::serde::encode_to_vec(self, bincode::config::standard())
            .expect("plain data always encodes")
    }

    /// Decodes exactly `bytes`, refusing anything over [`Message::MAX`] first.
    fn decode(bytes: &[u8]) -> Result<Self, WireError> {
        if bytes.len() > Self::MAX {
            return Err(WireError::TooLarge {
                len: bytes.len(),
                max: Self::MAX,
            });
        }
        let config = bincode::config::standard().with_limit::<{ MAX_CHUNK_LEN + 1024 }>();
        let (value, read) =
            bincode::serde::decode_from_slice(bytes, config).map_err(|_| WireError::Malformed)?;
        if read != bytes.len() {
            return Err(WireError::Trailing(bytes.len() - read));
        }
        Ok(value)
    }
}

/// Checks a frame's length prefix against `max` before reading its body.
pub fn check_frame_len(prefix: [u8; 4], max: usize) -> Result<usize, WireError> {
    let len = u32::from_be_bytes(prefix) as usize;
    if len > max {
        Err(WireError::TooLarge { len, max })
    } else {
        Ok(len)
    }
}

/// Byte buffers as one length-prefixed run (`serialize_bytes`), not as a
/// sequence of `u8` (serde's default for `Vec<u8>`, one call per byte): the
/// difference between copying a 1 MiB chunk and a million function calls.
mod raw {
    use serde::{Deserializer, Serializer, de};

    pub fn serialize<S: Serializer>(bytes: &[u8], s: S) -> Result<S::Ok, S::Error> {
        s.serialize_bytes(bytes)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<u8>, D::Error> {
        struct Visitor;
        impl<'de> de::Visitor<'de> for Visitor {
            type Value = Vec<u8>;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("bytes")
            }
            fn visit_bytes<E: de::Error>(self, v: &[u8]) -> Result<Vec<u8>, E> {
                Ok(v.to_vec())
            }
            fn visit_byte_buf<E: de::Error>(self, v: Vec<u8>) -> Result<Vec<u8>, E> {
                Ok(v)
            }
        }
        d.deserialize_byte_buf(Visitor)
    }
}

/// `/shoal/auth/1` request: the swarm token for `swarm`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuthRequest {
    pub swarm: Hash,
    #[serde(with = "raw")]
    pub token: Vec<u8>,
}

impl Message for AuthRequest {
    const MAX: usize = 8 << 10;
}

/// `/shoal/auth/1` response.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum AuthResponse {
    Accepted,
    Refused { reason: String },
}

impl Message for AuthResponse {
    const MAX: usize = 4 << 10;
}

/// `/shoal/have/1` request: what the sender holds of `swarm`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HaveMessage {
    pub swarm: Hash,
    pub update: HaveUpdate,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum HaveUpdate {
    /// Everything held (sent first).
    Bitfield(Bitfield),
    /// Chunks acquired since.
    Have(Vec<u32>),
}

impl Message for HaveMessage {
    /// A bitfield of 8 million chunks (8 TiB at 1 MiB chunks).
    const MAX: usize = 1 << 20;
}

/// `/shoal/have/1` response: acknowledgement.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum HaveAck {
    Ok,
    /// The sender has not authenticated for this swarm.
    Unauthorized,
}

impl Message for HaveAck {
    const MAX: usize = 16;
}

/// `/shoal/chunk/2` request.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChunkRequest {
    pub swarm: Hash,
    pub index: u32,
    /// A super-seed refused this chunk before (it had sent it to another
    /// peer), and none of the requester's peers holds it yet: the peer it
    /// went to is out of the requester's reach. A super-seed then sends it
    /// anyway instead of `SentElsewhere`.
    pub last_resort: bool,
}

impl Message for ChunkRequest {
    const MAX: usize = 64;
}

/// `/shoal/chunk/2` response.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum ChunkResponse {
    Data(#[serde(with = "raw")] Vec<u8>),
    /// Queue full: try later or elsewhere.
    Busy,
    /// Super-seeding: just sent to another peer; get it there.
    SentElsewhere,
    /// Not held (or not a chunk of the swarm).
    NotFound,
    /// No valid token presented for this swarm on this connection.
    Unauthorized,
}

impl Message for ChunkResponse {
    const MAX: usize = MAX_CHUNK_LEN + 64;
}

/// The tag `ChunkResponse::Data` encodes to (bincode: variant index 0).
pub const DATA_TAG: u8 = 0;

impl ChunkResponse {
    /// What `Data` of `len` bytes encodes to before the bytes themselves
    /// (the tag, then the length as a bincode varint), so a sender can write
    /// this and then the chunk, without copying the chunk into a message.
    /// The bytes on the wire are exactly those of [`Message::encode`].
    pub fn data_header(len: usize) -> Vec<u8> {
        let mut header = vec![DATA_TAG];
        header.extend(
            bincode::encode_to_vec(len as u64, bincode::config::standard())
                .expect("an integer always encodes"),
        );
        header
    }

    /// The length of a `Data` header whose second byte (the varint's first)
    /// is `marker`.
    pub fn data_header_len(marker: u8) -> usize {
        match marker {
            0..=250 => 2,
            251 => 4,
            252 => 6,
            _ => 10,
        }
    }

    /// The chunk length a whole `Data` header announces.
    pub fn parse_data_header(header: &[u8]) -> Result<usize, WireError> {
        match header.split_first() {
            Some((&DATA_TAG, rest)) => {
                let (len, read): (u64, usize) =
                    bincode::decode_from_slice(rest, bincode::config::standard())
                        .map_err(|_| WireError::Malformed)?;
                if read != rest.len() {
                    return Err(WireError::Trailing(rest.len() - read));
                }
                let len = usize::try_from(len).map_err(|_| WireError::Malformed)?;
                if len > MAX_CHUNK_LEN {
                    return Err(WireError::TooLarge {
                        len,
                        max: MAX_CHUNK_LEN,
                    });
                }
                Ok(len)
            }
            _ => Err(WireError::Malformed),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn round_trip<M: Message + PartialEq + std::fmt::Debug>(m: &M) {
        assert_eq!(&M::decode(&m.encode()).unwrap(), m);
    }

    #[test]
    fn data_headers_match_the_encoding() {
        for len in [
            0usize,
            1,
            250,
            251,
            252,
            65_535,
            65_536,
            1 << 20,
            MAX_CHUNK_LEN,
        ] {
            let encoded = ChunkResponse::Data(vec![7; len]).encode();
            let header = ChunkResponse::data_header(len);
            assert_eq!(&encoded[..header.len()], &header[..], "len {len}");
            assert_eq!(encoded.len(), header.len() + len);
            assert_eq!(ChunkResponse::data_header_len(header[1]), header.len());
            assert_eq!(ChunkResponse::parse_data_header(&header), Ok(len));
        }
        let too_long = ChunkResponse::data_header(MAX_CHUNK_LEN + 1);
        assert!(ChunkResponse::parse_data_header(&too_long).is_err());
        assert!(ChunkResponse::parse_data_header(&[1, 0]).is_err());
        assert!(ChunkResponse::parse_data_header(&[0, 252, 1]).is_err());
    }

    #[test]
    fn round_trips() {
        let swarm = Hash::of(b"s");
        round_trip(&AuthRequest {
            swarm,
            token: vec![1, 2, 3],
        });
        round_trip(&AuthResponse::Refused {
            reason: "expired".into(),
        });
        round_trip(&HaveMessage {
            swarm,
            update: HaveUpdate::Bitfield(Bitfield::full(77)),
        });
        round_trip(&HaveMessage {
            swarm,
            update: HaveUpdate::Have(vec![1, 5]),
        });
        round_trip(&ChunkRequest {
            swarm,
            index: 9,
            last_resort: true,
        });
        round_trip(&ChunkResponse::Data(vec![7; 1000]));
        round_trip(&ChunkResponse::Busy);
    }

    #[test]
    fn caps_are_checked_before_decoding() {
        let big = vec![0u8; ChunkRequest::MAX + 1];
        assert_eq!(
            ChunkRequest::decode(&big),
            Err(WireError::TooLarge { len: 65, max: 64 })
        );
        assert!(matches!(
            check_frame_len(u32::MAX.to_be_bytes(), 100),
            Err(WireError::TooLarge { .. })
        ));
        assert_eq!(check_frame_len(50u32.to_be_bytes(), 100), Ok(50));
        let mut trailing = ChunkRequest {
            swarm: Hash::of(b"s"),
            index: 1,
            last_resort: false,
        }
        .encode();
        trailing.push(0);
        assert_eq!(ChunkRequest::decode(&trailing), Err(WireError::Trailing(1)));
    }

    proptest! {
        #[test]
        fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
            let _ = AuthRequest::decode(&bytes);
            let _ = AuthResponse::decode(&bytes);
            let _ = HaveMessage::decode(&bytes);
            let _ = HaveAck::decode(&bytes);
            let _ = ChunkRequest::decode(&bytes);
            let _ = ChunkResponse::decode(&bytes);
        }

        #[test]
        fn chunk_responses_round_trip(data in proptest::collection::vec(any::<u8>(), 0..4096)) {
            let m = ChunkResponse::Data(data);
            prop_assert_eq!(ChunkResponse::decode(&m.encode()).unwrap(), m);
        }
    }
}
