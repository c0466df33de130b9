//! Start-up and shutdown of a `ringsfu` process: shards, control plane, signals.

use crate::config::Config;
use crate::control::AppState;
use crate::control::registration;
use crate::runtime::shard::{self, ControlEvent, ShardHandle, ShardMessage, ShardSpec};
use ringsfu_common::announcement;
use ringsfu_common::auth::{self, Key};
use ringsfu_common::caller::{self, ProxyTrust};
use ringsfu_common::http_listener;
use ringsfu_core::sfu::{Command, Limits, SfuSettings};
use serde_json::json;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use tokio::sync::mpsc;

/// Starts everything and runs until a signal ends the drain. Errors are start-up failures.
pub async fn run(config: Config) -> Result<(), String> {
    let settings = Arc::new(SfuSettings::new(&Limits {
        audio_codecs: config.audio_codecs.clone(),
        video_codecs: config.video_codecs.clone(),
        channel_size: config.channel_size,
        max_bitrate_in: config.max_bitrate_in,
        max_bitrate_out: config.max_bitrate_out,
        max_video_bitrate: config.max_video_bitrate,
        own_audio_egress: config.own_audio_egress,
        own_video_egress: config.own_video_egress,
        own_ingress: config.own_ingress,
        consent_timeout: config.consent_timeout,
        rtc_tcp: config.rtc_tcp,
    }));
    let (control_tx, mut control_rx) = mpsc::unbounded_channel();
    let cpus = cpus_for_shards(config.num_workers, config.pin_shards);
    let mut shards: Vec<ShardHandle> = Vec::new();
    let mut threads = Vec::new();
    for index in 0..config.num_workers {
        let spec = ShardSpec {
            index,
            bind: SocketAddr::new(config.rtc_interface, config.shard_port(index)),
            public_ip: config.public_ip,
            cpu: cpus.get(index).copied().flatten(),
            tcp: config.rtc_tcp.then_some(shard::TcpSettings {
                max_connections: config.rtc_tcp_max_connections,
                idle_timeout: config.rtc_tcp_idle_timeout,
            }),
        };
        match shard::start(spec, settings.clone(), control_tx.clone()) {
            Ok((handle, thread)) => {
                shards.push(handle);
                threads.push(thread);
            }
            Err(e) => {
                stop_shards(&shards, threads);
                return Err(e.to_string());
            }
        }
    }
    // Each shard relays to the others' parts of a spread channel (docs/cross-shard.md).
    let doorbells: Vec<_> = shards.iter().map(ShardHandle::doorbell).collect();
    for (shard, links) in shards.iter().zip(crate::runtime::relay::links(&doorbells)) {
        shard.post(ShardMessage::Links(Box::new(links)));
    }
    let listener =
        match http_listener::bind(SocketAddr::new(config.http_interface, config.port), "HTTP_INTERFACE/PORT").await {
            Ok(l) => l,
            Err(e) => {
                stop_shards(&shards, threads);
                return Err(e);
            }
        };
    let http_addr = listener.local_addr().map_err(|e| e.to_string())?;
    let public_host = caller::host_port(config.public_ip, http_addr.port());
    // A registered SFU's key and load secret are derived from its URL, known once bound.
    let mut config = config;
    let registration_url = config.registration.clone().map(|r| {
        let url = r.advertise_url.unwrap_or_else(|| format!("http://{public_host}"));
        config.auth_key = announcement::derive_sfu_key(&r.secret, &url);
        config.load_secret = Some(announcement::derive_load_secret(&r.secret, &url));
        url
    });
    let state = AppState::new(config.clone(), public_host.clone(), shards.clone());

    let sampler_state = state.clone();
    tokio::spawn(async move {
        let s = sampler_state.clone();
        sampler_state.load.run(s.shards.clone(), s.config.max_sessions, move || s.is_draining()).await;
    });
    let registrar = match (&config.registration, registration_url) {
        (Some(settings), Some(url)) => {
            let s = state.clone();
            Some(registration::start(settings.clone(), url, config.max_sessions as u64, move || s.is_draining()))
        }
        _ => None,
    };
    let directory_state = state.clone();
    tokio::spawn(async move {
        while let Some(event) = control_rx.recv().await {
            match event {
                ControlEvent::ChannelClosed { channel, shard } => {
                    directory_state.directory.part_closed(&channel, shard)
                }
            }
        }
    });

    // Handlers are installed before the ready line, so a signal right after it drains.
    let mut signals = Signals::install();
    announce(&config, http_addr, &public_host, &shards);
    let (stop_http, http_stopped) = tokio::sync::watch::channel(false);
    // Behind proxies every client shares the proxy's address: the per-address cap spares the
    // listed proxies, and is off with PROXY=1 alone (where only the proxy may reach the port).
    let (per_address, exempt) = match &config.proxy {
        ProxyTrust::Nobody => (config.max_connections_per_address, Vec::new()),
        ProxyTrust::Anyone => (0, Vec::new()),
        ProxyTrust::Only(nets) => (config.max_connections_per_address, nets.clone()),
    };
    let limit = http_listener::Limit {
        max_connections: config.max_connections,
        setting: "MAX_CONNECTIONS",
        per_address,
        per_address_setting: "MAX_CONNECTIONS_PER_ADDRESS",
        exempt,
    };
    let server =
        tokio::spawn(http_listener::serve(listener, crate::control::routes::app(state.clone()), limit, http_stopped));

    signals.next().await;
    state.draining.store(true, Ordering::Relaxed);
    if let Some(registrar) = &registrar {
        registrar.announce_now();
    }
    tracing::info!(
        grace_seconds = config.drain_grace.as_secs(),
        "draining: no new channels; closing sessions after the grace period"
    );
    tokio::select! {
        _ = tokio::time::sleep(config.drain_grace) => {}
        _ = signals.next() => tracing::info!("second signal: closing now"),
    }
    for shard in &shards {
        let _ = tokio::time::timeout(Duration::from_secs(2), shard.request(Command::CloseAll)).await;
    }
    // Let WebSocket tasks send their close frames.
    tokio::time::sleep(Duration::from_millis(200)).await;
    let _ = stop_http.send(true);
    if tokio::time::timeout(Duration::from_secs(2), server).await.is_err() {
        tracing::warn!("HTTP requests still in flight at exit");
    }
    stop_shards(&shards, threads);
    tracing::info!("stopped");
    Ok(())
}

