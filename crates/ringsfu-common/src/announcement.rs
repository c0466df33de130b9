//! The self-registration token an SFU sends a sfu-gateway (`/v1/register`), and the secrets both
//! ends derive from the registration secret. Both sides use this one definition of the claims.
//!
//! No SFU key crosses the network: the key the gateway signs this SFU's tokens with, and the
//! `X-Load-Secret` of its `/v1/load`, are derived on both sides from the registration secret and
//! the SFU's URL ([`derive_sfu_key`], [`derive_load_secret`]). Knowing the secret is what lets a
//! gateway use an SFU, and what lets an SFU join a gateway's pool.

use crate::auth::{self, Claims, JwtError, Key};
use hmac::{Hmac, Mac};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use sha2::Sha256;

/// Domain-separation labels: the SFU key and the load secret are different values from one secret.
const SFU_KEY_LABEL: &[u8] = b"ringsfu sfu key v1\0";
const LOAD_SECRET_LABEL: &[u8] = b"ringsfu load secret v1\0";
/// Validity of the tokens ringsfu signs.
const TOKEN_LIFETIME_SECONDS: u64 = 30;
/// The longest validity a gateway accepts (a captured token is worth little for long).
pub const MAX_TOKEN_LIFETIME_SECONDS: f64 = 60.0;
/// Shortest registration secret accepted on either side.
pub const MIN_SECRET_LEN: usize = 16;

/// What an SFU tells a gateway about itself.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Announcement {
    /// The base URL gateways reach the SFU at; also its identity and part of its derived key.
    pub url: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub region: Option<String>,
    /// Sessions the SFU accepts (`MAX_SESSIONS`).
    pub capacity: u64,
    pub draining: bool,
    /// This process (a new one after each restart).
    pub id: String,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum RegistrationError {
    #[error("{0}")]
    Token(#[from] JwtError),
    #[error("token has no exp claim")]
    NoExpiry,
    #[error("token is valid for more than {MAX_TOKEN_LIFETIME_SECONDS} seconds")]
    TooLong,
    #[error("token claims are not an announcement: {0}")]
    BadClaims(String),
}

fn hmac(secret: &str, label: &[u8], url: &str) -> [u8; 32] {
    let mut mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes()).expect("HMAC accepts keys of any length");
    mac.update(label);
    mac.update(url.as_bytes());
    mac.finalize().into_bytes().into()
}

/// The key the gateway signs the tokens of the SFU at `url` with: HMAC-SHA256(secret,
/// "ringsfu sfu key v1\0" + url).
pub fn derive_sfu_key(secret: &str, url: &str) -> Key {
    Key::from_bytes(&hmac(secret, SFU_KEY_LABEL, url))
}

/// The `X-Load-Secret` of the SFU at `url`, in hex: HMAC-SHA256(secret, "ringsfu load secret v1\0" + url).
pub fn derive_load_secret(secret: &str, url: &str) -> String {
    hmac(secret, LOAD_SECRET_LABEL, url).iter().map(|b| format!("{b:02x}")).collect()
}

/// The registration token for `announcement`, valid [`TOKEN_LIFETIME_SECONDS`] from `now`.
pub fn sign_announcement(announcement: &Announcement, secret: &str, now: u64) -> String {
    let mut claims = match serde_json::to_value(announcement) {
        Ok(Value::Object(map)) => map,
        _ => Claims::new(),
    };
    claims.insert("iat".into(), now.into());
    claims.insert("exp".into(), (now + TOKEN_LIFETIME_SECONDS).into());
    auth::sign(&claims, &Key::from_bytes(secret.as_bytes()))
}

/// The gateway's check: signed with `secret`, unexpired, expiring within a minute, well formed.
pub fn verify_announcement(token: &str, secret: &str, now: f64) -> Result<Announcement, RegistrationError> {
    let claims = auth::verify(token, &Key::from_bytes(secret.as_bytes()), now)?;
    let exp = claims.get("exp").and_then(Value::as_f64).filter(|&e| e > 0.0).ok_or(RegistrationError::NoExpiry)?;
    if exp > now + MAX_TOKEN_LIFETIME_SECONDS {
        return Err(RegistrationError::TooLong);
    }
    serde_json::from_value(Value::Object(claims)).map_err(|e| RegistrationError::BadClaims(e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECRET: &str = "registration-secret-for-tests";

    /// A fixed vector: the gateway and ringsfu must derive the same bytes forever (v1).
    #[test]
    fn derived_keys_are_fixed_per_secret_and_url() {
        let key = derive_sfu_key(SECRET, "http://10.0.0.5:8070");
        assert_eq!(key.to_base64(), "T+ZqnrYnzdHaAcmBuUYseTb9HVpMqAMd3GnuwtxdQoU=");
        assert_eq!(
            derive_load_secret(SECRET, "http://10.0.0.5:8070"),
            "3a912c0e2d4551c2bfb18007c6df0768e2506a5843e6d485750e370da0052223"
        );
        assert_ne!(derive_sfu_key(SECRET, "http://10.0.0.6:8070"), key, "each SFU has its own key");
        assert_ne!(derive_sfu_key("another-secret-of-16", "http://10.0.0.5:8070"), key);
    }

    fn announcement() -> Announcement {
        Announcement {
            url: "http://10.0.0.5:8070".into(),
            region: Some("eu-west".into()),
            capacity: 500,
            draining: false,
            id: "a1".into(),
        }
    }

    #[test]
    fn an_announcement_round_trips() {
        let token = sign_announcement(&announcement(), SECRET, 1_000);
        assert_eq!(verify_announcement(&token, SECRET, 1_010.0), Ok(announcement()));
    }

    /// Each row: a token, the time it is checked at, and the refusal expected.
    #[test]
    fn registration_tokens_are_refused_for_each_fault() {
        let key = Key::from_bytes(SECRET.as_bytes());
        let claims = |extra: Value| {
            let mut c = serde_json::to_value(announcement()).unwrap();
            for (k, v) in extra.as_object().unwrap() {
                c[k] = v.clone();
            }
            auth::sign(c.as_object().unwrap(), &key)
        };
        let rows: Vec<(String, f64, RegistrationError)> = vec![
            (
                sign_announcement(&announcement(), "wrong-secret-wrong-secret", 1_000),
                1_000.0,
                JwtError::BadSignature.into(),
            ),
            (sign_announcement(&announcement(), SECRET, 1_000), 1_031.0, JwtError::Expired.into()),
            (claims(serde_json::json!({})), 1_000.0, RegistrationError::NoExpiry),
            (claims(serde_json::json!({"exp": 1_061})), 1_000.0, RegistrationError::TooLong),
            (
                claims(serde_json::json!({"exp": 1_030, "capacity": "many"})),
                1_000.0,
                RegistrationError::BadClaims("invalid type: string \"many\", expected u64".into()),
            ),
        ];
        for (token, now, expected) in rows {
            let message = expected.to_string();
            assert_eq!(verify_announcement(&token, SECRET, now), Err(expected), "{message}");
        }
    }
}
