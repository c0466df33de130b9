//! `gateway-bench`: what `sfu-gateway` costs on `/v1/channel`.
//!
//! Starts two `ringsfu` (PROXY=1) and one `sfu-gateway` on loopback from the binaries next to this
//! one, warms up, then measures sequential and concurrent `/v1/channel` requests (each with a new
//! `iss`, so each creates a channel) directly against one ringsfu and through the gateway. Prints a
//! JSON report: requests per second, p50/p99 latency, and gateway/direct ratios. Bounded in time:
//! each phase stops at its request count or its time limit, whichever comes first.
//!
//! Usage: `gateway-bench [--sequential N] [--concurrent M] [--concurrency C] [--phase-seconds S]
//! [--redis URL]` (defaults 5000, 20000, 32, 20, no Redis; `--help` lists every flag). With
//! `--redis` (a running Redis, such as `redis://127.0.0.1:6379/0`; its `sfu-gateway:` keys get
//! written) a second gateway shares its state there, and the report adds it: what Redis costs on
//! `/v1/channel`, as ratios to the in-memory gateway. Build first: `cargo build --release --workspace --bins` (`make
//! build`).
//!
//! `gateway-bench --fake-sfu ...` measures the gateway alone, against fake SFUs: see [`fake`].

use clap::Parser;
use hdrhistogram::Histogram;
use ringsfu_client::process::{Process, ringsfu_on_loopback};
use ringsfu_common::auth::{self, Key};
use serde_json::{Value, json};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

const GATEWAY_KEY: &str = "YmVuY2gtZ2F0ZXdheS1rZXktMzItYnl0ZXMtbG9uZyE=";
const SFU_KEYS: [&str; 2] =
    ["YmVuY2gtc2Z1LWEta2V5LTMyLWJ5dGVzLWxvbmchIQ==", "YmVuY2gtc2Z1LWIta2V5LTMyLWJ5dGVzLWxvbmchIQ=="];
const WARM_UP: u64 = 300;
const START_TIMEOUT: Duration = Duration::from_secs(30);

/// What sfu-gateway costs on `/v1/channel`.
///
/// Against two real ringsfu (the default; prints a JSON report) or, with `--fake-sfu`, alone against
/// two in-process fake SFUs (prints a table; `--json` writes it too).
#[derive(Parser, Debug)]
#[command(name = "gateway-bench")]
struct Cli {
    /// Measure the gateway alone, against two in-process fake SFUs.
    #[arg(long)]
    fake_sfu: bool,
    /// Sequential requests per target.
    #[arg(long, value_name = "N", default_value_t = 5000, value_parser = positive(), conflicts_with = "fake_sfu")]
    sequential: u64,
    /// Concurrent requests per target.
    #[arg(long, value_name = "M", default_value_t = 20000, value_parser = positive(), conflicts_with = "fake_sfu")]
    concurrent: u64,
    /// Requests in flight in the concurrent phase.
    #[arg(long, value_name = "C", default_value_t = 32, value_parser = positive(), conflicts_with = "fake_sfu")]
    concurrency: u64,
    /// Time limit of each phase, in seconds [default: 20, 3 with --fake-sfu].
    #[arg(long, value_name = "S", value_parser = positive())]
    phase_seconds: Option<u64>,
    /// A running Redis (its `sfu-gateway:` keys get written): a second gateway shares its state there.
    #[arg(long, value_name = "URL", conflicts_with = "fake_sfu")]
    redis: Option<String>,
    /// With --fake-sfu: how many times to measure every phase.
    #[arg(long, value_name = "R", default_value_t = 1, value_parser = positive(), requires = "fake_sfu")]
    runs: u64,
    /// With --fake-sfu: new `iss` placed to measure the memory of a placement.
    #[arg(long, value_name = "N", default_value_t = 200_000, value_parser = positive(), requires = "fake_sfu")]
    placements: u64,
    /// With --fake-sfu: also write the report as JSON to this file.
    #[arg(long, value_name = "PATH", requires = "fake_sfu")]
    json: Option<PathBuf>,
    /// With --fake-sfu: another sfu-gateway binary to measure (an older build, for before/after)
    /// [default: the sfu-gateway next to this binary].
    #[arg(long, value_name = "BINARY", requires = "fake_sfu")]
    gateway: Option<PathBuf>,
    /// With --fake-sfu: the gateway ringsfu's replaces (Odoo's sfu-gateway, built elsewhere), to
    /// measure in the same runs under the same load; the table adds it, with ours as a ratio to it.
    #[arg(long, value_name = "BINARY", requires = "fake_sfu")]
    compare_with: Option<PathBuf>,
}

/// Counts and seconds are positive integers.
fn positive() -> clap::builder::RangedU64ValueParser<u64> {
    clap::value_parser!(u64).range(1..)
}

struct Options {
    sequential: u64,
    concurrent: u64,
    concurrency: u64,
    phase_limit: Duration,
    redis: Option<String>,
}

fn main() {
    let cli = Cli::parse();
    if cli.fake_sfu {
        std::process::exit(fake::main(fake::Options {
            phase: Duration::from_secs(cli.phase_seconds.unwrap_or(3)),
            runs: cli.runs as usize,
            placements: cli.placements,
            json: cli.json,
            gateway: cli.gateway,
            compare_with: cli.compare_with,
        }));
    }
    let options = Options {
        sequential: cli.sequential,
        concurrent: cli.concurrent,
        concurrency: cli.concurrency,
        phase_limit: Duration::from_secs(cli.phase_seconds.unwrap_or(20)),
        redis: cli.redis,
    };
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build().expect("building the tokio runtime");
    match runtime.block_on(run(options)) {
        Ok(report) => println!("{}", serde_json::to_string_pretty(&report).expect("a JSON value serializes")),
        Err(e) => {
            eprintln!("gateway-bench: {e}");
            std::process::exit(1);
        }
    }
}

