//! ringsfu settings: CLI flags, environment (upstream names), an optional TOML file, defaults.
//!
//! Precedence: flag > environment > file > default. Every value, whatever its source, goes through
//! the same parser, so an invalid value is refused with one message naming the setting, where it
//! came from and what is accepted.

use crate::control::registration::RegistrationSettings;
use clap::Parser;
use ipnet::IpNet;
use ringsfu_common::announcement::MIN_SECRET_LEN;
use ringsfu_common::auth::Key;
use ringsfu_common::caller::ProxyTrust;
use ringsfu_common::logging::LogLevel;
use ringsfu_common::values;
use ringsfu_core::sfu::codecs::{AudioCodec, VideoCodec};
use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr};
use std::path::{Path, PathBuf};
use std::time::Duration;

/// Command-line flags; each also reads the environment variable upstream users already set.
#[derive(Parser, Debug, Default)]
#[command(name = "ringsfu", version, about = "Thread-per-core WebRTC SFU for Odoo Discuss")]
pub struct Args {
    /// TOML file with settings (keys are the lower-case setting names, e.g. `port = 8070`).
    #[arg(long, env = "RINGSFU_CONFIG")]
    pub config: Option<PathBuf>,
    /// Base64 key that signs Odoo's requests (lenient: either alphabet, padding optional).
    /// Unset: a development key is generated and printed.
    #[arg(long, env = "AUTH_KEY", hide_env_values = true)]
    pub auth_key: Option<String>,
    /// Address announced in ICE candidates and in channel URLs.
    #[arg(long, env = "PUBLIC_IP")]
    pub public_ip: Option<String>,
    /// HTTP and WebSocket port (0 = any free port).
    #[arg(long, env = "PORT")]
    pub port: Option<String>,
    /// Interface the HTTP listener binds.
    #[arg(long, env = "HTTP_INTERFACE")]
    pub http_interface: Option<String>,
    /// Interface the shards' UDP sockets bind.
    #[arg(long, env = "RTC_INTERFACE")]
    pub rtc_interface: Option<String>,
    /// Behind a reverse proxy: trust X-Forwarded-For/-Host/-Proto (any value but 0/false/no/off).
    #[arg(long, env = "PROXY")]
    pub proxy: Option<String>,
    /// Reverse proxies whose X-Forwarded-* headers count (addresses or CIDRs, comma-separated).
    #[arg(long, env = "TRUSTED_PROXIES")]
    pub trusted_proxies: Option<String>,
    /// Number of shards (one thread and UDP port each).
    #[arg(long, env = "NUM_WORKERS")]
    pub num_workers: Option<String>,
    /// First UDP port; shard i binds RTC_MIN_PORT + i (0 = any free port per shard).
    #[arg(long, env = "RTC_MIN_PORT")]
    pub rtc_min_port: Option<String>,
    /// Last UDP port the shards may use.
    #[arg(long, env = "RTC_MAX_PORT")]
    pub rtc_max_port: Option<String>,
    /// ICE over TCP: each shard also listens on TCP at its UDP port number (true/false).
    #[arg(long, env = "RTC_TCP")]
    pub rtc_tcp: Option<String>,
    /// ICE-TCP connections one shard keeps open; more are closed as they arrive.
    #[arg(long, env = "RTC_TCP_MAX_CONNECTIONS")]
    pub rtc_tcp_max_connections: Option<String>,
    /// Seconds an ICE-TCP connection may stay without completing ICE (or after its transport went).
    #[arg(long, env = "RTC_TCP_IDLE_TIMEOUT_SECONDS")]
    pub rtc_tcp_idle_timeout_seconds: Option<String>,
    /// Maximum sessions in one channel.
    #[arg(long, env = "CHANNEL_SIZE")]
    pub channel_size: Option<String>,
    /// Sessions of one channel a shard takes before the channel spreads to another (0: never).
    #[arg(long, env = "CHANNEL_SHARD_BUDGET")]
    pub channel_shard_budget: Option<String>,
    /// Maximum incoming bitrate per session transport, bit/s.
    #[arg(long, env = "MAX_BITRATE_IN")]
    pub max_bitrate_in: Option<String>,
    /// Maximum outgoing bitrate per session transport, bit/s.
    #[arg(long, env = "MAX_BITRATE_OUT")]
    pub max_bitrate_out: Option<String>,
    /// Top simulcast layer bitrate, bit/s.
    #[arg(long, env = "MAX_VIDEO_BITRATE")]
    pub max_video_bitrate: Option<String>,
    /// Comma-separated audio codecs (opus, PCMU, PCMA).
    #[arg(long, env = "AUDIO_CODECS")]
    pub audio_codecs: Option<String>,
    /// Comma-separated video codecs (VP8, VP9, H264, H264_1_2cb, H264_1_3ch).
    #[arg(long, env = "VIDEO_CODECS")]
    pub video_codecs: Option<String>,
    /// Log level: off, error, warn, info, debug, trace (upstream's none/verbose also work).
    #[arg(long, env = "LOG_LEVEL")]
    pub log_level: Option<String>,
    /// Log format: text or json.
    #[arg(long, env = "LOG_FORMAT")]
    pub log_format: Option<String>,
    /// Seconds between SIGTERM/SIGINT and closing the remaining sessions.
    #[arg(long, env = "DRAIN_GRACE_SECONDS")]
    pub drain_grace_seconds: Option<String>,
    /// Sessions this server accepts in total; `/v1/load` reports it as `maxSessions`.
    #[arg(long, env = "MAX_SESSIONS")]
    pub max_sessions: Option<String>,
    /// Shared secret required in the `X-Load-Secret` header of `/v1/load` (unset: open).
    #[arg(long, env = "LOAD_SECRET", hide_env_values = true)]
    pub load_secret: Option<String>,
    /// Requests per second each caller address may make to `/v1/channel` and WebSocket upgrades
    /// (0 = unlimited).
    #[arg(long, env = "RATE_LIMIT_PER_SECOND")]
    pub rate_limit_per_second: Option<String>,
    /// Burst size of that rate limit.
    #[arg(long, env = "RATE_LIMIT_BURST")]
    pub rate_limit_burst: Option<String>,
    /// Maximum simultaneous TCP connections (HTTP and WebSocket).
    #[arg(long, env = "MAX_CONNECTIONS")]
    pub max_connections: Option<String>,
    /// Simultaneous TCP connections from one address (IPv6: one /64); 0 = no cap.
    #[arg(long, env = "MAX_CONNECTIONS_PER_ADDRESS")]
    pub max_connections_per_address: Option<String>,
    /// Pin shard threads to cores (true/false).
    #[arg(long, env = "PIN_SHARDS")]
    pub pin_shards: Option<String>,
    /// Audio written and AES-GCM-sealed by ringsfu itself rather than by str0m (true/false).
    #[arg(long, env = "OWN_AUDIO_EGRESS")]
    pub own_audio_egress: Option<String>,
    /// Video written, sealed, retransmitted and bandwidth-estimated by ringsfu itself (true/false).
    #[arg(long, env = "OWN_VIDEO_EGRESS")]
    pub own_video_egress: Option<String>,
    /// Publishers' SRTP opened, and their streams answered (feedback, NACK, reports), by ringsfu itself (true/false).
    #[arg(long, env = "OWN_INGRESS")]
    pub own_ingress: Option<String>,
    /// Seconds between the bus PINGs that detect dead WebSocket peers (upstream: 60).
    #[arg(long, env = "PING_INTERVAL_SECONDS")]
    pub ping_interval_seconds: Option<String>,
    /// A session whose media transport lost ICE consent this long ago is closed (0 = never).
    #[arg(long, env = "CONSENT_TIMEOUT_SECONDS")]
    pub consent_timeout_seconds: Option<String>,
    /// Serve the test-call page `/demo` (true/false; default: on in the development setup only).
    #[arg(long, env = "DEMO")]
    pub demo: Option<String>,
    /// sfu-gateways to register with, comma-separated base URLs (unset: no self-registration).
    #[arg(long, env = "GATEWAY_URL")]
    pub gateway_url: Option<String>,
    /// The gateways' SFU_GATEWAY_REGISTRATION_SECRET; this SFU's key is derived from it.
    #[arg(long, env = "GATEWAY_REGISTRATION_SECRET", hide_env_values = true)]
    pub gateway_registration_secret: Option<String>,
    /// Seconds between two registrations (heartbeats) with each gateway.
    #[arg(long, env = "GATEWAY_HEARTBEAT_SECONDS")]
    pub gateway_heartbeat_seconds: Option<String>,
    /// Region announced to the gateways.
    #[arg(long, env = "GATEWAY_REGION")]
    pub gateway_region: Option<String>,
    /// The URL gateways reach this SFU at (default http://PUBLIC_IP:PORT).
    #[arg(long, env = "GATEWAY_ADVERTISE_URL")]
    pub gateway_advertise_url: Option<String>,
}

