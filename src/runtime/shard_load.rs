//! Per-shard load figures, written by the shard and read lock-free by the control plane.
//!
//! The shard counts in plain integers on its hot path and publishes them here about every 100 ms
//! with relaxed stores; each shard's block is cache-padded so shards never share a cache line.

use crossbeam_utils::CachePadded;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

use ringsfu_core::sfu::counters::{
    Bounds, DelayHistogram, DropReason, Histogram, LocalCounters, MAX_BUCKETS, TcpCounters,
};

/// A [`Histogram`] the shard publishes and readers copy without locks.
#[derive(Debug, Default)]
struct SharedHistogram {
    counts: [AtomicU64; MAX_BUCKETS],
    sum: AtomicU64,
}

impl SharedHistogram {
    fn store<B: Bounds>(&self, h: &Histogram<B>) {
        for (slot, value) in self.counts.iter().zip(h.counts()) {
            slot.store(value, Relaxed);
        }
        self.sum.store(h.sum, Relaxed);
    }

    fn load<B: Bounds>(&self) -> Histogram<B> {
        Histogram::from_counts(std::array::from_fn(|i| self.counts[i].load(Relaxed)), self.sum.load(Relaxed))
    }
}

/// One shard's published figures.
#[derive(Debug, Default)]
pub struct ShardLoad {
    channels: AtomicU64,
    sessions: AtomicU64,
    transports: AtomicU64,
    producers: AtomicU64,
    consumers: AtomicU64,
    demux_entries: AtomicU64,
    packets_in: AtomicU64,
    packets_out: AtomicU64,
    bytes_in: AtomicU64,
    bytes_out: AtomicU64,
    rtp_forwarded: AtomicU64,
    rtp_forwarded_direct: AtomicU64,
    rtp_relayed_out: AtomicU64,
    rtp_relayed_in: AtomicU64,
    rtp_retransmitted: AtomicU64,
    padding_packets: AtomicU64,
    rtp_received_direct: AtomicU64,
    rtp_recovered: AtomicU64,
    nacks_sent: AtomicU64,
    dropped: [AtomicU64; DropReason::ALL.len()],
    layer_switches: AtomicU64,
    sessions_closed_consent_lost: AtomicU64,
    video_consumers_by_layer: [AtomicU64; 4],
    estimate_mean_bps: AtomicU64,
    /// Nanoseconds of CPU time the shard thread has used.
    cpu_ns: AtomicU64,
    /// Nanoseconds the shard spent handling input (datagrams, commands, timers).
    busy_ns: AtomicU64,
    /// Linux thread id, for /proc readers; 0 until the shard runs.
    tid: AtomicU64,
    delays: SharedHistogram,
    joins: SharedHistogram,
    tcp: [AtomicU64; TcpCounters::FIELDS],
}

pub type SharedLoad = Arc<CachePadded<ShardLoad>>;

impl ShardLoad {
    pub fn shared() -> SharedLoad {
        Arc::new(CachePadded::new(ShardLoad::default()))
    }

    /// Called by the shard only.
    pub fn publish_delays(&self, h: &DelayHistogram) {
        self.delays.store(h);
    }

    pub fn publish(&self, c: &LocalCounters, cpu_ns: u64, busy_ns: u64) {
        self.channels.store(c.channels, Relaxed);
        self.sessions.store(c.sessions, Relaxed);
        self.transports.store(c.transports, Relaxed);
        self.producers.store(c.producers, Relaxed);
        self.consumers.store(c.consumers, Relaxed);
        self.demux_entries.store(c.demux_entries, Relaxed);
        self.packets_in.store(c.packets_in, Relaxed);
        self.packets_out.store(c.packets_out, Relaxed);
        self.bytes_in.store(c.bytes_in, Relaxed);
        self.bytes_out.store(c.bytes_out, Relaxed);
        self.rtp_forwarded.store(c.rtp_forwarded, Relaxed);
        self.rtp_forwarded_direct.store(c.rtp_forwarded_direct, Relaxed);
        self.rtp_relayed_out.store(c.rtp_relayed_out, Relaxed);
        self.rtp_relayed_in.store(c.rtp_relayed_in, Relaxed);
        self.rtp_retransmitted.store(c.rtp_retransmitted, Relaxed);
        self.padding_packets.store(c.padding_packets, Relaxed);
        self.rtp_received_direct.store(c.rtp_received_direct, Relaxed);
        self.rtp_recovered.store(c.rtp_recovered, Relaxed);
        self.nacks_sent.store(c.nacks_sent, Relaxed);
        for (slot, value) in self.dropped.iter().zip(c.dropped) {
            slot.store(value, Relaxed);
        }
        self.layer_switches.store(c.layer_switches, Relaxed);
        self.sessions_closed_consent_lost.store(c.sessions_closed_consent_lost, Relaxed);
        for (slot, value) in self.video_consumers_by_layer.iter().zip(c.video_consumers_by_layer) {
            slot.store(value, Relaxed);
        }
        self.estimate_mean_bps.store(c.estimate_mean_bps, Relaxed);
        self.joins.store(&c.joins);
        for (slot, value) in self.tcp.iter().zip(c.tcp.to_array()) {
            slot.store(value, Relaxed);
        }
        self.cpu_ns.store(cpu_ns, Relaxed);
        self.busy_ns.store(busy_ns, Relaxed);
    }