async fn run(options: Options) -> Result<Value, String> {
    let dir = std::env::current_exe().map_err(|e| e.to_string())?.parent().map(Path::to_path_buf).unwrap_or_default();
    let binary = |name: &str| {
        let path = dir.join(name);
        path.exists().then_some(path).ok_or_else(|| {
            format!(
                "{} not found; build it: cargo build --release --bin ringsfu --bin sfu-gateway",
                dir.join(name).display()
            )
        })
    };
    let (ringsfu, gateway) = (binary("ringsfu")?, binary("sfu-gateway")?);
    let scratch = std::env::temp_dir().join(format!("gateway-bench-{}", std::process::id()));
    std::fs::create_dir_all(&scratch).map_err(|e| e.to_string())?;

    let sfus = [start_ringsfu(&ringsfu, 0, &scratch)?, start_ringsfu(&ringsfu, 1, &scratch)?];
    let gw = start_gateway(&gateway, &sfus, &scratch, None)?;
    let gw_redis = match &options.redis {
        Some(url) => Some(start_gateway(&gateway, &sfus, &scratch, Some(url))?),
        None => None,
    };
    let client =
        reqwest::Client::builder().no_proxy().pool_max_idle_per_host(256).build().map_err(|e| e.to_string())?;
    let direct =
        Target { base: format!("http://{}", sfus[0].http), key: Key::from_base64(SFU_KEYS[0]).expect("a valid key") };
    let through =
        Target { base: format!("http://{}", gw.http), key: Key::from_base64(GATEWAY_KEY).expect("a valid key") };
    wait_ready(&client, &through.base).await?;
    let through_redis =
        gw_redis.as_ref().map(|g| Target { base: format!("http://{}", g.http), key: through.key.clone() });
    if let Some(target) = &through_redis {
        wait_ready(&client, &target.base).await?;
    }

    let counter = Arc::new(AtomicU64::new(0));
    for target in [Some(&direct), Some(&through), through_redis.as_ref()].into_iter().flatten() {
        measure(&client, target, WARM_UP, 1, options.phase_limit, &counter).await?;
    }
    let mut phases = serde_json::Map::new();
    let mut results = Vec::new();
    for (name, count, concurrency) in
        [("sequential", options.sequential, 1), ("concurrent", options.concurrent, options.concurrency)]
    {
        let d = measure(&client, &direct, count, concurrency, options.phase_limit, &counter).await?;
        let g = measure(&client, &through, count, concurrency, options.phase_limit, &counter).await?;
        let redis = match &through_redis {
            Some(target) => {
                let r = measure(&client, target, count, concurrency, options.phase_limit, &counter).await?;
                json!({
                    "gateway_redis": r.to_json(),
                    "ratios_redis": {
                        "requests_per_second_redis_over_in_memory": round(r.rps() / g.rps(), 3),
                        "p50_redis_over_in_memory": round(r.p50_ms() / g.p50_ms(), 3),
                        "p99_redis_over_in_memory": round(r.p99_ms() / g.p99_ms(), 3),
                        "p50_redis_over_direct": round(r.p50_ms() / d.p50_ms(), 3),
                    },
                    "added_latency_redis_ms": {
                        "p50": round(r.p50_ms() - g.p50_ms(), 3),
                        "p99": round(r.p99_ms() - g.p99_ms(), 3),
                    },
                })
            }
            None => Value::Null,
        };
        let mut phase = json!({
                "concurrency": concurrency,
                "direct": d.to_json(),
                "gateway": g.to_json(),
                "ratios": {
                    "requests_per_second_gateway_over_direct": round(g.rps() / d.rps(), 3),
                    "p50_gateway_over_direct": round(g.p50_ms() / d.p50_ms(), 3),
                    "p99_gateway_over_direct": round(g.p99_ms() / d.p99_ms(), 3),
                },
                "added_latency_ms": {"p50": round(g.p50_ms() - d.p50_ms(), 3), "p99": round(g.p99_ms() - d.p99_ms(), 3)},
        });
        if let (Value::Object(extra), Value::Object(phase)) = (redis, &mut phase) {
            phase.extend(extra);
        }
        phases.insert(name.to_string(), phase);
        results.push((d, g));
    }
    drop(gw_redis);
    drop(gw);
    drop(sfus);
    std::fs::remove_dir_all(&scratch).ok();
    let cores = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1);
    Ok(json!({
        "machine": {"cores": cores},
        "setup": "two ringsfu (PROXY=1, NUM_WORKERS=1) and one sfu-gateway on loopback; client in this process; \
                  each request has a new iss (a new channel); direct = one ringsfu; gateway_redis = a second \
                  sfu-gateway sharing its state in the given Redis",
        "redis": options.redis.is_some(),
        "phases": phases,
    }))
}

struct Target {
    base: String,
    key: Key,
}

struct Measurement {
    requests: u64,
    errors: u64,
    elapsed: Duration,
    latency_us: Histogram<u64>,
}

impl Measurement {
    fn rps(&self) -> f64 {
        self.requests as f64 / self.elapsed.as_secs_f64().max(1e-9)
    }

    fn p50_ms(&self) -> f64 {
        self.latency_us.value_at_quantile(0.5) as f64 / 1000.0
    }

    fn p99_ms(&self) -> f64 {
        self.latency_us.value_at_quantile(0.99) as f64 / 1000.0
    }

    fn to_json(&self) -> Value {
        json!({
            "requests": self.requests,
            "errors": self.errors,
            "seconds": round(self.elapsed.as_secs_f64(), 3),
            "requests_per_second": round(self.rps(), 1),
            "p50_ms": round(self.p50_ms(), 3),
            "p99_ms": round(self.p99_ms(), 3),
        })
    }
}

