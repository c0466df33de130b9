//! Per-shard load figures, written by the shard and read lock-free by the control plane.
//!
//! The shard counts in plain integers on its hot path and publishes them here about every 100 ms
//! with relaxed stores; each shard's block is cache-padded so shards never share a cache line.

use crossbeam_utils::CachePadded;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

/// Why a datagram or packet was dropped; one counter each.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(usize)]
pub enum DropReason {
    /// Neither a known 5-tuple nor a STUN request for a known ICE username.
    UnknownSource = 0,
    /// STUN whose USERNAME names no transport of this shard.
    UnknownUfrag,
    /// The transport refused the datagram (bad STUN integrity, DTLS failure, SRTP auth failure...).
    Rejected,
    /// Larger than the receive buffer.
    Oversized,
    /// The kernel refused to send it (full send buffer, unreachable).
    SendFailed,
    /// An RTP packet for no known producer stream.
    UnknownStream,
    /// Not STUN, DTLS, RTP or RTCP by its first byte (RFC 7983): dropped before any lookup.
    NotWebRtc,
    /// RTP for an ICE-TCP connection whose send queue is full (its peer does not read fast enough).
    TcpQueueFull,
}

impl DropReason {
    pub const ALL: [DropReason; 8] = [
        DropReason::UnknownSource,
        DropReason::UnknownUfrag,
        DropReason::Rejected,
        DropReason::Oversized,
        DropReason::SendFailed,
        DropReason::UnknownStream,
        DropReason::NotWebRtc,
        DropReason::TcpQueueFull,
    ];

    pub fn label(self) -> &'static str {
        match self {
            DropReason::UnknownSource => "unknown_source",
            DropReason::UnknownUfrag => "unknown_ufrag",
            DropReason::Rejected => "rejected",
            DropReason::Oversized => "oversized",
            DropReason::SendFailed => "send_failed",
            DropReason::UnknownStream => "unknown_stream",
            DropReason::NotWebRtc => "not_webrtc",
            DropReason::TcpQueueFull => "tcp_queue_full",
        }
    }
}

/// The counters a shard keeps locally; cheap to bump on the hot path.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct LocalCounters {
    pub channels: u64,
    pub sessions: u64,
    pub transports: u64,
    pub producers: u64,
    pub consumers: u64,
    pub demux_entries: u64,
    pub packets_in: u64,
    pub packets_out: u64,
    pub bytes_in: u64,
    pub bytes_out: u64,
    pub rtp_forwarded: u64,
    /// Of those, the ones ringsfu wrote and sealed itself (not through str0m).
    pub rtp_forwarded_direct: u64,
    /// Packets ringsfu's own egress sent again on RTX streams, asked for by NACKs.
    pub rtp_retransmitted: u64,
    /// Padding-only packets ringsfu's own egress sent to probe subscribers' downlinks.
    pub padding_packets: u64,
    pub dropped: [u64; DropReason::ALL.len()],
    /// Simulcast target changes.
    pub layer_switches: u64,
    /// Sessions closed because their media lost ICE consent (`CONSENT_TIMEOUT_SECONDS`).
    pub sessions_closed_consent_lost: u64,
    /// Video consumers by the layer they receive now.
    pub video_consumers_by_layer: [u64; 4],
    /// Mean downlink estimate of the subscribers, bit/s.
    pub estimate_mean_bps: u64,
    /// From a session's join to its first transport connected (ICE and DTLS done), ms.
    pub joins: JoinHistogram,
    /// The shard's ICE-TCP connections (kept by the driver; the counters above include them).
    pub tcp: TcpCounters,
}

/// ICE-TCP (RFC 6544) connections of one shard; datagrams are RFC 4571 frames.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct TcpCounters {
    /// Connections open now.
    pub open: u64,
    pub accepted: u64,
    pub datagrams_in: u64,
    pub datagrams_out: u64,
    /// Payload bytes, without the 2-byte length prefixes.
    pub bytes_in: u64,
    pub bytes_out: u64,
    /// Accepted and closed at once: the shard had `RTC_TCP_MAX_CONNECTIONS` open.
    pub refused: u64,
    /// Closed because no transport routed their peer within `RTC_TCP_IDLE_TIMEOUT_SECONDS`.
    pub closed_idle: u64,
    /// Closed for a length prefix of 0 or above the largest datagram accepted.
    pub closed_oversize: u64,
    /// Closed because their send queue passed its hard cap (the peer stopped reading).
    pub closed_slow: u64,
}

