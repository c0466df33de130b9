//! What every request handler shares.

use super::bus::AuthFailureLog;
use super::directory::{ChannelEntry, ChannelRequest, Directory};
use super::load_report::LoadSampler;
use super::metrics::{Metrics, RouteLabels};
use super::rate_limit::RateLimiter;
use crate::config::Config;
use crate::runtime::shard::ShardHandle;
use axum::http::StatusCode;
use ringsfu_core::sfu::Command;
use std::ops::Deref;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

#[derive(Clone)]
pub struct AppState(Arc<Inner>);

pub struct Inner {
    pub config: Config,
    /// `PUBLIC_IP:PORT` (the port actually bound when PORT=0).
    pub public_host: String,
    pub directory: Directory,
    pub shards: Vec<ShardHandle>,
    pub load: LoadSampler,
    pub metrics: Metrics,
    pub limiter: RateLimiter,
    pub auth_failures: AuthFailureLog,
    pub draining: AtomicBool,
    next_connection: AtomicU64,
}

impl Deref for AppState {
    type Target = Inner;
    fn deref(&self) -> &Inner {
        &self.0
    }
}

impl AppState {
    pub fn new(config: Config, public_host: String, shards: Vec<ShardHandle>) -> AppState {
        let limiter = RateLimiter::new(config.rate_limit_per_second, config.rate_limit_burst);
        AppState(Arc::new(Inner {
            directory: Directory::new(shards.len()),
            metrics: Metrics::new(shards.clone()),
            load: LoadSampler::new(&shards, config.max_sessions),
            limiter,
            auth_failures: AuthFailureLog::default(),
            public_host,
            shards,
            config,
            draining: AtomicBool::new(false),
            next_connection: AtomicU64::new(1),
        }))
    }

    pub fn next_connection(&self) -> u64 {
        self.next_connection.fetch_add(1, Ordering::Relaxed)
    }

    pub fn is_draining(&self) -> bool {
        self.draining.load(Ordering::Relaxed)
    }

    pub fn count(&self, route: &'static str, status: StatusCode) {
        self.metrics
            .http_requests
            .get_or_create(&RouteLabels { route: route.to_string(), status: status.as_u16() })
            .inc();
    }

    /// The caller's channel for this issuer, created (placed, and its shard told) if it has none;
    /// what `/v1/channel` does, and the test-call page for its rooms.
    pub fn open_channel(&self, request: ChannelRequest) -> Arc<ChannelEntry> {
        let (remote, issuer) = (request.remote_address, request.issuer);
        let (entry, created) = self.directory.get_or_create(
            request,
            |counts| self.place_channel(counts),
            |entry| self.shards[entry.shard].tell(Command::CreateChannel { channel: entry.id, webrtc: entry.webrtc }),
        );
        if created {
            tracing::info!(channel = %entry.id, %remote, %issuer, webrtc = entry.webrtc, shard = entry.shard, "channel created");
        }
        entry
    }

    /// The shard a new channel goes to: fewest sessions, then fewest channels.
    pub fn place_channel(&self, channels_per_shard: &[usize]) -> usize {
        (0..self.shards.len())
            .min_by_key(|&i| {
                let snapshot = self.shards[i].load.snapshot();
                (snapshot.counters.sessions, channels_per_shard.get(i).copied().unwrap_or(0))
            })
            .expect("there is at least one shard")
    }
}