fn round(value: f64, places: i32) -> f64 {
    let scale = 10f64.powi(places);
    (value * scale).round() / scale
}

/// `count` requests with `concurrency` in flight, stopping early at `limit`.
async fn measure(
    client: &reqwest::Client,
    target: &Target,
    count: u64,
    concurrency: u64,
    limit: Duration,
    counter: &Arc<AtomicU64>,
) -> Result<Measurement, String> {
    let started = Instant::now();
    let deadline = started + limit;
    let issued = Arc::new(AtomicU64::new(0));
    let mut workers = Vec::new();
    for _ in 0..concurrency {
        let (client, issued, counter) = (client.clone(), issued.clone(), counter.clone());
        let (url, key) = (format!("{}/v1/channel", target.base), target.key.clone());
        workers.push(tokio::spawn(async move {
            let mut histogram = Histogram::<u64>::new_with_bounds(1, 60_000_000, 3).expect("valid bounds");
            let mut errors = 0u64;
            while issued.fetch_add(1, Ordering::Relaxed) < count && Instant::now() < deadline {
                let n = counter.fetch_add(1, Ordering::Relaxed);
                let token = auth::sign(
                    json!({"iss": format!("bench:channel:{n}"), "exp": unix_now() + 60})
                        .as_object()
                        .expect("a JSON object"),
                    &key,
                );
                let sent = Instant::now();
                let ok = match client.get(&url).header("Authorization", format!("Bearer {token}")).send().await {
                    Ok(r) => r.status().is_success() && r.bytes().await.is_ok(),
                    Err(_) => false,
                };
                histogram.saturating_record(sent.elapsed().as_micros() as u64);
                errors += u64::from(!ok);
            }
            (histogram, errors)
        }));
    }
    let mut latency_us = Histogram::<u64>::new_with_bounds(1, 60_000_000, 3).expect("valid bounds");
    let mut errors = 0;
    for worker in workers {
        let (h, e) = worker.await.map_err(|e| e.to_string())?;
        latency_us.add(&h).map_err(|e| e.to_string())?;
        errors += e;
    }
    Ok(Measurement { requests: latency_us.len(), errors, elapsed: started.elapsed(), latency_us })
}

fn unix_now() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0)
}

/// A started server (killed when dropped) and the address its ready line gave.
struct Server {
    process: Process,
    http: SocketAddr,
}

fn start_ringsfu(binary: &Path, index: usize, scratch: &Path) -> Result<Server, String> {
    let mut cmd = Command::new(binary);
    cmd.env_clear()
        .env("AUTH_KEY", SFU_KEYS[index])
        .env("PROXY", "1")
        .env("NUM_WORKERS", "1")
        .env("PIN_SHARDS", "false")
        .env("LOG_LEVEL", "warn");
    ringsfu_on_loopback(&mut cmd);
    spawn(cmd, "ringsfu ready ", &scratch.join(format!("ringsfu-{index}.log")))
}

fn start_gateway(binary: &Path, sfus: &[Server; 2], scratch: &Path, redis: Option<&str>) -> Result<Server, String> {
    let name = if redis.is_some() { "redis" } else { "memory" };
    let secrets = scratch.join(format!("secrets-{name}.toml"));
    let mut cmd = gateway_command(binary, sfus.iter().map(|s| &s.http), &secrets)?;
    cmd.env("SFU_GATEWAY_LOG_LEVEL", "warn");
    if let Some(url) = redis {
        cmd.env("SFU_GATEWAY_REDIS_URL", url);
    }
    spawn(cmd, "sfu-gateway ready ", &scratch.join(format!("sfu-gateway-{name}.log")))
}

/// The gateway over `sfus` (with the bench's keys, health polled every second), its secrets
/// file written to `secrets`, listening on an ephemeral loopback port.
fn gateway_command(
    binary: &Path,
    sfus: impl IntoIterator<Item = impl std::fmt::Display>,
    secrets: &Path,
) -> Result<Command, String> {
    let mut text = String::new();
    for (sfu, key) in sfus.into_iter().zip(SFU_KEYS) {
        text.push_str(&format!("[[sfu]]\naddress = \"http://{sfu}\"\nregion = \"local\"\nkey = \"{key}\"\n\n"));
    }
    text.push_str("[health]\ninterval_seconds = 1\n");
    std::fs::write(secrets, text).map_err(|e| e.to_string())?;
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(secrets, std::fs::Permissions::from_mode(0o600)).map_err(|e| e.to_string())?;
    let mut cmd = Command::new(binary);
    cmd.env_clear()
        .env("SFU_GATEWAY_KEY", GATEWAY_KEY)
        .env("SFU_GATEWAY_BIND", "127.0.0.1")
        .env("SFU_GATEWAY_PORT", "0")
        .arg("--secrets")
        .arg(secrets);
    Ok(cmd)
}

/// Spawns `cmd`, its stderr to `log`, and waits for its ready line (`<prefix>http=<addr> ...`).
fn spawn(mut cmd: Command, prefix: &str, log: &Path) -> Result<Server, String> {
    let stderr = std::fs::File::create(log).map_err(|e| e.to_string())?;
    let process = Process::spawn(cmd.stderr(stderr), prefix, START_TIMEOUT, Some(log))?;
    Ok(Server { http: process.http()?, process })
}