/// The resolved, validated configuration.
#[derive(Debug, Clone)]
pub struct Config {
    pub auth_key: Key,
    /// True when no key was configured and one was generated: a development setup.
    pub development: bool,
    pub public_ip: IpAddr,
    pub public_ip_configured: bool,
    pub port: u16,
    pub http_interface: IpAddr,
    pub rtc_interface: IpAddr,
    /// Whose `X-Forwarded-*` headers count (`PROXY`, `TRUSTED_PROXIES`).
    pub proxy: ProxyTrust,
    pub num_workers: usize,
    pub rtc_min_port: u16,
    pub rtc_max_port: u16,
    /// ICE-TCP on every shard's port (`RTC_TCP`).
    pub rtc_tcp: bool,
    pub rtc_tcp_max_connections: usize,
    pub rtc_tcp_idle_timeout: Duration,
    pub channel_size: usize,
    /// Sessions of one channel a shard takes before the channel spreads (0: never spreads).
    pub channel_shard_budget: usize,
    pub max_bitrate_in: u64,
    pub max_bitrate_out: u64,
    pub max_video_bitrate: u64,
    pub audio_codecs: Vec<AudioCodec>,
    pub video_codecs: Vec<VideoCodec>,
    pub log_level: LogLevel,
    pub log_json: bool,
    pub drain_grace: Duration,
    pub max_sessions: usize,
    pub load_secret: Option<String>,
    pub rate_limit_per_second: u32,
    pub rate_limit_burst: u32,
    pub max_connections: usize,
    pub max_connections_per_address: usize,
    pub pin_shards: bool,
    pub ping_interval: Duration,
    /// `None`: sessions are never closed for lost consent.
    pub consent_timeout: Option<Duration>,
    pub own_audio_egress: bool,
    pub own_video_egress: bool,
    pub own_ingress: bool,
    /// Serve the test-call page `/demo` and its join route.
    pub demo: bool,
    /// Self-registration with sfu-gateways (`GATEWAY_URL`): the key is then derived, see server.rs.
    pub registration: Option<RegistrationSettings>,
}

