//! Signing keys, decoded the way Odoo deployments expect.
//!
//! Upstream decodes keys with Node's `Buffer.from(s, "base64")`, which accepts both the standard and
//! the URL-safe alphabet, optional padding and embedded whitespace. Odoo 18 sends a uuid4 string as a
//! per-channel key; its `-` characters are base64url digits. Strict decoding would reject real keys.

use base64::Engine;
use base64::engine::{DecodePaddingMode, GeneralPurpose, GeneralPurposeConfig};
use hmac::{Hmac, Mac};
use sha2::Sha256;
use std::fmt;

type HmacSha256 = Hmac<Sha256>;

const LENIENT: GeneralPurpose = GeneralPurpose::new(
    &base64::alphabet::STANDARD,
    GeneralPurposeConfig::new()
        .with_decode_padding_mode(DecodePaddingMode::RequireNone)
        .with_decode_allow_trailing_bits(true),
);

/// Decodes base64 the way Node's `Buffer.from(s, "base64")` does for well-formed input: either
/// alphabet, whitespace ignored, data ends at the first `=`. Also used for JWT segments.
pub(crate) fn decode_lenient(text: &str) -> Result<Vec<u8>, KeyError> {
    let mut normalized = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '-' => normalized.push('+'),
            '_' => normalized.push('/'),
            '=' => break,
            c if c.is_ascii_whitespace() => {}
            c => normalized.push(c),
        }
    }
    // A lone trailing character carries fewer than 8 bits; Node drops it, and so do we.
    if normalized.len() % 4 == 1 {
        normalized.pop();
    }
    if normalized.is_empty() {
        return Err(KeyError::Empty);
    }
    LENIENT.decode(normalized.as_bytes()).map_err(|_| KeyError::NotBase64)
}

/// A shared HMAC key (the global `AUTH_KEY` or a channel's `key` claim).
#[derive(Clone)]
pub struct Key {
    bytes: Box<[u8]>,
    /// HMAC keyed once: the two key blocks are hashed here rather than for every token (a third
    /// of the hashing of a gateway's verify and sign).
    mac: HmacSha256,
}

impl PartialEq for Key {
    fn eq(&self, other: &Key) -> bool {
        self.bytes == other.bytes
    }
}

impl Eq for Key {}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum KeyError {
    #[error("key is empty")]
    Empty,
    #[error("key is not base64 (standard or URL-safe alphabet expected)")]
    NotBase64,
}

impl Key {
    /// Decodes a base64 key leniently: either alphabet, padding optional, whitespace ignored.
    pub fn from_base64(text: &str) -> Result<Key, KeyError> {
        let bytes = decode_lenient(text)?;
        if bytes.is_empty() {
            return Err(KeyError::Empty);
        }
        Ok(Key::from_bytes(&bytes))
    }

    pub fn from_bytes(bytes: &[u8]) -> Key {
        let mac = HmacSha256::new_from_slice(bytes).expect("HMAC accepts keys of any length");
        Key { bytes: bytes.into(), mac }
    }

    /// A fresh random 32-byte key (development mode).
    pub fn generate() -> Key {
        let bytes: [u8; 32] = rand::random();
        Key::from_bytes(&bytes)
    }

    pub fn as_bytes(&self) -> &[u8] {
        &self.bytes
    }

    /// A fresh HMAC-SHA256 with this key.
    pub(super) fn mac(&self) -> HmacSha256 {
        self.mac.clone()
    }

    /// Standard base64 with padding, the form upstream documents for `AUTH_KEY`.
    pub fn to_base64(&self) -> String {
        base64::engine::general_purpose::STANDARD.encode(&self.bytes)
    }
}

impl fmt::Debug for Key {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Never print key material.
        write!(f, "Key({} bytes)", self.bytes.len())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Each row: input, expected bytes (None = refused). Protects the decoding rules operators rely on.
    #[test]
    fn lenient_base64_rules() {
        let rows: &[(&str, Option<&[u8]>)] = &[
            ("aGVsbG8=", Some(b"hello")),        // standard, padded
            ("aGVsbG8", Some(b"hello")),         // padding optional
            (" aGVs\nbG8= ", Some(b"hello")),    // whitespace ignored
            ("+/+/", Some(&[0xfb, 0xff, 0xbf])), // standard alphabet
            ("-_-_", Some(&[0xfb, 0xff, 0xbf])), // URL-safe alphabet
            ("aGVsbG9=", Some(b"hello")),        // non-canonical trailing bits accepted
            ("", None),                          // empty
            ("====", None),                      // only padding
            ("a", None),                         // a lone character holds no byte
            ("aGVsbG8=x", Some(b"hello")),       // data ends at the first '='
            ("aGVsbG8hx", Some(b"hello!")),      // a lone trailing character is dropped
            ("aGV$bG8=", None),                  // not an alphabet character
        ];
        for (input, expected) in rows {
            let got = Key::from_base64(input).ok().map(|k| k.as_bytes().to_vec());
            assert_eq!(got.as_deref(), *expected, "input {input:?}");
        }
    }

    #[test]
    fn odoo18_uuid4_key_decodes_with_dashes_as_base64url_digits() {
        let key = Key::from_base64("0b1c2d3e-4f50-4a6b-8c7d-9e0f1a2b3c4d").expect("uuid4 key");
        // 36 characters of base64 are 27 bytes; the dashes are digits (62), not separators.
        assert_eq!(key.as_bytes().len(), 27);
        let same = Key::from_base64("0b1c2d3e+4f50+4a6b+8c7d+9e0f1a2b3c4d").unwrap();
        assert_eq!(key, same);
    }

    #[test]
    fn round_trip_through_standard_base64() {
        let key = Key::generate();
        assert_eq!(Key::from_base64(&key.to_base64()).unwrap(), key);
    }
}