async fn wait_ready(client: &reqwest::Client, base: &str) -> Result<(), String> {
    for _ in 0..100 {
        if client.get(format!("{base}/health/ready")).send().await.is_ok_and(|r| r.status().is_success()) {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    Err("the gateway never saw a healthy SFU".into())
}

/// `--fake-sfu`: the gateway's own cost. Two in-process fake SFUs answer static JSON (each channel
/// a new uuid), so the SFU's work does not hide the gateway's; the load is pre-signed requests on
/// plain keep-alive connections, so the load side stays cheap too. The gateway process is pinned
/// to one core, this process (load and fake SFUs) to another, when the machine has two.
///
/// Usage: `gateway-bench --fake-sfu [--phase-seconds S] [--runs R] [--placements N] [--json PATH]
/// [--gateway BINARY] [--compare-with BINARY]` (defaults 3, 1, 200000, none, the sfu-gateway
/// built next to this one, none). Each run measures, at 1 and 32 connections, with one fixed
/// `iss` and with a new `iss` per request, the fake SFU answered directly (the ceiling) then the
/// same requests through the gateway, then through the gateway ours replaces if given. The gateway's CPU time is its process's (utime + stime from
/// /proc, all threads). Before the runs, `N` new `iss` measure the memory of a placement.
mod fake {
    use super::{GATEWAY_KEY, Server, gateway_command, round, spawn, unix_now};
    use axum::body::Body;
    use hdrhistogram::Histogram;
    use ringsfu::runtime::cpu;
    use ringsfu_common::auth::{self, Key};
    use serde_json::{Value, json};
    use std::net::SocketAddr;
    use std::os::unix::process::CommandExt;
    use std::path::{Path, PathBuf};
    use std::sync::Arc;
    use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
    use std::time::{Duration, Instant};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpStream;

    const CONNECTIONS: [usize; 2] = [1, 32];
    /// Requests pre-signed per second of a new-`iss` phase: above what one core serves.
    const POOL_RATE: u64 = 80_000;

    pub(super) struct Options {
        pub phase: Duration,
        pub runs: usize,
        pub placements: u64,
        pub json: Option<PathBuf>,
        /// Another sfu-gateway binary to measure (an older build, for before/after).
        pub gateway: Option<PathBuf>,
        /// The gateway ours replaces, measured alongside.
        pub compare_with: Option<PathBuf>,
    }

    pub(super) fn main(options: Options) -> i32 {
        // Threads inherit the affinity: pin before any is started.
        let cores = cpu::shard_cpus(2);
        let pins = match cores.as_slice() {
            [gateway, load] if gateway != load => Some((*gateway, *load)),
            _ => None,
        };
        if let Some((_, load)) = pins
            && let Err(e) = cpu::pin_current_thread(load)
        {
            eprintln!("gateway-bench: cannot pin the load to core {load}: {e}");
            return 1;
        }
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("a tokio runtime");
        match runtime.block_on(run(options, pins)) {
            Ok(()) => 0,
            Err(e) => {
                eprintln!("gateway-bench: {e}");
                1
            }
        }
    }

    async fn run(options: Options, pins: Option<(usize, usize)>) -> Result<(), String> {
        let sfus = FakeSfus::start()?;
        let dir =
            std::env::current_exe().map_err(|e| e.to_string())?.parent().map(Path::to_path_buf).unwrap_or_default();
        let binary = options.gateway.clone().unwrap_or_else(|| dir.join("sfu-gateway"));
        if !binary.exists() {
            return Err(format!("{} not found; build it: cargo build --release --bin sfu-gateway", binary.display()));
        }
        // The gateways' logs go to memory where the machine has a tmpfs: on disk, the writeback of
        // one gateway's log came seconds later as interrupt time on the shared core, billed to the
        // gateway measured then (the same binary measured 0.92-0.96 of itself in the second slot).
        let base = Some(PathBuf::from("/dev/shm")).filter(|d| d.is_dir()).unwrap_or_else(std::env::temp_dir);
        let scratch = base.join(format!("gateway-bench-fake-{}", std::process::id()));
        std::fs::create_dir_all(&scratch).map_err(|e| e.to_string())?;
        let gateway = start_gateway(&binary, &sfus.addresses, &scratch, pins.map(|(g, _)| g))?;
        let gateway_pid = gateway.process.id();
        let through = gateway.http;
        let direct = sfus.addresses[0];
        wait_ready(through).await?;
        let other = match &options.compare_with {
            Some(binary) => Some(Other::start(binary, &sfus.addresses, &scratch, pins.map(|(g, _)| g)).await?),
            None => None,
        };

        let fixed = Arc::new(vec![request_bytes("bench:fixed")]);
        let mut tag = 0u64;
        let mut fresh = |count: u64| {
            tag += 1;
            Arc::new((0..count).map(|n| request_bytes(&format!("bench:{tag}:{n}"))).collect::<Vec<_>>())
        };

        // Memory first, on a fresh gateway: RSS growth over N new placements.
        let phase_limit = options.phase.max(Duration::from_secs(60));
        measure(through, &fixed, 8, options.phase.min(Duration::from_secs(1)), gateway_pid).await?;
        let rss_before = rss_bytes(gateway_pid)?;
        let placed = measure(through, &fresh(options.placements), 32, phase_limit, gateway_pid).await?;
        let rss_after = rss_bytes(gateway_pid)?;
        let live = live_placements(through).await?;
        let memory = json!({
            "new_iss": placed.requests,
            "errors": placed.errors,
            "rss_before_bytes": rss_before,
            "rss_after_bytes": rss_after,
            "rss_growth_per_iss_bytes": round(rss_after.saturating_sub(rss_before) as f64 / placed.requests.max(1) as f64, 1),
            "live_issuer_placements": live.0,
            "live_channel_placements": live.1,
            "bytes_per_live_placement_by_construction":
                sfu_gateway::placement::Placements::bytes_per_entry("bench:1:100000".len()),
        });

        let mut rows: Vec<Row> = Vec::new();
        for _ in 0..options.runs {
            for connections in CONNECTIONS {
                for new_iss in [false, true] {
                    let pool = if new_iss { fresh(POOL_RATE * options.phase.as_secs()) } else { fixed.clone() };
                    let d = measure(direct, &pool, connections, options.phase, gateway_pid).await?;
                    let g = measure(through, &pool, connections, options.phase, gateway_pid).await?;
                    let o = match &other {
                        Some(o) => Some(measure(o.http, &pool, connections, options.phase, o.child.id()).await?),
                        None => None,
                    };
                    rows.push(Row { connections, new_iss, direct: d, gateway: g, other: o, load: load_average() });
                }
            }
        }
        drop(gateway);
        drop(other);
        std::fs::remove_dir_all(&scratch).ok();

        print_table(&rows, &memory, options.runs, pins.is_some());
        if let Some(path) = options.json {
            let report = json!({
                "setup": "sfu-gateway (every feature on, INFO logging) in front of two in-process fake SFUs \
                          answering static JSON; load: pre-signed HS256 tokens on keep-alive HTTP/1.1 connections; \
                          gateway CPU = its process's utime+stime from /proc; direct = the same requests to one \
                          fake SFU; ratios = gateway / direct of the same run",
                "pinned": pins.map(|(g, l)| json!({"gateway_core": g, "load_and_fake_sfus_core": l})),
                "compared_with": options.compare_with.as_ref().map(|p| p.display().to_string()),
                "phase_seconds": options.phase.as_secs(),
                "runs": options.runs,
                "memory": memory,
                "phases": rows.iter().map(Row::to_json).collect::<Vec<_>>(),
            });
            let text = serde_json::to_string_pretty(&report).expect("a JSON value serializes");
            std::fs::write(&path, text + "\n").map_err(|e| format!("{}: {e}", path.display()))?;
        }
        Ok(())
    }

    struct Row {
        connections: usize,
        new_iss: bool,
        direct: Measurement,
        gateway: Measurement,
        /// The gateway ours replaces (`--compare-with`), on the same requests.
        other: Option<Measurement>,
        load: String,
    }

    impl Row {
        fn label(&self) -> String {
            let iss = if self.new_iss { "a new iss per request" } else { "one iss" };
            format!("{} connection{}, {iss}", self.connections, if self.connections == 1 { "" } else { "s" })
        }

        fn ratio(&self) -> f64 {
            self.gateway.rps() / self.direct.rps().max(1e-9)
        }

        fn to_json(&self) -> Value {
            json!({
                "connections": self.connections,
                "new_iss": self.new_iss,
                "direct": self.direct.to_json(),
                "gateway": self.gateway.to_json(),
                "requests_per_second_gateway_over_direct": round(self.ratio(), 3),
                "gateway_cpu_us_per_request": round(self.gateway.gateway_cpu_us(), 2),
                "direct_cpu_us_per_request": round(self.direct.load_cpu_us(), 2),
                "cpu_gateway_over_direct": round(self.gateway.gateway_cpu_us() / self.direct.load_cpu_us().max(1e-9), 3),
                "other_gateway": self.other.as_ref().map(Measurement::to_json),
                "other_gateway_cpu_us_per_request": self.other.as_ref().map(|o| round(o.gateway_cpu_us(), 2)),
                "requests_per_second_gateway_over_other": self.other.as_ref().map(|o| round(self.gateway.rps() / o.rps().max(1e-9), 3)),
                "cpu_gateway_over_other": self.other.as_ref().map(|o| round(self.gateway.gateway_cpu_us() / o.gateway_cpu_us().max(1e-9), 3)),
                "load_average": self.load,
            })
        }
    }

    fn print_table(rows: &[Row], memory: &Value, runs: usize, pinned: bool) {
        println!(
            "sfu-gateway against fake SFUs ({runs} run(s); gateway {}):",
            if pinned { "pinned to one core, load and fake SFUs to another" } else { "not pinned (one core)" }
        );
        println!();
        println!(
            "| load | gateway req/s | direct req/s | req/s ratio | gateway CPU/request | direct CPU/request (client + fake SFU) | CPU ratio |"
        );
        println!("|---|---|---|---|---|---|---|");
        let mut seen: Vec<String> = Vec::new();
        for row in rows {
            let label = row.label();
            if seen.contains(&label) {
                continue;
            }
            let same: Vec<&Row> = rows.iter().filter(|r| r.label() == label).collect();
            let spread = |f: &dyn Fn(&Row) -> f64, places: i32| spread_of(&same, f, places);
            println!(
                "| {label} | {} | {} | {}× | {} µs | {} µs | {}× |",
                spread(&|r| r.gateway.rps(), 0),
                spread(&|r| r.direct.rps(), 0),
                spread(&|r| r.ratio(), 2),
                spread(&|r| r.gateway.gateway_cpu_us(), 1),
                spread(&|r| r.direct.load_cpu_us(), 1),
                spread(&|r| r.gateway.gateway_cpu_us() / r.direct.load_cpu_us().max(1e-9), 2),
            );
            seen.push(label);
        }
        if rows.iter().any(|r| r.other.is_some()) {
            println!();
            println!("Against the gateway it replaces (--compare-with), on the same requests in the same runs:");
            println!();
            println!("| load | ours req/s | its req/s | req/s ratio | our CPU/request | its CPU/request | CPU ratio |");
            println!("|---|---|---|---|---|---|---|");
            let mut seen: Vec<String> = Vec::new();
            for row in rows.iter().filter(|r| r.other.is_some()) {
                let label = row.label();
                if seen.contains(&label) {
                    continue;
                }
                let same: Vec<&Row> = rows.iter().filter(|r| r.label() == label && r.other.is_some()).collect();
                let other = |r: &Row| r.other.as_ref().map_or(0.0, |o| o.rps());
                let other_cpu = |r: &Row| r.other.as_ref().map_or(0.0, |o| o.gateway_cpu_us());
                println!(
                    "| {label} | {} | {} | {}× | {} µs | {} µs | {}× |",
                    spread_of(&same, &|r| r.gateway.rps(), 0),
                    spread_of(&same, &other, 0),
                    spread_of(&same, &|r| r.gateway.rps() / other(r).max(1e-9), 2),
                    spread_of(&same, &|r| r.gateway.gateway_cpu_us(), 1),
                    spread_of(&same, &other_cpu, 1),
                    spread_of(&same, &|r| r.gateway.gateway_cpu_us() / other_cpu(r).max(1e-9), 2),
                );
                seen.push(label);
            }
        }
        println!();
        println!(
            "memory: {} new iss, RSS {} → {} bytes: {} bytes per iss; {} issuer and {} channel placements live; {} bytes per placement (issuer + channel entry) by construction",
            memory["new_iss"],
            memory["rss_before_bytes"],
            memory["rss_after_bytes"],
            memory["rss_growth_per_iss_bytes"],
            memory["live_issuer_placements"],
            memory["live_channel_placements"],
            memory["bytes_per_live_placement_by_construction"],
        );
        println!("load average at each phase: {}", rows.iter().map(|r| r.load.as_str()).collect::<Vec<_>>().join("; "));
    }

    /// The median of `f` over `rows`, with its range when there are several.
    fn spread_of(rows: &[&Row], f: &dyn Fn(&Row) -> f64, places: i32) -> String {
        let mut values: Vec<f64> = rows.iter().map(|r| f(r)).collect();
        values.sort_by(f64::total_cmp);
        let middle = values.len() / 2;
        let median = if values.len() % 2 == 0 { (values[middle - 1] + values[middle]) / 2.0 } else { values[middle] };
        if values.len() == 1 {
            format!("{}", round(median, places))
        } else {
            format!(
                "{} ({}–{})",
                round(median, places),
                round(values[0], places),
                round(values[values.len() - 1], places)
            )
        }
    }

    fn load_average() -> String {
        let text = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
        text.split_whitespace().take(3).collect::<Vec<_>>().join(" ")
    }

    /// A keep-alive `GET /v1/channel` with a token for `iss`, as sent on the wire.
    fn request_bytes(iss: &str) -> Vec<u8> {
        let key = Key::from_base64(GATEWAY_KEY).expect("a valid key");
        let token = auth::sign(json!({"iss": iss, "exp": unix_now() + 3600}).as_object().expect("an object"), &key);
        format!("GET /v1/channel HTTP/1.1\r\nhost: bench\r\nauthorization: Bearer {token}\r\n\r\n").into_bytes()
    }

    struct Measurement {
        requests: u64,
        errors: u64,
        elapsed: Duration,
        latency_us: Histogram<u64>,
        gateway_cpu: Duration,
        load_cpu: Duration,
    }

    impl Measurement {
        fn rps(&self) -> f64 {
            self.requests as f64 / self.elapsed.as_secs_f64().max(1e-9)
        }

        fn gateway_cpu_us(&self) -> f64 {
            self.gateway_cpu.as_secs_f64() * 1e6 / self.requests.max(1) as f64
        }

        /// This process's CPU per request: the client, plus the fake SFU when it is the target.
        fn load_cpu_us(&self) -> f64 {
            self.load_cpu.as_secs_f64() * 1e6 / self.requests.max(1) as f64
        }

        fn to_json(&self) -> Value {
            json!({
                "requests": self.requests,
                "errors": self.errors,
                "seconds": round(self.elapsed.as_secs_f64(), 3),
                "requests_per_second": round(self.rps(), 1),
                "p50_ms": round(self.latency_us.value_at_quantile(0.5) as f64 / 1000.0, 3),
                "p99_ms": round(self.latency_us.value_at_quantile(0.99) as f64 / 1000.0, 3),
                "gateway_cpu_seconds": round(self.gateway_cpu.as_secs_f64(), 3),
                // Near 1: the load side's core was the limit, not the gateway.
                "load_core_busy": round(self.load_cpu.as_secs_f64() / self.elapsed.as_secs_f64().max(1e-9), 3),
            })
        }
    }

    /// Sends the pool's requests on `connections` keep-alive connections until the time limit or
    /// the pool's end (a one-request pool is sent again and again).
    async fn measure(
        target: SocketAddr,
        pool: &Arc<Vec<Vec<u8>>>,
        connections: usize,
        limit: Duration,
        gateway_pid: u32,
    ) -> Result<Measurement, String> {
        let mut streams = Vec::new();
        for _ in 0..connections {
            let stream = TcpStream::connect(target).await.map_err(|e| format!("connecting to {target}: {e}"))?;
            stream.set_nodelay(true).map_err(|e| e.to_string())?;
            streams.push(stream);
        }
        let next = Arc::new(AtomicUsize::new(0));
        let (gateway_then, load_then) = (process_cpu(gateway_pid)?, cpu::process_cpu_time());
        let started = Instant::now();
        let deadline = started + limit;
        let workers: Vec<_> = streams
            .into_iter()
            .map(|mut stream| {
                let (pool, next) = (pool.clone(), next.clone());
                tokio::spawn(async move {
                    let mut histogram = Histogram::<u64>::new_with_bounds(1, 60_000_000, 3).expect("valid bounds");
                    let (mut errors, mut buf) = (0u64, Vec::with_capacity(4096));
                    while Instant::now() < deadline {
                        let request = match pool.len() {
                            1 => &pool[0],
                            _ => match pool.get(next.fetch_add(1, Ordering::Relaxed)) {
                                Some(r) => r,
                                None => break,
                            },
                        };
                        let sent = Instant::now();
                        match exchange(&mut stream, request, &mut buf).await {
                            Ok((200, _)) => {
                                histogram.saturating_record(sent.elapsed().as_micros() as u64);
                            }
                            Ok(_) => errors += 1,
                            Err(_) => {
                                errors += 1;
                                break;
                            }
                        }
                    }
                    (histogram, errors)
                })
            })
            .collect();
        let mut latency_us = Histogram::<u64>::new_with_bounds(1, 60_000_000, 3).expect("valid bounds");
        let mut errors = 0;
        for worker in workers {
            let (h, e) = worker.await.map_err(|e| e.to_string())?;
            latency_us.add(&h).map_err(|e| e.to_string())?;
            errors += e;
        }
        let elapsed = started.elapsed();
        let gateway_cpu = process_cpu(gateway_pid)?.saturating_sub(gateway_then);
        let load_cpu = cpu::process_cpu_time().saturating_sub(load_then);
        if errors > 0 {
            eprintln!("gateway-bench: {errors} failed requests to {target}");
        }
        Ok(Measurement { requests: latency_us.len(), errors, elapsed, latency_us, gateway_cpu, load_cpu })
    }

    /// One request and its answer on a keep-alive connection: the status and the body. The
    /// answers measured here always carry a Content-Length (no chunked bodies).
    async fn exchange<'b>(
        stream: &mut TcpStream,
        request: &[u8],
        buf: &'b mut Vec<u8>,
    ) -> std::io::Result<(u16, &'b [u8])> {
        let invalid = |what: &str| std::io::Error::new(std::io::ErrorKind::InvalidData, what.to_string());
        stream.write_all(request).await?;
        buf.clear();
        let head_end = loop {
            if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                break i + 4;
            }
            if stream.read_buf(buf).await? == 0 {
                return Err(std::io::ErrorKind::UnexpectedEof.into());
            }
        };
        let head = std::str::from_utf8(&buf[..head_end]).map_err(|_| invalid("a head that is not text"))?;
        let status: u16 = head.get(9..12).and_then(|s| s.parse().ok()).ok_or_else(|| invalid("no status"))?;
        let length: usize = head
            .lines()
            .filter_map(|line| line.split_once(':'))
            .find(|(name, _)| name.eq_ignore_ascii_case("content-length"))
            .and_then(|(_, value)| value.trim().parse().ok())
            .ok_or_else(|| invalid("no content-length"))?;
        while buf.len() < head_end + length {
            if stream.read_buf(buf).await? == 0 {
                return Err(std::io::ErrorKind::UnexpectedEof.into());
            }
        }
        Ok((status, &buf[head_end..head_end + length]))
    }

    async fn get(target: SocketAddr, path: &str) -> Result<(u16, Vec<u8>), String> {
        let mut stream = TcpStream::connect(target).await.map_err(|e| e.to_string())?;
        let request = format!("GET {path} HTTP/1.1\r\nhost: bench\r\n\r\n");
        let mut buf = Vec::new();
        let (status, body) = exchange(&mut stream, request.as_bytes(), &mut buf).await.map_err(|e| e.to_string())?;
        Ok((status, body.to_vec()))
    }

    async fn wait_ready(gateway: SocketAddr) -> Result<(), String> {
        for _ in 0..100 {
            if get(gateway, "/health/ready").await.is_ok_and(|(status, _)| status == 200) {
                return Ok(());
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        Err("the gateway never saw a healthy fake SFU".into())
    }

    /// (issuers, channels) the gateway holds, from `/v1/health`.
    async fn live_placements(gateway: SocketAddr) -> Result<(u64, u64), String> {
        let (_, body) = get(gateway, "/v1/health").await?;
        let report: Value = serde_json::from_slice(&body).map_err(|e| format!("/v1/health: {e}"))?;
        let count = |which: &str| report["placements"][which].as_u64().unwrap_or(0);
        Ok((count("issuers"), count("channels")))
    }

    /// utime + stime of a process, all its threads (dead ones included).
    fn process_cpu(pid: u32) -> Result<Duration, String> {
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).map_err(|e| e.to_string())?;
        // Fields after the command name's closing parenthesis: state is the first, utime the 12th.
        let rest = stat.rsplit_once(')').map(|(_, r)| r).ok_or("an unreadable /proc stat")?;
        let fields: Vec<u64> = rest.split_whitespace().skip(11).take(2).filter_map(|f| f.parse().ok()).collect();
        // SAFETY: sysconf has no preconditions.
        let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as u64;
        Ok(Duration::from_micros(fields.iter().sum::<u64>() * 1_000_000 / hz))
    }

    fn rss_bytes(pid: u32) -> Result<u64, String> {
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).map_err(|e| e.to_string())?;
        let kib = status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.split_whitespace().next()?.parse::<u64>().ok())
            .ok_or("no VmRSS")?;
        Ok(kib * 1024)
    }

    fn start_gateway(
        binary: &Path,
        sfus: &[SocketAddr; 2],
        scratch: &Path,
        core: Option<usize>,
    ) -> Result<Server, String> {
        // The default log level (INFO): the gateway as deployed, a line per placed channel.
        let mut cmd = gateway_command(binary, sfus, &scratch.join("secrets.toml"))?;
        pin_child(&mut cmd, core);
        spawn(cmd, "sfu-gateway ready ", &scratch.join("sfu-gateway.log"))
    }

    /// Pins the child `cmd` starts to `core`, if any.
    fn pin_child(cmd: &mut std::process::Command, core: Option<usize>) {
        if let Some(core) = core {
            // SAFETY: runs in the child between fork and exec; it only makes the affinity syscall.
            unsafe { cmd.pre_exec(move || cpu::pin_current_thread(core)) };
        }
    }

    /// The gateway ours replaces (Odoo's sfu-gateway): started from the same secrets, on a port
    /// chosen here (it prints no address), pinned to the gateway's core; killed when dropped.
    struct Other {
        child: std::process::Child,
        http: SocketAddr,
    }

    impl Other {
        async fn start(
            binary: &Path,
            sfus: &[SocketAddr; 2],
            scratch: &Path,
            core: Option<usize>,
        ) -> Result<Other, String> {
            let port = std::net::TcpListener::bind("127.0.0.1:0")
                .and_then(|l| l.local_addr())
                .map_err(|e| format!("finding a free port: {e}"))?
                .port();
            let mut cmd = gateway_command(binary, sfus, &scratch.join("other-secrets.toml"))?;
            cmd.env("SFU_GATEWAY_PORT", port.to_string());
            let log = std::fs::File::create(scratch.join("other-gateway.log")).map_err(|e| e.to_string())?;
            cmd.stdout(log.try_clone().map_err(|e| e.to_string())?).stderr(log);
            pin_child(&mut cmd, core);
            let child = cmd.spawn().map_err(|e| format!("{}: {e}", binary.display()))?;
            let other = Other { child, http: SocketAddr::from(([127, 0, 0, 1], port)) };
            // It has no readiness route: it is up when it answers `/noop`.
            for _ in 0..100 {
                if get(other.http, "/noop").await.is_ok_and(|(status, _)| status == 200) {
                    return Ok(other);
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            Err(format!(
                "{} never answered /noop (its log: {})",
                binary.display(),
                scratch.join("other-gateway.log").display()
            ))
        }
    }

    impl Drop for Other {
        fn drop(&mut self) {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }

    /// Two fake SFUs on one thread of their own: `/v1/channel` (a new uuid each time), `/v1/load`
    /// (healthy, nearly idle), `/v1/noop`, `/v1/disconnect`.
    struct FakeSfus {
        addresses: [SocketAddr; 2],
    }

    impl FakeSfus {
        fn start() -> Result<FakeSfus, String> {
            let bind = || std::net::TcpListener::bind("127.0.0.1:0").map_err(|e| e.to_string());
            let listeners = [bind()?, bind()?];
            let mut addresses = [listeners[0].local_addr().map_err(|e| e.to_string())?; 2];
            addresses[1] = listeners[1].local_addr().map_err(|e| e.to_string())?;
            for l in &listeners {
                l.set_nonblocking(true).map_err(|e| e.to_string())?;
            }
            std::thread::Builder::new()
                .name("fake-sfus".into())
                .spawn(move || {
                    let runtime =
                        tokio::runtime::Builder::new_current_thread().enable_all().build().expect("a tokio runtime");
                    runtime.block_on(async move {
                        let channels = Arc::new(AtomicU64::new(0));
                        let mut servers = Vec::new();
                        for listener in listeners {
                            let listener = tokio::net::TcpListener::from_std(listener).expect("a tokio listener");
                            servers.push(tokio::spawn(serve(listener, channels.clone())));
                        }
                        for server in servers {
                            let _ = server.await;
                        }
                    });
                })
                .map_err(|e| e.to_string())?;
            Ok(FakeSfus { addresses })
        }
    }

    async fn serve(listener: tokio::net::TcpListener, channels: Arc<AtomicU64>) {
        let url = format!("http://{}", listener.local_addr().expect("a bound listener"));
        let url: Arc<str> = url.into();
        while let Ok((stream, _)) = listener.accept().await {
            let _ = stream.set_nodelay(true);
            let (channels, url) = (channels.clone(), url.clone());
            tokio::spawn(async move {
                let service = hyper::service::service_fn(move |request: hyper::Request<hyper::body::Incoming>| {
                    let answer = answer(&request, &channels, &url);
                    async move { Ok::<_, std::convert::Infallible>(answer) }
                });
                let io = hyper_util::rt::TokioIo::new(stream);
                let _ = hyper::server::conn::http1::Builder::new().serve_connection(io, service).await;
            });
        }
    }

    fn answer<B>(request: &hyper::Request<B>, channels: &AtomicU64, url: &str) -> hyper::Response<Body> {
        let body = match request.uri().path() {
            "/v1/channel" => {
                // One channel per iss, as an SFU keeps it: the uuid follows the token's claims
                // segment (a repeat of the same claims is the same channel).
                let claims = request
                    .headers()
                    .get("authorization")
                    .and_then(|v| v.as_bytes().split(|&b| b == b'.').nth(1))
                    .unwrap_or_default();
                let n = match claims {
                    [] => channels.fetch_add(1, Ordering::Relaxed),
                    claims => {
                        let mut hasher = std::hash::DefaultHasher::new();
                        std::hash::Hasher::write(&mut hasher, claims);
                        std::hash::Hasher::finish(&hasher)
                    }
                };
                format!(r#"{{"uuid":"{:08x}-0000-4000-8000-{:012x}","url":"{url}"}}"#, n >> 48, n & 0xffff_ffff_ffff)
            }
            "/v1/load" => {
                r#"{"sessions":0,"cpuUsage":0.05,"memoryUsage":0.1,"maxSessions":1000000,"draining":false}"#.into()
            }
            "/v1/noop" => r#"{"result":"ok"}"#.into(),
            "/v1/disconnect" => String::new(),
            _ => {
                return hyper::Response::builder().status(404).body(Body::from("not found")).expect("a valid response");
            }
        };
        hyper::Response::builder()
            .header("content-type", "application/json")
            .body(Body::from(body))
            .expect("a valid response")
    }
}