/// A refused setting: which one, from where, and what would be accepted.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("invalid {name} ({source_name}): {value:?} — expected {expected}")]
    Invalid { name: &'static str, source_name: String, value: String, expected: String },
    #[error("cannot read config file {path}: {reason}")]
    File { path: String, reason: String },
    #[error("{0}")]
    Inconsistent(String),
}

/// Where a raw value came from, for error messages.
#[derive(Debug, Clone, Copy)]
enum Origin {
    Flag,
    File,
}

struct Raw {
    value: String,
    origin: Origin,
    env: &'static str,
}

impl Raw {
    fn source_name(&self) -> String {
        match self.origin {
            Origin::Flag => format!("{} / --{}", self.env, self.env.to_ascii_lowercase().replace('_', "-")),
            Origin::File => format!("{} in the config file", self.env.to_ascii_lowercase()),
        }
    }
}

/// Setting names accepted in the TOML file, with their env names.
const SETTINGS: &[(&str, &str)] = &[
    ("auth_key", "AUTH_KEY"),
    ("public_ip", "PUBLIC_IP"),
    ("port", "PORT"),
    ("http_interface", "HTTP_INTERFACE"),
    ("rtc_interface", "RTC_INTERFACE"),
    ("proxy", "PROXY"),
    ("trusted_proxies", "TRUSTED_PROXIES"),
    ("num_workers", "NUM_WORKERS"),
    ("rtc_min_port", "RTC_MIN_PORT"),
    ("rtc_max_port", "RTC_MAX_PORT"),
    ("rtc_tcp", "RTC_TCP"),
    ("rtc_tcp_max_connections", "RTC_TCP_MAX_CONNECTIONS"),
    ("rtc_tcp_idle_timeout_seconds", "RTC_TCP_IDLE_TIMEOUT_SECONDS"),
    ("channel_size", "CHANNEL_SIZE"),
    ("channel_shard_budget", "CHANNEL_SHARD_BUDGET"),
    ("max_bitrate_in", "MAX_BITRATE_IN"),
    ("max_bitrate_out", "MAX_BITRATE_OUT"),
    ("max_video_bitrate", "MAX_VIDEO_BITRATE"),
    ("audio_codecs", "AUDIO_CODECS"),
    ("video_codecs", "VIDEO_CODECS"),
    ("log_level", "LOG_LEVEL"),
    ("log_format", "LOG_FORMAT"),
    ("drain_grace_seconds", "DRAIN_GRACE_SECONDS"),
    ("max_sessions", "MAX_SESSIONS"),
    ("load_secret", "LOAD_SECRET"),
    ("rate_limit_per_second", "RATE_LIMIT_PER_SECOND"),
    ("rate_limit_burst", "RATE_LIMIT_BURST"),
    ("max_connections", "MAX_CONNECTIONS"),
    ("max_connections_per_address", "MAX_CONNECTIONS_PER_ADDRESS"),
    ("pin_shards", "PIN_SHARDS"),
    ("own_audio_egress", "OWN_AUDIO_EGRESS"),
    ("own_video_egress", "OWN_VIDEO_EGRESS"),
    ("own_ingress", "OWN_INGRESS"),
    ("ping_interval_seconds", "PING_INTERVAL_SECONDS"),
    ("consent_timeout_seconds", "CONSENT_TIMEOUT_SECONDS"),
    ("demo", "DEMO"),
    ("gateway_url", "GATEWAY_URL"),
    ("gateway_registration_secret", "GATEWAY_REGISTRATION_SECRET"),
    ("gateway_heartbeat_seconds", "GATEWAY_HEARTBEAT_SECONDS"),
    ("gateway_region", "GATEWAY_REGION"),
    ("gateway_advertise_url", "GATEWAY_ADVERTISE_URL"),
];

