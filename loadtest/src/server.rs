//! The ringsfu under test: started by the harness (from the binary next to this one) or given
//! with `--target`; and what its `/metrics` say about it.

use ringsfu_client::process::{Process, ringsfu_on_loopback};
use ringsfu_common::auth::Key;
use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::os::unix::process::CommandExt;
use std::process::{Command, Stdio};
use std::time::Duration;

/// How long a spawned ringsfu has to print its ready line.
const START_TIMEOUT: Duration = Duration::from_secs(60);

pub struct Target {
    pub http: SocketAddr,
    pub key: Key,
    process: Option<Process>,
}

impl Drop for Target {
    fn drop(&mut self) {
        if let Some(process) = &mut self.process {
            // Past the short drain of our spawn settings (DRAIN_GRACE_SECONDS=1) it is killed.
            process.stop(Duration::from_millis(2500));
        }
    }
}

/// The `ringsfu` binary: `$RINGSFU_BIN`, else next to this executable.
pub fn ringsfu_binary() -> Result<std::path::PathBuf, String> {
    if let Ok(path) = std::env::var("RINGSFU_BIN") {
        return Ok(path.into());
    }
    let exe = std::env::current_exe().map_err(|e| e.to_string())?;
    let path = exe.parent().ok_or("no parent directory")?.join("ringsfu");
    if path.exists() {
        Ok(path)
    } else {
        Err(format!("{} not found; build it (cargo build --release --bin ringsfu) or set RINGSFU_BIN", path.display()))
    }
}

