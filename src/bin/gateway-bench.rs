//! `gateway-bench`: what `sfu-gateway` costs on `/v1/channel`.
//!
//! Starts two `ringsfu` (PROXY=1) and one `sfu-gateway` on loopback from the binaries next to this
//! one, warms up, then measures sequential and concurrent `/v1/channel` requests (each with a new
//! `iss`, so each creates a channel) directly against one ringsfu and through the gateway. Prints a
//! JSON report: requests per second, p50/p99 latency, and gateway/direct ratios. Bounded in time:
//! each phase stops at its request count or its time limit, whichever comes first.
//!
//! Usage: `gateway-bench [--sequential N] [--concurrent M] [--concurrency C] [--phase-seconds S]
//! [--redis URL]` (defaults 5000, 20000, 32, 20, no Redis). With `--redis` (a running Redis, such as
//! `redis://127.0.0.1:6379/0`; its `sfu-gateway:` keys get written) a second gateway shares its
//! state there, and the report adds it: what Redis costs on `/v1/channel`, as ratios to the
//! in-memory gateway. Build first: `cargo build --release --bin ringsfu --bin sfu-gateway
//! --bin gateway-bench`.

use hdrhistogram::Histogram;
use ringsfu::auth::{self, Key};
use serde_json::{Value, json};
use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

const GATEWAY_KEY: &str = "YmVuY2gtZ2F0ZXdheS1rZXktMzItYnl0ZXMtbG9uZyE=";
const SFU_KEYS: [&str; 2] =
    ["YmVuY2gtc2Z1LWEta2V5LTMyLWJ5dGVzLWxvbmchIQ==", "YmVuY2gtc2Z1LWIta2V5LTMyLWJ5dGVzLWxvbmchIQ=="];
const WARM_UP: u64 = 300;
const START_TIMEOUT: Duration = Duration::from_secs(30);

struct Options {
    sequential: u64,
    concurrent: u64,
    concurrency: u64,
    phase_limit: Duration,
    redis: Option<String>,
}

fn main() {
    let options = match parse_options() {
        Ok(o) => o,
        Err(e) => {
            eprintln!("gateway-bench: {e}");
            std::process::exit(2);
        }
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

fn parse_options() -> Result<Options, String> {
    let mut o = Options {
        sequential: 5000,
        concurrent: 20000,
        concurrency: 32,
        phase_limit: Duration::from_secs(20),
        redis: None,
    };
    let mut args = std::env::args().skip(1);
    while let Some(flag) = args.next() {
        let value = args.next().ok_or_else(|| format!("{flag} needs a value"))?;
        if flag == "--redis" {
            o.redis = Some(value);
            continue;
        }
        let number: u64 = value.parse().map_err(|_| format!("{flag}: {value:?} is not a positive integer"))?;
        if number == 0 {
            return Err(format!("{flag} must be positive"));
        }
        match flag.as_str() {
            "--sequential" => o.sequential = number,
            "--concurrent" => o.concurrent = number,
            "--concurrency" => o.concurrency = number,
            "--phase-seconds" => o.phase_limit = Duration::from_secs(number),
            _ => return Err(format!("unknown flag {flag}; see the top of src/bin/gateway-bench.rs")),
        }
    }
    Ok(o)
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

/// A child process killed when dropped, with the address its ready line gave.
struct Process {
    child: Child,
    http: SocketAddr,
}

impl Drop for Process {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn start_ringsfu(binary: &Path, index: usize, scratch: &Path) -> Result<Process, String> {
    let mut cmd = Command::new(binary);
    cmd.env_clear()
        .env("AUTH_KEY", SFU_KEYS[index])
        .env("PROXY", "1")
        .env("PORT", "0")
        .env("HTTP_INTERFACE", "127.0.0.1")
        .env("RTC_INTERFACE", "127.0.0.1")
        .env("PUBLIC_IP", "127.0.0.1")
        .env("RTC_MIN_PORT", "0")
        .env("NUM_WORKERS", "1")
        .env("PIN_SHARDS", "false")
        .env("RATE_LIMIT_PER_SECOND", "0")
        .env("LOG_LEVEL", "warn");
    spawn(cmd, "ringsfu ready ", &scratch.join(format!("ringsfu-{index}.log")))
}

fn start_gateway(binary: &Path, sfus: &[Process; 2], scratch: &Path, redis: Option<&str>) -> Result<Process, String> {
    let mut secrets = String::new();
    for (sfu, key) in sfus.iter().zip(SFU_KEYS) {
        secrets
            .push_str(&format!("[[sfu]]\naddress = \"http://{}\"\nregion = \"local\"\nkey = \"{key}\"\n\n", sfu.http));
    }
    secrets.push_str("[health]\ninterval_seconds = 1\n");
    let name = if redis.is_some() { "redis" } else { "memory" };
    let path = scratch.join(format!("secrets-{name}.toml"));
    std::fs::write(&path, secrets).map_err(|e| e.to_string())?;
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).map_err(|e| e.to_string())?;
    let mut cmd = Command::new(binary);
    cmd.env_clear()
        .env("SFU_GATEWAY_KEY", GATEWAY_KEY)
        .env("SFU_GATEWAY_BIND", "127.0.0.1")
        .env("SFU_GATEWAY_PORT", "0")
        .env("SFU_GATEWAY_LOG_LEVEL", "warn")
        .arg("--secrets")
        .arg(&path);
    if let Some(url) = redis {
        cmd.env("SFU_GATEWAY_REDIS_URL", url);
    }
    spawn(cmd, "sfu-gateway ready ", &scratch.join(format!("sfu-gateway-{name}.log")))
}

/// Spawns `cmd` and waits for its ready line (`<prefix>http=<addr> ...`).
fn spawn(mut cmd: Command, prefix: &str, log: &PathBuf) -> Result<Process, String> {
    let stderr = std::fs::File::create(log).map_err(|e| e.to_string())?;
    let mut child = cmd.stdout(Stdio::piped()).stderr(stderr).spawn().map_err(|e| e.to_string())?;
    let stdout = child.stdout.take().ok_or("no stdout")?;
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let deadline = Instant::now() + START_TIMEOUT;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        let Ok(line) = rx.recv_timeout(left) else {
            let _ = child.kill();
            return Err(format!("no ready line within {START_TIMEOUT:?}; see {}", log.display()));
        };
        let Some(rest) = line.strip_prefix(prefix) else { continue };
        let http = rest.split_whitespace().find_map(|p| p.strip_prefix("http=")).and_then(|a| a.parse().ok());
        return match http {
            Some(http) => Ok(Process { child, http }),
            None => Err(format!("unreadable ready line {line:?}")),
        };
    }
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