/// Sessions per shard assumed when `MAX_SESSIONS` is not set.
pub const DEFAULT_SESSIONS_PER_SHARD: usize = 500;

struct Sources {
    file: BTreeMap<String, String>,
}

impl Sources {
    /// The raw value of one setting: the flag/env value if given, else the file's.
    fn pick(&self, flag_or_env: &Option<String>, file_key: &'static str) -> Option<Raw> {
        let env = SETTINGS
            .iter()
            .find(|(k, _)| *k == file_key)
            .map(|(_, e)| *e)
            .expect("every setting is listed in SETTINGS");
        if let Some(value) = flag_or_env {
            return Some(Raw { value: value.clone(), origin: Origin::Flag, env });
        }
        self.file.get(file_key).map(|value| Raw { value: value.clone(), origin: Origin::File, env })
    }
}

fn invalid(raw: &Raw, name: &'static str, expected: impl Into<String>) -> ConfigError {
    ConfigError::Invalid { name, source_name: raw.source_name(), value: raw.value.clone(), expected: expected.into() }
}

fn parse_num<T: std::str::FromStr + PartialOrd + std::fmt::Display + Copy>(
    raw: Option<Raw>,
    name: &'static str,
    min: T,
    max: T,
    default: T,
) -> Result<T, ConfigError> {
    let Some(raw) = raw else { return Ok(default) };
    values::parse_int_in(&raw.value, min, max).map_err(|expected| invalid(&raw, name, expected))
}

fn parse_bool(raw: Option<Raw>, name: &'static str, default: bool) -> Result<bool, ConfigError> {
    let Some(raw) = raw else { return Ok(default) };
    values::parse_bool(&raw.value).map_err(|expected| invalid(&raw, name, expected))
}

fn parse_ip(raw: Option<Raw>, name: &'static str) -> Result<Option<IpAddr>, ConfigError> {
    let Some(raw) = raw else { return Ok(None) };
    raw.value.trim().parse::<IpAddr>().map(Some).map_err(|_| invalid(&raw, name, "an IPv4 or IPv6 address"))
}

fn parse_list<T>(
    raw: Option<Raw>,
    name: &'static str,
    default: Vec<T>,
    parse: impl Fn(&str) -> Option<T>,
    accepted: &str,
) -> Result<Vec<T>, ConfigError>
where
    T: PartialEq,
{
    let Some(raw) = raw else { return Ok(default) };
    let mut out = Vec::new();
    for item in raw.value.split(',').map(str::trim).filter(|s| !s.is_empty()) {
        let Some(v) = parse(item) else {
            return Err(invalid(&raw, name, format!("a comma-separated list of {accepted}")));
        };
        if !out.contains(&v) {
            out.push(v);
        }
    }
    Ok(out)
}

fn read_file(path: &Path) -> Result<BTreeMap<String, String>, ConfigError> {
    let file_err = |reason: String| ConfigError::File { path: path.display().to_string(), reason };
    let text = std::fs::read_to_string(path).map_err(|e| file_err(e.to_string()))?;
    let table: toml::Table = text.parse().map_err(|e: toml::de::Error| file_err(e.message().to_string()))?;
    let mut out = BTreeMap::new();
    for (key, value) in table {
        if !SETTINGS.iter().any(|(k, _)| *k == key) {
            let known: Vec<&str> = SETTINGS.iter().map(|(k, _)| *k).collect();
            return Err(file_err(format!("unknown setting {key:?}; known settings: {}", known.join(", "))));
        }
        let text = match value {
            toml::Value::String(s) => s,
            toml::Value::Integer(i) => i.to_string(),
            toml::Value::Boolean(b) => b.to_string(),
            toml::Value::Float(f) => f.to_string(),
            toml::Value::Array(items) => items
                .iter()
                .map(|v| v.as_str().map(str::to_string).unwrap_or_else(|| v.to_string()))
                .collect::<Vec<_>>()
                .join(","),
            other => return Err(file_err(format!("{key}: unsupported value {other}"))),
        };
        out.insert(key, text);
    }
    Ok(out)
}

/// Shards by default: one per available core, leaving one for the control plane above two cores.
pub fn default_num_workers() -> usize {
    let cores = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1);
    if cores > 2 { cores - 1 } else { cores }
}

