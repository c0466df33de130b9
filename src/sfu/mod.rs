//! The SFU core: channels, sessions, transports, producers and consumers of one shard, sans-IO.
//!
//! Everything here takes time as an argument and returns its effects as values; the glommio
//! shard driver (`runtime::shard`) feeds it datagrams, commands and timeouts.

pub mod codecs;
pub mod ortc;