impl TcpCounters {
    const FIELDS: usize = 10;

    fn to_array(self) -> [u64; Self::FIELDS] {
        [
            self.open,
            self.accepted,
            self.datagrams_in,
            self.datagrams_out,
            self.bytes_in,
            self.bytes_out,
            self.refused,
            self.closed_idle,
            self.closed_oversize,
            self.closed_slow,
        ]
    }

    fn from_array(a: [u64; Self::FIELDS]) -> TcpCounters {
        let [
            open,
            accepted,
            datagrams_in,
            datagrams_out,
            bytes_in,
            bytes_out,
            refused,
            closed_idle,
            closed_oversize,
            closed_slow,
        ] = a;
        TcpCounters {
            open,
            accepted,
            datagrams_in,
            datagrams_out,
            bytes_in,
            bytes_out,
            refused,
            closed_idle,
            closed_oversize,
            closed_slow,
        }
    }
}

impl LocalCounters {
    pub fn drop(&mut self, reason: DropReason) {
        self.dropped[reason as usize] += 1;
    }
}

/// The fixed upper bounds of one histogram's buckets; one more bucket, above them all, is +Inf.
pub trait Bounds: Clone + Copy + Default + PartialEq + Eq + std::fmt::Debug {
    const UPPER: &'static [u64];
}

/// Buckets a [`Histogram`] can hold (its bounds and the +Inf bucket).
pub const MAX_BUCKETS: usize = 16;

/// Time from the start of handling a batch of datagrams to the `sendmmsg` that carries what the
/// batch produced, in µs, counted once per RTP packet forwarded in that batch (packets the pacer
/// holds back go out later and are not in it).
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct DelayMicros;

impl Bounds for DelayMicros {
    const UPPER: &'static [u64] = &[25, 50, 100, 250, 500, 1_000, 2_500, 5_000, 10_000, 25_000, 50_000, 100_000];
}

/// From a session's join to its first transport connected (ICE and DTLS done), in ms.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct JoinMillis;

impl Bounds for JoinMillis {
    const UPPER: &'static [u64] = &[50, 100, 250, 500, 1_000, 2_000, 3_000, 5_000, 10_000, 30_000];
}

/// Fixed buckets: cheap to fill on the shard, cheap to publish through atomics.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Histogram<B: Bounds> {
    counts: [u64; MAX_BUCKETS],
    pub sum: u64,
    bounds: std::marker::PhantomData<B>,
}

pub type DelayHistogram = Histogram<DelayMicros>;
pub type JoinHistogram = Histogram<JoinMillis>;

impl<B: Bounds> Histogram<B> {
    const FITS: () = assert!(B::UPPER.len() < MAX_BUCKETS, "too many bounds for a Histogram");

    pub fn record(&mut self, value: u64, count: u64) {
        let () = Self::FITS;
        let i = B::UPPER.iter().position(|b| value <= *b).unwrap_or(B::UPPER.len());
        self.counts[i] += count;
        self.sum += value * count;
    }

    pub fn count(&self) -> u64 {
        self.counts.iter().sum()
    }

    /// Each bucket's upper bound (`u64::MAX` for +Inf) and count, lowest first.
    pub fn buckets(&self) -> impl Iterator<Item = (u64, u64)> + '_ {
        B::UPPER.iter().copied().chain([u64::MAX]).zip(self.counts)
    }
}

/// A [`Histogram`] the shard publishes and readers copy without locks.
#[derive(Debug, Default)]
struct SharedHistogram {
    counts: [AtomicU64; MAX_BUCKETS],
    sum: AtomicU64,
}

impl SharedHistogram {
    fn store<B: Bounds>(&self, h: &Histogram<B>) {
        for (slot, value) in self.counts.iter().zip(h.counts) {
            slot.store(value, Relaxed);
        }
        self.sum.store(h.sum, Relaxed);
    }

    fn load<B: Bounds>(&self) -> Histogram<B> {
        Histogram {
            counts: std::array::from_fn(|i| self.counts[i].load(Relaxed)),
            sum: self.sum.load(Relaxed),
            bounds: std::marker::PhantomData,
        }
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
    rtp_retransmitted: AtomicU64,
    padding_packets: AtomicU64,
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
        self.rtp_retransmitted.store(c.rtp_retransmitted, Relaxed);
        self.padding_packets.store(c.padding_packets, Relaxed);
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
                rtp_retransmitted: self.rtp_retransmitted.load(Relaxed),
                padding_packets: self.padding_packets.load(Relaxed),
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
