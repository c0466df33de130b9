//! `/metrics` in the Prometheus text format. Shard figures are read from their published counters
//! at scrape time; control-plane events are counted as they happen.

use crate::runtime::shard::ShardHandle;
use crate::runtime::shard_load::LoadSnapshot;
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeLabelSet, EncodeMetric};
use prometheus_client::metrics::TypedMetric;
use prometheus_client::metrics::counter::{ConstCounter, Counter};
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::{ConstGauge, Gauge};
use prometheus_client::registry::Registry;
use ringsfu_core::sfu::counters::{Bounds, DropReason, Histogram};
use std::sync::atomic::AtomicU64;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RouteLabels {
    pub route: String,
    pub status: u16,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct CloseLabels {
    pub code: u16,
}

pub struct Metrics {
    pub registry: Registry,
    pub http_requests: Family<RouteLabels, Counter>,
    pub ws_connections: Gauge<i64, std::sync::atomic::AtomicI64>,
    pub ws_closed: Family<CloseLabels, Counter>,
    pub ws_rejected_frames: Counter,
    pub rate_limited: Counter,
}

#[derive(Debug)]
struct ShardCollector {
    shards: Vec<ShardHandle>,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ShardLabel {
    shard: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct LayerLabels {
    shard: String,
    layer: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct DropLabels {
    shard: String,
    reason: &'static str,
}

impl Collector for ShardCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let snaps: Vec<_> = self.shards.iter().map(|s| s.load.snapshot()).collect();
        per_shard(&mut encoder, &snaps, "ringsfu_shard_channels", "Channels placed on the shard.", |s| {
            ConstGauge::new(s.counters.channels as i64)
        })?;
        per_shard(&mut encoder, &snaps, "ringsfu_shard_sessions", "Sessions served by the shard.", |s| {
            ConstGauge::new(s.counters.sessions as i64)
        })?;
        per_shard(
            &mut encoder,
            &snaps,
            "ringsfu_shard_transports",
            "WebRTC transports (str0m Rtc instances) of the shard.",
            |s| ConstGauge::new(s.counters.transports as i64),
        )?;
        per_shard(&mut encoder, &snaps, "ringsfu_shard_producers", "Producers on the shard.", |s| {
            ConstGauge::new(s.counters.producers as i64)
        })?;
        per_shard(&mut encoder, &snaps, "ringsfu_shard_consumers", "Consumers on the shard.", |s| {
            ConstGauge::new(s.counters.consumers as i64)
        })?;
        per_shard(
            &mut encoder,
            &snaps,
            "ringsfu_shard_demux_entries",
            "ICE usernames and remote addresses the shard routes.",
            |s| ConstGauge::new(s.counters.demux_entries as i64),
        )?;
        per_shard(
            &mut encoder,
            &snaps,
            "ringsfu_shard_received_packets",
            "Datagrams received (UDP, and ICE-TCP frames: see ringsfu_shard_tcp_received_packets).",
            |s| ConstCounter::new(s.counters.packets_in),
        )?;
        per_shard(
            &mut encoder,
            &snaps,
            "ringsfu_shard_sent_packets",
            "Datagrams sent (UDP, and ICE-TCP frames: see ringsfu_shard_tcp_sent_packets).",
            |s| ConstCounter::new(s.counters.packets_out),
        )?;
        per_shard(
            &mut encoder,
            &snaps,
            "ringsfu_shard_received_bytes",
            "Datagram payload bytes received (UDP and ICE-TCP).",
            |s| ConstCounter::new(s.counters.bytes_in),
        )?;
        per_shard(
            &mut encoder,
            &snaps,
            "ringsfu_shard_sent_bytes",
            "Datagram payload bytes sent (UDP and ICE-TCP).",
            |s| ConstCounter::new(s.counters.bytes_out),
        )?;
        per_shard(
            &mut encoder,
            &snaps,
            "ringsfu_shard_tcp_connections",
            "ICE-TCP connections open on the shard's TCP port.",
            |s| ConstGauge::new(s.counters.tcp.open as i64),
        )?;
        per_shard(
            &mut encoder,
            &snaps,
            "ringsfu_shard_tcp_accepted_connections",
            "ICE-TCP connections accepted (including those refused over RTC_TCP_MAX_CONNECTIONS).",
            |s| ConstCounter::new(s.counters.tcp.accepted),
        )?;
        per_shard(
            &mut encoder,
            &snaps,
            "ringsfu_shard_tcp_received_packets",
            "Datagrams received over ICE-TCP (RFC 4571 frames).",
            |s| ConstCounter::new(s.counters.tcp.datagrams_in),
        )?;
        per_shard(
            &mut encoder,
            &snaps,
            "ringsfu_shard_tcp_sent_packets",
            "Datagrams queued onto ICE-TCP connections (RFC 4571 frames).",
            |s| ConstCounter::new(s.counters.tcp.datagrams_out),
        )?;
        per_shard(
            &mut encoder,
            &snaps,
            "ringsfu_shard_tcp_received_bytes",
            "Datagram payload bytes received over ICE-TCP (without length prefixes).",
            |s| ConstCounter::new(s.counters.tcp.bytes_in),
        )?;
        per_shard(
            &mut encoder,
            &snaps,
            "ringsfu_shard_tcp_sent_bytes",
            "Datagram payload bytes written to ICE-TCP connections (without length prefixes).",
            |s| ConstCounter::new(s.counters.tcp.bytes_out),
        )?;
        per_shard(
            &mut encoder,
            &snaps,
            "ringsfu_shard_tcp_refused_connections",
            "ICE-TCP connections closed as they were accepted: the shard had RTC_TCP_MAX_CONNECTIONS open.",
            |s| ConstCounter::new(s.counters.tcp.refused),
        )?;
        {
            let mut m = encoder.encode_descriptor(
                "ringsfu_shard_tcp_closed_connections",
                "ICE-TCP connections the shard closed: idle (no transport routed the peer within \
                 RTC_TCP_IDLE_TIMEOUT_SECONDS), oversize (a length prefix of 0 or above 4096), slow (send queue \
                 past 1 MiB: the peer stopped reading).",
                None,
                prometheus_client::metrics::MetricType::Counter,
            )?;
            for (i, s) in snaps.iter().enumerate() {
                let tcp = &s.counters.tcp;
                for (reason, value) in
                    [("idle", tcp.closed_idle), ("oversize", tcp.closed_oversize), ("slow", tcp.closed_slow)]
                {
                    let labels = DropLabels { shard: i.to_string(), reason };
                    ConstCounter::new(value).encode(m.encode_family(&labels)?)?;
                }
            }
        }
        per_shard(
            &mut encoder,
            &snaps,
            "ringsfu_shard_forwarded_rtp_packets",
            "RTP packets written to consumers.",
            |s| ConstCounter::new(s.counters.rtp_forwarded),
        )?;
        per_shard(
            &mut encoder,
            &snaps,
            "ringsfu_shard_forwarded_rtp_packets_direct",
            "Of the forwarded RTP packets, those ringsfu wrote and sealed itself (on AES-GCM transports).",
            |s| ConstCounter::new(s.counters.rtp_forwarded_direct),
        )?;
        per_shard(
            &mut encoder,
            &snaps,
            "ringsfu_shard_relayed_out_rtp_packets",
            "RTP packets of this shard's publishers sent to another shard's part of their channel.",
            |s| ConstCounter::new(s.counters.rtp_relayed_out),
        )?;
        per_shard(
            &mut encoder,
            &snaps,
            "ringsfu_shard_relayed_in_rtp_packets",
            "RTP packets of another shard's publishers received for this shard's part of their channel.",
            |s| ConstCounter::new(s.counters.rtp_relayed_in),
        )?;
        per_shard(
            &mut encoder,
            &snaps,
            "ringsfu_shard_retransmitted_rtp_packets",
            "Packets ringsfu's own egress sent again on RTX streams because a subscriber reported them lost.",
            |s| ConstCounter::new(s.counters.rtp_retransmitted),
        )?;
        per_shard(
            &mut encoder,
            &snaps,
            "ringsfu_shard_padding_packets",
            "Padding-only packets ringsfu's own egress sent to probe subscribers' downlinks.",
            |s| ConstCounter::new(s.counters.padding_packets),
        )?;
        per_shard(
            &mut encoder,
            &snaps,
            "ringsfu_shard_received_rtp_packets_direct",
            "Publishers' RTP packets ringsfu opened itself (on AES-GCM transports), not str0m.",
            |s| ConstCounter::new(s.counters.rtp_received_direct),
        )?;
        per_shard(
            &mut encoder,
            &snaps,
            "ringsfu_shard_recovered_rtp_packets",
            "Publishers' retransmissions (RTX) ringsfu's own ingress received that filled a gap.",
            |s| ConstCounter::new(s.counters.rtp_recovered),
        )?;
        per_shard(
            &mut encoder,
            &snaps,
            "ringsfu_shard_nacks_sent",
            "NACK packets ringsfu's own ingress sent to publishers for lost video packets.",
            |s| ConstCounter::new(s.counters.nacks_sent),
        )?;
        per_shard(
            &mut encoder,
            &snaps,
            "ringsfu_shard_layer_switches",
            "Simulcast target layer changes of consumers.",
            |s| ConstCounter::new(s.counters.layer_switches),
        )?;
        per_shard(
            &mut encoder,
            &snaps,
            "ringsfu_shard_sessions_closed_consent_lost",
            "Sessions closed because their media transport lost ICE consent (CONSENT_TIMEOUT_SECONDS).",
            |s| ConstCounter::new(s.counters.sessions_closed_consent_lost),
        )?;
        per_shard(
            &mut encoder,
            &snaps,
            "ringsfu_shard_downlink_estimate_mean_bytes_per_second",
            "Mean bandwidth estimate of the subscribers' downlinks.",
            |s| ConstGauge::new((s.counters.estimate_mean_bps / 8) as i64),
        )?;
        {
            let mut m = encoder.encode_descriptor(
                "ringsfu_shard_video_consumers",
                "Video consumers by the simulcast layer they receive (0 is the lowest).",
                None,
                prometheus_client::metrics::MetricType::Gauge,
            )?;
            for (i, s) in snaps.iter().enumerate() {
                for (layer, count) in s.counters.video_consumers_by_layer.iter().enumerate() {
                    let labels = LayerLabels { shard: i.to_string(), layer: layer.to_string() };
                    ConstGauge::new(*count as i64).encode(m.encode_family(&labels)?)?;
                }
            }
        }
        per_shard(&mut encoder, &snaps, "ringsfu_shard_cpu_seconds", "CPU time of the shard thread.", |s| {
            ConstCounter::new(s.cpu_ns as f64 / 1e9)
        })?;
        per_shard(&mut encoder, &snaps, "ringsfu_shard_busy_seconds", "Time the shard spent handling input.", |s| {
            ConstCounter::new(s.busy_ns as f64 / 1e9)
        })?;
        {
            let mut m = encoder.encode_descriptor(
                "ringsfu_shard_dropped_packets",
                "Datagrams or packets dropped, by reason.",
                None,
                prometheus_client::metrics::MetricType::Counter,
            )?;
            for (i, s) in snaps.iter().enumerate() {
                for reason in DropReason::ALL {
                    let labels = DropLabels { shard: i.to_string(), reason: reason.label() };
                    ConstCounter::new(s.counters.dropped[reason as usize]).encode(m.encode_family(&labels)?)?;
                }
            }
        }
        encode_shard_histograms(
            &mut encoder,
            "ringsfu_shard_forwarding_delay_seconds",
            "From the start of handling a datagram batch to the sendmmsg carrying its output, per forwarded RTP packet.",
            1e6,
            snaps.iter().map(|s| s.delays),
        )?;
        encode_shard_histograms(
            &mut encoder,
            "ringsfu_shard_join_seconds",
            "From a session's join (WebSocket authenticated) to its first transport connected (ICE and DTLS done).",
            1e3,
            snaps.iter().map(|s| s.counters.joins),
        )?;
        let rss = crate::runtime::cpu::process_rss_bytes() as i64;
        let m = encoder.encode_descriptor(
            "ringsfu_process_resident_memory_bytes",
            "Resident memory of the process.",
            None,
            prometheus_client::metrics::MetricType::Gauge,
        )?;
        ConstGauge::new(rss).encode(m)?;
        Ok(())
    }
}

impl Metrics {
    pub fn new(shards: Vec<ShardHandle>) -> Metrics {
        let mut registry = Registry::default();
        let http_requests = Family::<RouteLabels, Counter>::default();
        registry.register("ringsfu_http_requests", "HTTP requests by route and status", http_requests.clone());
        let ws_connections = Gauge::<i64, std::sync::atomic::AtomicI64>::default();
        registry.register("ringsfu_websocket_connections", "Open WebSocket connections", ws_connections.clone());
        let ws_closed = Family::<CloseLabels, Counter>::default();
        registry.register(
            "ringsfu_websocket_closes",
            "WebSocket connections closed by the server, by close code",
            ws_closed.clone(),
        );
        let ws_rejected_frames = Counter::<u64, AtomicU64>::default();
        registry.register(
            "ringsfu_websocket_rejected_frames",
            "Frames refused or ignored: invalid JSON, unknown names, bad payloads",
            ws_rejected_frames.clone(),
        );
        let rate_limited = Counter::<u64, AtomicU64>::default();
        registry.register(
            "ringsfu_rate_limited_requests",
            "Requests refused by the per-address rate limit",
            rate_limited.clone(),
        );
        registry.register_collector(Box::new(ShardCollector { shards }));
        Metrics { registry, http_requests, ws_connections, ws_closed, ws_rejected_frames, rate_limited }
    }

    pub fn render(&self) -> String {
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, &self.registry).expect("writing to a String cannot fail");
        out
    }
}

/// One family with a series per shard, read from each shard's snapshot by `value`.
fn per_shard<M: EncodeMetric + TypedMetric>(
    encoder: &mut DescriptorEncoder,
    snaps: &[LoadSnapshot],
    name: &str,
    help: &str,
    value: impl Fn(&LoadSnapshot) -> M,
) -> Result<(), std::fmt::Error> {
    let mut family = encoder.encode_descriptor(name, help, None, M::TYPE)?;
    for (i, snap) in snaps.iter().enumerate() {
        value(snap).encode(family.encode_family(&ShardLabel { shard: i.to_string() })?)?;
    }
    Ok(())
}

/// One histogram family with a series per shard; `per_second` units of the histogram make a second.
fn encode_shard_histograms<B: Bounds>(
    encoder: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    per_second: f64,
    histograms: impl Iterator<Item = Histogram<B>>,
) -> Result<(), std::fmt::Error> {
    let mut m = encoder.encode_descriptor(name, help, None, prometheus_client::metrics::MetricType::Histogram)?;
    for (i, h) in histograms.enumerate() {
        // f64::MAX is how prometheus-client writes the +Inf bucket.
        let buckets: Vec<(f64, u64)> = h
            .buckets()
            .map(|(bound, n)| (if bound == u64::MAX { f64::MAX } else { bound as f64 / per_second }, n))
            .collect();
        let shard = ShardLabel { shard: i.to_string() };
        m.encode_family(&shard)?.encode_histogram::<prometheus_client::encoding::NoLabelSet>(
            h.sum as f64 / per_second,
            h.count(),
            &buckets,
            None,
        )?;
    }
    Ok(())
}
