//! Self-registration with sfu-gateways (`GATEWAY_URL`): at start-up and then every heartbeat,
//! ringsfu tells each gateway its URL, region, capacity and whether it is draining, in a short-lived
//! HS256 token signed with the registration secret (`ringsfu_common::announcement`, which the
//! gateway verifies with). On SIGTERM it says `draining` at once.

use ringsfu_common::announcement::{Announcement, sign_announcement};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use tokio::sync::Notify;

/// Time limit of one registration request.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(2);

/// `GATEWAY_*` settings of a ringsfu that registers itself.
#[derive(Debug, Clone, PartialEq)]
pub struct RegistrationSettings {
    /// Gateway base URLs, without a trailing slash.
    pub gateways: Vec<String>,
    pub secret: String,
    pub heartbeat: Duration,
    pub region: Option<String>,
    /// The URL gateways reach this SFU at; default `http://PUBLIC_IP:PORT`.
    pub advertise_url: Option<String>,
}

fn unix_now() -> f64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs_f64()).unwrap_or(0.0)
}

/// Wakes the registration task at once (SIGTERM: the gateways must stop sending channels now).
#[derive(Clone, Default)]
pub struct Registrar {
    wake: Arc<Notify>,
}

impl Registrar {
    pub fn announce_now(&self) {
        self.wake.notify_one();
    }
}

/// Starts the heartbeat task: every `heartbeat`, and whenever [`Registrar::announce_now`] is
/// called, POSTs the announcement to every gateway's `/v1/register`. `draining` is read each time.
pub fn start(
    settings: RegistrationSettings,
    url: String,
    capacity: u64,
    draining: impl Fn() -> bool + Send + 'static,
) -> Registrar {
    let registrar = Registrar::default();
    let wake = registrar.wake.clone();
    let id = uuid::Uuid::new_v4().to_string();
    tracing::info!(%url, gateways = %settings.gateways.join(","), "registering with the gateways");
    tokio::spawn(async move {
        let client = match reqwest::Client::builder().no_proxy().timeout(REQUEST_TIMEOUT).build() {
            Ok(c) => c,
            Err(e) => {
                tracing::error!(error = %e, "cannot build the HTTP client for gateway registration");
                return;
            }
        };
        // Whether the last attempt with each gateway worked: log changes, not every heartbeat.
        let mut ok: Vec<Option<bool>> = vec![None; settings.gateways.len()];
        loop {
            let announcement = Announcement {
                url: url.clone(),
                region: settings.region.clone(),
                capacity,
                draining: draining(),
                id: id.clone(),
            };
            let token = sign_announcement(&announcement, &settings.secret, unix_now() as u64);
            let sends = settings.gateways.iter().map(|gateway| {
                let request = client.post(format!("{gateway}/v1/register")).bearer_auth(&token).send();
                async move {
                    match request.await {
                        Ok(r) if r.status().is_success() => Ok(()),
                        Ok(r) => Err(format!("answered {}", r.status())),
                        Err(e) => Err(e.to_string()),
                    }
                }
            });
            let results = futures_util::future::join_all(sends).await;
            for ((gateway, result), was_ok) in settings.gateways.iter().zip(results).zip(ok.iter_mut()) {
                match result {
                    Ok(()) if *was_ok != Some(true) => {
                        tracing::info!(%gateway, draining = announcement.draining, "registered with the gateway");
                        *was_ok = Some(true);
                    }
                    Err(reason) if *was_ok != Some(false) => {
                        tracing::warn!(%gateway, %reason, "registration with the gateway failed; retrying each heartbeat");
                        *was_ok = Some(false);
                    }
                    _ => {}
                }
            }
            tokio::select! {
                _ = tokio::time::sleep(settings.heartbeat) => {}
                _ = wake.notified() => {}
            }
        }
    });
    registrar
}
