//! One scenario run from start to report, and the benchmark of `make bench`.

use crate::ceiling::{self, Ceiling, RunCeiling};
use crate::client::{self, ClientResult, ClientSpec, Mode, Totals};
use crate::expectations;
use crate::headline::Headline;
use crate::machine::Machine;
use crate::report::{Chart, html};
use crate::scenario::{Kind, Params, Plan};
use crate::server::{Scrape, Target, delay_quantile, scrape};
use hdrhistogram::Histogram;
use ringsfu::runtime::cpu::process_cpu_time;
use ringsfu_client::Latencies;
use ringsfu_common::auth::{self, Key};
use serde_json::{Value, json};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

#[derive(Debug, Clone, clap::Args)]
pub struct RunArgs {
    #[arg(value_enum)]
    pub scenario: Kind,
    #[command(flatten)]
    pub params: Params,
    /// An already running ringsfu (`host:port` of its HTTP listener); needs `--key`.
    #[arg(long, requires = "key")]
    pub target: Option<SocketAddr>,
    /// Its AUTH_KEY (base64).
    #[arg(long)]
    pub key: Option<String>,
    /// Shards of the ringsfu this harness starts.
    #[arg(long, default_value_t = 1)]
    pub shards: usize,
    /// Do not pin the started ringsfu's shards (and this process away from them).
    #[arg(long)]
    pub no_pin: bool,
    #[arg(long, default_value = "reports")]
    pub out: PathBuf,
    /// No live progress lines.
    #[arg(long)]
    pub quiet: bool,
    /// Record a CPU profile of the started ringsfu over the measurement window with
    /// `perf record --call-graph dwarf` (499 Hz) into this file (for `make flamegraph`).
    #[arg(long)]
    pub profile: Option<PathBuf>,
    /// Do not measure this machine's `sendmmsg` ceiling before the run (the report then gives
    /// no ratio to it).
    #[arg(long, conflicts_with = "ceiling")]
    pub no_ceiling: bool,
    /// Read the ceiling from this file (the output of `ringsfu-loadtest ceiling`, or a report or
    /// `bench-summary.json` holding one) instead of measuring it.
    #[arg(long, value_name = "FILE")]
    pub ceiling: Option<PathBuf>,
    /// Seconds the `sendmmsg` ceiling is measured for.
    #[arg(long, default_value_t = 2.0)]
    pub ceiling_seconds: f64,
    /// A ceiling measured by the caller (`bench` measures the full one once for its runs).
    #[arg(skip)]
    pub measured_ceiling: Option<Box<RunCeiling>>,
    /// Settings for the ringsfu this harness starts, beyond its own (`scaling` sets the budget).
    #[arg(skip)]
    pub server_env: Vec<(String, String)>,
}

impl RunArgs {
    /// One run of a series (`bench`, `scaling`): a ringsfu of `shards` started and pinned here,
    /// measured against the ceiling the series measured once.
    pub fn in_series(scenario: Kind, params: Params, shards: usize, out: PathBuf, ceiling: RunCeiling) -> RunArgs {
        RunArgs {
            scenario,
            params,
            target: None,
            key: None,
            shards,
            no_pin: false,
            out,
            quiet: false,
            profile: None,
            no_ceiling: false,
            ceiling: None,
            ceiling_seconds: 0.0,
            measured_ceiling: Some(Box::new(ceiling)),
            server_env: Vec::new(),
        }
    }
}

struct Sample {
    at: f64,
    scrape: Scrape,
    clients: u64,
    /// CPU seconds this process (the load generator) has used.
    load_cpu: f64,
}

fn unix_now() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0)
}

/// The cores this process may run on (the load generator's share of the machine).
pub fn affinity_cores() -> usize {
    // SAFETY: plain libc calls on a zeroed cpu_set_t.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        if libc::sched_getaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &mut set) != 0 {
            return 0;
        }
        libc::CPU_COUNT(&set) as usize
    }
}

