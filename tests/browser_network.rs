//! Browsers on networks that are not open UDP still join: three headless Chromium pages on the
//! stock mediasoup-client (as the Odoo client uses it) see and hear each other through ringsfu
//! with UDP open (the path is UDP), with UDP to the shard ports dropped by nftables (the path is
//! ICE-TCP), and relayed by coturn, reached over UDP and over TCP (the path is a relay).
//!
//! Each test runs ringsfu, Node, Chromium and coturn in a network namespace of its own (only
//! `lo`), so its firewall touches nothing else. Needs root, `ip`, `nft`, `turnserver`, Chromium
//! and tests/browser's npm packages (`make test-deps`); where no namespace can be made the tests
//! fail saying why, unless RINGSFU_SKIP_NETNS_TESTS=1.

mod common;

use common::netns::{self, UdpBlock};
use common::turn::Turn;
use common::{Server, chromium, key, now, sign};
use serde_json::{Value, json};
use std::io::Read;
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Three Chromium pages each: one call at a time keeps the 2-core machine from starving them.
static ONE_CALL_AT_A_TIME: Mutex<()> = Mutex::new(());

/// How long a call may take to show media; the driver gives up then and reports why.
const CALL_TIMEOUT: Duration = Duration::from_secs(45);

/// coturn's port inside the test's namespace, where nothing else listens on it.
const TURN_PORT: u16 = 3478;

fn browser_dir() -> &'static Path {
    Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/browser"))
}

/// Runs `body` alone, in a network namespace of its own; when none can be made (or its
/// firewall cannot be installed, `body`'s `Err`), fails or skips as `netns::unavailable` says.
fn isolated(test: &str, body: impl FnOnce() -> Result<(), String> + Send) {
    common::require_browser_toolchain(&browser_dir().join("node_modules/mediasoup-client"));
    let _alone = ONE_CALL_AT_A_TIME.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
    if let Err(reason) = netns::run_isolated(body).and_then(|r| r) {
        netns::unavailable(test, &reason);
    }
}

/// The e2e.mjs driver as a child process group: Node and the Chromium it starts, all killed
/// when this is dropped, whatever way the test ends.
struct Driver {
    child: Child,
}

impl Driver {
    /// Runs `config` to its end (bounded by its timeout plus start-up time); the driver's result.
    fn run(config: &Value) -> Value {
        let mut child = Command::new("node")
            .arg(browser_dir().join("e2e.mjs"))
            .arg(config.to_string())
            .current_dir(browser_dir())
            .process_group(0)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("running node");
        let stdout = drain(child.stdout.take().unwrap());
        let stderr = drain(child.stderr.take().unwrap());
        let driver = Driver { child };
        let deadline = Instant::now() + CALL_TIMEOUT + Duration::from_secs(30);
        while !driver.exited() {
            assert!(Instant::now() < deadline, "the browser driver hung past its own timeout");
            std::thread::sleep(Duration::from_millis(100));
        }
        drop(driver);
        let stderr = stderr.join().unwrap();
        eprintln!("browser log:\n{stderr}");
        let stdout = stdout.join().unwrap();
        let line = stdout
            .lines()
            .find_map(|l| l.strip_prefix("RESULT "))
            .unwrap_or_else(|| panic!("no result; stderr:\n{stderr}"));
        serde_json::from_str(line).expect("the result is JSON")
    }

    /// Whether Node has exited, leaving it unreaped so its process group id stays ours to kill.
    fn exited(&self) -> bool {
        // SAFETY: waitid on our own child with a zeroed siginfo_t; WNOWAIT leaves it a zombie.
        unsafe {
            let mut info: libc::siginfo_t = std::mem::zeroed();
            let flags = libc::WEXITED | libc::WNOHANG | libc::WNOWAIT;
            libc::waitid(libc::P_PID, self.child.id(), &mut info, flags) == 0 && info.si_pid() != 0
        }
    }
}

