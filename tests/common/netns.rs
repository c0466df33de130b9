//! A private network namespace for one test, and an nftables firewall inside it.
//!
//! The namespace belongs to one thread (`unshare(CLONE_NEWNET)` on a thread of its own): every
//! socket that thread opens and every process it starts (ringsfu, Node, Chromium, coturn) lives
//! in it and sees only its own `lo`. The kernel removes it, firewall included, when the last of
//! them is gone, so no exit path of a test can leave a namespace or a rule behind on the host.

use std::io::Write;
use std::marker::PhantomData;
use std::process::{Command, Stdio};

/// Set to `1` where network namespaces cannot be made (not root, no `ip` or `nft`) to let the
/// tests that need one pass with a printed reason instead of failing. CI runs as root: unset.
pub const SKIP_ENV: &str = "RINGSFU_SKIP_NETNS_TESTS";

/// Runs `body` on a new thread inside a new network namespace whose `lo` is up; `Err` says why
/// no namespace could be made. A panic in `body` is the caller's panic.
pub fn run_isolated<T: Send>(body: impl FnOnce() -> T + Send) -> Result<T, String> {
    let outcome = std::thread::scope(|scope| {
        scope
            .spawn(move || {
                // SAFETY: unshare with a namespace flag only changes this thread's namespaces.
                if unsafe { libc::unshare(libc::CLONE_NEWNET) } != 0 {
                    let error = std::io::Error::last_os_error();
                    return Err(format!("unshare(CLONE_NEWNET) failed: {error} (needs root or CAP_SYS_ADMIN)"));
                }
                run("ip", &["link", "set", "lo", "up"], None)?;
                Ok(body())
            })
            .join()
    });
    outcome.unwrap_or_else(|panic| std::panic::resume_unwind(panic))
}

/// What a test does when `run_isolated` (or the firewall) could not be set up: fails with the
/// reason, or, when `SKIP_ENV` allows it, writes the reason past the test harness's capture
/// (so `cargo test` shows it) and lets the test pass.
pub fn unavailable(test: &str, reason: &str) {
    if std::env::var(SKIP_ENV).is_ok_and(|v| v == "1") {
        let _ = writeln!(std::io::stderr(), "SKIPPED {test}: no network namespace: {reason} ({SKIP_ENV}=1)");
        return;
    }
    panic!(
        "{test} needs a network namespace and could not make one: {reason}; run it as root with `ip` and `nft` (`make test-deps`), or set {SKIP_ENV}=1 to skip it"
    );
}

/// An nftables table in the current thread's namespace that drops UDP to some ports, counting
/// what it drops. Bound to the thread (not `Send`): dropping it elsewhere would act on another
/// namespace.
pub struct UdpBlock {
    _thread: PhantomData<*const ()>,
}

const TABLE: &str = "ringsfu_test";

impl UdpBlock {
    /// Drops every UDP packet sent to `ports` (on the output hook: the browser's side cannot
    /// send UDP there).
    pub fn install(ports: &[u16]) -> Result<UdpBlock, String> {
        let ports = ports.iter().map(u16::to_string).collect::<Vec<_>>().join(", ");
        let ruleset = format!(
            "table inet {TABLE} {{\n  chain output {{\n    type filter hook output priority 0; policy accept;\n    udp dport {{ {ports} }} counter drop\n  }}\n}}\n"
        );
        run("nft", &["-f", "-"], Some(&ruleset))?;
        Ok(UdpBlock { _thread: PhantomData })
    }

    /// The UDP packets dropped so far.
    pub fn dropped(&self) -> u64 {
        let listing = run("nft", &["list", "table", "inet", TABLE], None).expect("listing our own table");
        let after = listing.split("counter packets ").nth(1).expect("the rule has a counter");
        after.split_whitespace().next().and_then(|n| n.parse().ok()).expect("a packet count")
    }
}

impl Drop for UdpBlock {
    fn drop(&mut self) {
        let _ = run("nft", &["delete", "table", "inet", TABLE], None);
    }
}

/// Runs a system tool to completion; its stdout, or why it failed.
fn run(program: &str, args: &[&str], stdin: Option<&str>) -> Result<String, String> {
    let mut child = Command::new(program)
        .args(args)
        .stdin(if stdin.is_some() { Stdio::piped() } else { Stdio::null() })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("`{program}` could not run: {e}"))?;
    if let Some(text) = stdin {
        child.stdin.take().expect("piped stdin").write_all(text.as_bytes()).map_err(|e| e.to_string())?;
    }
    let output = child.wait_with_output().map_err(|e| e.to_string())?;
    if !output.status.success() {
        let stderr = String::from_utf8_lossy(&output.stderr);
        return Err(format!("`{program} {}` failed ({}): {}", args.join(" "), output.status, stderr.trim()));
    }
    Ok(String::from_utf8_lossy(&output.stdout).into_owned())
}
