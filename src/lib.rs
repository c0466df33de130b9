//! ringsfu: a thread-per-core WebRTC SFU speaking the Odoo SFU protocol.
//!
//! - [`sfu`]: the sans-IO core (channels, sessions, transports, producers, consumers, forwarding).
//! - [`runtime`]: the glommio shard driver and the UDP batching around the core.
//! - [`protocol`]: the Odoo wire protocol (bus envelopes, message names, close codes).
//! - [`auth`]: keys and JWT rules.
//! - [`config`]: settings from flags, environment and file.

pub mod auth;
pub mod config;
pub mod protocol;
pub mod runtime;
pub mod sfu;
