//! Drivers around the sans-IO core: shard executors, UDP batching, load publication.

pub mod cpu;
pub mod load;
pub mod outbox;
pub mod shard;
pub mod udp;
