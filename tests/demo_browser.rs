//! The test-call page is a working call: two headless Chromium pages on `/demo` of a real ringsfu
//! (DEMO on) each show the other's video playing, over UDP, and screenshot fine.
//!
//! Needs `chromium`, Node.js and tests/browser's playwright-core (`make test-deps` installs them).

mod common;

use common::{Server, chromium};
use serde_json::{Value, json};
use std::path::{Path, PathBuf};
use std::process::Command;

fn playwright() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/browser/node_modules/playwright-core/index.mjs")
}

/// The first tile other than the page's own, as the driver read it.
fn remote_tile(reading: &Value) -> &Value {
    reading["tiles"]
        .as_array()
        .and_then(|tiles| tiles.iter().find(|t| t["tile"] != "self"))
        .unwrap_or_else(|| panic!("no remote tile in {reading}"))
}

#[test]
fn two_pages_on_the_demo_page_see_each_other_over_udp() {
    common::require_browser_toolchain(&playwright());
    let server = Server::start(&[("DEMO", "1")]);
    let screenshots = Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("demo-browser-{}", std::process::id()));
    std::fs::create_dir_all(&screenshots).unwrap();
    let config = json!({
        "pageUrl": server.url(&format!("/demo?room=browser-{}", std::process::id())),
        "chromium": chromium(),
        "playwright": playwright(),
        "screenshotDir": screenshots,
        "timeoutMs": 60000,
    });
    let output = Command::new("node")
        .arg(Path::new(env!("CARGO_MANIFEST_DIR")).join("demo/e2e.mjs"))
        .arg(config.to_string())
        .output()
        .expect("running node");
    let stderr = String::from_utf8_lossy(&output.stderr);
    eprintln!("browser log:\n{stderr}");
    let line = String::from_utf8_lossy(&output.stdout)
        .lines()
        .find_map(|l| l.strip_prefix("RESULT ").map(str::to_string))
        .unwrap_or_else(|| panic!("no result; stderr:\n{stderr}"));
    let result: Value = serde_json::from_str(&line).expect("the result is JSON");
    let context = || format!("{}\nserver log:\n{}", serde_json::to_string_pretty(&result).unwrap(), server.stderr());
    assert_eq!(result["ok"], true, "the pages never showed each other: {}", context());

    let pages = result["pages"].as_array().expect("pages");
    assert_eq!(pages.len(), 2);
    for (i, page) in pages.iter().enumerate() {
        let (before, after) = (&page["before"], &page["after"]);
        assert_eq!(after["tiles"].as_array().map(Vec::len), Some(2), "page {}: own tile and the other's", i + 1);
        let frames = |r: &Value| r["remoteFrames"].as_u64().unwrap_or(0);
        assert!(
            frames(after) > frames(before) + 10,
            "page {}: the remote video's frames advance ({} then {}): {}",
            i + 1,
            frames(before),
            frames(after),
            context()
        );
        let remote = remote_tile(after);
        assert_eq!(remote["protocol"], "udp", "page {}: {}", i + 1, context());
        assert!(remote["path"].as_str().unwrap().starts_with("udp "), "page {}: {remote}", i + 1);
        assert_eq!(remote["transport"], "receive: connected", "page {}: {remote}", i + 1);
        assert!(remote["layer"].as_str().unwrap().contains('x'), "page {}: a frame size: {remote}", i + 1);
        let own = &after["tiles"][0];
        assert_eq!((&own["tile"], &own["transport"]), (&json!("self"), &json!("send: connected")), "page {}", i + 1);

        let png = std::fs::read(page["screenshot"].as_str().unwrap()).expect("the screenshot was written");
        assert!(png.len() > 1000 && png.starts_with(b"\x89PNG\r\n\x1a\n"), "page {}: a PNG screenshot", i + 1);
    }
}
