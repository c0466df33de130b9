//! The SFU core: channels, sessions, transports, producers and consumers of one shard, sans-IO.
//!
//! Everything here takes time as an argument and returns its effects as values; the
//! shard driver (`runtime::shard`) feeds it datagrams, commands and timeouts.
//!
//! The shape (quinn-proto's endpoint and connections, mediasoup's worker and routers):
//!
//! - [`shard`]: the endpoint. It finds who each command, datagram, timer or `Rtc` event is for
//!   and hands it over with the [`context`]: the transports, their demux table, the timer table
//!   and output queues ([`outputs`]), the settings and the shard's seeded randomness.
//! - [`router`]: one per channel. It owns the channel's sessions, producers and consumers, and
//!   holds the channel's logic: the bus, the packet path, feedback, bandwidth allocation.
//! - [`session`], [`transport`], [`producer`], [`consumer`]: the objects, with what each does on
//!   its own. A transport owns its `Rtc`, its SRTP contexts and its SSRC routes.
//! - The parts they are made of, each unit-tested alone: [`demux`], [`forward`] (decisions,
//!   munging, the own egress), [`ingress`] (the own receive path), [`congestion`] (the bandwidth
//!   estimator), [`allocator`], [`ortc`], [`srtp`], [`timer`].
//!
//! Imports point down this list: the objects and parts call neither the router nor the shard (a
//! transport only names its router, by key).

pub mod allocator;
pub mod arena;
pub mod codecs;
pub mod command;
pub mod congestion;
pub mod consumer;
pub mod context;
pub mod counters;
pub mod demux;
pub mod forward;
pub mod ids;
pub mod ingress;
pub mod ortc;
pub mod outputs;
pub mod producer;
pub mod rate;
pub mod relay;
pub mod router;
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