fn stop_shards(shards: &[ShardHandle], threads: Vec<std::thread::JoinHandle<()>>) {
    for s in shards {
        s.post(ShardMessage::Stop);
    }
    for t in threads {
        let _ = t.join();
    }
}

/// The CPU each shard is pinned to (`runtime::cpu::shard_cpus`), or none.
fn cpus_for_shards(count: usize, pin: bool) -> Vec<Option<usize>> {
    let cpus = if pin { crate::runtime::cpu::shard_cpus(count) } else { Vec::new() };
    if cpus.is_empty() {
        return vec![None; count];
    }
    cpus.into_iter().map(Some).collect()
}

/// SIGTERM and SIGINT.
struct Signals {
    term: tokio::signal::unix::Signal,
    int: tokio::signal::unix::Signal,
}

impl Signals {
    fn install() -> Signals {
        use tokio::signal::unix::{SignalKind, signal};
        Signals {
            term: signal(SignalKind::terminate()).expect("installing a SIGTERM handler"),
            int: signal(SignalKind::interrupt()).expect("installing a SIGINT handler"),
        }
    }

    async fn next(&mut self) {
        tokio::select! {
            _ = self.term.recv() => {}
            _ = self.int.recv() => {}
        }
    }
}

/// The start-up lines: a machine-readable `ready` line on stdout, for a development setup the
/// generated key and an example request, and the test-call page's URL when it is served.
fn announce(config: &Config, http: SocketAddr, public_host: &str, shards: &[ShardHandle]) {
    let rtc: Vec<String> = shards.iter().map(|s| s.bound.to_string()).collect();
    tracing::info!(%http, public = %public_host, shards = shards.len(), rtc = %rtc.join(","), "ringsfu listening");
    if !config.public_ip_configured {
        tracing::warn!(
            "PUBLIC_IP is not set: announcing {}; browsers on other machines cannot reach this server",
            config.public_ip
        );
    }
    if config.development {
        let key = config.auth_key.to_base64();
        let token = example_token(&config.auth_key);
        println!();
        println!("  ringsfu DEVELOPMENT SETUP: no AUTH_KEY was given, so a random one was generated.");
        println!("  Do not use this for real calls; set AUTH_KEY (and PUBLIC_IP) as for the upstream SFU.");
        println!();
        println!("  AUTH_KEY={key}");
        println!();
        println!("  Try it (the token is valid for 24 hours):");
        println!("  curl -H 'Authorization: Bearer {token}' http://{http}/v1/channel");
        println!();
    }
    if config.demo {
        println!("test call: http://{public_host}/demo");
    }
    println!("ringsfu ready http={http} rtc={}", rtc.join(","));
}

fn example_token(key: &Key) -> String {
    let now = SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0);
    let claims = json!({"iss": "http://localhost:8069:channel:1", "exp": now + 86_400});
    auth::sign(claims.as_object().expect("a JSON object"), key)
}
