//! What every handler and task of the gateway shares: its key, the HTTP client to the SFUs, the
//! registry behind one lock (never held across an await) and the metrics.

use super::config::{ConfigError, FleetSources, GatewayConfig};
use super::metrics::GatewayMetrics;
use super::registry::{Registry, ReloadSummary};
use crate::auth::Key;
use std::ops::Deref;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;
use tokio::sync::Notify;

#[derive(Clone)]
pub struct Gateway(Arc<Inner>);

pub struct Inner {
    pub key: Key,
    pub trust_proxy: bool,
    pub client: reqwest::Client,
    pub registry: Arc<Mutex<Registry>>,
    pub metrics: GatewayMetrics,
    pub sources: FleetSources,
    /// Wakes the monitor early (a reload added nodes that should be polled now).
    pub wake_monitor: Notify,
}

impl Deref for Gateway {
    type Target = Inner;
    fn deref(&self) -> &Inner {
        &self.0
    }
}

impl Gateway {
    pub fn new(config: &GatewayConfig) -> Result<Gateway, String> {
        let client = reqwest::Client::builder()
            // SFUs are reached directly: a system proxy setting must not reroute them.
            .no_proxy()
            .tcp_nodelay(true)
            .pool_idle_timeout(Duration::from_secs(30))
            .user_agent(concat!("sfu-gateway/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| format!("cannot build the HTTP client: {e}"))?;
        let registry = Arc::new(Mutex::new(Registry::new(config.fleet.clone())));
        Ok(Gateway(Arc::new(Inner {
            key: config.key.clone(),
            trust_proxy: config.trust_proxy,
            client,
            metrics: GatewayMetrics::new(registry.clone()),
            registry,
            sources: config.sources.clone(),
            wake_monitor: Notify::new(),
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