impl Drop for Driver {
    fn drop(&mut self) {
        // SAFETY: kill on the group Node leads; Node is not reaped yet, so the id is still ours.
        unsafe { libc::kill(-(self.child.id() as i32), libc::SIGKILL) };
        let _ = self.child.wait();
    }
}

fn drain(mut pipe: impl Read + Send + 'static) -> std::thread::JoinHandle<String> {
    std::thread::spawn(move || {
        let mut text = String::new();
        let _ = pipe.read_to_string(&mut text);
        text
    })
}

/// Three pages publishing camera and microphone in one call on `server`, each page's
/// participant options extended with `network` (`iceServers`, `iceTransportPolicy`).
fn three_page_call(server: &Server, network: Value) -> Value {
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let channel = rt.block_on(server.channel("odoo:channel:network", true));
    let participants: Vec<Value> = (1..=3)
        .map(|id| {
            let jwt = sign(json!({"session_id": id, "exp": now() + 3600}), &key());
            let mut p = json!({
                "url": format!("http://{}", server.http),
                "channelUUID": channel,
                "jwt": jwt,
                "sessionId": id,
                "publish": {"audio": true, "video": true, "width": 640, "height": 360},
            });
            for (k, v) in network.as_object().unwrap() {
                p[k] = v.clone();
            }
            p
        })
        .collect();
    Driver::run(&json!({
        "scenario": "call",
        "timeoutMs": CALL_TIMEOUT.as_millis() as u64,
        "chromium": chromium(),
        "participants": participants,
    }))
}

/// Panics with the whole result and the server's log unless every page saw and heard the others
/// (decoded video frames and audio packets rising from each of the two others).
fn assert_media(result: &Value, server: &Server, path: &str, more_logs: &str) {
    assert_eq!(
        result["ok"],
        true,
        "three pages did not see and hear each other {path}: {}\n{}\nserver log:\n{}{more_logs}",
        result["reason"],
        serde_json::to_string_pretty(result).unwrap(),
        server.stderr()
    );
}

/// Every transport's selected ICE path (send and receive of each page), printed, each checked
/// by `expect`.
fn assert_paths(result: &Value, expect: impl Fn(&Value) -> Result<(), String>) {
    let participants = result["participants"].as_array().expect("participants");
    assert_eq!(participants.len(), 3);
    for (i, p) in participants.iter().enumerate() {
        for direction in ["send", "recv"] {
            let pair = &p[direction]["pair"];
            eprintln!("page {} {direction}: selected pair {pair}", i + 1);
            // Chrome shows a selected pair as "in-progress" while a check on it waits for its
            // answer (seen once, on a loaded machine); media flowing both ways shows it works.
            let flowing = pair["bytesSent"].as_u64() > Some(0) && pair["bytesReceived"].as_u64() > Some(0);
            assert!(
                pair["state"] == "succeeded" || (pair["state"] == "in-progress" && flowing),
                "page {} {direction}: {pair}",
                i + 1
            );
            if let Err(e) = expect(pair) {
                panic!("page {} {direction}: {e}: {pair}", i + 1);
            }
        }
    }
}

/// The pair runs over `protocol` from a local candidate of one of `local_types` to ringsfu's host
/// candidate.
fn path_is(pair: &Value, protocol: &str, local_types: &[&str]) -> Result<(), String> {
    let (local, remote) = (&pair["local"], &pair["remote"]);
    if local["protocol"] != protocol || remote["protocol"] != protocol {
        return Err(format!("the path is not {protocol}"));
    }
    if !local_types.iter().any(|t| local["type"] == *t) {
        return Err(format!("the local candidate is not one of {local_types:?}"));
    }
    if remote["type"] != "host" {
        return Err("the remote candidate is not ringsfu's host candidate".into());
    }
    Ok(())
}

#[test]
fn with_udp_open_three_pages_call_over_udp() {
    isolated("with_udp_open_three_pages_call_over_udp", || {
        let server = Server::start(&[]);
        let result = three_page_call(&server, json!({}));
        assert_media(&result, &server, "over open UDP", "");
        assert_paths(&result, |pair| path_is(pair, "udp", &["host"]));
        Ok(())
    });
}

