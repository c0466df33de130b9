//! Test support for the gateway: start the real `sfu-gateway` binary on a free port with a
//! secrets file, and fake SFUs whose faults the test sets (slow, 5xx, wrong key, no `/v1/load`,
//! failing polls). Fakes run on their own thread and runtime, so they answer even while a test
//! blocks on starting a process.
#![allow(dead_code)]

pub mod ha;

use crate::common::{now, sign};
use axum::Router;
use axum::body::Bytes;
use axum::extract::{RawQuery, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use ringsfu_client::process::Process;
use ringsfu_common::auth::{self, Claims, Key};
use serde_json::{Value, json};
use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// The key Odoo signs with for the gateway (each SFU has its own).
pub const GATEWAY_KEY_B64: &str = "Z2F0ZXdheS1rZXktZm9yLXRoZS1pbnRlZ3JhdGlvbi10ZXN0cw==";

pub fn gateway_key() -> Key {
    Key::from_base64(GATEWAY_KEY_B64).unwrap()
}

/// The per-channel `key` claim of the channels tests create through the gateway (a uuid4, as
/// Odoo 18 sends).
pub const CHANNEL_KEY: &str = "3f1c2d4e-5a6b-4c7d-8e9f-0a1b2c3d4e5f";

/// `/v1/channel?webRTC=false` through the gateway for `issuer`, with [`CHANNEL_KEY`]; must be a 200.
pub async fn channel_with_key(gw: &Gateway, issuer: &str) -> Value {
    let token = gw.token(issuer, json!({"key": CHANNEL_KEY}));
    let response = reqwest::Client::new()
        .get(gw.url("/v1/channel?webRTC=false"))
        .header("Authorization", format!("jwt {token}"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    response.json().await.unwrap()
}

pub fn unique() -> String {
    static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    format!("{}-{n}", std::process::id())
}

/// Tuning that makes tests fast: polls every 200 ms, two polls to change state, sessions-only
/// scores (CPU and memory are machine-wide and equal for processes on one machine), a 1 s breaker.
pub const FAST: &str = r#"
[health]
interval_seconds = 0.2
timeout_seconds = 0.5
unhealthy_threshold = 2
healthy_threshold = 2

[balancing.weights]
sessions = 1
cpu = 0
memory = 0

[failover]
max_retries = 3
retry_timeout_ms = 2500
attempt_timeout_ms = 600

[circuit_breaker]
failure_threshold = 3
cooldown_seconds = 1
max_cooldown_seconds = 4
"#;

/// One `[[sfu]]` entry.
pub fn node(address: &str, region: &str, key_b64: &str, extra: &str) -> String {
    format!("[[sfu]]\naddress = \"{address}\"\nregion = \"{region}\"\nkey = \"{key_b64}\"\n{extra}\n")
}

/// A running `sfu-gateway`.
pub struct Gateway {
    process: Process,
    pub http: SocketAddr,
    pub secrets: PathBuf,
    pub log: PathBuf,
}

impl Gateway {
    /// Starts the gateway with `secrets` as its secrets file (mode 600) and extra environment.
    pub fn start(secrets: &str, env: &[(&str, &str)]) -> Gateway {
        Self::try_start(secrets, env).unwrap_or_else(|e| panic!("sfu-gateway did not start: {e}"))
    }

    pub fn try_start(secrets: &str, env: &[(&str, &str)]) -> Result<Gateway, String> {
        let dir = scratch_dir();
        let id = unique();
        let secrets_path = dir.join(format!("secrets-{id}.toml"));
        write_secrets(&secrets_path, secrets, 0o600);
        let log = dir.join(format!("sfu-gateway-{id}.log"));
        let stderr = std::fs::File::create(&log).unwrap();
        let mut cmd = Command::new(gateway_binary());
        cmd.env_clear()
            .env("SFU_GATEWAY_KEY", GATEWAY_KEY_B64)
            .env("SFU_GATEWAY_BIND", "127.0.0.1")
            .env("SFU_GATEWAY_PORT", "0")
            .env("SFU_GATEWAY_LOG_LEVEL", "debug")
            .arg("--secrets")
            .arg(&secrets_path);
        for (k, v) in env {
            cmd.env(k, v);
        }
        let process = Process::spawn(cmd.stderr(stderr), "sfu-gateway ready ", Duration::from_secs(20), Some(&log))?;
        let http = process.http()?;
        Ok(Gateway { process, http, secrets: secrets_path, log })
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.http, path)
    }

    /// A channel token as Odoo makes it for the gateway.
    pub fn token(&self, issuer: &str, extra: Value) -> String {
        let mut claims = json!({"iss": issuer, "exp": now() + 30});
        for (k, v) in extra.as_object().unwrap() {
            claims[k] = v.clone();
        }
        sign(claims, &gateway_key())
    }

    /// `GET /v1/channel?{query}` for `issuer`; returns the status and the JSON body.
    pub async fn channel(&self, issuer: &str, query: &str) -> (StatusCode, Value) {
        let response = self.channel_response(issuer, query, &[]).await;
        let status = response.status();
        (status, response.json().await.unwrap_or(Value::Null))
    }

    pub async fn channel_response(&self, issuer: &str, query: &str, headers: &[(&str, &str)]) -> reqwest::Response {
        let url = if query.is_empty() { self.url("/v1/channel") } else { self.url(&format!("/v1/channel?{query}")) };
        let mut request = reqwest::Client::new()
            .get(url)
            .header("Authorization", format!("Bearer {}", self.token(issuer, json!({}))));
        for (k, v) in headers {
            request = request.header(*k, *v);
        }
        request.send().await.unwrap()
    }

    pub async fn health(&self) -> Value {
        reqwest::get(self.url("/v1/health")).await.unwrap().json().await.unwrap()
    }

    /// The `/v1/health` entry of the SFU at `address`.
    pub async fn node(&self, address: &str) -> Value {
        let health = self.health().await;
        health["nodes"]
            .as_array()
            .unwrap()
            .iter()
            .find(|n| n["address"] == address)
            .cloned()
            .unwrap_or_else(|| panic!("{address} not in {health}"))
    }

    /// Polls `/v1/health` until `predicate` holds.
    pub async fn wait_health(&self, what: &str, predicate: impl Fn(&Value) -> bool) -> Value {
        for _ in 0..150 {
            let health = self.health().await;
            if predicate(&health) {
                return health;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("gateway health never satisfied: {what}; last: {:#}", self.health().await);
    }

    /// Waits until every SFU is healthy.
    pub async fn wait_all_healthy(&self) -> Value {
        self.wait_health("every SFU healthy", |h| h["healthy"] == h["total"]).await
    }

    pub fn rewrite_secrets(&self, text: &str) {
        write_secrets(&self.secrets, text, 0o600);
    }

    pub fn signal(&self, signal: i32) {
        self.process.signal(signal);
    }

    pub fn wait(&mut self, limit: Duration) -> Option<std::process::ExitStatus> {
        self.process.wait(limit)
    }

    pub fn stderr(&self) -> String {
        self.process.stderr()
    }
}

pub fn scratch_dir() -> PathBuf {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("gateway-tests");
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

pub fn write_secrets(path: &Path, text: &str, mode: u32) {
    use std::os::unix::fs::PermissionsExt;
    // Write then rename, so a reload never reads half a file.
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, text).unwrap();
    std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(mode)).unwrap();
    std::fs::rename(&tmp, path).unwrap();
}

/// The `sfu-gateway` binary. It is another package's (`crates/sfu-gateway`), so cargo does not
/// build it for these tests: `cargo test --workspace` (`make test`) builds it beside `ringsfu`
/// for that package's own tests. A missing or stale binary fails here rather than testing old
/// code.
pub fn gateway_binary() -> PathBuf {
    // Checked once per test binary: many tests start a gateway.
    static CHECKED: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();
    CHECKED.get_or_init(checked_gateway_binary).clone()
}

fn checked_gateway_binary() -> PathBuf {
    let bin = Path::new(env!("CARGO_BIN_EXE_ringsfu")).with_file_name("sfu-gateway");
    let built = std::fs::metadata(&bin).and_then(|m| m.modified()).unwrap_or_else(|_| {
        panic!("{} is missing: run `cargo build -p sfu-gateway` (or `cargo test --workspace`)", bin.display())
    });
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    for dir in ["crates/sfu-gateway/src", "crates/ringsfu-common/src"] {
        if let Some(newer) = newer_than(&root.join(dir), built) {
            panic!("{} is older than {}: run `cargo build -p sfu-gateway`", bin.display(), newer.display());
        }
    }
    bin
}

/// A file under `dir` modified after `time`, if any.
fn newer_than(dir: &Path, time: std::time::SystemTime) -> Option<PathBuf> {
    for entry in std::fs::read_dir(dir).ok()?.flatten() {
        let path = entry.path();
        if path.is_dir() {
            if let Some(found) = newer_than(&path, time) {
                return Some(found);
            }
        } else if entry.metadata().and_then(|m| m.modified()).is_ok_and(|m| m > time) {
            return Some(path);
        }
    }
    None
}

/// An address where nothing listens (connection refused).
pub fn dead_address() -> String {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    drop(listener);
    format!("http://127.0.0.1:{port}")
}

/// How a fake SFU answers `/v1/channel`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Fault {
    None,
    /// Answers normally after this long.
    Slow(Duration),
    /// Answers this status with a JSON error.
    Status(u16),
    /// Answers 200 with something that is not a channel.
    BadBody,
}

/// How a fake SFU answers `/v1/load`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum LoadMode {
    /// ringsfu-like figures.
    Report,
    /// 404: the upstream Node SFU (it answers `/v1/noop`).
    Missing,
    /// 500.
    Failing,
}

/// What a fake SFU was sent.
#[derive(Debug, Clone)]
pub struct Seen {
    pub claims: Claims,
    pub forwarded_for: Option<String>,
    pub query: Option<String>,
}

struct FakeState {
    key: Key,
    url: String,
    fault: Fault,
    load_mode: LoadMode,
    /// Outcomes of the next polls (true = answer), taking precedence over `load_mode`.
    poll_script: VecDeque<bool>,
    polls: u64,
    sessions: u64,
    max_sessions: u64,
    channels: HashMap<String, String>,
    requests: Vec<Seen>,
    disconnects: Vec<Seen>,
}

/// A fake SFU on loopback: speaks `/v1/channel`, `/v1/disconnect`, `/v1/load`, `/v1/noop`, verifies
/// tokens with its own key (401 otherwise) and records what it was sent.
pub struct FakeSfu {
    pub address: String,
    state: Arc<Mutex<FakeState>>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl FakeSfu {
    pub fn start(key_b64: &str) -> FakeSfu {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.set_nonblocking(true).unwrap();
        let address = format!("http://{}", listener.local_addr().unwrap());
        let state = Arc::new(Mutex::new(FakeState {
            key: Key::from_base64(key_b64).unwrap(),
            url: address.clone(),
            fault: Fault::None,
            load_mode: LoadMode::Report,
            poll_script: VecDeque::new(),
            polls: 0,
            sessions: 0,
            max_sessions: 10,
            channels: HashMap::new(),
            requests: Vec::new(),
            disconnects: Vec::new(),
        }));
        let app = Router::new()
            .route("/v1/channel", get(fake_channel))
            .route("/v1/disconnect", post(fake_disconnect))
            .route("/v1/load", get(fake_load))
            .route("/v1/noop", get(|| async { axum::Json(json!({"result": "ok"})) }))
            .with_state(state.clone());
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let thread = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
            runtime.block_on(async move {
                let listener = tokio::net::TcpListener::from_std(listener).unwrap();
                let server = axum::serve(listener, app).with_graceful_shutdown(async {
                    let _ = stopped.await;
                });
                let _ = server.await;
            });
        });
        FakeSfu { address, state, stop: Some(stop), thread: Some(thread) }
    }

    fn with<T>(&self, f: impl FnOnce(&mut FakeState) -> T) -> T {
        f(&mut self.state.lock().unwrap())
    }

    pub fn set_fault(&self, fault: Fault) {
        self.with(|s| s.fault = fault);
    }

    pub fn set_load_mode(&self, mode: LoadMode) {
        self.with(|s| s.load_mode = mode);
    }

    /// The next polls answer (true) or fail (false) in this order, then `load_mode` applies again.
    pub fn script_polls(&self, outcomes: &[bool]) {
        self.with(|s| s.poll_script = outcomes.iter().copied().collect());
    }

    pub fn polls(&self) -> u64 {
        self.with(|s| s.polls)
    }

    pub fn set_sessions(&self, sessions: u64) {
        self.with(|s| s.sessions = sessions);
    }

    pub fn requests(&self) -> Vec<Seen> {
        self.with(|s| s.requests.clone())
    }

    pub fn disconnects(&self) -> Vec<Seen> {
        self.with(|s| s.disconnects.clone())
    }
}

