//! The machine a run came from, read from `/proc`: figures from two machines are not comparable,
//! and a busy machine (its load average) explains a slow run.

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Machine {
    /// The CPU model name.
    pub cpu: String,
    /// Cores online, not this process's affinity (it keeps itself off the shards' cores).
    pub cores: i64,
    pub kernel: String,
    #[serde(default)]
    pub hostname: Option<String>,
    #[serde(default)]
    pub memory_bytes: Option<u64>,
    /// 1, 5 and 15 minute load averages when the run started and when it ended.
    #[serde(default)]
    pub load_average_start: Option<[f64; 3]>,
    #[serde(default)]
    pub load_average_end: Option<[f64; 3]>,
}

impl Machine {
    /// This machine now (the load average as it is, recorded as the start).
    pub fn read() -> Machine {
        let cpu = std::fs::read_to_string("/proc/cpuinfo")
            .ok()
            .and_then(|c| {
                c.lines()
                    .find(|l| l.starts_with("model name"))
                    .and_then(|l| l.split(':').nth(1))
                    .map(|s| s.trim().to_string())
            })
            .unwrap_or_default();
        // SAFETY: sysconf has no preconditions.
        let cores = unsafe { libc::sysconf(libc::_SC_NPROCESSORS_ONLN) }.max(0);
        Machine {
            cpu,
            cores,
            kernel: proc_line("/proc/sys/kernel/osrelease").unwrap_or_default(),
            hostname: proc_line("/proc/sys/kernel/hostname"),
            memory_bytes: memory_total(),
            load_average_start: load_average(),
            load_average_end: None,
        }
    }

    /// Records the load average at the end of the run.
    pub fn finish(&mut self) {
        self.load_average_end = load_average();
    }

    /// "host (CPU model, 2 cores, 24 GiB, Linux 6.18)".
    pub fn describe(&self) -> String {
        let mut parts = vec![if self.cpu.is_empty() { "unknown CPU".to_string() } else { self.cpu.clone() }];
        parts.push(format!("{} cores", self.cores));
        if let Some(m) = self.memory_bytes {
            parts.push(format!("{:.0} GiB", m as f64 / (1u64 << 30) as f64));
        }
        if !self.kernel.is_empty() {
            parts.push(format!("Linux {}", self.kernel));
        }
        format!("{} ({})", self.hostname.as_deref().unwrap_or("unnamed host"), parts.join(", "))
    }

    /// Whether two runs can have come from the same machine: same model, cores and memory, and
    /// the same hostname where both recorded one (reports before the hostname was kept have none).
    pub fn same_as(&self, other: &Machine) -> bool {
        let known_and_differ = |a: &Option<String>, b: &Option<String>| matches!((a, b), (Some(a), Some(b)) if a != b);
        let memory_differs =
            matches!((self.memory_bytes, other.memory_bytes), (Some(a), Some(b)) if a.abs_diff(b) > a / 100);
        self.cpu == other.cpu
            && self.cores == other.cores
            && !known_and_differ(&self.hostname, &other.hostname)
            && !memory_differs
    }
}

fn proc_line(path: &str) -> Option<String> {
    std::fs::read_to_string(path).ok().map(|s| s.trim().to_string()).filter(|s| !s.is_empty())
}

fn load_average() -> Option<[f64; 3]> {
    let text = std::fs::read_to_string("/proc/loadavg").ok()?;
    let mut fields = text.split_whitespace().map(|f| f.parse::<f64>().ok());
    Some([fields.next()??, fields.next()??, fields.next()??])
}

fn memory_total() -> Option<u64> {
    let text = std::fs::read_to_string("/proc/meminfo").ok()?;
    let line = text.lines().find(|l| l.starts_with("MemTotal:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn machine(host: Option<&str>, memory: Option<u64>) -> Machine {
        Machine {
            cpu: "Xeon".into(),
            cores: 2,
            kernel: "6.18".into(),
            hostname: host.map(str::to_string),
            memory_bytes: memory,
            load_average_start: None,
            load_average_end: None,
        }
    }

    /// Protects the warning of `compare`: old reports (no hostname, no memory) still match a new
    /// one from the same model, and a different host or memory size does not.
    #[test]
    fn sameness_uses_what_both_recorded() {
        let cases = [
            (machine(Some("a"), Some(24 << 30)), machine(Some("a"), Some(24 << 30)), true),
            (machine(None, None), machine(Some("a"), Some(24 << 30)), true),
            (machine(Some("a"), None), machine(Some("b"), None), false),
            (machine(Some("a"), Some(24 << 30)), machine(Some("a"), Some(8 << 30)), false),
            (machine(Some("a"), Some(24 << 30)), Machine { cores: 4, ..machine(Some("a"), Some(24 << 30)) }, false),
        ];
        for (i, (a, b, same)) in cases.iter().enumerate() {
            assert_eq!(a.same_as(b), *same, "case {i}");
        }
    }

    #[test]
    fn this_machine_reads() {
        let m = Machine::read();
        assert!(m.cores > 0);
        assert!(m.load_average_start.is_some() && m.memory_bytes.is_some());
    }
}
