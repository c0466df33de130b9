//! Test support: start the real `ringsfu` binary on free ports, talk to it over HTTP and the
//! WebSocket bus.
#![allow(dead_code)]

pub mod media;
pub mod netns;
pub mod turn;

use futures_util::{SinkExt, StreamExt};
use ringsfu_client::process::{Process, ringsfu_on_loopback};
use ringsfu_common::auth::{self, Key};
use serde_json::{Value, json};
use std::net::SocketAddr;
use std::process::{Command, ExitStatus};
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

/// The Chromium the browser tests drive (`CHROMIUM` overrides Debian's).
pub fn chromium() -> String {
    std::env::var("CHROMIUM").unwrap_or_else(|_| "/usr/bin/chromium".into())
}

/// Fails loudly (never skips) when the browser toolchain is missing: Node.js, Chromium, and
/// `npm_package`, a file or folder `make test-deps` installs.
pub fn require_browser_toolchain(npm_package: &std::path::Path) {
    let node = Command::new("node").arg("--version").output();
    assert!(node.is_ok_and(|o| o.status.success()), "node is missing: run `make test-deps` (or `make test`)");
    assert!(
        std::path::Path::new(&chromium()).exists(),
        "{} is missing: run `make test-deps` (or `make test`)",
        chromium()
    );
    assert!(npm_package.exists(), "{} is missing: run `make test-deps` (or `make test`)", npm_package.display());
}

pub const KEY_B64: &str = "u6bsUQEWrHdKIuYplirRnbBmLbrKV5PxKG7DtA71mng=";

pub fn key() -> Key {
    Key::from_base64(KEY_B64).unwrap()
}

pub fn now() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs()
}

pub fn sign(claims: Value, key: &Key) -> String {
    auth::sign(claims.as_object().expect("claims are an object"), key)
}

pub struct Server {
    process: Process,
    pub http: SocketAddr,
    pub rtc: Vec<SocketAddr>,
    pub log: std::path::PathBuf,
    pub stdout: Vec<String>,
}

impl Server {
    /// Starts `ringsfu` with the test key, free ports and the given extra environment.
    pub fn start(env: &[(&str, &str)]) -> Server {
        Self::try_start(env).unwrap_or_else(|e| panic!("ringsfu did not start: {e}"))
    }

