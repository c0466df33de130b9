//! A run's report reads like a report: its JSON records the machine, the ceiling and a verdict
//! for each of the scenario's expectations, its HTML page opens with a summary that agrees with
//! them, and `compare` puts two real reports side by side. Real runs: ringsfu started by the
//! harness, real clients over loopback, a few seconds each. No bound on a performance figure.

use serde_json::Value;
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn loadtest() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_ringsfu-loadtest"))
}

fn scratch(name: &str) -> PathBuf {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join(name);
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// A tiny audio room (2 talkers, 3 listeners, one of them full) for 4 seconds into `out`.
fn run_audio_room(out: &Path, extra: &[&str]) -> (Value, String) {
    let ringsfu = loadtest().with_file_name("ringsfu");
    assert!(ringsfu.exists(), "build ringsfu first (cargo test --workspace builds it): {}", ringsfu.display());
    let output = Command::new(loadtest())
        .args(["run", "audio-room", "--talkers", "2", "--listeners", "3", "--full", "1", "--duration", "4"])
        .args(["--no-pin", "--quiet", "--ceiling-seconds", "0.3"])
        .args(extra)
        .arg("--out")
        .arg(out)
        .env("RINGSFU_BIN", &ringsfu)
        .output()
        .unwrap();
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    let json = std::fs::read_to_string(out.join("audio-room.json")).unwrap();
    (serde_json::from_str(&json).unwrap(), std::fs::read_to_string(out.join("audio-room.html")).unwrap())
}

fn compare(old: &Path, new: &Path, extra: &[&str]) -> Output {
    Command::new(loadtest()).arg("compare").arg(old).arg(new).args(extra).output().unwrap()
}

fn f(v: &Value) -> f64 {
    v.as_f64().unwrap_or_else(|| panic!("not a number: {v}"))
}

/// The text between `start` and the next `end` after it.
fn between<'a>(text: &'a str, start: &str, end: &str) -> &'a str {
    let from = text.find(start).unwrap_or_else(|| panic!("no {start:?} in {text}")) + start.len();
    &text[from..from + text[from..].find(end).unwrap()]
}

#[test]
fn a_run_records_its_machine_ceiling_and_verdicts_and_its_page_agrees() {
    let out = scratch("report-verdicts");
    let (report, html) = run_audio_room(&out, &[]);

    let machine = &report["machine"];
    assert!(!machine["cpu"].as_str().unwrap().is_empty(), "{machine}");
    assert!(f(&machine["cores"]) >= 1.0 && f(&machine["memoryBytes"]) > 0.0, "{machine}");
    assert!(!machine["kernel"].as_str().unwrap().is_empty() && machine["hostname"].is_string(), "{machine}");
    for at in ["loadAverageStart", "loadAverageEnd"] {
        assert_eq!(machine[at].as_array().map(Vec::len), Some(3), "{at}: {machine}");
    }

    // The ceiling was measured before the run, and the ratio is the run's figure over it.
    let ceiling = f(&report["ceiling"]["sendmmsg_per_cpu_second"]);
    assert!(ceiling > 0.0 && report["ceiling"]["source"].as_str().unwrap().contains("measured"), "{report}");
    let per_cpu = f(&report["forwardedPacketsPerShardCpuSecond"]);
    assert!((f(&report["ratioToCeiling"]["sendmmsg"]) - per_cpu / ceiling).abs() < 1e-9);

    // Every expectation of an audio room with a full listener, each with its figure and bound.
    let verdicts = report["expectations"].as_array().unwrap();
    let ids: Vec<&str> = verdicts.iter().map(|v| v["id"].as_str().unwrap()).collect();
    for id in ["all-joined", "none-failed", "join-p99", "loss", "audio-latency-p99", "no-rejected", "no-send-failed"] {
        assert!(ids.contains(&id), "{id} missing from {ids:?}");
    }
    assert!(!ids.contains(&"video-latency-p99"), "an audio room has no video");
    for v in verdicts {
        assert!(!v["reason"].as_str().unwrap().is_empty() && v["bound"].is_number(), "{v}");
        let pass = v["pass"].as_bool().unwrap();
        // The verdict is the comparison of the measured figure with the bound, nothing else.
        let agrees = v["measured"].as_f64().is_some_and(|m| match v["comparison"].as_str().unwrap() {
            "<=" => m <= f(&v["bound"]),
            ">=" => m >= f(&v["bound"]),
            other => panic!("comparison {other}"),
        });
        assert_eq!(pass, agrees, "{v}");
    }
    let joined = verdicts.iter().find(|v| v["id"] == "all-joined").unwrap();
    assert_eq!((f(&joined["measured"]), f(&joined["bound"])), (f(&report["clients"]["joined"]), 5.0));
    let failed: Vec<&Value> = verdicts.iter().filter(|v| v["pass"] == false).collect();
    let word = if failed.is_empty() { "PASS" } else { "FAIL" };
    assert_eq!(report["verdict"], word, "{report}");

    // The page opens with the same verdict, its table marks the same expectations, and it
    // names the machine and the ceiling; it fetches nothing.
    let summary = between(&html, "<p id=\"summary\"", "</p>");
    let class = if failed.is_empty() { "class=\"pass\">PASS —" } else { "class=\"fail\">FAIL (" };
    assert!(summary.trim_start().starts_with(class), "{summary}");
    assert!(summary.contains(" of this machine's sendmmsg ceiling ("), "{summary}");
    assert!(summary.contains(&format!("{} of 5 clients", report["clients"]["joined"])), "{summary}");
    assert_eq!(summary, format!(" class=\"{}\">{}", word.to_lowercase(), report["summary"].as_str().unwrap()));
    let table = between(&html, "<table id=\"expectations\">", "</table>");
    assert_eq!(table.matches("<td class=\"fail\">FAIL</td>").count(), failed.len(), "{table}");
    assert_eq!(table.matches("<td class=\"pass\">PASS</td>").count(), verdicts.len() - failed.len());
    for v in &failed {
        assert!(summary.contains(v["expectation"].as_str().unwrap()), "{summary} names {v}");
    }
    let machine_table = between(&html, "<table id=\"machine\">", "</table>");
    assert!(machine_table.contains(machine["hostname"].as_str().unwrap()), "{machine_table}");
    assert!(machine_table.contains("sendmmsg"), "{machine_table}");
    assert!(html.find("id=\"summary\"") < html.find("<svg"), "the summary comes before the plots");
    assert!(!html.contains("<script") && !html.contains("<link") && !html.contains("src="));
}

