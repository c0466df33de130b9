//! Authentication: lenient base64 keys and the HS256 JWT rules of the Odoo SFU protocol.

mod jwt;
mod key;

pub use jwt::{Claims, JwtError, sign, sign_onto, verify};
pub use key::{Key, KeyError};