/// `GATEWAY_*` (see `control::registration`); `None` without `GATEWAY_URL`.
fn registration_settings(s: &Sources, args: &Args) -> Result<Option<RegistrationSettings>, ConfigError> {
    let http_url = |raw: &Raw, name: &'static str, text: &str| match reqwest::Url::parse(text) {
        Ok(url) if matches!(url.scheme(), "http" | "https") && url.host_str().is_some_and(|h| !h.is_empty()) => {
            Ok(text.trim_end_matches('/').to_string())
        }
        _ => Err(invalid(raw, name, "http:// or https:// base URLs")),
    };
    let Some(raw) = s.pick(&args.gateway_url, "gateway_url") else { return Ok(None) };
    let gateways = raw
        .value
        .split(',')
        .map(str::trim)
        .filter(|g| !g.is_empty())
        .map(|g| http_url(&raw, "GATEWAY_URL", g))
        .collect::<Result<Vec<_>, _>>()?;
    if gateways.is_empty() {
        return Ok(None);
    }
    let secret = s
        .pick(&args.gateway_registration_secret, "gateway_registration_secret")
        .map(|r| r.value)
        .filter(|v| v.len() >= MIN_SECRET_LEN)
        .ok_or_else(|| {
            ConfigError::Inconsistent(format!(
                "GATEWAY_URL needs GATEWAY_REGISTRATION_SECRET, the gateways' SFU_GATEWAY_REGISTRATION_SECRET \
                 (at least {MIN_SECRET_LEN} characters)"
            ))
        })?;
    let heartbeat = Duration::from_secs(parse_num(
        s.pick(&args.gateway_heartbeat_seconds, "gateway_heartbeat_seconds"),
        "GATEWAY_HEARTBEAT_SECONDS",
        1u64,
        3600,
        5,
    )?);
    let region = s.pick(&args.gateway_region, "gateway_region").map(|r| r.value.trim().to_string());
    let advertise_url = match s.pick(&args.gateway_advertise_url, "gateway_advertise_url") {
        None => None,
        Some(raw) => Some(http_url(&raw, "GATEWAY_ADVERTISE_URL", raw.value.trim())?),
    };
    Ok(Some(RegistrationSettings {
        gateways,
        secret,
        heartbeat,
        region: region.filter(|r| !r.is_empty()),
        advertise_url,
    }))
}

