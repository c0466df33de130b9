//! A synthetic Odoo client for tests, benchmarks and load tests: the same bus protocol and the
//! same mediasoup parameters as the browser client, with str0m as its WebRTC stack.
//!
//! - [`participant`]: the sans-IO client (bus answers, publications, receptions).
//! - [`transport`]: one client-side transport (a str0m `Rtc` acting as a PeerConnection).
//! - [`media`]: synthetic Opus-sized audio and VP8-shaped simulcast video.
//! - [`sim`]: an in-memory world (one shard core, many participants, virtual clock).
//! - [`live`]: a participant on real sockets (WebSocket + UDP), driven by a tokio task.
//! - [`process`]: the server binaries as child processes (started until ready, stopped on drop).

pub mod link;
pub mod live;
pub mod media;
pub mod participant;
pub mod process;
pub mod sim;
pub mod transport;

pub use participant::{Latencies, Participant, ParticipantEvent, Publish, Reception};