    pub fn try_start(env: &[(&str, &str)]) -> Result<Server, String> {
        let log_dir = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("server-logs");
        std::fs::create_dir_all(&log_dir).unwrap();
        let log = log_dir.join(format!("ringsfu-{}-{}.log", std::process::id(), rand_suffix()));
        let stderr = std::fs::File::create(&log).unwrap();
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_ringsfu"));
        cmd.env_clear()
            .env("AUTH_KEY", KEY_B64)
            .env("PIN_SHARDS", "false")
            .env("NUM_WORKERS", "2")
            .env("LOG_LEVEL", "info")
            .env("DRAIN_GRACE_SECONDS", "1");
        ringsfu_on_loopback(&mut cmd);
        for (k, v) in env {
            cmd.env(k, v);
        }
        let process = Process::spawn(cmd.stderr(stderr), "ringsfu ready ", Duration::from_secs(30), Some(&log))?;
        let http = process.http()?;
        let rtc = process.ready_field("rtc").unwrap_or_default().split(',').filter_map(|a| a.parse().ok()).collect();
        let stdout = process.stdout().to_vec();
        Ok(Server { process, http, rtc, log, stdout })
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.http, path)
    }

    pub fn ws_url(&self) -> String {
        format!("ws://{}/", self.http)
    }

    pub fn token(&self, claims: Value) -> String {
        sign(claims, &key())
    }

    /// Asks for a channel as Odoo does; returns its uuid.
    pub async fn channel(&self, issuer: &str, webrtc: bool) -> String {
        self.channel_with(issuer, webrtc, json!({})).await
    }

    pub async fn channel_with(&self, issuer: &str, webrtc: bool, extra_claims: Value) -> String {
        let mut claims = json!({"iss": issuer, "exp": now() + 30});
        for (k, v) in extra_claims.as_object().unwrap() {
            claims[k] = v.clone();
        }
        let url = if webrtc { self.url("/v1/channel") } else { self.url("/v1/channel?webRTC=false") };
        let response = reqwest::Client::new()
            .get(url)
            .header("Authorization", format!("jwt {}", self.token(claims)))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200, "channel request failed");
        let body: Value = response.json().await.unwrap();
        body["uuid"].as_str().unwrap().to_string()
    }

    pub fn signal(&self, signal: i32) {
        self.process.signal(signal);
    }

    pub fn wait(&mut self, limit: Duration) -> Option<ExitStatus> {
        self.process.wait(limit)
    }

    /// The server process's resident memory (Linux `/proc`).
    pub fn rss_bytes(&self) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.process.id())).unwrap();
        let line = status.lines().find(|l| l.starts_with("VmRSS:")).expect("VmRSS in /proc status");
        let kib: u64 = line.split_whitespace().nth(1).unwrap().parse().unwrap();
        kib * 1024
    }

    pub fn stderr(&self) -> String {
        self.process.stderr()
    }

    pub async fn get_json(&self, path: &str) -> Value {
        reqwest::get(self.url(path)).await.unwrap().json().await.unwrap()
    }

    /// The sum of a metric's samples in `/metrics` whose line starts with `prefix` (its name, and
    /// labels if given).
    pub async fn metric(&self, prefix: &str) -> u64 {
        let text = reqwest::get(self.url("/metrics")).await.unwrap().text().await.unwrap();
        text.lines()
            .filter(|l| l.starts_with(prefix))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .map(|v| v as u64)
            .sum()
    }

    /// Polls a metric until `done` holds (counters are published every 100 ms).
    pub async fn wait_metric(&self, prefix: &str, done: impl Fn(u64) -> bool) -> u64 {
        let mut value = 0;
        for _ in 0..100 {
            value = self.metric(prefix).await;
            if done(value) {
                return value;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        panic!("{prefix} stayed at {value}; server log:\n{}", self.stderr());
    }

    /// Polls `/v1/load` until `predicate` holds (counters are published every 100 ms and
    /// sampled every second).
    pub async fn wait_load(&self, what: &str, predicate: impl Fn(&Value) -> bool) -> Value {
        self.wait_json("/v1/load", what, predicate).await
    }

    /// Polls the JSON at `path` until `predicate` holds; panics after 10 s.
    pub async fn wait_json(&self, path: &str, what: &str, predicate: impl Fn(&Value) -> bool) -> Value {
        for _ in 0..100 {
            let value = self.get_json(path).await;
            if predicate(&value) {
                return value;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        panic!("{path} never satisfied: {what}; last: {}", self.get_json(path).await);
    }
}

fn rand_suffix() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap().subsec_nanos() as u64
}

/// A raw bus client: frames in, frames out, with timeouts everywhere.
pub struct Ws {
    pub stream: WebSocketStream<MaybeTlsStream<TcpStream>>,
    next_id: u64,
}

pub const WAIT: Duration = Duration::from_secs(5);

#[derive(Debug, PartialEq)]
pub enum Frame {
    Text(String),
    Binary(Vec<u8>),
    Close(Option<u16>, String),
    /// The stream ended without a close frame.
    Gone,
}

impl Ws {
    pub async fn connect(url: &str) -> Ws {
        let (stream, _) = tokio::time::timeout(WAIT, tokio_tungstenite::connect_async(url))
            .await
            .expect("WebSocket connect timed out")
            .expect("WebSocket connect failed");
        Ws { stream, next_id: 0 }
    }

    /// Connects once the server admits a connection: one refused over a connection cap (a slot
    /// frees when the server has seen its last holder close) is tried again until `limit`.
    pub async fn connect_when_admitted(url: &str, limit: Duration) -> Ws {
        let deadline = tokio::time::Instant::now() + limit;
        loop {
            if let Ok(Ok((stream, _))) = tokio::time::timeout(WAIT, tokio_tungstenite::connect_async(url)).await {
                return Ws { stream, next_id: 0 };
            }
            assert!(tokio::time::Instant::now() < deadline, "no connection admitted within {limit:?}");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    pub async fn send_text(&mut self, text: impl Into<String>) {
        let text: String = text.into();
        self.stream.send(Message::Text(text.into())).await.expect("send");
    }

    pub async fn send_envelopes(&mut self, envelopes: Value) {
        self.send_text(envelopes.to_string()).await;
    }

    pub async fn message(&mut self, name: &str, payload: Value) {
        self.send_envelopes(json!([{"message": {"name": name, "payload": payload}}])).await;
    }

    /// Sends a request; returns its id.
    pub async fn request(&mut self, name: &str, payload: Value) -> String {
        let id = format!("c_test_{}", self.next_id);
        self.next_id += 1;
        self.send_envelopes(json!([{"message": {"name": name, "payload": payload}, "needResponse": id}])).await;
        id
    }

    /// The next frame (skipping pings), or `None` after `limit`.
    pub async fn frame_within(&mut self, limit: Duration) -> Option<Frame> {
        loop {
            let next = tokio::time::timeout(limit, self.stream.next()).await.ok()?;
            return Some(match next {
                None | Some(Err(_)) => Frame::Gone,
                Some(Ok(Message::Text(t))) => Frame::Text(t.to_string()),
                Some(Ok(Message::Binary(b))) => Frame::Binary(b.to_vec()),
                Some(Ok(Message::Close(c))) => {
                    let (code, reason) = c
                        .map(|c: CloseFrame| (Some(u16::from(c.code)), c.reason.to_string()))
                        .unwrap_or((None, String::new()));
                    Frame::Close(code, reason)
                }
                Some(Ok(_)) => continue,
            });
        }
    }

    pub async fn frame(&mut self) -> Frame {
        self.frame_within(WAIT).await.expect("no frame within the wait")
    }

    /// The next text frame's envelopes.
    pub async fn envelopes(&mut self) -> Vec<Value> {
        match self.frame().await {
            Frame::Text(t) => match serde_json::from_str::<Value>(&t).expect("frame is JSON") {
                Value::Array(list) => list,
                other => panic!("frame is not an array: {other}"),
            },
            other => panic!("expected a text frame, got {other:?}"),
        }
    }

    /// Envelopes until one whose message name is `name`; returns it (others are dropped).
    pub async fn expect_message(&mut self, name: &str) -> Value {
        let deadline = tokio::time::Instant::now() + WAIT * 2;
        loop {
            let remaining = deadline.saturating_duration_since(tokio::time::Instant::now());
            let frame = self.frame_within(remaining).await.unwrap_or_else(|| panic!("no {name} within the wait"));
            let Frame::Text(t) = frame else { panic!("expected {name}, got {frame:?}") };
            for env in serde_json::from_str::<Vec<Value>>(&t).unwrap() {
                if env["message"]["name"] == name {
                    return env;
                }
            }
        }
    }

    /// Waits for the reply to request `id`.
    pub async fn expect_reply(&mut self, id: &str) -> Value {
        let deadline = tokio::time::Instant::now() + WAIT * 2;
        loop {
            let remaining = deadline.saturating_duration_since(tokio::time::Instant::now());
            let frame = self.frame_within(remaining).await.unwrap_or_else(|| panic!("no reply to {id}"));
            let Frame::Text(t) = frame else { panic!("expected a reply to {id}, got {frame:?}") };
            for env in serde_json::from_str::<Vec<Value>>(&t).unwrap() {
                if env["responseTo"] == id {
                    return env;
                }
            }
        }
    }

    /// Waits for a close frame; returns its code.
    pub async fn expect_close(&mut self, limit: Duration) -> Option<u16> {
        let deadline = tokio::time::Instant::now() + limit;
        loop {
            let remaining = deadline.saturating_duration_since(tokio::time::Instant::now());
            match self.frame_within(remaining).await {
                Some(Frame::Close(code, _)) => return code,
                Some(Frame::Gone) => return None,
                Some(_) => continue,
                None => panic!("no close within {limit:?}"),
            }
        }
    }

    /// Sends the credentials and expects the `""` acknowledgement.
    pub async fn authenticate(&mut self, channel: &str, jwt: &str) {
        self.send_text(json!({"channelUUID": channel, "jwt": jwt}).to_string()).await;
        assert_eq!(self.frame().await, Frame::Text(String::new()), "the acknowledgement is one empty text frame");
    }

    /// Connects and joins `channel` as `session_id` with a token signed by `key`.
    pub async fn join(server: &Server, channel: &str, session_id: Value, key: &Key) -> Ws {
        let mut ws = Ws::connect(&server.ws_url()).await;
        let jwt = sign(json!({"sfu_channel_uuid": channel, "session_id": session_id, "exp": now() + 3600}), key);
        ws.authenticate(channel, &jwt).await;
        ws
    }

    /// Answers PINGs and everything else with an empty reply, until `limit`; returns the
    /// non-request envelopes seen.
    pub async fn pump(&mut self, limit: Duration) -> Vec<Value> {
        let deadline = tokio::time::Instant::now() + limit;
        let mut seen = Vec::new();
        loop {
            let remaining = deadline.saturating_duration_since(tokio::time::Instant::now());
            let Some(frame) = self.frame_within(remaining).await else { return seen };
            let Frame::Text(t) = frame else { return seen };
            for env in serde_json::from_str::<Vec<Value>>(&t).unwrap() {
                if let Some(id) = env.get("needResponse") {
                    self.send_envelopes(json!([{"responseTo": id}])).await;
                } else {
                    seen.push(env);
                }
            }
        }
    }
}