impl Config {
    /// Resolves flags/env, the optional file and defaults into a validated configuration.
    pub fn resolve(args: &Args) -> Result<Config, ConfigError> {
        let file = match &args.config {
            Some(path) => read_file(path)?,
            None => BTreeMap::new(),
        };
        let s = Sources { file };

        let registration = registration_settings(&s, args)?;
        let auth_key_raw = s.pick(&args.auth_key, "auth_key");
        if registration.is_some() && auth_key_raw.is_some() {
            return Err(ConfigError::Inconsistent(
                "AUTH_KEY cannot be combined with GATEWAY_URL: a registered SFU's key is derived from \
                 GATEWAY_REGISTRATION_SECRET; unset AUTH_KEY (or GATEWAY_URL)"
                    .into(),
            ));
        }
        let (auth_key, development) = match auth_key_raw {
            Some(raw) => (
                Key::from_base64(&raw.value).map_err(|e| invalid(&raw, "AUTH_KEY", format!("a base64 key ({e})")))?,
                false,
            ),
            // Registered: replaced by the derived key once the URL is known (server.rs).
            None => (Key::generate(), registration.is_none()),
        };
        // A development setup listens on loopback only; a configured one like upstream (0.0.0.0).
        let default_interface =
            if development { IpAddr::V4(Ipv4Addr::LOCALHOST) } else { IpAddr::V4(Ipv4Addr::UNSPECIFIED) };
        let http_interface =
            parse_ip(s.pick(&args.http_interface, "http_interface"), "HTTP_INTERFACE")?.unwrap_or(default_interface);
        let rtc_interface =
            parse_ip(s.pick(&args.rtc_interface, "rtc_interface"), "RTC_INTERFACE")?.unwrap_or(default_interface);
        let public_ip = parse_ip(s.pick(&args.public_ip, "public_ip"), "PUBLIC_IP")?;
        let public_ip_configured = public_ip.is_some();
        let public_ip = public_ip.unwrap_or(if rtc_interface.is_unspecified() {
            IpAddr::V4(Ipv4Addr::LOCALHOST)
        } else {
            rtc_interface
        });
        if public_ip.is_unspecified() {
            return Err(ConfigError::Inconsistent(
                "PUBLIC_IP must be an address browsers can reach, not 0.0.0.0 or ::".into(),
            ));
        }

        let port = parse_num(s.pick(&args.port, "port"), "PORT", 0u16, 65535, 8070)?;
        let proxy = match s.pick(&args.proxy, "proxy") {
            // Upstream treats any non-empty value as on; explicit "off" words are honoured here.
            Some(raw) if raw.value.trim().is_empty() => false,
            Some(raw) => !matches!(raw.value.trim().to_ascii_lowercase().as_str(), "0" | "false" | "no" | "off"),
            None => false,
        };
        let trusted_proxies = parse_list(
            s.pick(&args.trusted_proxies, "trusted_proxies"),
            "TRUSTED_PROXIES",
            Vec::new(),
            |item| item.parse::<IpNet>().ok().or_else(|| item.parse::<IpAddr>().ok().map(IpNet::from)),
            "addresses or CIDR networks (10.0.0.5, 10.0.0.0/8, 2001:db8::/32)",
        )?;
        // A list of proxies turns proxy mode on for them alone; PROXY=1 alone trusts anyone.
        let proxy = match (trusted_proxies.is_empty(), proxy) {
            (false, _) => ProxyTrust::Only(trusted_proxies),
            (true, true) => ProxyTrust::Anyone,
            (true, false) => ProxyTrust::Nobody,
        };
        let num_workers =
            parse_num(s.pick(&args.num_workers, "num_workers"), "NUM_WORKERS", 1usize, 1024, default_num_workers())?;
        let rtc_min_port = parse_num(s.pick(&args.rtc_min_port, "rtc_min_port"), "RTC_MIN_PORT", 0u16, 65535, 40000)?;
        let rtc_max_port = parse_num(s.pick(&args.rtc_max_port, "rtc_max_port"), "RTC_MAX_PORT", 0u16, 65535, 49999)?;
        if rtc_min_port != 0 {
            let available = (rtc_max_port as usize + 1).saturating_sub(rtc_min_port as usize);
            if available < num_workers {
                return Err(ConfigError::Inconsistent(format!(
                    "RTC_MIN_PORT..RTC_MAX_PORT ({rtc_min_port}..{rtc_max_port}) holds {available} port(s) \
                     but NUM_WORKERS={num_workers} shards need one each; widen the range or lower NUM_WORKERS"
                )));
            }
        }
        let rtc_tcp = parse_bool(s.pick(&args.rtc_tcp, "rtc_tcp"), "RTC_TCP", true)?;
        let rtc_tcp_max_connections = parse_num(
            s.pick(&args.rtc_tcp_max_connections, "rtc_tcp_max_connections"),
            "RTC_TCP_MAX_CONNECTIONS",
            1usize,
            1_000_000,
            4096,
        )?;
        let rtc_tcp_idle_timeout = Duration::from_secs(parse_num(
            s.pick(&args.rtc_tcp_idle_timeout_seconds, "rtc_tcp_idle_timeout_seconds"),
            "RTC_TCP_IDLE_TIMEOUT_SECONDS",
            1u64,
            3600,
            5,
        )?);
        let channel_size = parse_num(s.pick(&args.channel_size, "channel_size"), "CHANNEL_SIZE", 1usize, 100_000, 100)?;
        let channel_shard_budget = parse_num(
            s.pick(&args.channel_shard_budget, "channel_shard_budget"),
            "CHANNEL_SHARD_BUDGET",
            0usize,
            100_000,
            200,
        )?;
        let bitrate = |raw, name, default| parse_num(raw, name, 10_000u64, 10_000_000_000, default);
        let max_bitrate_in = bitrate(s.pick(&args.max_bitrate_in, "max_bitrate_in"), "MAX_BITRATE_IN", 8_000_000)?;
        let max_bitrate_out = bitrate(s.pick(&args.max_bitrate_out, "max_bitrate_out"), "MAX_BITRATE_OUT", 10_000_000)?;
        let max_video_bitrate =
            bitrate(s.pick(&args.max_video_bitrate, "max_video_bitrate"), "MAX_VIDEO_BITRATE", 4_000_000)?;
        let audio_codecs = parse_list(
            s.pick(&args.audio_codecs, "audio_codecs"),
            "AUDIO_CODECS",
            AudioCodec::ALL.to_vec(),
            AudioCodec::from_name,
            "opus, PCMU, PCMA",
        )?;
        if audio_codecs.is_empty() {
            return Err(ConfigError::Inconsistent("AUDIO_CODECS must name at least one of opus, PCMU, PCMA".into()));
        }
        let video_codecs = parse_list(
            s.pick(&args.video_codecs, "video_codecs"),
            "VIDEO_CODECS",
            VideoCodec::ALL.to_vec(),
            VideoCodec::from_name,
            "VP8, VP9, H264, H264_1_2cb, H264_1_3ch",
        )?;
        let log_level = match s.pick(&args.log_level, "log_level") {
            None => LogLevel::Info,
            Some(raw) => values::parse_log_level(&raw.value).map_err(|e| invalid(&raw, "LOG_LEVEL", e))?,
        };
        let log_json = match s.pick(&args.log_format, "log_format") {
            None => false,
            Some(raw) => values::parse_log_json(&raw.value).map_err(|e| invalid(&raw, "LOG_FORMAT", e))?,
        };
        let drain_grace = Duration::from_secs(parse_num(
            s.pick(&args.drain_grace_seconds, "drain_grace_seconds"),
            "DRAIN_GRACE_SECONDS",
            0u64,
            86_400,
            30,
        )?);
        let max_sessions = parse_num(
            s.pick(&args.max_sessions, "max_sessions"),
            "MAX_SESSIONS",
            1usize,
            100_000_000,
            num_workers * DEFAULT_SESSIONS_PER_SHARD,
        )?;
        let load_secret = s.pick(&args.load_secret, "load_secret").map(|r| r.value).filter(|v| !v.is_empty());
        if registration.is_some() && load_secret.is_some() {
            return Err(ConfigError::Inconsistent(
                "LOAD_SECRET cannot be combined with GATEWAY_URL: a registered SFU's load secret is derived \
                 from GATEWAY_REGISTRATION_SECRET; unset LOAD_SECRET"
                    .into(),
            ));
        }
        let rate_limit_per_second = parse_num(
            s.pick(&args.rate_limit_per_second, "rate_limit_per_second"),
            "RATE_LIMIT_PER_SECOND",
            0u32,
            1_000_000,
            50,
        )?;
        let rate_limit_burst =
            parse_num(s.pick(&args.rate_limit_burst, "rate_limit_burst"), "RATE_LIMIT_BURST", 1u32, 1_000_000, 200)?;
        let max_connections =
            parse_num(s.pick(&args.max_connections, "max_connections"), "MAX_CONNECTIONS", 1usize, 10_000_000, 50_000)?;
        let max_connections_per_address = parse_num(
            s.pick(&args.max_connections_per_address, "max_connections_per_address"),
            "MAX_CONNECTIONS_PER_ADDRESS",
            0usize,
            10_000_000,
            1_000,
        )?;
        let pin_shards = parse_bool(s.pick(&args.pin_shards, "pin_shards"), "PIN_SHARDS", true)?;
        let own_audio_egress =
            parse_bool(s.pick(&args.own_audio_egress, "own_audio_egress"), "OWN_AUDIO_EGRESS", true)?;
        let own_video_egress =
            parse_bool(s.pick(&args.own_video_egress, "own_video_egress"), "OWN_VIDEO_EGRESS", true)?;
        let own_ingress = parse_bool(s.pick(&args.own_ingress, "own_ingress"), "OWN_INGRESS", true)?;
        let ping_interval = Duration::from_secs(parse_num(
            s.pick(&args.ping_interval_seconds, "ping_interval_seconds"),
            "PING_INTERVAL_SECONDS",
            1u64,
            3600,
            60,
        )?);
        let consent_timeout = match parse_num(
            s.pick(&args.consent_timeout_seconds, "consent_timeout_seconds"),
            "CONSENT_TIMEOUT_SECONDS",
            0u64,
            86_400,
            30,
        )? {
            0 => None,
            seconds => Some(Duration::from_secs(seconds)),
        };
        // The test-call page mints tokens with the server's key for anyone who can reach it: on
        // by default only where the key is a throwaway one.
        let demo = parse_bool(s.pick(&args.demo, "demo"), "DEMO", development)?;

        Ok(Config {
            auth_key,
            development,
            public_ip,
            public_ip_configured,
            port,
            http_interface,
            rtc_interface,
            proxy,
            num_workers,
            rtc_min_port,
            rtc_max_port,
            rtc_tcp,
            rtc_tcp_max_connections,
            rtc_tcp_idle_timeout,
            channel_size,
            channel_shard_budget,
            max_bitrate_in,
            max_bitrate_out,
            max_video_bitrate,
            audio_codecs,
            video_codecs,
            log_level,
            log_json,
            drain_grace,
            max_sessions,
            load_secret,
            rate_limit_per_second,
            rate_limit_burst,
            max_connections,
            max_connections_per_address,
            pin_shards,
            ping_interval,
            consent_timeout,
            own_audio_egress,
            own_video_egress,
            own_ingress,
            demo,
            registration,
        })
    }

