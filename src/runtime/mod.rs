//! Drivers around the sans-IO core: shard threads, their io_uring wait, UDP batching, ICE-TCP
//! connections, load publication.

pub mod cpu;
pub mod outbox;
pub mod relay;
pub mod ring;
pub mod shard;
pub mod shard_load;
pub mod tcp;
pub mod udp;
