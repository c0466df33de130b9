//! Start-up and shutdown of the real binary: refused configurations, taken ports, the drain.

mod common;

use common::{Server, Ws, key};
use serde_json::json;
use std::process::Command;
use std::time::Duration;

/// Runs the binary expecting it to refuse to start; returns (exit code, stderr).
fn refused(env: &[(&str, &str)], args: &[&str]) -> (i32, String) {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_ringsfu"));
    cmd.env_clear().env("PORT", "0").env("RTC_MIN_PORT", "0").env("PIN_SHARDS", "false").env("LOG_LEVEL", "warn");
    for (k, v) in env {
        cmd.env(k, v);
    }
    let output = cmd.args(args).output().unwrap();
    (output.status.code().unwrap_or(-1), String::from_utf8_lossy(&output.stderr).into_owned())
}

#[test]
fn invalid_settings_are_refused_naming_the_setting() {
    type Case<'a> = (&'a [(&'a str, &'a str)], &'a [&'a str], &'a str);
    let cases: &[Case] = &[
        (&[("PORT", "eighty")], &[], "PORT"),
        (&[("CHANNEL_SIZE", "-1")], &[], "CHANNEL_SIZE"),
        (&[("AUTH_KEY", "%%%")], &[], "AUTH_KEY"),
        (&[("AUTH_KEY", "")], &[], "AUTH_KEY"),
        (&[("VIDEO_CODECS", "VP8,AV1")], &[], "VP8, VP9, H264"),
        (&[("LOG_LEVEL", "chatty")], &[], "LOG_LEVEL"),
        (&[("PUBLIC_IP", "my-host")], &[], "PUBLIC_IP"),
        (&[], &["--max-bitrate-out", "fast"], "MAX_BITRATE_OUT"),
        (&[("NUM_WORKERS", "3"), ("RTC_MIN_PORT", "40000"), ("RTC_MAX_PORT", "40001")], &[], "NUM_WORKERS=3"),
        (&[], &["--config", "/nonexistent/ringsfu.toml"], "cannot read config file"),
    ];
    for (env, args, needle) in cases {
        let (code, stderr) = refused(env, args);
        assert_eq!(code, 2, "{env:?} {args:?}: {stderr}");
        assert!(stderr.contains(needle), "{stderr:?} should mention {needle}");
        assert_eq!(stderr.lines().count(), 1, "one clear line: {stderr}");
    }
}

#[test]
fn the_config_file_is_read_below_env_and_flags() {
    let dir = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("config-file-test");
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("ringsfu.toml");
    std::fs::write(&file, "channel_size = \"nope\"\n").unwrap();
    let (code, stderr) = refused(&[], &["--config", file.to_str().unwrap()]);
    assert_eq!(code, 2);
    assert!(stderr.contains("channel_size in the config file"), "{stderr}");
    // The same bad value from the environment is masked by a valid flag.
    let (code, stderr) = refused(&[("CHANNEL_SIZE", "x"), ("PORT", "y")], &["--channel-size", "5"]);
    assert_eq!(code, 2);
    assert!(stderr.contains("PORT"), "only PORT is left to complain about: {stderr}");
}

#[test]
fn taken_ports_are_reported_clearly() {
    let udp = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    let port = udp.local_addr().unwrap().port().to_string();
    let (code, stderr) = refused(
        &[("NUM_WORKERS", "1"), ("RTC_MIN_PORT", &port), ("RTC_MAX_PORT", &port), ("RTC_INTERFACE", "127.0.0.1")],
        &[],
    );
    assert_eq!(code, 1, "{stderr}");
    assert!(stderr.contains(&format!("RTC port {port}")), "{stderr}");

    let tcp = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = tcp.local_addr().unwrap().port().to_string();
    let (code, stderr) = refused(&[("PORT", &port), ("HTTP_INTERFACE", "127.0.0.1")], &[]);
    assert_eq!(code, 1, "{stderr}");
    assert!(stderr.contains("HTTP_INTERFACE/PORT"), "{stderr}");
}

