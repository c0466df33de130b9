//! sfu-gateway settings: flags and `SFU_GATEWAY_*` environment (the names the existing Odoo
//! sfu-gateway uses), the secrets file (`--secrets`, TOML) and `SFU_GATEWAY_NODES` (the same document
//! as JSON), defaults.
//!
//! Precedence: flag > environment > file > default. `SFU_GATEWAY_NODES` replaces the file's SFU
//! list, and any tuning section it carries replaces the file's section of the same name. Every
//! value is checked; a refusal is one line naming the setting, where it came from and what is
//! accepted. The SFU list and the tuning sections (the [`Fleet`]) are re-read on SIGHUP.

use super::breaker::BreakerPolicy;
use super::geo::{self, Coordinates};
use super::health::HealthPolicy;
use super::placement::NodeKey;
use super::selection::{Policy, Strategy, Weights};
use clap::Parser;
use ringsfu_common::announcement::MIN_SECRET_LEN;
use ringsfu_common::auth::Key;
use ringsfu_common::logging::LogLevel;
use ringsfu_common::values;
use serde::Deserialize;
use std::fmt::Display;
use std::net::{IpAddr, Ipv4Addr};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

/// The file read when `--secrets` is not given, if it exists (as the existing gateway does).
pub const DEFAULT_SECRETS: &str = "secrets.toml";
/// Odoo's timeout for `/v1/channel`: a failover budget beyond it answers nobody.
const ODOO_CHANNEL_TIMEOUT: Duration = Duration::from_secs(3);

#[derive(Parser, Debug, Default)]
#[command(name = "sfu-gateway", version, about = "Balances Odoo's SFU requests over many SFUs")]
pub struct Args {
    /// TOML file with the SFUs (`[[sfu]] address, region, key`) and the tuning sections.
    /// Default: ./secrets.toml when it exists.
    #[arg(long, short, env = "SFU_GATEWAY_SECRETS")]
    pub secrets: Option<PathBuf>,
    /// Base64 key Odoo signs its requests with (lenient: either alphabet, padding optional). Required.
    #[arg(long, env = "SFU_GATEWAY_KEY", hide_env_values = true)]
    pub key: Option<String>,
    /// Interface to listen on (default 0.0.0.0).
    #[arg(long, env = "SFU_GATEWAY_BIND")]
    pub bind: Option<String>,
    /// Port to listen on (default 8071; 0 = any free port).
    #[arg(long, env = "SFU_GATEWAY_PORT")]
    pub port: Option<String>,
    /// Trust the caller's X-Forwarded-For (the gateway sits behind a reverse proxy); default false.
    #[arg(long, env = "SFU_GATEWAY_TRUST_PROXY")]
    pub trust_proxy: Option<String>,
    /// The SFU list as JSON, `{"sfu":[{"address","region","key"}]}`; replaces the file's list.
    #[arg(long, env = "SFU_GATEWAY_NODES", hide_env_values = true)]
    pub nodes: Option<String>,
    /// off, error, warn, info (default), debug, trace.
    #[arg(long, env = "SFU_GATEWAY_LOG_LEVEL")]
    pub log_level: Option<String>,
    /// text (default) or json.
    #[arg(long, env = "SFU_GATEWAY_LOG_FORMAT")]
    pub log_format: Option<String>,
    /// Simultaneous TCP connections accepted (default 10000).
    #[arg(long, env = "SFU_GATEWAY_MAX_CONNECTIONS")]
    pub max_connections: Option<String>,
    /// Threads serving requests (default 1; 0: one per core).
    #[arg(long, env = "SFU_GATEWAY_THREADS")]
    pub threads: Option<String>,
    /// Redis shared by several gateways (`redis://[:password@]host:port/db`, `rediss://` for TLS);
    /// unset: placements live in this process only.
    #[arg(long, env = "SFU_GATEWAY_REDIS_URL", hide_env_values = true)]
    pub redis_url: Option<String>,
    /// Time limit of each Redis call, in milliseconds (default 100).
    #[arg(long, env = "SFU_GATEWAY_REDIS_TIMEOUT_MS")]
    pub redis_timeout_ms: Option<String>,
    /// This gateway's name among several (default `<hostname>:<port>`).
    #[arg(long, env = "SFU_GATEWAY_ID")]
    pub id: Option<String>,
    /// Shared secret SFUs register with (`POST /v1/register`); unset: registration is refused.
    #[arg(long, env = "SFU_GATEWAY_REGISTRATION_SECRET", hide_env_values = true)]
    pub registration_secret: Option<String>,
    /// A registered SFU leaves when it has not renewed its registration for this long (default 15).
    #[arg(long, env = "SFU_GATEWAY_REGISTRATION_TTL_SECONDS")]
    pub registration_ttl_seconds: Option<String>,
}

/// Settings for several gateways and self-registering SFUs (restart to change).
#[derive(Debug, Clone)]
pub struct SharedSettings {
    /// The Redis URL, checked; `None`: in-memory state only.
    pub redis_url: Option<String>,
    pub redis_timeout: Duration,
    /// Set when the operator named this gateway; otherwise `<hostname>:<port>` once bound.
    pub gateway_id: Option<String>,
    pub registration_secret: Option<String>,
    pub registration_ttl: Duration,
}

