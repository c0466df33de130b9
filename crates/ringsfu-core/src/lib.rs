//! The sans-IO core of ringsfu: no sockets, no threads, no async runtime. Time and randomness are
//! passed in, effects come out as values; the `ringsfu` server's shard threads drive it.
//!
//! - [`sfu`]: one shard's channels, sessions, transports, producers and consumers, and the packet
//!   path between them.
//! - [`protocol`]: the Odoo SFU wire protocol (bus envelopes, message names, close codes).
//! - [`framing`]: RFC 4571 framing for ICE-TCP.

pub mod framing;
pub mod protocol;
pub mod sfu;
