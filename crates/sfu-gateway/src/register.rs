//! SFUs that join the fleet by themselves: `POST /v1/register` (ringsfu with `GATEWAY_URL`), and
//! the registrations other gateways received, read from the shared store each poll round.
//!
//! The token is signed with `SFU_GATEWAY_REGISTRATION_SECRET` and valid for at most a minute
//! (`control::registration`). The SFU's key and load secret are derived from that secret and its
//! URL, never sent. A registered SFU is polled at once and takes channels after its first good
//! poll; it leaves when its registration is not renewed within the TTL, and takes no new channel
//! from the moment it announces `draining`. A static SFU at the same address wins.

use super::config::{NodeConfig, normalize_address};
use super::geo;
use super::registry::Registration;
use super::state::Gateway;
use axum::Json;
use axum::extract::{ConnectInfo, State};
use axum::http::{HeaderMap, StatusCode};
use ringsfu_common::announcement::{Announcement, derive_load_secret, derive_sfu_key, verify_announcement};
use ringsfu_common::api_error::ApiError;
use ringsfu_common::token::bearer;
use serde_json::{Value, json};
use std::net::{IpAddr, SocketAddr};
use std::time::{Instant, SystemTime, UNIX_EPOCH};

/// Distinct refusals logged at most (the rest are only counted).
const MAX_LOGGED_REFUSALS: usize = 1024;

/// The fleet entry of an SFU that announced itself.
pub fn node_config(announcement: &Announcement, secret: &str) -> Result<NodeConfig, String> {
    let address = normalize_address(&announcement.url).map_err(|e| format!("url: expected {e}"))?;
    if *address != announcement.url {
        return Err(format!("url: expected a base URL without a trailing slash, such as {address}"));
    }
    let region = announcement.region.clone().filter(|r| !r.trim().is_empty());
    Ok(NodeConfig {
        coordinates: region.as_deref().and_then(geo::region),
        region,
        key: derive_sfu_key(secret, &announcement.url),
        max_sessions: (announcement.capacity > 0).then_some(announcement.capacity),
        weight: 1.0,
        load_secret: Some(derive_load_secret(secret, &announcement.url)),
        // ringsfu reports its load; this only matters if it stops doing so.
        unknown_load: 0.5,
        address,
    })
}

pub async fn handle(
    State(gw): State<Gateway>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
) -> Result<Json<Value>, ApiError> {
    let Some((secret, ttl)) = &gw.registration else {
        return Err(refuse(&gw, peer.ip(), StatusCode::FORBIDDEN, "registration is off on this gateway".into()));
    };
    let token =
        bearer(&headers).map_err(|e| refuse(&gw, peer.ip(), StatusCode::UNAUTHORIZED, e.message.into_owned()))?;
    let now = SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs_f64()).unwrap_or(0.0);
    let announcement = verify_announcement(token, secret, now)
        .map_err(|e| refuse(&gw, peer.ip(), StatusCode::UNAUTHORIZED, e.to_string()))?;
    let config = node_config(&announcement, secret).map_err(|e| refuse(&gw, peer.ip(), StatusCode::BAD_REQUEST, e))?;
    // Shared first: a gateway reading the store after this answer sees the same state.
    gw.shared.register(&announcement, *ttl).await;
    let (outcome, was_draining) = {
        let mut registry = gw.registry();
        let was_draining = registry.announced_draining(&config.address);
        (registry.register(config, &announcement.id, announcement.draining, Instant::now() + *ttl), was_draining)
    };
    log_registration(&announcement, outcome, was_draining, "");
    if outcome == Registration::Added {
        gw.wake_monitor.notify_one();
    }
    let label = match outcome {
        Registration::Added => "added",
        Registration::Renewed => "renewed",
        Registration::Static => "configured",
    };
    gw.metrics.registrations.get_or_create(&super::metrics::ResultLabels { result: label }).inc();
    Ok(Json(json!({"gateway": gw.id, "status": label, "ttlSeconds": ttl.as_secs_f64()})))
}

fn log_registration(announcement: &Announcement, outcome: Registration, was_draining: Option<bool>, via: &str) {
    let sfu = &announcement.url;
    match outcome {
        Registration::Added => tracing::info!(
            %sfu,
            region = announcement.region.as_deref().unwrap_or("-"),
            capacity = announcement.capacity,
            draining = announcement.draining,
            "SFU registered{via}; it takes channels after its first good poll"
        ),
        Registration::Renewed if announcement.draining && was_draining == Some(false) => {
            tracing::info!(%sfu, "registered SFU is draining{via}: no new channels")
        }
        Registration::Renewed => tracing::trace!(%sfu, "registration renewed"),
        Registration::Static => tracing::debug!(%sfu, "a configured SFU registered itself; the configuration wins"),
    }
}

/// A refused registration: counted, logged once per source and reason.
fn refuse(gw: &Gateway, source: IpAddr, status: StatusCode, reason: String) -> ApiError {
    gw.metrics.registrations.get_or_create(&super::metrics::ResultLabels { result: "refused" }).inc();
    let mut logged = gw.refusals_logged.lock().unwrap_or_else(|p| p.into_inner());
    if logged.len() < MAX_LOGGED_REFUSALS && logged.insert((source, reason.clone())) {
        tracing::warn!(%source, %reason, "SFU registration refused");
    }
    ApiError::new(status, reason)
}

/// Takes in the registrations other gateways received, and drops the SFUs whose registration ran out.
pub async fn sync(gw: &Gateway) {
    if let Some((secret, _)) = &gw.registration
        && let Some(stored) = gw.shared.registrations().await
    {
        let now_ms = SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_millis() as u64).unwrap_or(0);
        let now = Instant::now();
        for entry in stored {
            let Ok(config) = node_config(&entry.announcement, secret) else { continue };
            let a = &entry.announcement;
            let (outcome, was_draining) = {
                let mut registry = gw.registry();
                let was_draining = registry.announced_draining(&config.address);
                (registry.register(config, &a.id, a.draining, now + entry.left(now_ms)), was_draining)
            };
            log_registration(a, outcome, was_draining, " (through another gateway)");
            if outcome == Registration::Added {
                gw.wake_monitor.notify_one();
            }
        }
    }
    for sfu in gw.registry().expire_registrations(Instant::now()) {
        tracing::warn!(%sfu, "registered SFU left: its registration was not renewed in time");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn announcement(url: &str) -> Announcement {
        Announcement { url: url.into(), region: Some("eu-west".into()), capacity: 40, draining: false, id: "p".into() }
    }

    #[test]
    fn a_registered_sfu_gets_derived_secrets_and_its_announced_figures() {
        let config = node_config(&announcement("http://10.0.0.5:8070"), "registration-secret-16").unwrap();
        assert_eq!(&*config.address, "http://10.0.0.5:8070");
        assert_eq!(config.key, derive_sfu_key("registration-secret-16", "http://10.0.0.5:8070"));
        assert_eq!(config.max_sessions, Some(40));
        assert_eq!(config.coordinates, geo::region("eu-west"));
        assert!(config.load_secret.is_some());
        for url in ["http://10.0.0.5:8070/", "ftp://x", "http://u:p@x:1", "x"] {
            assert!(node_config(&announcement(url), "registration-secret-16").is_err(), "{url}");
        }
    }
}