/// The resolved, validated configuration.
#[derive(Debug, Clone)]
pub struct GatewayConfig {
    pub key: Key,
    pub bind: IpAddr,
    pub port: u16,
    pub trust_proxy: bool,
    pub log_level: LogLevel,
    pub log_json: bool,
    pub max_connections: usize,
    /// Threads of the async runtime: 1 is a single-threaded runtime (the default: one core
    /// serves tens of thousands of `/v1/channel` a second, far above what Odoo asks, and costs
    /// less per request than a work-stealing one); more, or 0 for one per core, a multi-threaded
    /// one.
    pub threads: usize,
    pub fleet: Fleet,
    pub shared: SharedSettings,
    /// Where the fleet came from, to read it again on SIGHUP.
    pub sources: FleetSources,
    /// Things worth saying once logging is up (an exposed secrets file, a budget beyond Odoo's timeout).
    pub warnings: Vec<String>,
}

/// What SIGHUP reloads: the SFUs and how they are watched and chosen.
#[derive(Debug, Clone)]
pub struct Fleet {
    pub nodes: Vec<NodeConfig>,
    pub health: HealthSettings,
    pub balancing: BalancingSettings,
    pub failover: FailoverSettings,
    pub breaker: BreakerPolicy,
}

#[derive(Debug, Clone)]
pub struct NodeConfig {
    /// Base URL without a trailing slash; also the node's identity.
    pub address: NodeKey,
    pub region: Option<String>,
    pub key: Key,
    /// Overrides the `maxSessions` the SFU reports.
    pub max_sessions: Option<u64>,
    pub weight: f64,
    /// Configured `lat`/`lon`, else the built-in location of a well-known region name.
    pub coordinates: Option<Coordinates>,
    /// Sent as `X-Load-Secret` when polling `/v1/load`.
    pub load_secret: Option<String>,
    /// Load fraction assumed when the SFU reports none.
    pub unknown_load: f64,
}

#[derive(Debug, Clone, Copy, PartialEq)]
pub struct HealthSettings {
    pub interval: Duration,
    pub timeout: Duration,
    pub policy: HealthPolicy,
}

#[derive(Debug, Clone, Copy, PartialEq)]
pub struct BalancingSettings {
    pub policy: Policy,
    pub sticky_ttl: Duration,
    pub channel_ttl: Duration,
}

