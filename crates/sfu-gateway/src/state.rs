//! What every handler and task of the gateway shares: its key, the HTTP client to the SFUs, the
//! registry behind one lock (never held across an await), the state shared with other gateways
//! and the metrics.

use super::config::{ConfigError, FleetSources, GatewayConfig};
use super::metrics::GatewayMetrics;
use super::registry::{Registry, ReloadSummary};
use super::sfu_client::SfuClient;
use super::shared::Shared;
use ringsfu_common::auth::Key;
use std::collections::HashSet;
use std::net::IpAddr;
use std::ops::Deref;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;
use tokio::sync::Notify;

const USER_AGENT: &str = concat!("sfu-gateway/", env!("CARGO_PKG_VERSION"));
/// Idle connections to an SFU are closed after this.
const IDLE_TIMEOUT: Duration = Duration::from_secs(30);

#[derive(Clone)]
pub struct Gateway(Arc<Inner>);

pub struct Inner {
    pub key: Key,
    pub trust_proxy: bool,
    pub client: reqwest::Client,
    /// `/v1/channel` to plain-http SFUs: the hot path, without reqwest's layers.
    pub sfu_client: SfuClient,
    pub registry: Arc<Mutex<Registry>>,
    pub metrics: GatewayMetrics,
    pub sources: FleetSources,
    /// Wakes the monitor early (a reload added nodes that should be polled now).
    pub wake_monitor: Notify,
    /// Placements and registrations shared with other gateways (Redis), or nothing.
    pub shared: Shared,
    /// This gateway's name among several.
    pub id: String,
    /// `SFU_GATEWAY_REGISTRATION_SECRET` and TTL, when SFUs may register themselves.
    pub registration: Option<(String, Duration)>,
    /// The other gateways' views of the fleet, as last read.
    pub peers: Mutex<Vec<serde_json::Value>>,
    /// Refused registrations already logged: (source, reason), logged once each.
    pub refusals_logged: Mutex<HashSet<(IpAddr, String)>>,
}

impl Deref for Gateway {
    type Target = Inner;
    fn deref(&self) -> &Inner {
        &self.0
    }
}

impl Gateway {
    pub fn new(config: &GatewayConfig, id: String) -> Result<Gateway, String> {
        let client = reqwest::Client::builder()
            // SFUs are reached directly: a system proxy setting must not reroute them.
            .no_proxy()
            .tcp_nodelay(true)
            .pool_idle_timeout(IDLE_TIMEOUT)
            .user_agent(USER_AGENT)
            .build()
            .map_err(|e| format!("cannot build the HTTP client: {e}"))?;
        let registry = Arc::new(Mutex::new(Registry::new(config.fleet.clone())));
        let metrics = GatewayMetrics::new(registry.clone());
        let settings = &config.shared;
        let shared = Shared::new(settings.redis_url.as_deref(), settings.redis_timeout, metrics.redis.clone())?;
        Ok(Gateway(Arc::new(Inner {
            key: config.key.clone(),
            trust_proxy: config.trust_proxy,
            client,
            sfu_client: SfuClient::new(IDLE_TIMEOUT, USER_AGENT),
            metrics,
            registry,
            sources: config.sources.clone(),
            wake_monitor: Notify::new(),
            shared,
            id,
            registration: settings.registration_secret.clone().map(|s| (s, settings.registration_ttl)),
            peers: Mutex::new(Vec::new()),
            refusals_logged: Mutex::new(HashSet::new()),
        })))
    }

    /// The registry, locked. A panic while it was held is a bug, but the data is still the best
    /// the gateway has: keep serving with it.
    pub fn registry(&self) -> MutexGuard<'_, Registry> {
        self.0.registry.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Re-reads the SFU list and tuning sections; on error the running fleet stays as it was.
    pub fn reload(&self) -> Result<(ReloadSummary, Vec<String>), ConfigError> {
        let (fleet, warnings) = self.sources.load()?;
        let summary = self.registry().replace_fleet(fleet);
        self.wake_monitor.notify_one();
        Ok((summary, warnings))
    }
}
