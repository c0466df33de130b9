//! ringsfu, the server: the shard threads that drive the sans-IO core (`ringsfu_core`) over
//! UDP and ICE-TCP, the tokio/axum control plane (HTTP API, WebSocket bus, metrics) and the
//! settings that configure them.
//!
//! - [`runtime`]: the shard threads (their loop and io_uring sleep) and the UDP batching around
//!   the core.
//! - [`control`]: the control plane (HTTP routes, WebSocket bus, metrics, self-registration).
//! - [`config`]: settings from flags, environment and file.
//! - [`server`]: start-up and shutdown, tying the three together.

pub mod config;
pub mod control;
/// The bodies of the fuzz targets in `fuzz/`, shared with the corpus replay of `tests/fuzz_corpus.rs`.
#[doc(hidden)]
pub mod fuzzing;
pub mod runtime;
pub mod server;
/// Worker threads of the control plane's tokio runtime: it only does HTTP, WebSocket and JSON,
/// so a few threads serve many shards.
pub fn control_plane_threads(shards: usize) -> usize {
    (shards / 8).clamp(2, 8)
}
