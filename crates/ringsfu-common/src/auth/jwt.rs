//! HS256 JSON Web Tokens with the rules of the Odoo SFU protocol.
//!
//! Only HS256 is accepted, whatever the header claims, so a token can never choose a weaker
//! algorithm. Segments are base64url with optional padding. Time rules (seconds since the epoch):
//! `exp` absent or 0 means no expiry, otherwise expired when `exp < now` (no leeway); `nbf > now`
//! is refused; `iat > now + 60` is refused. A time claim that is present must be a JSON number
//! (a string `exp` would otherwise never expire; upstream refuses it too).

use super::Key;
use base64::Engine;
use base64::engine::{DecodePaddingMode, GeneralPurpose, GeneralPurposeConfig};
use hmac::Mac;
use serde_json::{Map, Value};

/// The claims of a verified token, as sent.
pub type Claims = Map<String, Value>;

/// Odoo signs with unpadded base64url; segments are decoded leniently (see `decode_segment`).
const SEGMENT: GeneralPurpose = GeneralPurpose::new(
    &base64::alphabet::URL_SAFE,
    GeneralPurposeConfig::new().with_decode_padding_mode(DecodePaddingMode::Indifferent).with_encode_padding(false),
);

/// How far in the future `iat` may be (clock skew between Odoo and the SFU).
const IAT_SKEW_SECONDS: f64 = 60.0;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum JwtError {
    #[error("token is not a JWT (expected three base64url segments)")]
    Malformed,
    #[error("token header is not valid JSON")]
    BadHeader,
    #[error("token algorithm must be HS256")]
    UnsupportedAlgorithm,
    #[error("token signature is invalid")]
    BadSignature,
    #[error("token claims are not a JSON object")]
    BadClaims,
    #[error("token has expired")]
    Expired,
    #[error("token is not valid yet (nbf)")]
    NotYetValid,
    #[error("token was issued in the future (iat)")]
    IssuedInFuture,
    #[error("token claim {0} is not a number")]
    TimeNotANumber(&'static str),
}

/// Verifies `token` with `key` at time `now` (seconds since the epoch) and returns its claims.
pub fn verify(token: &str, key: &Key, now: f64) -> Result<Claims, JwtError> {
    let token = token.trim();
    let mut parts = token.split('.');
    let (Some(header), Some(payload), Some(signature), None) = (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(JwtError::Malformed);
    };
    let header = decode_segment(header)?;
    if !is_hs256(&header)? {
        return Err(JwtError::UnsupportedAlgorithm);
    }
    let signature = decode_segment(signature)?;
    let signed_len = token.len() - signature_text_len(token);
    let mut mac = key.mac();
    mac.update(&token.as_bytes()[..signed_len]);
    // verify_slice compares in constant time.
    mac.verify_slice(&signature).map_err(|_| JwtError::BadSignature)?;

    let claims = decode_segment(payload)?;
    let claims: Claims = serde_json::from_slice(&claims).map_err(|_| JwtError::BadClaims)?;
    check_times(&claims, now)?;
    Ok(claims)
}

/// The header every signer we know of sends, in either order, is recognised without parsing it.
fn is_hs256(header: &[u8]) -> Result<bool, JwtError> {
    const USUAL: [&[u8]; 2] = [br#"{"alg":"HS256","typ":"JWT"}"#, br#"{"typ":"JWT","alg":"HS256"}"#];
    if USUAL.contains(&header) {
        return Ok(true);
    }
    let header: Value = serde_json::from_slice(header).map_err(|_| JwtError::BadHeader)?;
    Ok(header.get("alg").and_then(Value::as_str) == Some("HS256"))
}

/// Signs `claims` with `key` (used by tests, the gateway and the development example).
pub fn sign(claims: &Claims, key: &Key) -> String {
    let mut token = String::new();
    sign_onto(claims, key, &mut token);
    token
}

/// Appends the token of `claims` signed with `key` to `out` (the gateway's `Bearer ` header in
/// one buffer).
pub fn sign_onto(claims: &Claims, key: &Key, out: &mut String) {
    let payload = serde_json::to_vec(claims).expect("a JSON map always serializes");
    out.reserve(HEADER.len() + 1 + (payload.len() * 4).div_ceil(3) + 1 + 43);
    let start = out.len();
    out.push_str(HEADER);
    out.push('.');
    SEGMENT.encode_string(payload, out);
    let mut mac = key.mac();
    mac.update(&out.as_bytes()[start..]);
    out.push('.');
    SEGMENT.encode_string(mac.finalize().into_bytes(), out);
}

/// `{"alg":"HS256","typ":"JWT"}`, encoded.
const HEADER: &str = "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9";

/// Length of the signature segment plus its leading dot.
fn signature_text_len(token: &str) -> usize {
    token.len() - token.rfind('.').expect("three segments were found")
}

/// Segments are decoded as upstream does: either alphabet, padding optional, whitespace
/// (a token pasted over several lines) ignored. A segment as Odoo signs it (base64url, no padding)
/// decodes to the same bytes without the normalising copy.
fn decode_segment(segment: &str) -> Result<Vec<u8>, JwtError> {
    if !segment.is_empty()
        && let Ok(bytes) = UNPADDED.decode(segment)
    {
        return Ok(bytes);
    }
    super::key::decode_lenient(segment).map_err(|_| JwtError::Malformed)
}

/// Base64url without padding, trailing bits allowed: accepts only what `decode_lenient` decodes
/// the same way.
const UNPADDED: GeneralPurpose = GeneralPurpose::new(
    &base64::alphabet::URL_SAFE,
    GeneralPurposeConfig::new()
        .with_decode_padding_mode(DecodePaddingMode::RequireNone)
        .with_decode_allow_trailing_bits(true),
);

fn check_times(claims: &Claims, now: f64) -> Result<(), JwtError> {
    let number = |name: &'static str| match claims.get(name) {
        None => Ok(None),
        Some(value) => value.as_f64().map(Some).ok_or(JwtError::TimeNotANumber(name)),
    };
    if let Some(exp) = number("exp")?
        && exp != 0.0
        && exp < now
    {
        return Err(JwtError::Expired);
    }
    if let Some(nbf) = number("nbf")?
        && nbf > now
    {
        return Err(JwtError::NotYetValid);
    }
    if let Some(iat) = number("iat")?
        && iat > now + IAT_SKEW_SECONDS
    {
        return Err(JwtError::IssuedInFuture);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const NOW: f64 = 1_800_000_000.0;

    fn key() -> Key {
        Key::from_base64("c2VjcmV0LWtleS1mb3ItdGVzdHM=").unwrap()
    }

    fn claims(value: Value) -> Claims {
        value.as_object().unwrap().clone()
    }

    fn token_with_header(header: &str, claims: &Value, key: &Key) -> String {
        let h = SEGMENT.encode(header);
        let p = SEGMENT.encode(claims.to_string());
        let input = format!("{h}.{p}");
        let mut m = key.mac();
        m.update(input.as_bytes());
        format!("{input}.{}", SEGMENT.encode(m.finalize().into_bytes()))
    }

    #[test]
    fn signed_token_round_trips() {
        let c = claims(json!({"iss": "odoo:channel:1", "key": "abc"}));
        let token = sign(&c, &key());
        assert_eq!(verify(&token, &key(), NOW).unwrap(), c);
    }

    /// Each row protects one time rule: (claims, expected result).
    #[test]
    fn time_rules() {
        let rows = [
            (json!({"exp": NOW + 1.0}), Ok(())),
            (json!({"exp": NOW}), Ok(())), // exp == now is still valid: expired only when exp < now
            (json!({"exp": NOW - 1.0}), Err(JwtError::Expired)),
            (json!({"exp": 0}), Ok(())), // 0 means absent
            (json!({"nbf": NOW}), Ok(())),
            (json!({"nbf": NOW + 1.0}), Err(JwtError::NotYetValid)),
            (json!({"iat": NOW + 60.0}), Ok(())),
            (json!({"iat": NOW + 61.0}), Err(JwtError::IssuedInFuture)),
            // A time that is not a number is refused, not ignored (a string exp never expired).
            (json!({"exp": "1700000000"}), Err(JwtError::TimeNotANumber("exp"))),
            (json!({"nbf": null}), Err(JwtError::TimeNotANumber("nbf"))),
            (json!({"iat": [1]}), Err(JwtError::TimeNotANumber("iat"))),
        ];
        for (c, expected) in rows {
            let token = sign(&claims(c.clone()), &key());
            assert_eq!(verify(&token, &key(), NOW).map(|_| ()), expected, "claims {c}");
        }
    }

    #[test]
    fn only_hs256_is_accepted() {
        let c = json!({"iss": "x"});
        for header in [r#"{"alg":"none"}"#, r#"{"alg":"HS512"}"#, r#"{"typ":"JWT"}"#] {
            let token = token_with_header(header, &c, &key());
            assert_eq!(verify(&token, &key(), NOW), Err(JwtError::UnsupportedAlgorithm));
        }
        let token = token_with_header(r#"{"alg":"HS256"}"#, &c, &key());
        assert!(verify(&token, &key(), NOW).is_ok());
    }

    #[test]
    fn wrong_key_and_tampering_are_refused() {
        let token = sign(&claims(json!({"iss": "x"})), &key());
        let other = Key::from_bytes(b"another key");
        assert_eq!(verify(&token, &other, NOW), Err(JwtError::BadSignature));

        let mut parts: Vec<&str> = token.split('.').collect();
        let forged = SEGMENT.encode(r#"{"iss":"y"}"#);
        parts[1] = &forged;
        assert_eq!(verify(&parts.join("."), &key(), NOW), Err(JwtError::BadSignature));
    }

    #[test]
    fn malformed_tokens_are_refused() {
        for token in ["", "abc", "a.b", "a.b.c.d", "..", "!!.!!.!!", "e30.e30."] {
            assert!(verify(token, &key(), NOW).is_err(), "token {token:?}");
        }
        let not_json = format!("{}.{}.x", SEGMENT.encode("nope"), SEGMENT.encode("{}"));
        assert_eq!(verify(&not_json, &key(), NOW), Err(JwtError::BadHeader));
    }

    /// upstream's own signer emits standard, padded base64; tokens of every padding length verify.
    #[test]
    fn padded_standard_base64_segments_are_accepted() {
        use base64::engine::general_purpose::STANDARD;
        for len in 0..4 {
            let c = json!({"iss": "p".repeat(len)});
            let input =
                format!("{}.{}", STANDARD.encode(r#"{"alg":"HS256","typ":"JWT"}"#), STANDARD.encode(c.to_string()));
            let mut m = key().mac();
            m.update(input.as_bytes());
            let token = format!("{input}.{}", STANDARD.encode(m.finalize().into_bytes()));
            assert_eq!(verify(&token, &key(), NOW).unwrap(), claims(c), "{token}");
        }
    }

    /// upstream's test vector: a third-party token whose signature segment was wrapped.
    #[test]
    fn third_party_token_with_whitespace_verifies() {
        let key = Key::from_base64("TEST2VjcmV0S2V5VGhhdElzMzJCeXRlc0xvbmdBdExldA==").unwrap();
        let token = "eyJ0eXAiOiJKV1QiLCJhbGciOiJIUzI1NiJ9.eyJkYXRhIjoidGhpcmQgcGFydHkifQ.GadSPivgAXYxftSwH9LKEd\n   g5hv05x1Lihln_6x01TxY";
        let claims = verify(token, &key, NOW).unwrap();
        assert_eq!(claims.get("data"), Some(&json!("third party")));
    }

    #[test]
    fn the_header_constant_is_the_encoded_header() {
        assert_eq!(HEADER, SEGMENT.encode(br#"{"alg":"HS256","typ":"JWT"}"#));
    }

    /// The fast path decodes a segment exactly as the lenient decoder does, or leaves it to it.
    #[test]
    fn segments_decode_as_the_lenient_decoder_does() {
        let segments = [
            "",
            "a",
            "ab",
            "abc",
            "abcd",
            "ab-_",
            "ab+/",
            "aGVsbG8",
            "aGVsbG8=",
            "aGVsbG9",
            "aGVsbG8hx",
            "aG Vs",
            "a$",
        ];
        for segment in segments {
            let lenient = crate::auth::key::decode_lenient(segment).map_err(|_| JwtError::Malformed);
            assert_eq!(decode_segment(segment), lenient, "{segment:?}");
        }
    }

    #[test]
    fn claims_must_be_an_object() {
        let token = token_with_header(r#"{"alg":"HS256"}"#, &json!([1, 2]), &key());
        assert_eq!(verify(&token, &key(), NOW), Err(JwtError::BadClaims));
    }
}
