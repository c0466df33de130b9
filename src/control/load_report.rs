//! `/v1/load`: what the gateway balances on. A sampler turns the shards' published counters into
//! rates once a second; requests read the latest report.

use crate::runtime::cpu;
use crate::runtime::shard::ShardHandle;
use crate::runtime::shard_load::LoadSnapshot;
use ringsfu_core::sfu::counters::DropReason;
use serde::Serialize;
use std::sync::RwLock;
use std::time::{Duration, Instant};

pub const SAMPLE_INTERVAL: Duration = Duration::from_secs(1);

#[derive(Debug, Clone, Default, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ShardReport {
    pub shard: usize,
    pub channels: u64,
    pub sessions: u64,
    /// Fraction of one core the shard thread used over the last second.
    pub cpu_usage: f64,
    pub packets_in_per_sec: f64,
    pub packets_out_per_sec: f64,
    /// bit/s.
    pub bitrate_in: f64,
    pub bitrate_out: f64,
    /// ICE-TCP connections open, and the part of the traffic above that went over them.
    pub tcp_connections: u64,
    pub tcp_packets_in_per_sec: f64,
    pub tcp_packets_out_per_sec: f64,
    pub tcp_bitrate_in: f64,
    pub tcp_bitrate_out: f64,
    /// Packets of channels spread over shards: sent once to each other part of their channel,
    /// received from the other parts (docs/cross-shard.md).
    pub relayed_out_per_sec: f64,
    pub relayed_in_per_sec: f64,
    /// Relayed packets dropped (a full link to another shard) since the start.
    pub relay_drops: u64,
}

/// A channel held by more than one shard: its sessions on each (by shard index).
#[derive(Debug, Clone, Default, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct SpreadChannel {
    pub channel: String,
    pub sessions: Vec<usize>,
}

#[derive(Debug, Clone, Default, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct LoadReport {
    /// Channels: one spread over shards counts once (the shards' own `channels` count its parts).
    pub channels: u64,
    pub sessions: u64,
    /// Fraction of the machine's CPU capacity in use (all processes), 0..1.
    pub cpu_usage: f64,
    /// Fraction of the machine's memory in use, 0..1.
    pub memory_usage: f64,
    pub max_sessions: usize,
    pub draining: bool,
    pub shards: Vec<ShardReport>,
    /// The channels spread over shards, each with its sessions per shard.
    pub spread: Vec<SpreadChannel>,
}

pub struct LoadSampler {
    latest: RwLock<LoadReport>,
}

struct Previous {
    at: Instant,
    shards: Vec<LoadSnapshot>,
    machine: Option<(u64, u64)>,
}

impl LoadSampler {
    /// A sampler whose report already lists the shards (rates zero): a gateway may ask for
    /// `/v1/load` as soon as the server listens, before the first sampling tick has run.
    pub fn new(shards: &[ShardHandle], max_sessions: usize) -> LoadSampler {
        let sampler = LoadSampler { latest: RwLock::new(LoadReport::default()) };
        let mut previous = Previous::now(shards);
        sampler.sample(shards, max_sessions, false, &mut previous);
        sampler
    }

    pub fn latest(&self) -> LoadReport {
        self.latest.read().expect("load lock is never poisoned").clone()
    }

    /// Samples forever (run as a task).
    pub async fn run(&self, shards: Vec<ShardHandle>, max_sessions: usize, draining: impl Fn() -> bool) {
        let mut previous = Previous::now(&shards);
        loop {
            self.sample(&shards, max_sessions, draining(), &mut previous);
            tokio::time::sleep(SAMPLE_INTERVAL).await;
        }
    }

    fn sample(&self, shards: &[ShardHandle], max_sessions: usize, draining: bool, previous: &mut Previous) {
        let now = Instant::now();
        let elapsed = now.saturating_duration_since(previous.at).as_secs_f64().max(1e-3);
        let snapshots: Vec<LoadSnapshot> = shards.iter().map(|s| s.load.snapshot()).collect();
        let per_second = |now: u64, before: u64| now.saturating_sub(before) as f64 / elapsed;
        let reports: Vec<ShardReport> = snapshots
            .iter()
            .zip(&previous.shards)
            .enumerate()
            .map(|(i, (s, p))| ShardReport {
                shard: i,
                channels: s.counters.channels,
                sessions: s.counters.sessions,
                cpu_usage: (per_second(s.cpu_ns, p.cpu_ns) / 1e9).clamp(0.0, 1.0),
                packets_in_per_sec: per_second(s.counters.packets_in, p.counters.packets_in),
                packets_out_per_sec: per_second(s.counters.packets_out, p.counters.packets_out),
                bitrate_in: per_second(s.counters.bytes_in, p.counters.bytes_in) * 8.0,
                bitrate_out: per_second(s.counters.bytes_out, p.counters.bytes_out) * 8.0,
                tcp_connections: s.counters.tcp.open,
                tcp_packets_in_per_sec: per_second(s.counters.tcp.datagrams_in, p.counters.tcp.datagrams_in),
                tcp_packets_out_per_sec: per_second(s.counters.tcp.datagrams_out, p.counters.tcp.datagrams_out),
                tcp_bitrate_in: per_second(s.counters.tcp.bytes_in, p.counters.tcp.bytes_in) * 8.0,
                tcp_bitrate_out: per_second(s.counters.tcp.bytes_out, p.counters.tcp.bytes_out) * 8.0,
                relayed_out_per_sec: per_second(s.counters.rtp_relayed_out, p.counters.rtp_relayed_out),
                relayed_in_per_sec: per_second(s.counters.rtp_relayed_in, p.counters.rtp_relayed_in),
                relay_drops: s.counters.dropped[DropReason::RelayFull as usize],
            })
            .collect();
        let machine = cpu::machine_cpu_ticks();
        let cpu_usage = match (machine, previous.machine) {
            (Some((busy, total)), Some((pbusy, ptotal))) if total > ptotal => {
                (busy.saturating_sub(pbusy) as f64 / (total - ptotal) as f64).clamp(0.0, 1.0)
            }
            _ => 0.0,
        };
        let report = LoadReport {
            channels: reports.iter().map(|r| r.channels).sum(),
            sessions: reports.iter().map(|r| r.sessions).sum(),
            cpu_usage,
            memory_usage: cpu::machine_memory_usage(),
            max_sessions,
            draining,
            shards: reports,
            spread: Vec::new(),
        };
        *self.latest.write().expect("load lock is never poisoned") = report;
        *previous = Previous { at: now, shards: snapshots, machine };
    }
}

impl Previous {
    fn now(shards: &[ShardHandle]) -> Previous {
        Previous {
            at: Instant::now(),
            shards: shards.iter().map(|s| s.load.snapshot()).collect(),
            machine: cpu::machine_cpu_ticks(),
        }
    }
}
