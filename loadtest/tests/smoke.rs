//! The load generator runs end to end with tiny numbers: it starts ringsfu, joins real clients
//! (ICE, DTLS, SRTP over loopback), and writes a report whose figures say media flowed.

use serde_json::Value;
use std::process::Command;

#[test]
fn a_tiny_audio_room_runs_and_reports() {
    let exe = std::path::PathBuf::from(env!("CARGO_BIN_EXE_ringsfu-loadtest"));
    let ringsfu = exe.with_file_name("ringsfu");
    assert!(ringsfu.exists(), "build ringsfu first (cargo test --workspace builds it): {}", ringsfu.display());
    let out = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("loadtest-smoke");
    let _ = std::fs::remove_dir_all(&out);
    let status = Command::new(&exe)
        .args([
            "run",
            "audio-room",
            "--talkers",
            "2",
            "--listeners",
            "3",
            "--full",
            "1",
            "--duration",
            "6",
            "--no-pin",
            "--quiet",
        ])
        .arg("--out")
        .arg(&out)
        .env("RINGSFU_BIN", &ringsfu)
        .status()
        .unwrap();
    assert!(status.success());
    let report: Value = serde_json::from_str(&std::fs::read_to_string(out.join("audio-room.json")).unwrap()).unwrap();
    assert_eq!(report["clients"]["joined"], 5, "{report}");
    assert_eq!(report["clients"]["failed"], 0);
    // Two talkers to four receivers each at 50 packets per second.
    let forwarded = report["forwardedPacketsPerSecond"].as_f64().unwrap();
    assert!((200.0..=500.0).contains(&forwarded), "{forwarded}");
    assert!(report["forwardedPacketsPerShardCpuSecond"].as_f64().unwrap() > 0.0);
    assert!(report["latencyMs"]["audio"]["samples"].as_u64().unwrap() > 100, "{report}");
    assert!(report["latencyMs"]["video"].is_null(), "an audio room has no video: {report}");
    assert_eq!(report["lossRatio"], 0.0);
    let html = std::fs::read_to_string(out.join("audio-room.html")).unwrap();
    assert!(html.contains("<svg") && html.contains("Forwarded RTP packets per second"));
}