    pub fn set_tid(&self, tid: u64) {
        self.tid.store(tid, Relaxed);
    }

    /// A consistent-enough copy for reporting (each field is read once, relaxed).
    pub fn snapshot(&self) -> LoadSnapshot {
        LoadSnapshot {
            counters: LocalCounters {
                channels: self.channels.load(Relaxed),
                sessions: self.sessions.load(Relaxed),
                transports: self.transports.load(Relaxed),
                producers: self.producers.load(Relaxed),
                consumers: self.consumers.load(Relaxed),
                demux_entries: self.demux_entries.load(Relaxed),
                packets_in: self.packets_in.load(Relaxed),
                packets_out: self.packets_out.load(Relaxed),
                bytes_in: self.bytes_in.load(Relaxed),
                bytes_out: self.bytes_out.load(Relaxed),
                rtp_forwarded: self.rtp_forwarded.load(Relaxed),
                rtp_forwarded_direct: self.rtp_forwarded_direct.load(Relaxed),
                rtp_relayed_out: self.rtp_relayed_out.load(Relaxed),
                rtp_relayed_in: self.rtp_relayed_in.load(Relaxed),
                rtp_retransmitted: self.rtp_retransmitted.load(Relaxed),
                padding_packets: self.padding_packets.load(Relaxed),
                rtp_received_direct: self.rtp_received_direct.load(Relaxed),
                rtp_recovered: self.rtp_recovered.load(Relaxed),
                nacks_sent: self.nacks_sent.load(Relaxed),
                dropped: std::array::from_fn(|i| self.dropped[i].load(Relaxed)),
                layer_switches: self.layer_switches.load(Relaxed),
                sessions_closed_consent_lost: self.sessions_closed_consent_lost.load(Relaxed),
                video_consumers_by_layer: std::array::from_fn(|i| self.video_consumers_by_layer[i].load(Relaxed)),
                estimate_mean_bps: self.estimate_mean_bps.load(Relaxed),
                joins: self.joins.load(),
                tcp: TcpCounters::from_array(std::array::from_fn(|i| self.tcp[i].load(Relaxed))),
            },
            cpu_ns: self.cpu_ns.load(Relaxed),
            busy_ns: self.busy_ns.load(Relaxed),
            tid: self.tid.load(Relaxed),
            delays: self.delays.load(),
        }
    }
}

#[derive(Debug, Default, Clone, Copy)]
pub struct LoadSnapshot {
    pub counters: LocalCounters,
    pub cpu_ns: u64,
    pub busy_ns: u64,
    pub tid: u64,
    pub delays: DelayHistogram,
}

#[cfg(test)]
mod tests {
    use super::*;
    use ringsfu_core::sfu::counters::{JoinHistogram, JoinMillis};

    #[test]
    fn a_histogram_counts_each_value_in_the_first_bucket_that_holds_it_and_publishes_whole() {
        let mut h = JoinHistogram::default();
        h.record(50, 1); // on a bound: that bucket
        h.record(51, 2);
        h.record(40_000, 1); // above every bound: +Inf
        let buckets: Vec<_> = h.buckets().filter(|(_, n)| *n > 0).collect();
        assert_eq!(buckets, [(50, 1), (100, 2), (u64::MAX, 1)]);
        assert_eq!((h.count(), h.sum), (4, 50 + 102 + 40_000));
        let load = ShardLoad::default();
        load.joins.store(&h);
        assert_eq!(load.joins.load::<JoinMillis>(), h);
    }
}
