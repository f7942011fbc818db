//! Fixed-size byte strings with hex text forms: the [`Hash`] type and the
//! macro that gives keys and signatures the same behaviour.

use std::fmt;

/// Why a hex string could not be parsed into a fixed-size value.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ParseHexError {
    /// The string has the wrong number of hex digits.
    #[error("expected {expected} hex digits, got {got}")]
    Length { expected: usize, got: usize },
    /// The string contains a character that is not a hex digit.
    #[error("invalid hex digit {0:?}")]
    Digit(char),
}

pub(crate) fn decode_hex<const N: usize>(s: &str) -> Result<[u8; N], ParseHexError> {
    if s.len() != N * 2 {
        return Err(ParseHexError::Length {
            expected: N * 2,
            got: s.len(),
        });
    }
    let mut out = [0u8; N];
    let digits = s.as_bytes();
    for (i, byte) in out.iter_mut().enumerate() {
        let hi = hex_value(digits[2 * i])?;
        let lo = hex_value(digits[2 * i + 1])?;
        *byte = (hi << 4) | lo;
    }
    Ok(out)
}

fn hex_value(c: u8) -> Result<u8, ParseHexError> {
    match c {
        b'0'..=b'9' => Ok(c - b'0'),
        b'a'..=b'f' => Ok(c - b'a' + 10),
        b'A'..=b'F' => Ok(c - b'A' + 10),
        _ => Err(ParseHexError::Digit(char::from(c))),
    }
}

pub(crate) fn write_hex(f: &mut fmt::Formatter<'_>, bytes: &[u8]) -> fmt::Result {
    for b in bytes {
        write!(f, "{b:02x}")?;
    }
    Ok(())
}

/// Implements hex `Display`/`FromStr`, `Debug` and serde for a `struct T(pub [u8; N])`.
macro_rules! hex_bytes {
    ($ty:ident, $n:literal) => {
        impl $ty {
            /// Length of the value in bytes.
            pub const LEN: usize = $n;

            /// The raw bytes.
            pub fn as_bytes(&self) -> &[u8; $n] {
                &self.0
            }
        }

        impl std::fmt::Display for $ty {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                $crate::bytes::write_hex(f, &self.0)
            }
        }

        impl std::fmt::Debug for $ty {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                write!(f, concat!(stringify!($ty), "("))?;
                $crate::bytes::write_hex(f, &self.0)?;
                write!(f, ")")
            }
        }

        impl std::str::FromStr for $ty {
            type Err = $crate::bytes::ParseHexError;
            fn from_str(s: &str) -> Result<Self, Self::Err> {
                $crate::bytes::decode_hex::<$n>(s).map($ty)
            }
        }

        impl serde::Serialize for $ty {
            fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
                if serializer.is_human_readable() {
                    serializer.collect_str(self)
                } else {
                    serializer.serialize_bytes(&self.0)
                }
            }
        }

        impl<'de> serde::Deserialize<'de> for $ty {
            fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
                struct Visitor;
                impl serde::de::Visitor<'_> for Visitor {
                    type Value = $ty;
                    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                        write!(
                            f,
                            concat!("{} bytes or {} hex digits for ", stringify!($ty)),
                            $n,
                            2 * $n
                        )
                    }
                    fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<$ty, E> {
                        v.parse().map_err(E::custom)
                    }
                    fn visit_bytes<E: serde::de::Error>(self, v: &[u8]) -> Result<$ty, E> {
                        <[u8; $n]>::try_from(v)
                            .map($ty)
                            .map_err(|_| E::invalid_length(v.len(), &self))
                    }
                }
                if deserializer.is_human_readable() {
                    deserializer.deserialize_str(Visitor)
                } else {
                    deserializer.deserialize_bytes(Visitor)
                }
            }
        }
    };
}
pub(crate) use hex_bytes;

/// A 32-byte BLAKE3 digest: chunk hashes, manifest hashes, release ids.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub struct Hash(pub [u8; 32]);
hex_bytes!(Hash, 32);

impl Hash {
    /// BLAKE3 of `data`.
    pub fn of(data: &[u8]) -> Self {
        Hash(*blake3::hash(data).as_bytes())
    }
}

impl From<blake3::Hash> for Hash {
    fn from(h: blake3::Hash) -> Self {
        Hash(*h.as_bytes())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hex_round_trip() {
        let h = Hash::of(b"shoal");
        let text = h.to_string();
        assert_eq!(text.len(), 64);
        assert_eq!(text.parse::<Hash>().unwrap(), h);
        assert_eq!(text.to_uppercase().parse::<Hash>().unwrap(), h);
    }

    #[test]
    fn hex_errors() {
        assert_eq!(
            "ab".parse::<Hash>(),
            Err(ParseHexError::Length {
                expected: 64,
                got: 2
            })
        );
        let bad = format!("{}zz", "0".repeat(62));
        assert_eq!(bad.parse::<Hash>(), Err(ParseHexError::Digit('z')));
    }

    #[test]
    fn json_is_hex() {
        let h = Hash::of(b"x");
        let json = serde_json::to_string(&h).unwrap();
        assert_eq!(json, format!("\"{h}\""));
        assert_eq!(serde_json::from_str::<Hash>(&json).unwrap(), h);
    }
}
