//! The `sfu-gateway` binary refuses a bad configuration before it listens: one clear line naming
//! the setting, exit code 2 (1 for a port it cannot bind), no key echoed. What the gateway does
//! once running is tested with real SFUs in the workspace's `tests/gateway*.rs`.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const GATEWAY_KEY_B64: &str = "Z2F0ZXdheS1rZXktZm9yLXRoZS1pbnRlZ3JhdGlvbi10ZXN0cw==";
const KEY_A: &str = "u6bsUQEWrHdKIuYplirRnbBmLbrKV5PxKG7DtA71mng=";

/// One `[[sfu]]` entry of a secrets file.
fn node(address: &str, region: &str, key_b64: &str, extra: &str) -> String {
    format!("[[sfu]]\naddress = \"{address}\"\nregion = \"{region}\"\nkey = \"{key_b64}\"\n{extra}\n")
}

/// A secrets file as the gateway requires it: readable by its owner only.
fn write_private(path: &Path, text: &str) {
    std::fs::write(path, text).unwrap();
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)).unwrap();
}

/// Runs the gateway expecting it to refuse to start: (exit code, stderr).
fn refused(env: &[(&str, &str)], args: &[&str]) -> (i32, String) {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_sfu-gateway"));
    cmd.env_clear().env("SFU_GATEWAY_BIND", "127.0.0.1").env("SFU_GATEWAY_PORT", "0");
    for (k, v) in env {
        cmd.env(k, v);
    }
    // Never wait for ever on a gateway that started after all.
    let mut child = cmd.args(args).stdout(Stdio::null()).stderr(Stdio::piped()).spawn().unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    while child.try_wait().unwrap().is_none() {
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("sfu-gateway did not refuse {env:?} {args:?}");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let output = child.wait_with_output().unwrap();
    (output.status.code().unwrap_or(-1), String::from_utf8_lossy(&output.stderr).into_owned())
}

#[test]
fn invalid_configurations_are_refused_at_start_up_naming_the_setting() {
    // Cargo's scratch folder for integration tests, under target/: nothing left in /tmp.
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("gateway-startup");
    std::fs::create_dir_all(&dir).unwrap();
    let write = |name: &str, text: &str| {
        let path = dir.join(name);
        write_private(&path, text);
        path.to_str().unwrap().to_string()
    };
    let nodes = format!(r#"{{"sfu":[{{"address":"http://127.0.0.1:9","key":"{KEY_A}"}}]}}"#);
    let bad_strategy = write(
        "bad-strategy.toml",
        &format!("{}[balancing]\nstrategy = \"random\"\n", node("http://a:1", "r", KEY_A, "")),
    );
    let typo = write("typo.toml", &format!("{}[health]\ninterval = 1\n", node("http://a:1", "r", KEY_A, "")));
    let bad_key = write("bad-key.toml", &node("http://a:1", "r", "%%%", ""));
    let key = ("SFU_GATEWAY_KEY", GATEWAY_KEY_B64);
    let with_nodes = ("SFU_GATEWAY_NODES", nodes.as_str());
    type Case<'a> = (Vec<(&'a str, &'a str)>, Vec<&'a str>, &'a str);
    let cases: Vec<Case> = vec![
        (vec![with_nodes], vec![], "SFU_GATEWAY_KEY is required"),
        (vec![("SFU_GATEWAY_KEY", "%%%"), with_nodes], vec![], "SFU_GATEWAY_KEY"),
        (vec![key, with_nodes, ("SFU_GATEWAY_PORT", "eighty")], vec![], "SFU_GATEWAY_PORT"),
        (vec![key, with_nodes, ("SFU_GATEWAY_TRUST_PROXY", "maybe")], vec![], "SFU_GATEWAY_TRUST_PROXY"),
        (vec![key, ("SFU_GATEWAY_NODES", "{\"sfu\": [")], vec![], "SFU_GATEWAY_NODES"),
        (vec![key, ("SFU_GATEWAY_NODES", "{\"sfu\": []}")], vec![], "no SFU configured"),
        (vec![key], vec![], "no SFU configured"),
        (vec![key], vec!["--secrets", "/nonexistent/secrets.toml"], "cannot read secrets file"),
        (vec![key], vec!["--secrets", &bad_strategy], "balancing.strategy"),
        (vec![key], vec!["--secrets", &typo], "unknown field `interval`"),
        (vec![key], vec!["--secrets", &bad_key], "sfu[0].key"),
        (vec![key, with_nodes], vec!["--port", "99999"], "SFU_GATEWAY_PORT"),
    ];
    for (env, args, needle) in cases {
        let (code, stderr) = refused(&env, &args);
        assert_eq!(code, 2, "{env:?} {args:?}: {stderr}");
        assert!(stderr.contains(needle), "{stderr:?} should mention {needle:?}");
        assert_eq!(stderr.lines().count(), 1, "one clear line: {stderr}");
        assert!(!stderr.contains("%%%"), "keys are never echoed: {stderr}");
    }

    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = taken.local_addr().unwrap().port().to_string();
    let (code, stderr) = refused(&[key, with_nodes, ("SFU_GATEWAY_PORT", &port)], &[]);
    assert_eq!(code, 1, "{stderr}");
    assert!(stderr.contains("SFU_GATEWAY_BIND/SFU_GATEWAY_PORT"), "{stderr}");
}
