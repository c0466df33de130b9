//! A binary under test (`ringsfu`, `sfu-gateway`) as a child process, for the integration tests,
//! the benchmarks and the load generator: started and awaited until the line it prints on stdout
//! once it listens (`ringsfu ready http=… rtc=…`), signalled, awaited, its log read; killed when
//! dropped, so a failing test leaves no server behind.

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc::{self, RecvTimeoutError};
use std::time::{Duration, Instant};

/// Sets what every local ringsfu of the tests, benchmarks and load generator shares: HTTP and
/// RTC on loopback with ports the kernel picks (the ready line names them), and no per-address
/// rate limit (all clients come from one address).
pub fn ringsfu_on_loopback(cmd: &mut Command) -> &mut Command {
    cmd.env("PORT", "0")
        .env("RTC_MIN_PORT", "0")
        .env("HTTP_INTERFACE", "127.0.0.1")
        .env("RTC_INTERFACE", "127.0.0.1")
        .env("PUBLIC_IP", "127.0.0.1")
        .env("RATE_LIMIT_PER_SECOND", "0")
}

/// A started child process; killed and reaped on drop.
pub struct Process {
    child: Child,
    log: Option<PathBuf>,
    /// Its stdout lines up to and including the ready line.
    stdout: Vec<String>,
    /// The ready line after its prefix.
    ready: String,
}

impl Process {
    /// Spawns `cmd` with stdout piped here and waits up to `limit` for a stdout line starting
    /// with `ready`. `log` is the file the caller sent stderr to, if any: its text goes in the
    /// error when the child exits or stays silent (it is then killed). Stdout is read to its end
    /// afterwards, so the child never blocks on a full pipe.
    pub fn spawn(cmd: &mut Command, ready: &str, limit: Duration, log: Option<&Path>) -> Result<Process, String> {
        let mut child = cmd.stdout(Stdio::piped()).spawn().map_err(|e| format!("{cmd:?}: {e}"))?;
        let stdout = child.stdout.take().expect("stdout is piped");
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            // After the ready line nobody listens: the rest is drained and dropped.
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                let _ = tx.send(line);
            }
        });
        let deadline = Instant::now() + limit;
        let mut lines = Vec::new();
        let failure = loop {
            match rx.recv_timeout(deadline.saturating_duration_since(Instant::now())) {
                Ok(line) => {
                    let rest = line.strip_prefix(ready).map(str::to_string);
                    lines.push(line);
                    if let Some(rest) = rest {
                        let log = log.map(Path::to_path_buf);
                        return Ok(Process { child, log, stdout: lines, ready: rest });
                    }
                }
                Err(RecvTimeoutError::Timeout) => break format!("no {ready:?} line within {limit:?}"),
                Err(RecvTimeoutError::Disconnected) => break format!("exited before its {ready:?} line"),
            }
        };
        let _ = child.kill();
        let status = child.wait().map_or_else(|e| e.to_string(), |s| s.to_string());
        let stderr = match log {
            Some(path) => std::fs::read_to_string(path).unwrap_or_default(),
            None => "(not captured)".into(),
        };
        Err(format!("{failure}; {status}; stdout: {lines:?}; stderr:\n{stderr}"))
    }

    /// The ready line after its prefix.
    pub fn ready_line(&self) -> &str {
        &self.ready
    }

    /// The value of `name=value` in the ready line.
    pub fn ready_field(&self, name: &str) -> Option<&str> {
        self.ready.split_whitespace().find_map(|part| part.strip_prefix(name)?.strip_prefix('='))
    }

    /// The `http=` address of the ready line (both binaries print one).
    pub fn http(&self) -> Result<SocketAddr, String> {
        self.ready_field("http")
            .and_then(|a| a.parse().ok())
            .ok_or_else(|| format!("no http address in the ready line {:?}", self.ready))
    }

    /// Its stdout lines up to and including the ready line.
    pub fn stdout(&self) -> &[String] {
        &self.stdout
    }

    pub fn id(&self) -> u32 {
        self.child.id()
    }

    pub fn signal(&self, signal: i32) {
        // SAFETY: kill(2) with the pid of a child not yet reaped, and a signal number.
        unsafe { libc::kill(self.child.id() as i32, signal) };
    }

    /// Its exit status, if it exits within `limit`.
    pub fn wait(&mut self, limit: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + limit;
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                return Some(status);
            }
            if Instant::now() > deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// SIGTERM, then `grace` for it to drain and exit, then SIGKILL.
    pub fn stop(&mut self, grace: Duration) {
        self.signal(libc::SIGTERM);
        if self.wait(grace).is_none() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }

    /// What it wrote to its log so far (empty when stderr went elsewhere).
    pub fn stderr(&self) -> String {
        self.log.as_deref().and_then(|path| std::fs::read_to_string(path).ok()).unwrap_or_default()
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn shell(script: &str) -> Command {
        let mut cmd = Command::new("sh");
        cmd.arg("-c").arg(script);
        cmd
    }

    #[test]
    fn the_ready_line_is_found_and_read() {
        let script = "echo starting; echo 'demo ready http=127.0.0.1:8070 rtc=a,b'; echo after; exec sleep 30";
        let mut p = Process::spawn(&mut shell(script), "demo ready ", Duration::from_secs(10), None).unwrap();
        assert_eq!(p.stdout(), ["starting", "demo ready http=127.0.0.1:8070 rtc=a,b"]);
        assert_eq!(p.http(), Ok("127.0.0.1:8070".parse().unwrap()));
        assert_eq!(p.ready_field("rtc"), Some("a,b"));
        assert_eq!(p.ready_field("rt"), None);
        assert_eq!(p.wait(Duration::from_millis(50)), None, "still running");
        p.stop(Duration::from_secs(5));
        assert!(p.wait(Duration::ZERO).is_some(), "stopped");
    }

    #[test]
    fn an_exit_before_the_ready_line_is_an_error_with_the_log() {
        let log = std::env::temp_dir().join(format!("ringsfu-process-test-{}.log", std::process::id()));
        let mut cmd = shell("echo 'refused: bad key' >&2; exit 3");
        cmd.stderr(std::fs::File::create(&log).unwrap());
        let error = Process::spawn(&mut cmd, "demo ready ", Duration::from_secs(10), Some(&log)).err().unwrap();
        std::fs::remove_file(&log).ok();
        assert!(error.contains("exited before"), "{error}");
        assert!(error.contains("refused: bad key"), "{error}");
    }

    #[test]
    fn a_silent_child_is_killed_at_the_limit() {
        let error =
            Process::spawn(&mut shell("exec sleep 30"), "demo ready ", Duration::from_millis(200), None).err().unwrap();
        assert!(error.contains("no \"demo ready \" line within"), "{error}");
        assert!(error.contains("signal: 9"), "killed: {error}");
    }
}