#[test]
fn with_udp_to_the_shards_dropped_three_pages_call_over_tcp() {
    isolated("with_udp_to_the_shards_dropped_three_pages_call_over_tcp", || {
        let server = Server::start(&[]);
        let ports: Vec<u16> = server.rtc.iter().map(|a| a.port()).collect();
        assert!(!ports.is_empty(), "the ready line names the shard ports: {:?}", server.stdout);
        let block = UdpBlock::install(&ports)?;
        let result = three_page_call(&server, json!({}));

        let offered = &result["participants"][0]["offered"];
        let offers_tcp =
            offered.as_array().is_some_and(|c| c.iter().any(|c| c["protocol"] == "tcp" && c["tcpType"] == "passive"));
        assert!(
            offers_tcp,
            "ringsfu offers no passive TCP candidate ({offered}): browsers that cannot send UDP get no media: \
             is RTC_TCP on?"
        );
        assert_media(&result, &server, "with UDP dropped", "");
        // An active TCP candidate's port is the connection's own, learnt from ringsfu's answer:
        // Chromium reports it as peer-reflexive.
        assert_paths(&result, |pair| path_is(pair, "tcp", &["host", "prflx"]));
        // The pages did try UDP first, and the firewall is what stopped them.
        assert!(block.dropped() > 0, "nftables dropped no UDP to the shard ports {ports:?}");
        // ringsfu saw the same: a TCP connection per transport (two per page), media in frames.
        let metrics = metrics(&server);
        let accepted = metric_sum(&metrics, "ringsfu_shard_tcp_accepted_connections");
        let frames = metric_sum(&metrics, "ringsfu_shard_tcp_received_packets");
        assert!(
            accepted >= 6.0 && frames > 300.0,
            "ringsfu's TCP counters: {accepted} connections, {frames} frames\n{metrics}"
        );
        Ok(())
    });
}

fn metrics(server: &Server) -> String {
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    rt.block_on(async { reqwest::get(server.url("/metrics")).await.unwrap().text().await.unwrap() })
}

/// The sum of a metric's samples over its labels (every shard).
fn metric_sum(metrics: &str, name: &str) -> f64 {
    metrics.lines().filter(|l| l.starts_with(name)).filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok()).sum()
}

/// A call whose pages may only use coturn's relay, reached over `transport` (`udp` or `tcp`).
fn relayed_call(transport: &str) {
    let server = Server::start(&[]);
    let turn = Turn::start(TURN_PORT);
    let result =
        three_page_call(&server, json!({"iceServers": [turn.ice_server(transport)], "iceTransportPolicy": "relay"}));
    assert_media(
        &result,
        &server,
        &format!("through TURN over {transport}"),
        &format!("\ncoturn log:\n{}", turn.log()),
    );
    let shard_ports: Vec<u16> = server.rtc.iter().map(|a| a.port()).collect();
    let turn_log = turn.log();
    assert_paths(&result, |pair| {
        path_is(pair, "udp", &["relay"])?;
        if pair["local"]["relayProtocol"] != transport {
            return Err(format!(
                "the page reaches coturn over {}, not {transport}\ncoturn log:\n{turn_log}",
                pair["local"]["relayProtocol"]
            ));
        }
        let remote_port = pair["remote"]["port"].as_u64().unwrap_or(0);
        if !shard_ports.iter().any(|&p| u64::from(p) == remote_port) {
            return Err(format!("the relay's peer is not a ringsfu shard {shard_ports:?}"));
        }
        Ok(())
    });
}

#[test]
fn relayed_by_turn_over_udp_three_pages_call() {
    isolated("relayed_by_turn_over_udp_three_pages_call", || {
        relayed_call("udp");
        Ok(())
    });
}

#[test]
fn relayed_by_turn_over_tcp_three_pages_call() {
    isolated("relayed_by_turn_over_tcp_three_pages_call", || {
        relayed_call("tcp");
        Ok(())
    });
}