#[test]
fn a_run_without_a_ceiling_says_so() {
    let out = scratch("report-no-ceiling");
    let (report, html) = run_audio_room(&out, &["--no-ceiling"]);
    assert!(report["ceiling"].is_null() && report["ratioToCeiling"].is_null(), "{report}");
    assert!(report["summary"].as_str().unwrap().contains("(no ceiling measured)"), "{report}");
    assert!(between(&html, "<table id=\"machine\">", "</table>").contains("not measured"));
}

/// Rows of the Markdown table: figure → (old, new, change).
fn table_rows(markdown: &str) -> HashMap<String, (String, String, String)> {
    markdown
        .lines()
        .filter(|l| l.starts_with("| ") && !l.starts_with("| figure"))
        .map(|l| {
            let cells: Vec<String> = l.trim_matches('|').split(" | ").map(|c| c.trim().to_string()).collect();
            assert_eq!(cells.len(), 4, "{l}");
            (cells[0].clone(), (cells[1].clone(), cells[2].clone(), cells[3].clone()))
        })
        .collect()
}

fn ratio(old: f64, new: f64) -> String {
    format!("×{:.2}", new / old)
}

#[test]
fn compare_tables_two_real_runs_and_refuses_what_is_not_a_report() {
    let dir = scratch("report-compare");
    // The first run reads its ceiling from `ringsfu-loadtest ceiling`, the second from the first
    // run's report: both paths of `--ceiling FILE`.
    let ceiling = Command::new(loadtest()).args(["ceiling", "--seconds", "0.2"]).output().unwrap();
    assert!(ceiling.status.success());
    let ceiling_file = dir.join("ceiling.json");
    std::fs::write(&ceiling_file, &ceiling.stdout).unwrap();
    let (old, _) = run_audio_room(&dir.join("old"), &["--ceiling", ceiling_file.to_str().unwrap()]);
    let old_path = dir.join("old/audio-room.json");
    let (new, _) = run_audio_room(&dir.join("new"), &["--ceiling", old_path.to_str().unwrap()]);
    let new_path = dir.join("new/audio-room.json");
    let measured: Value = serde_json::from_slice(&ceiling.stdout).unwrap();
    assert_eq!(old["ceiling"]["sendmmsg_per_cpu_second"], measured["sendmmsg_per_cpu_second"]);
    assert_eq!(new["ceiling"]["sendmmsg_per_cpu_second"], measured["sendmmsg_per_cpu_second"]);
    assert!(new["ceiling"]["full"]["aes128gcm_1200b_per_cpu_second"].is_number(), "the full ceiling travels");

    let html_out = dir.join("compare.html");
    let output = compare(&old_path, &new_path, &["--html", html_out.to_str().unwrap()]);
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    let markdown = String::from_utf8(output.stdout).unwrap();
    assert!(!markdown.contains("Warning"), "same machine, same scenario: {markdown}");
    let rows = table_rows(&markdown);
    for figure in [
        "forwarded packets per second",
        "forwarded packets per shard-CPU-second",
        "ratio to the run's own sendmmsg ceiling",
        "shard CPU (% of one core)",
        "audio latency p50 (ms)",
        "audio latency p99 (ms)",
        "video latency p50 (ms)",
        "video latency p99 (ms)",
        "join p50 (ms)",
        "join p99 (ms)",
        "media loss (%)",
        "RSS per session (MB)",
        "expectations met",
    ] {
        assert!(rows.contains_key(figure), "{figure} missing: {markdown}");
    }
    let figure = |r: &Value, k: &str| f(&r[k]);
    assert_eq!(
        rows["forwarded packets per second"].2,
        ratio(figure(&old, "forwardedPacketsPerSecond"), figure(&new, "forwardedPacketsPerSecond"))
    );
    let per_cpu = |r: &Value| figure(r, "forwardedPacketsPerShardCpuSecond");
    assert_eq!(rows["forwarded packets per shard-CPU-second"].2, ratio(per_cpu(&old), per_cpu(&new)));
    let to_ceiling = |r: &Value| f(&r["ratioToCeiling"]["sendmmsg"]);
    assert_eq!(rows["ratio to the run's own sendmmsg ceiling"].2, ratio(to_ceiling(&old), to_ceiling(&new)));
    let p99 = |r: &Value| f(&r["joinMs"]["p99"]);
    assert_eq!(rows["join p99 (ms)"].2, ratio(p99(&old), p99(&new)));
    // An audio room has no video: a dash in both columns and no change.
    assert_eq!(rows["video latency p99 (ms)"], ("—".into(), "—".into(), "—".into()));
    let met = |r: &Value| {
        let v = r["expectations"].as_array().unwrap();
        format!("{}/{}", v.iter().filter(|v| v["pass"] == true).count(), v.len())
    };
    assert_eq!((rows["expectations met"].0.clone(), rows["expectations met"].1.clone()), (met(&old), met(&new)));
    let page = std::fs::read_to_string(&html_out).unwrap();
    assert!(page.contains("<table id=\"comparison\">") && page.contains(&rows["join p99 (ms)"].2), "{page}");

    // Another machine and another size: both are called out.
    let mut elsewhere = new.clone();
    elsewhere["machine"]["hostname"] = "another-host".into();
    elsewhere["scenario"]["params"]["listeners"] = 300.into();
    let elsewhere_path = dir.join("elsewhere.json");
    std::fs::write(&elsewhere_path, elsewhere.to_string()).unwrap();
    let output = compare(&old_path, &elsewhere_path, &[]);
    assert!(output.status.success());
    let markdown = String::from_utf8(output.stdout).unwrap();
    assert!(markdown.contains("**Warning:** the runs came from different machines"), "{markdown}");
    assert!(markdown.contains("listeners 3 → 300"), "{markdown}");
    // Another scenario: the committed meeting report (older format, no ceiling) still reads.
    let meeting = Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs/bench/meeting.json");
    let output = compare(&old_path, &meeting, &[]);
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    let markdown = String::from_utf8(output.stdout).unwrap();
    assert!(markdown.contains("the scenarios differ (old: audio-room; new: meeting)"), "{markdown}");
    assert_eq!(table_rows(&markdown)["ratio to the run's own sendmmsg ceiling"].2, "—");

    // Not a report: garbage, JSON of something else, a missing file. Non-zero, and a message.
    let garbage = dir.join("garbage.json");
    std::fs::write(&garbage, "this is not a report {").unwrap();
    for (bad, message) in [
        (garbage.as_path(), "not a ringsfu-loadtest report (not JSON"),
        (ceiling_file.as_path(), "not a ringsfu-loadtest report (no scenario name"),
        (dir.join("missing.json").as_path(), "missing.json"),
    ] {
        let output = compare(&old_path, bad, &[]);
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(!output.status.success(), "{}", bad.display());
        assert!(stderr.contains(message), "{}: {stderr}", bad.display());
        assert!(output.stdout.is_empty(), "no half table for {}", bad.display());
    }
}