/// The ceiling the run's figures are read against, before the server starts so that it does not
/// compete with the measurement.
async fn run_ceiling(args: &RunArgs) -> Result<Option<RunCeiling>, String> {
    if args.no_ceiling {
        return Ok(None);
    }
    if let Some(c) = &args.measured_ceiling {
        return Ok(Some(RunCeiling::clone(c)));
    }
    if let Some(path) = &args.ceiling {
        return RunCeiling::from_file(path).map(Some);
    }
    if !args.quiet {
        eprintln!("measuring this machine's sendmmsg ceiling for {} s ...", args.ceiling_seconds);
    }
    let seconds = args.ceiling_seconds;
    tokio::task::spawn_blocking(move || RunCeiling::measure(seconds)).await.map(Some).map_err(|e| e.to_string())
}

/// The CPUs this process could run on before [`pin_away_from`] narrowed them: the ringsfu it
/// starts gets these back ([`crate::server::Target::spawn`]), since a child inherits its parent's
/// affinity and would otherwise put its shards on the load generator's core.
static STARTING_AFFINITY: std::sync::OnceLock<libc::cpu_set_t> = std::sync::OnceLock::new();

pub fn starting_affinity() -> Option<libc::cpu_set_t> {
    STARTING_AFFINITY.get().copied()
}

/// The CPUs [`pin_away_from`] left to the shards (the fan-out ceiling sends from the first).
static SHARD_CPUS: std::sync::OnceLock<Vec<usize>> = std::sync::OnceLock::new();

pub fn cpus_left_to_shards() -> &'static [usize] {
    SHARD_CPUS.get().map_or(&[], Vec::as_slice)
}

/// Keeps the calling thread (and the threads and processes it starts) off the shards' cores,
/// when any core is left for it.
pub fn pin_away_from(cpus: &[usize]) {
    // SAFETY: plain libc calls on a zeroed cpu_set_t.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        if libc::sched_getaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &mut set) != 0 {
            return;
        }
        let _ = STARTING_AFFINITY.set(set);
        let _ = SHARD_CPUS.set(cpus.to_vec());
        let mut left = 0;
        for cpu in 0..libc::CPU_SETSIZE as usize {
            if libc::CPU_ISSET(cpu, &set) {
                if cpus.contains(&cpu) {
                    libc::CPU_CLR(cpu, &mut set);
                } else {
                    left += 1;
                }
            }
        }
        if left > 0 {
            libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set);
        }
    }
}

async fn create_channel(http: &reqwest::Client, target: &Target, room: usize) -> Result<String, String> {
    let claims = json!({"iss": format!("loadtest:{}:room:{room}", std::process::id()), "exp": unix_now() + 60});
    let token = auth::sign(claims.as_object().expect("object"), &target.key);
    let body: Value = http
        .get(target.url("/v1/channel"))
        .header("Authorization", format!("Bearer {token}"))
        .send()
        .await
        .map_err(|e| format!("channel request: {e}"))?
        .json()
        .await
        .map_err(|e| format!("channel response: {e}"))?;
    body["uuid"].as_str().map(str::to_string).ok_or_else(|| format!("no channel: {body}"))
}

