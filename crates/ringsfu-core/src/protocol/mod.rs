//! The Odoo SFU wire protocol: bus envelopes, message names and payloads, close codes.
//!
//! Only types and parsing live here; behaviour is in `sfu` (channels, sessions) and `control`
//! (HTTP and WebSocket drivers).

pub mod close;
pub mod envelope;
pub mod messages;
pub mod session_id;

pub use close::CloseCode;
pub use envelope::{Envelope, RequestId};
pub use messages::{ClientMessage, MediaType, SessionInfo};
pub use session_id::SessionId;