#[test]
fn development_setup_prints_a_key_and_a_working_example() {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_ringsfu"));
    let mut child = cmd
        .env_clear()
        .env("PORT", "0")
        .env("RTC_MIN_PORT", "0")
        .env("PIN_SHARDS", "false")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    use std::io::{BufRead, BufReader};
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let mut curl = None;
    let mut ready = None;
    for line in lines.by_ref() {
        let line = line.unwrap();
        if line.trim_start().starts_with("curl ") {
            curl = Some(line.trim().to_string());
        }
        if line.starts_with("ringsfu ready") {
            ready = Some(line);
            break;
        }
    }
    let curl = curl.expect("an example request is printed");
    assert!(ready.is_some());
    // Run the printed request as a newcomer would.
    let args: Vec<&str> = curl.split('\'').collect();
    let header = args[1];
    let url = args[2].trim();
    let rt = tokio::runtime::Runtime::new().unwrap();
    let body: serde_json::Value = rt.block_on(async {
        reqwest::Client::new()
            .get(url)
            .header("Authorization", header.trim_start_matches("Authorization: "))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap()
    });
    assert!(body["uuid"].is_string(), "{body}");
    let _ = child.kill();
    let _ = child.wait();
}

#[tokio::test]
async fn sigterm_drains_then_closes_sessions_and_exits_zero() {
    let mut server = Server::start(&[("DRAIN_GRACE_SECONDS", "2")]);
    let uuid = server.channel("odoo:channel:1", false).await;
    let mut ws = Ws::join(&server, &uuid, json!(1), &key()).await;
    server.signal(libc::SIGTERM);
    let load = server.wait_load("draining", |l| l["draining"] == true).await;
    assert_eq!(load["draining"], true);
    assert_eq!(server.get_json("/health/ready").await["status"], "draining");
    let res = reqwest::Client::new()
        .get(server.url("/v1/channel"))
        .header("Authorization", format!("jwt {}", server.token(json!({"iss": "odoo:channel:2"}))))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 503);
    // The session lives through the grace period, then is closed.
    ws.message("BROADCAST", json!(1)).await;
    assert_eq!(ws.expect_close(Duration::from_secs(6)).await, Some(1001));
    let status = server.wait(Duration::from_secs(5)).expect("exited");
    assert_eq!(status.code(), Some(0));
}

/// The shards wait in io_uring without registered buffers, so on Linux 5.12+ (where rings are
/// charged to the memory cgroup) a locked-down memlock limit no longer stops ringsfu; under
/// glommio a 64 KiB limit did. What ringsfu says when io_uring is refused is unit-tested in
/// `runtime::shard` (a seccomp filter or the io_uring_disabled sysctl cannot be set up for one
/// process here).
#[test]
fn a_small_memlock_limit_does_not_stop_the_shards() {
    let release = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap();
    let mut version = release.trim().split(['.', '-']).map(|p| p.parse::<u32>().unwrap_or(0));
    let (major, minor) = (version.next().unwrap_or(0), version.next().unwrap_or(0));
    if (major, minor) < (5, 12) {
        eprintln!("skipped: Linux {release} charges io_uring rings to RLIMIT_MEMLOCK");
        return;
    }
    let mut child = Command::new("sh")
        .arg("-c")
        .arg(format!("ulimit -l 64 && exec {}", env!("CARGO_BIN_EXE_ringsfu")))
        .env_clear()
        .env("PORT", "0")
        .env("RTC_MIN_PORT", "0")
        .env("PIN_SHARDS", "false")
        .env("LOG_LEVEL", "info")
        .env("NUM_WORKERS", "2")
        .stderr(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdout = std::io::BufReader::new(child.stdout.take().unwrap());
    let mut seen = String::new();
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    let mut line = String::new();
    while std::time::Instant::now() < deadline {
        line.clear();
        if std::io::BufRead::read_line(&mut stdout, &mut line).unwrap_or(0) == 0 {
            break;
        }
        seen.push_str(&line);
        if line.contains("ringsfu ready") {
            break;
        }
    }
    let _ = child.kill();
    let output = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(seen.contains("ringsfu ready"), "ringsfu did not start under `ulimit -l 64`:\n{seen}{stderr}");
}