impl Drop for FakeSfu {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

type Shared = State<Arc<Mutex<FakeState>>>;

fn error(status: StatusCode, message: &str) -> Response {
    (status, axum::Json(json!({"error": message}))).into_response()
}

fn verify(state: &FakeState, token: &str) -> Option<Claims> {
    auth::verify(token, &state.key, now() as f64).ok()
}

async fn fake_channel(State(state): Shared, headers: HeaderMap, RawQuery(query): RawQuery) -> Response {
    let fault = state.lock().unwrap().fault;
    if let Fault::Slow(delay) = fault {
        tokio::time::sleep(delay).await;
    }
    let mut s = state.lock().unwrap();
    let token = headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split_once(' '))
        .map(|(_, t)| t.to_string())
        .unwrap_or_default();
    let Some(claims) = verify(&s, &token) else { return error(StatusCode::UNAUTHORIZED, "bad token") };
    let forwarded_for = headers.get("x-forwarded-for").and_then(|v| v.to_str().ok()).map(str::to_string);
    s.requests.push(Seen { claims: claims.clone(), forwarded_for: forwarded_for.clone(), query });
    match fault {
        Fault::Status(code) => return error(StatusCode::from_u16(code).unwrap(), "injected fault"),
        Fault::BadBody => return (StatusCode::OK, "<html>not a channel</html>").into_response(),
        Fault::None | Fault::Slow(_) => {}
    }
    // Channels are keyed like ringsfu's: caller address (first X-Forwarded-For entry) and iss.
    let caller = forwarded_for.as_deref().and_then(|f| f.split(',').next()).unwrap_or("?").trim().to_string();
    let key = format!("{caller}::{}", claims.get("iss").map(|v| v.to_string()).unwrap_or_default());
    let uuid = s.channels.entry(key).or_insert_with(|| uuid::Uuid::new_v4().to_string()).clone();
    axum::Json(json!({"uuid": uuid, "url": s.url})).into_response()
}

