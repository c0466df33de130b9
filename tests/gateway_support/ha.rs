//! Test support for several gateways: a real `redis-server` on a free loopback port (no
//! persistence, in a scratch folder, killed on drop, stoppable and restartable on the same port),
//! and `ringsfu` processes that register themselves with gateways (`GATEWAY_URL`).

use super::scratch_dir;
use ringsfu_client::process::{Process, ringsfu_on_loopback};
use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// The registration secret the gateways and the registering ringsfu share in these tests.
pub const REGISTRATION_SECRET: &str = "registration-secret-for-the-ha-tests";

fn free_port() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.local_addr().unwrap().port()
}

/// A `redis-server` of the test's own.
pub struct Redis {
    child: Option<Child>,
    pub port: u16,
    dir: PathBuf,
}

impl Redis {
    /// Fails (never skips) when Debian's redis-server is missing.
    pub fn start() -> Redis {
        let found = Command::new("redis-server").arg("--version").stdout(Stdio::null()).status();
        assert!(
            found.is_ok_and(|s| s.success()),
            "redis-server is missing: run `make test-deps` (it installs Debian's redis-server)"
        );
        let dir = scratch_dir().join(format!("redis-{}", super::unique()));
        std::fs::create_dir_all(&dir).unwrap();
        let mut redis = Redis { child: None, port: free_port(), dir };
        redis.resume();
        redis
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/0", self.port)
    }

    /// (Re)starts the server on its port, empty, and waits until it answers.
    pub fn resume(&mut self) {
        assert!(self.child.is_none(), "redis-server is running already");
        let log = std::fs::File::create(self.dir.join("redis.log")).unwrap();
        let child = Command::new("redis-server")
            .args(["--port", &self.port.to_string(), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"])
            .current_dir(&self.dir)
            .stdout(log)
            .stderr(Stdio::null())
            .spawn()
            .expect("redis-server starts");
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(10);
        while self.ping().is_none() {
            assert!(Instant::now() < deadline, "redis-server never answered on port {}", self.port);
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Kills the server (an outage); [`Redis::resume`] brings back an empty one on the same port.
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// One inline command over a plain socket; the first line of the answer.
    pub fn command(&self, line: &str) -> Option<String> {
        use std::io::Write;
        let addr: SocketAddr = format!("127.0.0.1:{}", self.port).parse().unwrap();
        let stream = std::net::TcpStream::connect_timeout(&addr, Duration::from_millis(200)).ok()?;
        stream.set_read_timeout(Some(Duration::from_secs(1))).ok()?;
        (&stream).write_all(format!("{line}\r\n").as_bytes()).ok()?;
        let mut reader = BufReader::new(&stream);
        let mut first = String::new();
        reader.read_line(&mut first).ok()?;
        // A bulk string: its value is on the next line.
        if first.starts_with('$') && first.trim() != "$-1" {
            let mut value = String::new();
            reader.read_line(&mut value).ok()?;
            return Some(value.trim_end().to_string());
        }
        Some(first.trim_end().to_string())
    }

    fn ping(&self) -> Option<()> {
        (self.command("PING")? == "+PONG").then_some(())
    }
}

impl Drop for Redis {
    fn drop(&mut self) {
        self.stop();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// A `ringsfu` that registers itself with `gateways` (no `AUTH_KEY`: its key is derived).
pub struct RegisteredSfu {
    process: Process,
    pub http: SocketAddr,
    pub log: PathBuf,
}

impl RegisteredSfu {
    pub fn start(gateways: &[String], secret: &str, extra: &[(&str, &str)]) -> RegisteredSfu {
        let log = scratch_dir().join(format!("registered-ringsfu-{}.log", super::unique()));
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_ringsfu"));
        cmd.env_clear()
            .env("GATEWAY_URL", gateways.join(","))
            .env("GATEWAY_REGISTRATION_SECRET", secret)
            .env("GATEWAY_HEARTBEAT_SECONDS", "1")
            .env("GATEWAY_REGION", "here")
            .env("PROXY", "1")
            .env("PIN_SHARDS", "false")
            .env("NUM_WORKERS", "1")
            .env("MAX_SESSIONS", "10")
            .env("LOG_LEVEL", "info")
            .env("DRAIN_GRACE_SECONDS", "10");
        ringsfu_on_loopback(&mut cmd);
        for (k, v) in extra {
            cmd.env(k, v);
        }
        let stderr = std::fs::File::create(&log).unwrap();
        let process = Process::spawn(cmd.stderr(stderr), "ringsfu ready ", Duration::from_secs(30), Some(&log))
            .unwrap_or_else(|e| panic!("registered ringsfu never ready: {e}"));
        let http = process.http().unwrap();
        RegisteredSfu { process, http, log }
    }

    /// The address it registers as (and the `url` of its channels).
    pub fn address(&self) -> String {
        format!("http://{}", self.http)
    }

    pub fn signal(&self, signal: i32) {
        self.process.signal(signal);
    }

    pub fn stderr(&self) -> String {
        self.process.stderr()
    }
}
