//! `sfu-gateway`: the load balancer Odoo talks to when there are many SFUs (ringsfu or the
//! upstream Node SFU). It verifies Odoo's token with its own key, picks an SFU (health, region,
//! load, stickiness), re-signs the claims with that SFU's key and forwards; failures move on to
//! the next SFU; disconnects go to the SFU holding each channel. See docs/gateway.md.
//!
//! Sans-IO pieces, each with its own tests: [`selection`] (filter, region, score), [`breaker`],
//! [`health`], [`placement`], [`geo`], composed by [`registry`]. Drivers: [`monitor`] (polling),
//! [`forward`] (HTTP calls with failover, [`sfu_client`] for `/v1/channel`), [`routes`] and [`server`] (axum/hyper), [`config`],
//! [`register`] (self-registered SFUs), [`shared`] (state shared by several gateways in Redis).

pub mod breaker;
pub mod config;
pub mod forward;
pub mod geo;
pub mod health;
pub mod metrics;
pub mod monitor;
pub mod placement;
pub mod register;
pub mod registry;
pub mod routes;
pub mod selection;
pub mod sfu_client;
pub mod shared;
pub mod state;

pub use config::{Args, GatewayConfig};
pub use state::Gateway;

use ringsfu_common::http_listener;
use std::net::SocketAddr;
use std::time::{Duration, Instant};
use tokio::signal::unix::{Signal, SignalKind, signal};
use tokio::sync::watch;

/// Runs the gateway until SIGTERM/SIGINT; SIGHUP reloads the SFU list. Errors are start-up failures.
pub async fn run(config: GatewayConfig) -> Result<(), String> {
    for warning in &config.warnings {
        tracing::warn!("{warning}");
    }
    let listener =
        http_listener::bind(SocketAddr::new(config.bind, config.port), "SFU_GATEWAY_BIND/SFU_GATEWAY_PORT").await?;
    let addr = listener.local_addr().map_err(|e| e.to_string())?;
    let id = config.shared.gateway_id.clone().unwrap_or_else(|| format!("{}:{}", hostname(), addr.port()));
    let gw = Gateway::new(&config, id)?;
    for node in &config.fleet.nodes {
        tracing::info!(sfu = %node.address, region = node.region.as_deref().unwrap_or("-"), "SFU configured");
    }
    if config.shared.redis_url.is_some() {
        tracing::info!(gateway = %gw.id, "sharing placements and registrations through Redis");
        recover_redis(&gw).await;
        tokio::spawn(watch_redis(gw.clone()));
    }
    // One round before announcing: a gateway that says it is ready knows which SFUs answer.
    monitor::poll_round(&gw).await;
    tokio::spawn(monitor::run(gw.clone()));

    // Handlers are installed before the ready line, so a signal right after it is not lost.
    let mut signals = Signals::install().map_err(|e| format!("cannot install signal handlers: {e}"))?;
    let (stop, stopped) = watch::channel(false);
    let limit = http_listener::Limit {
        max_connections: config.max_connections,
        setting: "SFU_GATEWAY_MAX_CONNECTIONS",
        // Its callers are Odoo servers, few addresses with many workers each: no per-address cap.
        per_address: 0,
        per_address_setting: "",
        exempt: Vec::new(),
    };
    let server = tokio::spawn(http_listener::serve(listener, routes::app(gw.clone()), limit, stopped));
    tracing::info!(http = %addr, sfus = config.fleet.nodes.len(), healthy = gw.registry().is_ready(), "sfu-gateway listening");
    println!("sfu-gateway ready http={addr}");

    while let Wanted::Reload = signals.next().await {
        reload(&gw);
    }
    tracing::info!("stopping: finishing requests in flight");
    let _ = stop.send(true);
    let _ = server.await;
    tracing::info!("stopped");
    Ok(())
}

/// The machine's name, for the default gateway id.
fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_string())
        .ok()
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "sfu-gateway".into())
}

/// Tries Redis twice a second while it is marked down.
async fn watch_redis(gw: Gateway) {
    loop {
        tokio::time::sleep(Duration::from_millis(500)).await;
        recover_redis(&gw).await;
    }
}

/// When Redis answers again: re-write this gateway's placements, adopting those another gateway
/// made meanwhile.
async fn recover_redis(gw: &Gateway) {
    let Some(report) = gw.shared.recover(|| gw.registry().placements_snapshot(Instant::now())).await else { return };
    {
        let mut registry = gw.registry();
        let now = Instant::now();
        for (issuer, winner) in &report.issuer_conflicts {
            registry.adopt(issuer, winner, now);
        }
        registry.adopt_channels(&report.channel_conflicts, now);
    }
    let conflicts = report.issuer_conflicts.len() + report.channel_conflicts.len();
    if report.interrupted {
        tracing::warn!(written = report.written, "Redis failed again during the reconciliation");
    } else {
        tracing::info!(
            written = report.written,
            conflicts,
            "Redis reachable: this gateway's placements are written there (another gateway's placement wins a conflict)"
        );
    }
}

fn reload(gw: &Gateway) {
    match gw.reload() {
        Ok((summary, warnings)) => {
            for warning in warnings {
                tracing::warn!("{warning}");
            }
            gw.metrics.reloads.get_or_create(&metrics::ResultLabels { result: "ok" }).inc();
            tracing::info!(added = summary.added, removed = summary.removed, kept = summary.kept, "SFU list reloaded");
        }
        Err(e) => {
            gw.metrics.reloads.get_or_create(&metrics::ResultLabels { result: "failed" }).inc();
            tracing::error!(error = %e, "reload refused; keeping the running SFU list");
        }
    }
}

enum Wanted {
    Reload,
    Stop,
}

struct Signals {
    hangup: Signal,
    terminate: Signal,
    interrupt: Signal,
}

impl Signals {
    fn install() -> std::io::Result<Signals> {
        Ok(Signals {
            hangup: signal(SignalKind::hangup())?,
            terminate: signal(SignalKind::terminate())?,
            interrupt: signal(SignalKind::interrupt())?,
        })
    }

    async fn next(&mut self) -> Wanted {
        tokio::select! {
            _ = self.hangup.recv() => Wanted::Reload,
            _ = self.terminate.recv() => Wanted::Stop,
            _ = self.interrupt.recv() => Wanted::Stop,
        }
    }
}
