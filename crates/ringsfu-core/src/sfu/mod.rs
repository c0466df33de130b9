//! The SFU core: channels, sessions, transports, producers and consumers of one shard, sans-IO.
//!
//! Everything here takes time as an argument and returns its effects as values; the
//! shard driver (`runtime::shard`) feeds it datagrams, commands and timeouts.

pub mod allocator;
pub mod arena;
pub mod bandwidth;
pub mod channel;
pub mod codecs;
pub mod command;
pub mod congestion;
pub mod consumer;
pub mod counters;
pub mod demux;
pub mod feedback;
pub mod forward;
pub mod ids;
pub mod ingress;
pub mod inspect;
pub mod ortc;
pub mod producer;
pub mod rate;
pub mod rtcp;
pub mod session;
pub mod settings;
pub mod shard;
pub mod srtp;
pub mod timer;
pub mod transport;

pub use command::{ChannelStats, Command, JoinRefused, Reply, RequestFailed, SessionEvent, ShardEvent};
pub use ids::{ChannelId, SessionRef};
pub use settings::{Limits, SfuSettings};
pub use shard::Shard;