pub async fn run(args: RunArgs) -> Result<Value, String> {
    let plan = Plan::new(args.scenario, &args.params);
    let mut machine = Machine::read();
    let ceiling = run_ceiling(&args).await?;
    let target = match (args.target, &args.key) {
        (Some(addr), Some(key)) => Target::given(addr, Key::from_base64(key).map_err(|e| format!("--key: {e}"))?),
        _ => Target::spawn(args.shards, !args.no_pin, &args.server_env)?,
    };
    let http = reqwest::Client::new();
    let mut channels = Vec::new();
    for room in 0..plan.rooms {
        channels.push(create_channel(&http, &target, room).await?);
    }
    let ws_url = format!("ws://{}/", target.http);
    let ip = client::local_ip_for(&target.http);
    let totals = Arc::new(Totals::default());
    let start = Instant::now();
    let end = start + plan.duration;
    let mut handles = Vec::with_capacity(plan.clients.len());
    for c in &plan.clients {
        let claims = json!({"session_id": c.session_id, "exp": unix_now() + 3600});
        let spec = ClientSpec {
            ws_url: ws_url.clone(),
            channel: channels[c.room].clone(),
            jwt: auth::sign(claims.as_object().expect("object"), &target.key),
            session_id: c.session_id,
            publish: c.publish.clone(),
            mode: c.mode,
            stay: c.stay,
            measure_from: start + plan.warmup,
            tcp: args.params.tcp,
        };
        let totals = totals.clone();
        let begin = start + c.start_after;
        handles.push(tokio::spawn(async move {
            tokio::time::sleep_until(tokio::time::Instant::from_std(begin)).await;
            client::run(spec, ip, end, totals).await
        }));
    }

    let mut profiler = None;
    if let (Some(path), Some(pid)) = (&args.profile, target.pid()) {
        let (path, window) = (path.clone(), plan.duration.saturating_sub(plan.warmup));
        let warm = start + plan.warmup;
        profiler = Some(tokio::spawn(async move {
            tokio::time::sleep_until(tokio::time::Instant::from_std(warm)).await;
            tokio::process::Command::new("perf")
                .args(["record", "-F", "499", "--call-graph", "dwarf,16384", "-p", &pid.to_string(), "-o"])
                .arg(&path)
                .args(["--", "sleep", &window.as_secs().max(1).to_string()])
                .stdout(std::process::Stdio::null())
                .stderr(std::process::Stdio::null())
                .status()
                .await
        }));
    }
    let mut samples: Vec<Sample> = Vec::new();
    let first = scrape(&http, &target).await?;
    samples.push(Sample { at: 0.0, scrape: first, clients: 0, load_cpu: process_cpu_time().as_secs_f64() });
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    tick.tick().await;
    while Instant::now() < end {
        tick.tick().await;
        let Ok(s) = scrape(&http, &target).await else { continue };
        let at = start.elapsed().as_secs_f64();
        let connected = totals.connected.load(Ordering::Relaxed);
        if !args.quiet {
            progress(&samples, at, &s, connected, plan.clients.len(), totals.failed.load(Ordering::Relaxed));
        }
        samples.push(Sample {
            at,
            scrape: s,
            clients: connected.saturating_sub(totals.left.load(Ordering::Relaxed)),
            load_cpu: process_cpu_time().as_secs_f64(),
        });
    }
    let mut results: Vec<ClientResult> = Vec::with_capacity(handles.len());
    for h in handles {
        if let Ok(Ok(r)) = tokio::time::timeout(Duration::from_secs(15), h).await {
            results.push(r);
        }
    }
    if let Some(p) = profiler {
        match p.await {
            Ok(Ok(status)) if status.success() => {}
            other => eprintln!("perf record did not succeed: {other:?}"),
        }
    }
    machine.finish();
    let mut report = summarize(&args, &plan, &samples, &results, &totals);
    judge(&mut report, &plan, &args, machine, ceiling.as_ref());
    write_report(&args.out, &args, &plan, &samples, &results, &report)?;
    drop(target);
    Ok(report)
}

fn progress(samples: &[Sample], at: f64, s: &Scrape, connected: u64, planned: usize, failed: u64) {
    let Some(prev) = samples.last() else { return };
    let dt = (at - prev.at).max(1e-3);
    let forwarded = (s.forwarded - prev.scrape.forwarded) / dt;
    let cpu: f64 = s.cpu_seconds.iter().sum::<f64>() - prev.scrape.cpu_seconds.iter().sum::<f64>();
    let per_cpu = if cpu > 0.0 { (s.forwarded - prev.scrape.forwarded) / cpu } else { 0.0 };
    eprintln!(
        "t={at:5.1}s clients {connected}/{planned} failed {failed} | forwarded {:>8.0} pkt/s {:>6.1} Mb/s | shard cpu {:>5.1}% | {:>8.0} pkt per shard-cpu-s",
        forwarded,
        (s.sent_bytes - prev.scrape.sent_bytes) * 8.0 / dt / 1e6,
        cpu / dt * 100.0,
        per_cpu
    );
}

