//! What a shard's core counts: drop reasons, forwarded and retransmitted packets, its objects,
//! join times and forwarding delays. Plain integers bumped on the hot path; the driver publishes
//! them for `/v1/load` and `/metrics` (`runtime::shard_load`).

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
    /// An RTP packet received before (a network duplicate or a replay), or too old to tell.
    Duplicate,
    /// A packet for another shard's part of its channel, while that shard's relay queue is full.
    RelayFull,
}

impl DropReason {
    pub const ALL: [DropReason; 10] = [
        DropReason::UnknownSource,
        DropReason::UnknownUfrag,
        DropReason::Rejected,
        DropReason::Oversized,
        DropReason::SendFailed,
        DropReason::UnknownStream,
        DropReason::NotWebRtc,
        DropReason::TcpQueueFull,
        DropReason::Duplicate,
        DropReason::RelayFull,
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
            DropReason::Duplicate => "duplicate",
            DropReason::RelayFull => "relay_full",
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
    /// Packets of this shard's producers sent to other parts of their channel (once per part).
    pub rtp_relayed_out: u64,
    /// Packets of other shards' producers received for this shard's parts.
    pub rtp_relayed_in: u64,
    /// Packets ringsfu's own egress sent again on RTX streams, asked for by NACKs.
    pub rtp_retransmitted: u64,
    /// Padding-only packets ringsfu's own egress sent to probe subscribers' downlinks.
    pub padding_packets: u64,
    /// Publishers' RTP packets ringsfu's own ingress opened (not str0m).
    pub rtp_received_direct: u64,
    /// Of those, retransmissions (RTX) that filled a gap, after a NACK or unasked.
    pub rtp_recovered: u64,
    /// NACK packets ringsfu's own ingress sent to publishers.
    pub nacks_sent: u64,
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
    pub const FIELDS: usize = 10;

    pub fn to_array(self) -> [u64; Self::FIELDS] {
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

    pub fn from_array(a: [u64; Self::FIELDS]) -> TcpCounters {
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

    /// The raw bucket counts, for publishing (`runtime::shard_load`).
    pub fn counts(&self) -> [u64; MAX_BUCKETS] {
        self.counts
    }

    /// A histogram from published bucket counts and sum.
    pub fn from_counts(counts: [u64; MAX_BUCKETS], sum: u64) -> Self {
        Histogram { counts, sum, bounds: std::marker::PhantomData }
    }

    /// Each bucket's upper bound (`u64::MAX` for +Inf) and count, lowest first.
    pub fn buckets(&self) -> impl Iterator<Item = (u64, u64)> + '_ {
        B::UPPER.iter().copied().chain([u64::MAX]).zip(self.counts)
    }
}