async fn fake_disconnect(State(state): Shared, headers: HeaderMap, body: Bytes) -> Response {
    let mut s = state.lock().unwrap();
    let Some(claims) = verify(&s, &String::from_utf8_lossy(&body)) else {
        return error(StatusCode::UNAUTHORIZED, "bad token");
    };
    let forwarded_for = headers.get("x-forwarded-for").and_then(|v| v.to_str().ok()).map(str::to_string);
    s.disconnects.push(Seen { claims, forwarded_for, query: None });
    StatusCode::OK.into_response()
}

async fn fake_load(State(state): Shared) -> Response {
    let mut s = state.lock().unwrap();
    s.polls += 1;
    let answer = match s.poll_script.pop_front() {
        Some(true) => LoadMode::Report,
        Some(false) => LoadMode::Failing,
        None => s.load_mode,
    };
    match answer {
        LoadMode::Report => axum::Json(json!({
            "channels": s.channels.len(),
            "sessions": s.sessions,
            "cpuUsage": 0.1,
            "memoryUsage": 0.2,
            "maxSessions": s.max_sessions,
            "draining": false,
            "shards": [],
        }))
        .into_response(),
        LoadMode::Missing => error(StatusCode::NOT_FOUND, "not found"),
        LoadMode::Failing => error(StatusCode::INTERNAL_SERVER_ERROR, "injected poll failure"),
    }
}