fn percentile(sorted: &[f64], q: f64) -> Option<f64> {
    if sorted.is_empty() {
        return None;
    }
    let i = ((q * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len()) - 1;
    Some(sorted[i])
}

fn summarize(args: &RunArgs, plan: &Plan, samples: &[Sample], results: &[ClientResult], totals: &Totals) -> Value {
    let warm = plan.warmup.as_secs_f64();
    let from = samples.iter().find(|s| s.at >= warm).or(samples.first()).expect("at least one sample");
    let to = samples.last().expect("at least one sample");
    let window = (to.at - from.at).max(1e-3);
    let forwarded = to.scrape.forwarded - from.scrape.forwarded;
    let cpu: Vec<f64> = to.scrape.cpu_seconds.iter().zip(&from.scrape.cpu_seconds).map(|(a, b)| a - b).collect();
    let cpu_total: f64 = cpu.iter().sum();
    let sent_packets = to.scrape.sent_packets - from.scrape.sent_packets;
    let mut joins: Vec<f64> = results.iter().filter_map(|r| r.join_time).map(|d| d.as_secs_f64() * 1000.0).collect();
    joins.sort_by(f64::total_cmp);
    let latency = merged_latencies(results);
    let full: Vec<&ClientResult> = results.iter().filter(|r| r.mode == Mode::Full && r.error.is_none()).collect();
    let gaps: u64 = full.iter().map(|r| r.gaps).sum();
    let expected: u64 = full.iter().map(|r| r.expected).sum();
    let jitter: Vec<f64> = full.iter().map(|r| r.jitter_us / 1000.0).collect();
    let errors: Vec<String> = results.iter().filter_map(|r| r.error.clone()).take(5).collect();
    let peak_sessions = samples.iter().map(|s| s.scrape.sessions).fold(0.0, f64::max);
    json!({
        "scenario": plan.describe(&args.params),
        "shards": cpu.len(),
        // With `--target` the machine and ceiling recorded are the load generator's, not the server's.
        "serverStartedByThisRun": args.target.is_none(),
        "windowSeconds": window,
        "clients": {"planned": plan.clients.len(), "joined": joins.len(), "failed": totals.failed.load(Ordering::Relaxed), "errors": errors},
        "forwardedPacketsPerSecond": forwarded / window,
        "relayedOutPacketsPerSecond": (to.scrape.relayed_out - from.scrape.relayed_out) / window,
        "sentBitsPerSecond": (to.scrape.sent_bytes - from.scrape.sent_bytes) * 8.0 / window,
        "receivedByClientsPackets": totals.received_packets.load(Ordering::Relaxed),
        "shardCpuSeconds": cpu,
        "shardCpuUtilization": cpu.iter().map(|c| c / window).collect::<Vec<_>>(),
        // Near 1.0 per core it was given, the generator (not ringsfu) limits the run.
        "loadGeneratorCpuUtilization": (to.load_cpu - from.load_cpu) / window,
        "loadGeneratorCores": affinity_cores(),
        "forwardedPacketsPerShardCpuSecond": if cpu_total > 0.0 { forwarded / cpu_total } else { 0.0 },
        "sentDatagramsPerShardCpuSecond": if cpu_total > 0.0 { sent_packets / cpu_total } else { 0.0 },
        "lossRatio": if expected > 0 { gaps as f64 / expected as f64 } else { 0.0 },
        "jitterMs": {"max": jitter.iter().copied().fold(0.0, f64::max), "mean": if jitter.is_empty() { 0.0 } else { jitter.iter().sum::<f64>() / jitter.len() as f64 }},
        "joinMs": {"p50": percentile(&joins, 0.5), "p99": percentile(&joins, 0.99)},
        "latencyMs": {"audio": quantiles(&latency.audio), "video": quantiles(&latency.video)},
        "forwardingDelayMs": {
            "p50": delay_quantile(&from.scrape.delay_buckets, &to.scrape.delay_buckets, 0.5).map(|s| s * 1000.0),
            "p99": delay_quantile(&from.scrape.delay_buckets, &to.scrape.delay_buckets, 0.99).map(|s| s * 1000.0),
        },
        "rssBytes": to.scrape.rss_bytes,
        "rssBytesPerSession": if peak_sessions > 0.0 { to.scrape.rss_bytes / peak_sessions } else { 0.0 },
        "peakSessions": peak_sessions,
        "layerSwitches": to.scrape.switches,
        "droppedPackets": to.scrape.dropped.iter()
            .map(|(reason, n)| (reason.clone(), json!(n - from.scrape.dropped.get(reason).copied().unwrap_or(0.0))))
            .collect::<serde_json::Map<_, _>>(),
    })
}

/// Adds the machine, the ceiling with the run's ratios to it, the verdict of each of the
/// scenario's expectations, and the summary sentence of the report's page.
fn judge(report: &mut Value, plan: &Plan, args: &RunArgs, machine: Machine, ceiling: Option<&RunCeiling>) {
    report["machine"] = json!(machine);
    report["ceiling"] = json!(ceiling);
    let per_cpu = report["forwardedPacketsPerShardCpuSecond"].as_f64().unwrap_or(0.0);
    report["ratioToCeiling"] = ceiling.map_or(Value::Null, |c| c.ratios(per_cpu));
    let verdicts = expectations::evaluate(plan.kind, &args.params, plan.clients.len(), report);
    report["verdict"] = json!(if verdicts.iter().all(|v| v.pass) { "PASS" } else { "FAIL" });
    report["expectations"] = json!(verdicts);
    if let Ok(h) = Headline::read(report) {
        report["summary"] = json!(h.summary());
    }
}

fn write_report(
    out: &Path,
    args: &RunArgs,
    plan: &Plan,
    samples: &[Sample],
    results: &[ClientResult],
    report: &Value,
) -> Result<(), String> {
    std::fs::create_dir_all(out).map_err(|e| format!("{}: {e}", out.display()))?;
    let name = serde_json::to_value(plan.kind).ok().and_then(|v| v.as_str().map(str::to_string)).unwrap_or_default();
    let json_path = out.join(format!("{name}.json"));
    std::fs::write(&json_path, serde_json::to_string_pretty(report).expect("serializable"))
        .map_err(|e| e.to_string())?;
    let rate = |f: &dyn Fn(&Scrape) -> f64| -> Vec<(f64, f64)> {
        samples
            .windows(2)
            .map(|w| (w[1].at, (f(&w[1].scrape) - f(&w[0].scrape)) / (w[1].at - w[0].at).max(1e-3)))
            .collect()
    };
    let shards = samples.last().map_or(0, |s| s.scrape.cpu_seconds.len());
    let cpu_series = (0..shards)
        .map(|i| (format!("shard {i}"), rate(&|s: &Scrape| s.cpu_seconds.get(i).copied().unwrap_or(0.0) * 100.0)))
        .collect();
    let latency = merged_latencies(results);
    let latency_points = |h: &Histogram<u64>| -> Vec<(f64, f64)> {
        if h.is_empty() {
            return Vec::new();
        }
        [50.0, 75.0, 90.0, 95.0, 99.0, 99.5, 99.9, 99.95, 99.99]
            .iter()
            .map(|p| (*p, h.value_at_quantile(p / 100.0) as f64 / 1000.0))
            .collect()
    };
    let mut joins: Vec<f64> = results.iter().filter_map(|r| r.join_time).map(|d| d.as_secs_f64() * 1000.0).collect();
    joins.sort_by(f64::total_cmp);
    let join_points: Vec<(f64, f64)> = joins.iter().enumerate().map(|(i, j)| (i as f64 + 1.0, *j)).collect();
    let charts = vec![
        Chart {
            title: "Forwarded RTP packets per second",
            x_label: "seconds",
            y_label: "packets/s",
            series: vec![
                ("forwarded".into(), rate(&|s: &Scrape| s.forwarded)),
                ("datagrams sent".into(), rate(&|s: &Scrape| s.sent_packets)),
            ],
            percentile_x: false,
        },
        Chart {
            title: "Shard CPU",
            x_label: "seconds",
            y_label: "% of one core",
            series: cpu_series,
            percentile_x: false,
        },
        Chart {
            title: "One-way latency (full subscribers, after the warm-up)",
            x_label: "percentile",
            y_label: "ms",
            series: vec![
                ("audio".into(), latency_points(&latency.audio)),
                ("video (paced)".into(), latency_points(&latency.video)),
            ],
            percentile_x: true,
        },
        Chart {
            title: "Join time (WebSocket open to CONNECTED)",
            x_label: "clients, sorted",
            y_label: "ms",
            series: vec![("join".into(), join_points)],
            percentile_x: false,
        },
        Chart {
            title: "Clients in the call",
            x_label: "seconds",
            y_label: "clients",
            series: vec![("clients".into(), samples.iter().map(|s| (s.at, s.clients as f64)).collect())],
            percentile_x: false,
        },
    ];
    let html_path = out.join(format!("{name}.html"));
    std::fs::write(&html_path, html(&format!("ringsfu load test: {name}"), report, &charts))
        .map_err(|e| e.to_string())?;
    if !args.quiet {
        eprintln!("report: {} and {}", json_path.display(), html_path.display());
    }
    Ok(())
}

/// The scenario parameters with every default.
pub fn default_params() -> Params {
    #[derive(clap::Parser)]
    struct Defaults {
        #[command(flatten)]
        params: Params,
    }
    <Defaults as clap::Parser>::parse_from(["defaults"]).params
}

/// `make bench`: the ceiling, three short scenarios, and ringsfu's figures as ratios of it.
pub async fn bench(out: PathBuf, duration: u64, shards: usize) -> Result<(), String> {
    eprintln!("measuring the ceiling (loopback UDP, AES-128-GCM) ...");
    let ceiling: Ceiling =
        tokio::task::spawn_blocking(|| ceiling::measure_all(2.0)).await.map_err(|e| e.to_string())?;
    eprintln!("{}", serde_json::to_string(&ceiling).expect("serializable"));
    let mut rows = Vec::new();
    // The first three: big enough that the shard works (fan-out batches fill), small enough for
    // one load core. Then the same small call over UDP and over ICE-TCP (the cost of the TCP path
    // per packet). The last two drive the shard hard (issue 9's targets are at ≥ 80% shard CPU):
    // on the 2-vCPU VM they were sized on, the audio room takes the shard to about 92% and the
    // broadcast to about 70% (a seventh room overloaded it). A slower machine may overload.
    // Each writes `<scenario>.json` and `.html` into its folder: the first of each scenario into
    // `out`, the others into a subfolder of their own so that none overwrites another.
    type Tweak = fn(&mut Params);
    let scenarios: [(Kind, &str, &str, Tweak); 7] = [
        (Kind::AudioRoom, "3 talkers, 300 listeners (2 full)", "", |p| p.listeners = 300),
        (Kind::Meeting, "10 participants, audio + 3-layer video (2 full)", "", |p| p.size = 10),
        (Kind::Broadcast, "1 publisher to 300 listeners (2 full)", "", |p| p.listeners = 300),
        (Kind::Meeting, "4 participants over UDP (all full)", "meeting-4-udp", |p| (p.size, p.full) = (4, 4)),
        (Kind::Meeting, "4 participants over ICE-TCP (all full)", "meeting-4-tcp", |p| {
            (p.size, p.full, p.tcp) = (4, 4, true)
        }),
        (
            Kind::AudioRoom,
            "20 talkers, 300 listeners (2 full): the shard near a full core",
            "audio-room-20-talkers",
            |p| (p.talkers, p.listeners) = (20, 300),
        ),
        (
            Kind::Broadcast,
            "6 rooms of 1 publisher to 300 listeners (2 full each): the shard busy",
            "broadcast-6-rooms",
            |p| (p.rooms, p.listeners) = (6, 300),
        ),
    ];
    for (kind, tweak, folder, adjust) in scenarios {
        let mut params = default_params();
        params.duration = duration;
        adjust(&mut params);
        eprintln!("running {tweak} for {duration} s ...");
        let ceiling = RunCeiling::of(ceiling.clone(), "measured by bench before its runs");
        let report = run(RunArgs::in_series(kind, params, shards, out.join(folder), ceiling)).await?;
        rows.push((kind, tweak, report));
    }
    let machine = Machine::read();
    let mut table = String::new();
    table.push_str(&format!(
        "Machine: {} ({} cores), {} shard(s). Ceiling per CPU-second: sendto {:.0}, sendmmsg {:.0}, sendmmsg fan-out to {} read sockets {}, GSO {}, AES-128-GCM 1200 B {:.0}.\n\n",
        machine.cpu,
        machine.cores,
        shards,
        ceiling.sendto_per_cpu_second,
        ceiling.sendmmsg_per_cpu_second,
        crate::ceiling::FANOUT,
        ceiling.sendmmsg_fanout_per_cpu_second.map_or("n/a".into(), |d| format!("{d:.0}")),
        ceiling.gso_per_cpu_second.map_or("n/a".into(), |g| format!("{g:.0}")),
        ceiling.aes128gcm_1200b_per_cpu_second,
    ));
    table.push_str("| scenario | forwarded pkt/s | shard CPU | load generator CPU | fwd pkt per shard-CPU-s | ÷ sendto | ÷ sendmmsg | ÷ sendmmsg fan-out | ÷ AES-GCM | audio latency p50/p99 ms | video latency p50/p99 ms | join p50/p99 ms | loss |\n");
    table.push_str("|---|---|---|---|---|---|---|---|---|---|---|---|---|\n");
    let mut summary = Vec::new();
    for (kind, tweak, r) in &rows {
        let per_cpu = r["forwardedPacketsPerShardCpuSecond"].as_f64().unwrap_or(0.0);
        let util: f64 =
            r["shardCpuUtilization"].as_array().map(|a| a.iter().filter_map(Value::as_f64).sum()).unwrap_or(0.0);
        let f = |v: &Value| v.as_f64().map_or("-".into(), |x| format!("{x:.1}"));
        table.push_str(&format!(
            "| {} ({}) | {:.0} | {:.0}% | {:.0}% | {:.0} | {:.2} | {:.2} | {} | {:.2} | {}/{} | {}/{} | {}/{} | {:.3}% |\n",
            serde_json::to_value(kind).unwrap_or_default().as_str().unwrap_or(""),
            tweak,
            r["forwardedPacketsPerSecond"].as_f64().unwrap_or(0.0),
            util * 100.0,
            r["loadGeneratorCpuUtilization"].as_f64().unwrap_or(0.0) * 100.0,
            per_cpu,
            per_cpu / ceiling.sendto_per_cpu_second,
            per_cpu / ceiling.sendmmsg_per_cpu_second,
            ceiling.sendmmsg_fanout_per_cpu_second.map_or("-".into(), |d| format!("{:.2}", per_cpu / d)),
            per_cpu / ceiling.aes128gcm_1200b_per_cpu_second,
            f(&r["latencyMs"]["audio"]["p50"]),
            f(&r["latencyMs"]["audio"]["p99"]),
            f(&r["latencyMs"]["video"]["p50"]),
            f(&r["latencyMs"]["video"]["p99"]),
            f(&r["joinMs"]["p50"]),
            f(&r["joinMs"]["p99"]),
            r["lossRatio"].as_f64().unwrap_or(0.0) * 100.0,
        ));
        // The run computed its ratios against this same ceiling (`RunCeiling::ratios`).
        summary.push(json!({"scenario": kind, "description": tweak, "report": r, "ratios": r["ratioToCeiling"]}));
    }
    std::fs::create_dir_all(&out).map_err(|e| e.to_string())?;
    std::fs::write(out.join("bench-summary.md"), &table).map_err(|e| e.to_string())?;
    std::fs::write(
        out.join("bench-summary.json"),
        serde_json::to_string_pretty(
            &json!({"machine": machine, "shards": shards, "ceiling": ceiling, "scenarios": summary}),
        )
        .expect("serializable"),
    )
    .map_err(|e| e.to_string())?;
    println!("{table}");
    Ok(())
}

/// Everything the full subscribers measured, in one pair of histograms.
fn merged_latencies(results: &[ClientResult]) -> Latencies {
    let mut all = Latencies::new();
    for l in results.iter().filter_map(|r| r.latency_us.as_deref()) {
        all.add(l);
    }
    all
}

/// p50/p99/p999 in milliseconds, or null when nothing of the kind was received.
fn quantiles(h: &Histogram<u64>) -> Value {
    if h.is_empty() {
        return Value::Null;
    }
    let ms = |q: f64| h.value_at_quantile(q) as f64 / 1000.0;
    json!({"p50": ms(0.5), "p99": ms(0.99), "p999": ms(0.999), "samples": h.len()})
}