#[derive(Debug, Clone, Copy, PartialEq)]
pub struct FailoverSettings {
    /// Different SFUs tried at most for one request.
    pub max_retries: u32,
    /// Budget for all attempts of one request.
    pub retry_timeout: Duration,
    /// Budget for one attempt (and for each forwarded disconnect).
    pub attempt_timeout: Duration,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ConfigError {
    #[error("invalid {setting} ({origin}): {value} — expected {expected}")]
    Invalid { setting: String, origin: String, value: String, expected: String },
    #[error("{setting} is required: {hint}")]
    Missing { setting: &'static str, hint: &'static str },
    #[error("cannot read {origin}: {reason}")]
    Unreadable { origin: String, reason: String },
    #[error("no SFU configured: give [[sfu]] entries in the secrets file (--secrets) or in SFU_GATEWAY_NODES")]
    NoNodes,
}

/// Where the fleet is read from.
#[derive(Debug, Clone, Default)]
pub struct FleetSources {
    pub secrets: Option<PathBuf>,
    pub nodes_json: Option<String>,
    /// SFUs may register themselves: an empty static list is fine.
    pub allow_empty: bool,
}

impl GatewayConfig {
    /// Resolves flags/environment, the secrets file, `SFU_GATEWAY_NODES` and defaults.
    pub fn resolve(args: &Args) -> Result<GatewayConfig, ConfigError> {
        let key = match &args.key {
            None => {
                return Err(ConfigError::Missing {
                    setting: "SFU_GATEWAY_KEY",
                    hint: "set it (or --key) to the base64 key Odoo is configured with",
                });
            }
            // The value is a secret: never echoed.
            Some(text) => Key::from_base64(text).map_err(|e| ConfigError::Invalid {
                setting: "SFU_GATEWAY_KEY".into(),
                origin: "SFU_GATEWAY_KEY / --key".into(),
                value: "(hidden)".into(),
                expected: format!("a base64 key ({e})"),
            })?,
        };
        let bind = match &args.bind {
            None => IpAddr::V4(Ipv4Addr::UNSPECIFIED),
            Some(text) => text
                .trim()
                .parse()
                .map_err(|_| flag_invalid("SFU_GATEWAY_BIND", "bind", text, "an IPv4 or IPv6 address"))?,
        };
        let port = match &args.port {
            None => 8071,
            Some(text) => text
                .trim()
                .parse()
                .map_err(|_| flag_invalid("SFU_GATEWAY_PORT", "port", text, "a port from 0 to 65535"))?,
        };
        let trust_proxy = match &args.trust_proxy {
            None => false,
            // `SFU_GATEWAY_TRUST_PROXY=` (set but empty) reads as unset.
            Some(text) if text.trim().is_empty() => false,
            Some(text) => {
                values::parse_bool(text).map_err(|e| flag_invalid("SFU_GATEWAY_TRUST_PROXY", "trust-proxy", text, e))?
            }
        };
        let log_level = match &args.log_level {
            None => LogLevel::Info,
            Some(text) => values::parse_log_level(text)
                .map_err(|e| flag_invalid("SFU_GATEWAY_LOG_LEVEL", "log-level", text, e))?,
        };
        let log_json = match &args.log_format {
            None => false,
            Some(text) => values::parse_log_json(text)
                .map_err(|e| flag_invalid("SFU_GATEWAY_LOG_FORMAT", "log-format", text, e))?,
        };
        let max_connections = match &args.max_connections {
            None => 10_000,
            Some(text) => values::parse_int_in(text, 1, 10_000_000)
                .map_err(|e| flag_invalid("SFU_GATEWAY_MAX_CONNECTIONS", "max-connections", text, e))?,
        };
        let threads = match &args.threads {
            None => 1,
            Some(text) => values::parse_int_in(text, 0, 1024)
                .map_err(|e| flag_invalid("SFU_GATEWAY_THREADS", "threads", text, e))?,
        };
        let shared = shared_settings(args)?;
        let default_secrets = Path::new(DEFAULT_SECRETS);
        let sources = FleetSources {
            secrets: args.secrets.clone().or_else(|| default_secrets.exists().then(|| default_secrets.to_path_buf())),
            nodes_json: args.nodes.clone().filter(|n| !n.trim().is_empty()),
            allow_empty: shared.registration_secret.is_some(),
        };
        let (fleet, warnings) = sources.load()?;
        Ok(GatewayConfig {
            key,
            bind,
            port,
            trust_proxy,
            log_level,
            log_json,
            max_connections,
            threads,
            fleet,
            shared,
            sources,
            warnings,
        })
    }
}

impl FleetSources {
    /// Reads and validates the fleet; also returns warnings for the log.
    pub fn load(&self) -> Result<(Fleet, Vec<String>), ConfigError> {
        let mut warnings = Vec::new();
        let file = match &self.secrets {
            None => None,
            Some(path) => {
                let origin = format!("secrets file {}", path.display());
                let text = std::fs::read_to_string(path)
                    .map_err(|e| ConfigError::Unreadable { origin: origin.clone(), reason: e.to_string() })?;
                warnings.extend(exposure_warning(path));
                Some((parse_toml(&text, &origin)?, origin))
            }
        };
        let env = match &self.nodes_json {
            None => None,
            Some(json) => {
                let origin = "SFU_GATEWAY_NODES".to_string();
                let raw: RawFleet = serde_json::from_str(json).map_err(|e| ConfigError::Unreadable {
                    origin: origin.clone(),
                    reason: one_line(&e.to_string()),
                })?;
                Some((raw, origin))
            }
        };
        let fleet = build(file, env, self.allow_empty)?;
        if fleet.failover.retry_timeout >= ODOO_CHANNEL_TIMEOUT {
            warnings.push(format!(
                "failover.retry_timeout_ms is {} ms but Odoo gives up on /v1/channel after {} ms",
                fleet.failover.retry_timeout.as_millis(),
                ODOO_CHANNEL_TIMEOUT.as_millis()
            ));
        }
        Ok((fleet, warnings))
    }
}

fn shared_settings(args: &Args) -> Result<SharedSettings, ConfigError> {
    let redis_url = match args.redis_url.as_deref().map(str::trim).filter(|u| !u.is_empty()) {
        None => None,
        // The URL may hold a password: never echoed.
        Some(url) => match redis::Client::open(url) {
            Ok(_) => Some(url.to_string()),
            Err(e) => {
                return Err(ConfigError::Invalid {
                    setting: "SFU_GATEWAY_REDIS_URL".into(),
                    origin: "SFU_GATEWAY_REDIS_URL / --redis-url".into(),
                    value: "(hidden)".into(),
                    expected: format!("redis://[:password@]host[:port][/db] or rediss://... ({:?})", e.kind()),
                });
            }
        },
    };
    let redis_timeout = match &args.redis_timeout_ms {
        None => Duration::from_millis(100),
        Some(text) => values::parse_int_in(text, 1, 10_000)
            .map(Duration::from_millis)
            .map_err(|e| flag_invalid("SFU_GATEWAY_REDIS_TIMEOUT_MS", "redis-timeout-ms", text, e))?,
    };
    let gateway_id = args.id.as_deref().map(str::trim).filter(|i| !i.is_empty()).map(str::to_string);
    let registration_secret = match args.registration_secret.as_deref().filter(|s| !s.is_empty()) {
        None => None,
        Some(secret) if secret.len() < MIN_SECRET_LEN => {
            return Err(ConfigError::Invalid {
                setting: "SFU_GATEWAY_REGISTRATION_SECRET".into(),
                origin: "SFU_GATEWAY_REGISTRATION_SECRET / --registration-secret".into(),
                value: "(hidden)".into(),
                expected: format!("at least {MIN_SECRET_LEN} characters"),
            });
        }
        Some(secret) => Some(secret.to_string()),
    };
    let registration_ttl = match &args.registration_ttl_seconds {
        None => Duration::from_secs(15),
        Some(text) => values::parse_int_in(text, 1, 86_400)
            .map(Duration::from_secs)
            .map_err(|e| flag_invalid("SFU_GATEWAY_REGISTRATION_TTL_SECONDS", "registration-ttl-seconds", text, e))?,
    };
    Ok(SharedSettings { redis_url, redis_timeout, gateway_id, registration_secret, registration_ttl })
}

fn flag_invalid(env: &str, flag: &str, value: &str, expected: impl Into<String>) -> ConfigError {
    ConfigError::Invalid {
        setting: env.to_string(),
        origin: format!("{env} / --{flag}"),
        value: format!("{value:?}"),
        expected: expected.into(),
    }
}

/// A secrets file that group or others can read leaks every SFU key.
fn exposure_warning(path: &Path) -> Option<String> {
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(path).ok()?.permissions().mode();
    (mode & 0o077 != 0).then(|| {
        format!(
            "secrets file {} is readable by group or others (mode {:o}); it holds SFU keys: chmod 600 it",
            path.display(),
            mode & 0o777
        )
    })
}

fn one_line(text: &str) -> String {
    text.split_whitespace().collect::<Vec<_>>().join(" ")
}

fn parse_toml(text: &str, origin: &str) -> Result<RawFleet, ConfigError> {
    toml::from_str(text).map_err(|e: toml::de::Error| {
        let line = e.span().map(|s| text[..s.start.min(text.len())].matches('\n').count() + 1);
        let at = line.map(|l| format!(" (line {l})")).unwrap_or_default();
        ConfigError::Unreadable { origin: origin.to_string(), reason: format!("{}{at}", one_line(e.message())) }
    })
}

// The documents as written. Unknown keys are refused so a typo does not silently keep a default.

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawFleet {
    sfu: Option<Vec<RawNode>>,
    health: Option<RawHealth>,
    balancing: Option<RawBalancing>,
    failover: Option<RawFailover>,
    circuit_breaker: Option<RawBreaker>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawNode {
    address: String,
    key: String,
    region: Option<String>,
    max_sessions: Option<f64>,
    weight: Option<f64>,
    #[serde(alias = "latitude")]
    lat: Option<f64>,
    #[serde(alias = "longitude")]
    lon: Option<f64>,
    load_secret: Option<String>,
    unknown_load: Option<f64>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawHealth {
    interval_seconds: Option<f64>,
    timeout_seconds: Option<f64>,
    unhealthy_threshold: Option<f64>,
    healthy_threshold: Option<f64>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawBalancing {
    strategy: Option<String>,
    power_of_two: Option<bool>,
    sticky_ttl_seconds: Option<f64>,
    channel_ttl_seconds: Option<f64>,
    unknown_load: Option<f64>,
    sessions_per_channel: Option<f64>,
    weights: Option<RawWeights>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawWeights {
    sessions: Option<f64>,
    cpu: Option<f64>,
    memory: Option<f64>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawFailover {
    max_retries: Option<f64>,
    retry_timeout_ms: Option<f64>,
    attempt_timeout_ms: Option<f64>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawBreaker {
    failure_threshold: Option<f64>,
    cooldown_seconds: Option<f64>,
    max_cooldown_seconds: Option<f64>,
}

/// Checks numbers of one document against their ranges, naming the setting and the document.
struct Checker<'a> {
    origin: &'a str,
}

impl Checker<'_> {
    fn invalid(&self, setting: &str, value: impl Display, expected: impl Into<String>) -> ConfigError {
        ConfigError::Invalid {
            setting: setting.to_string(),
            origin: self.origin.to_string(),
            value: value.to_string(),
            expected: expected.into(),
        }
    }

    fn number(&self, setting: &str, value: Option<f64>, min: f64, max: f64, default: f64) -> Result<f64, ConfigError> {
        let Some(v) = value else { return Ok(default) };
        if v.is_finite() && v >= min && v <= max {
            return Ok(v);
        }
        Err(self.invalid(setting, v, format!("a number from {min} to {max}")))
    }

    fn integer(&self, setting: &str, value: Option<f64>, min: u64, max: u64, default: u64) -> Result<u64, ConfigError> {
        let Some(v) = value else { return Ok(default) };
        if v.fract() == 0.0 && v >= min as f64 && v <= max as f64 {
            return Ok(v as u64);
        }
        Err(self.invalid(setting, v, format!("an integer from {min} to {max}")))
    }

    fn seconds(
        &self,
        setting: &str,
        value: Option<f64>,
        min: f64,
        max: f64,
        default: f64,
    ) -> Result<Duration, ConfigError> {
        self.number(setting, value, min, max, default).map(Duration::from_secs_f64)
    }
}

/// Picks each part from the environment's document if it has it, else the file's.
fn build(
    file: Option<(RawFleet, String)>,
    env: Option<(RawFleet, String)>,
    allow_empty: bool,
) -> Result<Fleet, ConfigError> {
    let (mut file, file_origin) = file.unwrap_or_default();
    let (mut env, env_origin) = env.unwrap_or_default();
    macro_rules! pick {
        ($part:ident) => {
            match env.$part.take() {
                Some(part) => (Some(part), env_origin.as_str()),
                None => (file.$part.take(), file_origin.as_str()),
            }
        };
    }
    let (health, origin) = pick!(health);
    let health = health_settings(health.unwrap_or_default(), &Checker { origin })?;
    let (balancing, origin) = pick!(balancing);
    let (balancing, unknown_load) = balancing_settings(balancing.unwrap_or_default(), &Checker { origin })?;
    let (failover, origin) = pick!(failover);
    let failover = failover_settings(failover.unwrap_or_default(), &Checker { origin })?;
    let (breaker, origin) = pick!(circuit_breaker);
    let breaker = breaker_policy(breaker.unwrap_or_default(), failover.retry_timeout, &Checker { origin })?;
    let (nodes, origin) = pick!(sfu);
    let nodes = node_list(nodes.unwrap_or_default(), unknown_load, allow_empty, &Checker { origin })?;
    Ok(Fleet { nodes, health, balancing, failover, breaker })
}

fn node_list(
    raw: Vec<RawNode>,
    unknown_load: f64,
    allow_empty: bool,
    check: &Checker,
) -> Result<Vec<NodeConfig>, ConfigError> {
    if raw.is_empty() && !allow_empty {
        return Err(ConfigError::NoNodes);
    }
    let mut nodes: Vec<NodeConfig> = Vec::with_capacity(raw.len());
    for (i, r) in raw.into_iter().enumerate() {
        let name = |field: &str| format!("sfu[{i}].{field}");
        let address = normalize_address(&r.address)
            .map_err(|expected| check.invalid(&name("address"), format!("{:?}", r.address), expected))?;
        if nodes.iter().any(|n| *n.address == *address) {
            return Err(check.invalid(&name("address"), &address, "an address not listed twice"));
        }
        let key = Key::from_base64(&r.key)
            .map_err(|e| check.invalid(&name("key"), "(hidden)", format!("a base64 key ({e})")))?;
        let region = r.region.map(|s| s.trim().to_string()).filter(|s| !s.is_empty());
        let max_sessions = match r.max_sessions {
            None => None,
            Some(v) => Some(check.integer(&name("max_sessions"), Some(v), 1, 100_000_000, 1)?),
        };
        let weight = check.number(&name("weight"), r.weight, 0.001, 1000.0, 1.0)?;
        let coordinates = match (r.lat, r.lon) {
            (None, None) => region.as_deref().and_then(geo::region),
            (Some(lat), Some(lon)) => {
                let lat = check.number(&name("lat"), Some(lat), -90.0, 90.0, 0.0)?;
                let lon = check.number(&name("lon"), Some(lon), -180.0, 180.0, 0.0)?;
                Some(Coordinates::new(lat, lon))
            }
            _ => return Err(check.invalid(&name("lat"), "only one of lat/lon", "both lat and lon, or neither")),
        };
        let unknown_load = check.number(&name("unknown_load"), r.unknown_load, 0.0, 1.0, unknown_load)?;
        let load_secret = r.load_secret.filter(|s| !s.is_empty());
        nodes.push(NodeConfig { address, region, key, max_sessions, weight, coordinates, load_secret, unknown_load });
    }
    Ok(nodes)
}

/// `http(s)://host[:port][/prefix]`, without the trailing slash.
pub fn normalize_address(text: &str) -> Result<NodeKey, &'static str> {
    const EXPECTED: &str = "an http:// or https:// base URL such as http://10.0.0.5:8070";
    let url = reqwest::Url::parse(text.trim()).map_err(|_| EXPECTED)?;
    if !matches!(url.scheme(), "http" | "https") || url.host_str().is_none_or(str::is_empty) {
        return Err(EXPECTED);
    }
    if url.query().is_some() || url.fragment().is_some() || !url.username().is_empty() {
        return Err("a base URL without query, fragment or credentials");
    }
    Ok(Arc::from(url.as_str().trim_end_matches('/')))
}

fn health_settings(raw: RawHealth, check: &Checker) -> Result<HealthSettings, ConfigError> {
    Ok(HealthSettings {
        interval: check.seconds("health.interval_seconds", raw.interval_seconds, 0.05, 3600.0, 2.0)?,
        timeout: check.seconds("health.timeout_seconds", raw.timeout_seconds, 0.05, 60.0, 1.0)?,
        policy: HealthPolicy {
            unhealthy_threshold: check.integer("health.unhealthy_threshold", raw.unhealthy_threshold, 1, 100, 3)?
                as u32,
            healthy_threshold: check.integer("health.healthy_threshold", raw.healthy_threshold, 1, 100, 2)? as u32,
        },
    })
}

/// Also returns the default `unknown_load` for nodes.
fn balancing_settings(raw: RawBalancing, check: &Checker) -> Result<(BalancingSettings, f64), ConfigError> {
    let strategy = match raw.strategy.as_deref().map(|s| s.trim().to_ascii_lowercase()) {
        None => Strategy::Load,
        Some(s) if s == "load" => Strategy::Load,
        Some(s) if s == "round-robin" || s == "round_robin" => Strategy::RoundRobin,
        Some(s) => return Err(check.invalid("balancing.strategy", format!("{s:?}"), "\"load\" or \"round-robin\"")),
    };
    let w = raw.weights.unwrap_or_default();
    let defaults = Weights::default();
    let weights = Weights {
        sessions: check.number("balancing.weights.sessions", w.sessions, 0.0, 1000.0, defaults.sessions)?,
        cpu: check.number("balancing.weights.cpu", w.cpu, 0.0, 1000.0, defaults.cpu)?,
        memory: check.number("balancing.weights.memory", w.memory, 0.0, 1000.0, defaults.memory)?,
    };
    if weights.sessions + weights.cpu + weights.memory <= 0.0 {
        return Err(check.invalid("balancing.weights", "all zero", "at least one positive weight"));
    }
    let policy = Policy {
        strategy,
        weights,
        power_of_two: raw.power_of_two.unwrap_or(false),
        sessions_per_channel: check.number(
            "balancing.sessions_per_channel",
            raw.sessions_per_channel,
            0.0,
            1000.0,
            3.0,
        )?,
    };
    let settings = BalancingSettings {
        policy,
        sticky_ttl: check.seconds("balancing.sticky_ttl_seconds", raw.sticky_ttl_seconds, 0.0, 604_800.0, 600.0)?,
        channel_ttl: check.seconds(
            "balancing.channel_ttl_seconds",
            raw.channel_ttl_seconds,
            1.0,
            2_592_000.0,
            86_400.0,
        )?,
    };
    let unknown_load = check.number("balancing.unknown_load", raw.unknown_load, 0.0, 1.0, 0.5)?;
    Ok((settings, unknown_load))
}

fn failover_settings(raw: RawFailover, check: &Checker) -> Result<FailoverSettings, ConfigError> {
    let ms = |setting, value, default| check.integer(setting, value, 50, 60_000, default).map(Duration::from_millis);
    Ok(FailoverSettings {
        max_retries: check.integer("failover.max_retries", raw.max_retries, 1, 20, 3)? as u32,
        retry_timeout: ms("failover.retry_timeout_ms", raw.retry_timeout_ms, 2500)?,
        attempt_timeout: ms("failover.attempt_timeout_ms", raw.attempt_timeout_ms, 1000)?,
    })
}

fn breaker_policy(raw: RawBreaker, probe_timeout: Duration, check: &Checker) -> Result<BreakerPolicy, ConfigError> {
    let cooldown = check.seconds("circuit_breaker.cooldown_seconds", raw.cooldown_seconds, 0.05, 3600.0, 5.0)?;
    let max_cooldown = check.seconds(
        "circuit_breaker.max_cooldown_seconds",
        raw.max_cooldown_seconds,
        cooldown.as_secs_f64(),
        86_400.0,
        120.0_f64.max(cooldown.as_secs_f64()),
    )?;
    Ok(BreakerPolicy {
        failure_threshold: check.integer("circuit_breaker.failure_threshold", raw.failure_threshold, 1, 1000, 3)?
            as u32,
        cooldown,
        max_cooldown,
        probe_timeout,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEY: &str = "c2VjcmV0LWtleS1mb3ItdGVzdHM=";

    fn dir(name: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("sfu-gateway-config-{}-{name}", std::process::id()));
        std::fs::create_dir_all(&d).unwrap();
        d
    }

    fn from_toml(text: &str) -> Result<Fleet, ConfigError> {
        let raw = parse_toml(text, "secrets file test.toml")?;
        build(Some((raw, "secrets file test.toml".into())), None, false)
    }

    fn node_toml(extra: &str) -> String {
        format!("[[sfu]]\naddress = \"http://127.0.0.1:8070/\"\nkey = \"{KEY}\"\n{extra}\n")
    }

    #[test]
    fn every_setting_has_a_default() {
        let fleet = from_toml(&node_toml("")).unwrap();
        assert_eq!(&*fleet.nodes[0].address, "http://127.0.0.1:8070", "trailing slash dropped");
        assert_eq!(fleet.nodes[0].weight, 1.0);
        assert_eq!(fleet.nodes[0].unknown_load, 0.5);
        assert_eq!(fleet.nodes[0].region, None);
        assert_eq!(fleet.health.interval, Duration::from_secs(2));
        assert_eq!(fleet.health.timeout, Duration::from_secs(1));
        assert_eq!(fleet.health.policy, HealthPolicy { unhealthy_threshold: 3, healthy_threshold: 2 });
        assert_eq!(fleet.balancing.policy, Policy::default());
        assert_eq!(fleet.balancing.sticky_ttl, Duration::from_secs(600));
        assert_eq!(fleet.balancing.channel_ttl, Duration::from_secs(86_400));
        assert_eq!(fleet.failover.max_retries, 3);
        assert_eq!(fleet.failover.retry_timeout, Duration::from_millis(2500));
        assert_eq!(fleet.failover.attempt_timeout, Duration::from_millis(1000));
        assert_eq!(fleet.breaker, BreakerPolicy::default());
    }

    #[test]
    fn a_full_secrets_file_is_read() {
        let text = format!(
            r#"
[[sfu]]
address = "https://sfu1.example.com"
region = "eu-west"
key = "{KEY}"
max_sessions = 400
weight = 2
load_secret = "s"

[[sfu]]
address = "http://10.0.0.2:8070"
region = "somewhere"
key = "0b1c2d3e-4f50-4a6b-8c7d-9e0f1a2b3c4d"
latitude = 10.5
longitude = -20
unknown_load = 0.8

[health]
interval_seconds = 0.5
timeout_seconds = 0.25
unhealthy_threshold = 4
healthy_threshold = 1

[balancing]
strategy = "round-robin"
power_of_two = true
sticky_ttl_seconds = 60
unknown_load = 0.3

[balancing.weights]
sessions = 1
cpu = 0
memory = 0

[failover]
max_retries = 2
retry_timeout_ms = 1500
attempt_timeout_ms = 400

[circuit_breaker]
failure_threshold = 5
cooldown_seconds = 1
max_cooldown_seconds = 8
"#
        );
        let fleet = from_toml(&text).unwrap();
        let (a, b) = (&fleet.nodes[0], &fleet.nodes[1]);
        assert_eq!((a.max_sessions, a.weight, a.load_secret.as_deref()), (Some(400), 2.0, Some("s")));
        assert_eq!(a.coordinates, geo::region("eu-west"), "a well-known region name locates the node");
        assert_eq!(a.unknown_load, 0.3, "the [balancing] default applies");
        assert_eq!(b.coordinates, Some(Coordinates::new(10.5, -20.0)));
        assert_eq!(b.unknown_load, 0.8);
        assert_eq!(fleet.health.interval, Duration::from_millis(500));
        assert_eq!(fleet.health.policy.unhealthy_threshold, 4);
        assert_eq!(fleet.balancing.policy.strategy, Strategy::RoundRobin);
        assert!(fleet.balancing.policy.power_of_two);
        assert_eq!(fleet.balancing.policy.weights, Weights { sessions: 1.0, cpu: 0.0, memory: 0.0 });
        assert_eq!(fleet.failover.max_retries, 2);
        assert_eq!(fleet.breaker.failure_threshold, 5);
        assert_eq!(fleet.breaker.max_cooldown, Duration::from_secs(8));
        assert_eq!(fleet.breaker.probe_timeout, Duration::from_millis(1500));
    }

    /// Each row: a document and what the one-line refusal must mention.
    #[test]
    fn invalid_documents_are_refused_naming_the_setting() {
        let rows: Vec<(String, &str)> = vec![
            (String::new(), "no SFU configured"),
            ("[[sfu]]\naddress = \"http://a\"\n".into(), "missing field `key`"),
            (node_toml("colour = 1"), "unknown field `colour`"),
            (node_toml("[helth]"), "unknown field `helth`"),
            ("[[sfu]]\naddress = \"ftp://a\"\nkey = \"YQ\"\n".into(), "sfu[0].address"),
            ("[[sfu]]\naddress = \"a:b\"\nkey = \"YQ\"\n".into(), "sfu[0].address"),
            ("[[sfu]]\naddress = \"http://a\"\nkey = \"%%\"\n".into(), "sfu[0].key"),
            (format!("{}{}", node_toml(""), node_toml("")), "sfu[1].address"),
            (node_toml("weight = 0"), "sfu[0].weight"),
            (node_toml("max_sessions = 1.5"), "sfu[0].max_sessions"),
            (node_toml("lat = 10"), "both lat and lon"),
            (node_toml("lat = 100\nlon = 0"), "sfu[0].lat"),
            (node_toml("[health]\ninterval_seconds = 0"), "health.interval_seconds"),
            (node_toml("[health]\nunhealthy_threshold = 0"), "health.unhealthy_threshold"),
            (node_toml("[balancing]\nstrategy = \"random\""), "balancing.strategy"),
            (node_toml("[balancing.weights]\ncpu = -1"), "balancing.weights.cpu"),
            (node_toml("[balancing.weights]\nsessions = 0\ncpu = 0\nmemory = 0"), "balancing.weights"),
            (node_toml("[failover]\nmax_retries = 0"), "failover.max_retries"),
            (node_toml("[failover]\nretry_timeout_ms = \"soon\""), "invalid type"),
            (node_toml("[circuit_breaker]\ncooldown_seconds = 10\nmax_cooldown_seconds = 5"), "max_cooldown"),
            ("[[sfu]\n".into(), "line 1"),
        ];
        for (text, needle) in rows {
            let err = from_toml(&text).unwrap_err().to_string();
            assert!(err.contains(needle), "{text:?}: {err:?} should mention {needle:?}");
            assert_eq!(err.lines().count(), 1, "one line: {err}");
        }
    }

    #[test]
    fn errors_say_which_document_and_hide_keys() {
        let err = from_toml("[[sfu]]\naddress = \"http://a\"\nkey = \"%%\"\n").unwrap_err().to_string();
        assert!(err.contains("secrets file test.toml") && !err.contains("%%"), "{err}");
    }

    #[test]
    fn the_environment_list_replaces_the_files_and_so_do_its_sections() {
        let d = dir("precedence");
        let path = d.join("secrets.toml");
        std::fs::write(
            &path,
            node_toml("region = \"file\"\n[health]\ninterval_seconds = 7\n[failover]\nmax_retries = 5"),
        )
        .unwrap();
        let json = format!(
            r#"{{"sfu":[{{"address":"http://10.0.0.9:8070","region":"env","key":"{KEY}"}}],"health":{{"timeout_seconds":0.5}}}}"#
        );
        let sources = FleetSources { secrets: Some(path.clone()), nodes_json: Some(json), allow_empty: false };
        let (fleet, _) = sources.load().unwrap();
        assert_eq!(fleet.nodes.len(), 1);
        assert_eq!(fleet.nodes[0].region.as_deref(), Some("env"));
        assert_eq!(fleet.health.interval, Duration::from_secs(2), "the env's [health] replaces the file's whole");
        assert_eq!(fleet.health.timeout, Duration::from_millis(500));
        assert_eq!(fleet.failover.max_retries, 5, "sections the env lacks come from the file");

        let bad = FleetSources { secrets: None, nodes_json: Some("{\"sfu\": [".into()), allow_empty: false };
        let err = bad.load().unwrap_err().to_string();
        assert!(err.starts_with("cannot read SFU_GATEWAY_NODES"), "{err}");
        std::fs::remove_dir_all(&d).ok();
    }

    #[test]
    fn a_secrets_file_readable_by_others_is_warned_about() {
        use std::os::unix::fs::PermissionsExt;
        let d = dir("mode");
        let path = d.join("secrets.toml");
        std::fs::write(&path, node_toml("")).unwrap();
        let sources = FleetSources { secrets: Some(path.clone()), nodes_json: None, allow_empty: false };
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
        let (_, warnings) = sources.load().unwrap();
        assert!(warnings.iter().any(|w| w.contains("mode 644") && w.contains("chmod 600")), "{warnings:?}");
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
        let (_, warnings) = sources.load().unwrap();
        assert!(warnings.is_empty(), "{warnings:?}");
        std::fs::remove_dir_all(&d).ok();
    }

    #[test]
    fn flags_and_environment_are_checked() {
        let args = |f: fn(&mut Args)| {
            let mut a = Args {
                key: Some(KEY.into()),
                nodes: Some(format!(r#"{{"sfu":[{{"address":"http://a:1","key":"{KEY}"}}]}}"#)),
                ..Args::default()
            };
            f(&mut a);
            a
        };
        let c = GatewayConfig::resolve(&args(|_| {})).unwrap();
        assert_eq!((c.bind, c.port, c.trust_proxy), (IpAddr::V4(Ipv4Addr::UNSPECIFIED), 8071, false));
        assert_eq!(c.key.as_bytes(), b"secret-key-for-tests");
        let c = GatewayConfig::resolve(&args(|a| a.trust_proxy = Some("1".into()))).unwrap();
        assert!(c.trust_proxy);
        assert_eq!(GatewayConfig::resolve(&args(|_| {})).unwrap().threads, 1);
        assert_eq!(GatewayConfig::resolve(&args(|a| a.threads = Some("0".into()))).unwrap().threads, 0);

        let rows: Vec<(Args, &str)> = vec![
            (args(|a| a.key = None), "SFU_GATEWAY_KEY is required"),
            (args(|a| a.key = Some("***".into())), "SFU_GATEWAY_KEY"),
            (args(|a| a.port = Some("http".into())), "SFU_GATEWAY_PORT"),
            (args(|a| a.bind = Some("localhost".into())), "SFU_GATEWAY_BIND"),
            (args(|a| a.trust_proxy = Some("maybe".into())), "SFU_GATEWAY_TRUST_PROXY"),
            (args(|a| a.log_level = Some("loud".into())), "SFU_GATEWAY_LOG_LEVEL"),
            (args(|a| a.threads = Some("many".into())), "SFU_GATEWAY_THREADS"),
            (args(|a| a.nodes = Some("{\"sfu\": []}".into())), "no SFU configured"),
            (args(|a| a.secrets = Some("/nonexistent/secrets.toml".into())), "cannot read secrets file"),
        ];
        for (a, needle) in rows {
            let err = GatewayConfig::resolve(&a).unwrap_err().to_string();
            assert!(err.contains(needle), "{err:?} should mention {needle:?}");
        }
    }

    #[test]
    fn a_failover_budget_beyond_odoos_timeout_is_warned_about() {
        let json =
            format!(r#"{{"sfu":[{{"address":"http://a:1","key":"{KEY}"}}],"failover":{{"retry_timeout_ms":5000}}}}"#);
        let (_, warnings) = FleetSources { secrets: None, nodes_json: Some(json), allow_empty: false }.load().unwrap();
        assert!(warnings.iter().any(|w| w.contains("Odoo gives up")), "{warnings:?}");
    }
}