/// Makes `cmd` run on the CPUs this process started with, not on the load generator's core that
/// [`crate::run::pin_away_from`] left it (a child inherits its parent's affinity).
pub fn with_starting_affinity(cmd: &mut Command) {
    let Some(set) = crate::run::starting_affinity() else { return };
    // SAFETY: between fork and exec the closure only calls sched_setaffinity, which is
    // async-signal-safe, on a copy of a plain C struct.
    unsafe {
        cmd.pre_exec(move || {
            if libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
}

impl Target {
    pub fn given(http: SocketAddr, key: Key) -> Target {
        Target { http, key, process: None }
    }

    /// Starts ringsfu on free ports with `shards` shards pinned to the first cores.
    pub fn spawn(shards: usize, pin: bool, extra_env: &[(String, String)]) -> Result<Target, String> {
        let key = Key::generate();
        let mut cmd = Command::new(ringsfu_binary()?);
        cmd.env("AUTH_KEY", key.to_base64())
            .env("NUM_WORKERS", shards.to_string())
            .env("PIN_SHARDS", if pin { "true" } else { "false" })
            .env("CHANNEL_SIZE", "10000")
            .env("MAX_SESSIONS", "100000")
            .env("DRAIN_GRACE_SECONDS", "1")
            // Every synthetic client calls from 127.0.0.1: the per-address cap (1,000) would
            // refuse the rest of a larger run's WebSockets.
            .env("MAX_CONNECTIONS_PER_ADDRESS", "0")
            .env("LOG_LEVEL", "warn");
        ringsfu_on_loopback(&mut cmd);
        for (k, v) in extra_env {
            cmd.env(k, v);
        }
        with_starting_affinity(&mut cmd);
        let process = Process::spawn(cmd.stderr(Stdio::inherit()), "ringsfu ready ", START_TIMEOUT, None)
            .map_err(|e| format!("ringsfu did not start: {e}"))?;
        Ok(Target { http: process.http()?, key, process: Some(process) })
    }

    pub fn pid(&self) -> Option<u32> {
        self.process.as_ref().map(Process::id)
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.http, path)
    }
}

/// The figures of one `/metrics` scrape the harness uses.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct Scrape {
    pub cpu_seconds: Vec<f64>,
    pub forwarded: f64,
    /// Packets a shard sent to the other parts of a channel spread over shards (once per part).
    pub relayed_out: f64,
    pub sent_packets: f64,
    pub sent_bytes: f64,
    pub received_packets: f64,
    pub sessions: f64,
    pub rss_bytes: f64,
    pub switches: f64,
    /// Forwarding delay histogram: (upper bound in seconds, cumulative count), summed over shards.
    pub delay_buckets: Vec<(f64, f64)>,
    /// Dropped datagrams or packets by reason, summed over shards.
    pub dropped: BTreeMap<String, f64>,
}

pub async fn scrape(client: &reqwest::Client, target: &Target) -> Result<Scrape, String> {
    let text = client
        .get(target.url("/metrics"))
        .timeout(Duration::from_secs(5))
        .send()
        .await
        .map_err(|e| e.to_string())?
        .text()
        .await
        .map_err(|e| e.to_string())?;
    let mut s = Scrape::default();
    let mut cpu: HashMap<usize, f64> = HashMap::new();
    let mut buckets: Vec<(f64, f64)> = Vec::new();
    for line in text.lines().filter(|l| !l.starts_with('#')) {
        let Some((name_labels, value)) = line.rsplit_once(' ') else { continue };
        let Ok(value) = value.parse::<f64>() else { continue };
        let (name, labels) = name_labels.split_once('{').unwrap_or((name_labels, ""));
        let label = |key: &str| {
            labels.split(',').find_map(|kv| {
                kv.strip_prefix(&format!("{key}=\"")).map(|v| v.trim_end_matches(['"', '}']).to_string())
            })
        };
        match name {
            "ringsfu_shard_cpu_seconds_total" => {
                if let Some(shard) = label("shard").and_then(|v| v.parse().ok()) {
                    cpu.insert(shard, value);
                }
            }
            "ringsfu_shard_forwarded_rtp_packets_total" => s.forwarded += value,
            "ringsfu_shard_relayed_out_rtp_packets_total" => s.relayed_out += value,
            "ringsfu_shard_sent_packets_total" => s.sent_packets += value,
            "ringsfu_shard_sent_bytes_total" => s.sent_bytes += value,
            "ringsfu_shard_received_packets_total" => s.received_packets += value,
            "ringsfu_shard_sessions" => s.sessions += value,
            "ringsfu_process_resident_memory_bytes" => s.rss_bytes = value,
            "ringsfu_shard_layer_switches_total" => s.switches += value,
            "ringsfu_shard_dropped_packets_total" => {
                if let Some(reason) = label("reason") {
                    *s.dropped.entry(reason).or_default() += value;
                }
            }
            "ringsfu_shard_forwarding_delay_seconds_bucket" => {
                let le = label("le").unwrap_or_default();
                let bound = if le == "+Inf" { f64::INFINITY } else { le.parse().unwrap_or(f64::INFINITY) };
                match buckets.iter_mut().find(|(b, _)| *b == bound) {
                    Some(entry) => entry.1 += value,
                    None => buckets.push((bound, value)),
                }
            }
            _ => {}
        }
    }
    let mut shards: Vec<usize> = cpu.keys().copied().collect();
    shards.sort_unstable();
    s.cpu_seconds = shards.iter().map(|i| cpu[i]).collect();
    buckets.sort_by(|a, b| a.0.total_cmp(&b.0));
    s.delay_buckets = buckets;
    Ok(s)
}

/// The upper bound of the bucket holding quantile `q` of the difference of two cumulative
/// histograms (the run's own packets).
pub fn delay_quantile(before: &[(f64, f64)], after: &[(f64, f64)], q: f64) -> Option<f64> {
    let counts: Vec<(f64, f64)> =
        after.iter().map(|(b, n)| (*b, n - before.iter().find(|(bb, _)| bb == b).map_or(0.0, |x| x.1))).collect();
    let total = counts.last()?.1;
    if total <= 0.0 {
        return None;
    }
    counts.iter().find(|(_, n)| *n >= q * total).map(|(b, _)| *b)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn allowed_cpus(status: &str) -> String {
        status.lines().find_map(|l| l.strip_prefix("Cpus_allowed_list:")).unwrap_or_default().trim().to_string()
    }

    /// The ringsfu a load test starts runs where this process could before it moved off the
    /// shards' cores: sharing the generator's core, shards and generator measured each other.
    #[test]
    fn a_started_server_gets_the_cpus_the_generator_gave_up() {
        let before = allowed_cpus(&std::fs::read_to_string("/proc/thread-self/status").unwrap());
        crate::run::pin_away_from(&ringsfu::runtime::cpu::shard_cpus(1));
        let pinned = allowed_cpus(&std::fs::read_to_string("/proc/thread-self/status").unwrap());
        let mut cmd = Command::new("/bin/sh");
        cmd.args(["-c", "cat /proc/self/status"]);
        with_starting_affinity(&mut cmd);
        let child = allowed_cpus(&String::from_utf8(cmd.output().unwrap().stdout).unwrap());
        assert_eq!(child, before, "the child runs where the generator started (it is pinned to {pinned})");
    }
}