    /// The UDP port of shard `index` (0 = let the OS choose).
    pub fn shard_port(&self, index: usize) -> u16 {
        if self.rtc_min_port == 0 { 0 } else { self.rtc_min_port + index as u16 }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(f: impl FnOnce(&mut Args)) -> Args {
        let mut a = Args::default();
        f(&mut a);
        a
    }

    #[test]
    fn defaults_are_a_loopback_development_setup() {
        let c = Config::resolve(&Args::default()).unwrap();
        assert!(c.development);
        assert_eq!(c.http_interface, IpAddr::V4(Ipv4Addr::LOCALHOST));
        assert_eq!(c.port, 8070);
        assert_eq!((c.rtc_min_port, c.rtc_max_port), (40000, 49999));
        assert_eq!(c.channel_size, 100);
        assert_eq!(c.audio_codecs, AudioCodec::ALL.to_vec());
    }

    #[test]
    fn configured_key_behaves_like_upstream() {
        let c = Config::resolve(&args(|a| a.auth_key = Some("c2VjcmV0".into()))).unwrap();
        assert!(!c.development);
        assert_eq!(c.http_interface, IpAddr::V4(Ipv4Addr::UNSPECIFIED));
        assert_eq!(c.auth_key.as_bytes(), b"secret");
    }

    #[test]
    fn invalid_values_name_the_setting_and_what_is_accepted() {
        let rows: Vec<(Args, &str)> = vec![
            (args(|a| a.port = Some("http".into())), "PORT"),
            (args(|a| a.channel_size = Some("0".into())), "CHANNEL_SIZE"),
            (args(|a| a.video_codecs = Some("VP8,AV1".into())), "VP8, VP9, H264"),
            (args(|a| a.log_level = Some("loud".into())), "LOG_LEVEL"),
            (args(|a| a.public_ip = Some("example".into())), "PUBLIC_IP"),
            (args(|a| a.auth_key = Some("***".into())), "AUTH_KEY"),
            (args(|a| a.pin_shards = Some("maybe".into())), "PIN_SHARDS"),
            (args(|a| a.own_audio_egress = Some("perhaps".into())), "OWN_AUDIO_EGRESS"),
            (args(|a| a.own_video_egress = Some("perhaps".into())), "OWN_VIDEO_EGRESS"),
            (args(|a| a.own_ingress = Some("perhaps".into())), "OWN_INGRESS"),
            (args(|a| a.demo = Some("sometimes".into())), "DEMO"),
        ];
        for (a, needle) in rows {
            let err = Config::resolve(&a).unwrap_err().to_string();
            assert!(err.contains(needle), "{err:?} should mention {needle}");
        }
    }

    #[test]
    fn demo_page_is_on_in_the_development_setup_only_unless_set() {
        let key = || Some("c2VjcmV0".to_string());
        assert!(Config::resolve(&Args::default()).unwrap().demo);
        assert!(!Config::resolve(&args(|a| a.auth_key = key())).unwrap().demo);
        let on = args(|a| {
            a.auth_key = key();
            a.demo = Some("1".into());
        });
        assert!(Config::resolve(&on).unwrap().demo);
        assert!(!Config::resolve(&args(|a| a.demo = Some("off".into()))).unwrap().demo);
    }

    #[test]
    fn port_range_must_hold_every_shard() {
        let a = args(|a| {
            a.num_workers = Some("4".into());
            a.rtc_min_port = Some("40000".into());
            a.rtc_max_port = Some("40002".into());
        });
        let err = Config::resolve(&a).unwrap_err().to_string();
        assert!(err.contains("NUM_WORKERS=4"), "{err}");
    }

    #[test]
    fn proxy_follows_upstream_truthiness_except_explicit_off_words() {
        for (value, expected) in [("1", true), ("yes", true), ("anything", true), ("", false), ("false", false)] {
            let c = Config::resolve(&args(|a| a.proxy = Some(value.into()))).unwrap();
            let expected = if expected { ProxyTrust::Anyone } else { ProxyTrust::Nobody };
            assert_eq!(c.proxy, expected, "PROXY={value:?}");
        }
    }

    #[test]
    fn trusted_proxies_are_addresses_or_networks_and_turn_proxy_mode_on_for_them_alone() {
        let c = Config::resolve(&args(|a| a.trusted_proxies = Some("10.0.0.5, 192.168.0.0/16,::1".into()))).unwrap();
        let nets = ["10.0.0.5/32", "192.168.0.0/16", "::1/128"].map(|n| n.parse().unwrap()).to_vec();
        assert_eq!(c.proxy, ProxyTrust::Only(nets.clone()));
        let c = Config::resolve(&args(|a| {
            a.proxy = Some("1".into());
            a.trusted_proxies = Some("10.0.0.5,192.168.0.0/16,::1".into());
        }))
        .unwrap();
        assert_eq!(c.proxy, ProxyTrust::Only(nets));
        let err = Config::resolve(&args(|a| a.trusted_proxies = Some("10.0.0.0/33".into()))).unwrap_err().to_string();
        assert!(err.contains("TRUSTED_PROXIES") && err.contains("CIDR"), "{err}");
    }

    #[test]
    fn flag_or_env_wins_over_file_which_wins_over_default() {
        let dir = std::env::temp_dir().join(format!("ringsfu-config-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("ringsfu.toml");
        std::fs::write(&path, "port = 9000\nchannel_size = 7\nvideo_codecs = [\"VP8\"]\n").unwrap();
        let c = Config::resolve(&args(|a| {
            a.config = Some(path.clone());
            a.port = Some("9100".into());
        }))
        .unwrap();
        assert_eq!(c.port, 9100);
        assert_eq!(c.channel_size, 7);
        assert_eq!(c.video_codecs, vec![VideoCodec::Vp8]);

        std::fs::write(&path, "prot = 1\n").unwrap();
        let err = Config::resolve(&args(|a| a.config = Some(path.clone()))).unwrap_err().to_string();
        assert!(err.contains("unknown setting \"prot\""), "{err}");
        std::fs::remove_dir_all(&dir).ok();
    }
}
