//! `/metrics` for the gateway, in the Prometheus text format: events are counted as they happen,
//! per-SFU figures are read from the registry at scrape time.

use super::breaker::BreakerState;
use super::placement::NodeKey;
use super::registry::Registry;
use super::shared::RedisMetrics;
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{
    DescriptorEncoder, EncodeLabelSet, EncodeLabelValue, EncodeMetric, LabelValueEncoder,
};
use prometheus_client::metrics::MetricType;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::registry::Registry as MetricRegistry;
use std::sync::{Arc, Mutex};
use std::time::Instant;

/// Labels are built on every request: borrowed or shared text, never a new `String`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RouteLabels {
    pub route: &'static str,
    pub status: u16,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ResultLabels {
    pub result: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct NodeLabels {
    pub node: Address,
    pub outcome: &'static str,
}

/// An SFU's address as a label value: the registry's shared string, not a copy.
#[derive(Clone, Debug, Hash, PartialEq, Eq)]
pub struct Address(pub NodeKey);

impl EncodeLabelValue for Address {
    fn encode(&self, encoder: &mut LabelValueEncoder) -> Result<(), std::fmt::Error> {
        std::fmt::Write::write_str(encoder, &self.0)
    }
}

pub struct GatewayMetrics {
    registry: MetricRegistry,
    pub http_requests: Family<RouteLabels, Counter>,
    /// `/v1/channel` answers: created, refused (an SFU's 4xx passed back), unavailable (503).
    pub channel_requests: Family<ResultLabels, Counter>,
    /// Forwarded `/v1/channel` attempts per SFU: created, refused, failed.
    pub attempts: Family<NodeLabels, Counter>,
    /// Attempts beyond the first of a request.
    pub failovers: Counter,
    /// Forwarded disconnects per SFU: ok, failed.
    pub disconnects: Family<NodeLabels, Counter>,
    /// Health polls per SFU: load, alive (no /v1/load), failed.
    pub polls: Family<NodeLabels, Counter>,
    /// SIGHUP reloads: ok, failed.
    pub reloads: Family<ResultLabels, Counter>,
    /// `POST /v1/register` answers: added, renewed, configured (a static SFU), refused.
    pub registrations: Family<ResultLabels, Counter>,
    /// Redis reachable (1) or not, and its failed calls.
    pub redis: RedisMetrics,
}

impl GatewayMetrics {
    pub fn new(fleet: Arc<Mutex<Registry>>) -> GatewayMetrics {
        let mut registry = MetricRegistry::default();
        let http_requests = Family::<RouteLabels, Counter>::default();
        registry.register("sfu_gateway_http_requests", "HTTP requests by route and status", http_requests.clone());
        let channel_requests = Family::<ResultLabels, Counter>::default();
        registry.register("sfu_gateway_channel_requests", "/v1/channel answers by result", channel_requests.clone());
        let attempts = Family::<NodeLabels, Counter>::default();
        registry.register("sfu_gateway_channel_attempts", "/v1/channel requests sent to each SFU", attempts.clone());
        let failovers = Counter::default();
        registry.register("sfu_gateway_failovers", "Channel attempts beyond the first of a request", failovers.clone());
        let disconnects = Family::<NodeLabels, Counter>::default();
        registry.register(
            "sfu_gateway_disconnect_forwards",
            "/v1/disconnect parts sent to each SFU",
            disconnects.clone(),
        );
        let polls = Family::<NodeLabels, Counter>::default();
        registry.register("sfu_gateway_health_polls", "Health polls of each SFU by outcome", polls.clone());
        let reloads = Family::<ResultLabels, Counter>::default();
        registry.register("sfu_gateway_reloads", "SIGHUP reloads of the SFU list", reloads.clone());
        let registrations = Family::<ResultLabels, Counter>::default();
        registry.register("sfu_gateway_registrations", "SFU self-registrations by result", registrations.clone());
        let redis = RedisMetrics::default();
        registry.register(
            "sfu_gateway_redis_up",
            "1 while the shared Redis answers (0 also when unused)",
            redis.up.clone(),
        );
        registry.register("sfu_gateway_redis_errors", "Redis calls that failed or timed out", redis.errors.clone());
        registry.register_collector(Box::new(FleetCollector { fleet }));
        GatewayMetrics {
            registry,
            http_requests,
            channel_requests,
            attempts,
            failovers,
            disconnects,
            polls,
            reloads,
            registrations,
            redis,
        }
    }

    pub fn render(&self) -> String {
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, &self.registry).expect("writing to a String cannot fail");
        out
    }
}

struct FleetCollector {
    fleet: Arc<Mutex<Registry>>,
}

impl std::fmt::Debug for FleetCollector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("FleetCollector")
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct NodeLabel {
    node: String,
    region: String,
}

impl Collector for FleetCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let figures = self.fleet.lock().unwrap_or_else(|p| p.into_inner()).figures(Instant::now());
        let label =
            |f: &super::registry::NodeFigures| NodeLabel { node: f.address.to_string(), region: f.region.clone() };
        macro_rules! gauge {
            ($name:literal, $help:literal, $value:expr) => {{
                let mut m = encoder.encode_descriptor($name, $help, None, MetricType::Gauge)?;
                for f in &figures {
                    let value: Option<f64> = $value(f);
                    if let Some(v) = value {
                        ConstGauge::new(v).encode(m.encode_family(&label(f))?)?;
                    }
                }
            }};
        }
        type F = super::registry::NodeFigures;
        gauge!("sfu_gateway_node_healthy", "1 when the SFU is healthy.", |f: &F| Some(f64::from(u8::from(f.healthy))));
        gauge!("sfu_gateway_node_breaker_state", "Circuit breaker: 0 closed, 1 half-open, 2 open.", |f: &F| Some(
            match f.breaker {
                BreakerState::Closed => 0.0,
                BreakerState::HalfOpen => 1.0,
                BreakerState::Open => 2.0,
            }
        ));
        gauge!("sfu_gateway_node_sessions", "Sessions the SFU last reported.", |f: &F| f.sessions.map(|s| s as f64));
        gauge!(
            "sfu_gateway_node_max_sessions",
            "Sessions the SFU takes before it counts as full (configured, else reported).",
            |f: &F| f.max_sessions.map(|s| s as f64)
        );
        gauge!("sfu_gateway_node_draining", "1 when the SFU reported it is draining.", |f: &F| Some(f64::from(
            u8::from(f.draining)
        )));
        gauge!("sfu_gateway_node_response_seconds", "Duration of the last successful health poll.", |f: &F| f
            .response_time
            .map(|d| d.as_secs_f64()));
        gauge!("sfu_gateway_node_placements", "Issuers placed on the SFU (sticky, unexpired).", |f: &F| Some(
            f.placements as f64
        ));
        gauge!("sfu_gateway_node_score", "Selection score (lower is chosen first).", |f: &F| Some(f.score));
        Ok(())
    }
}
