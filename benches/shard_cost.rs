//! The shard core's own cost per forwarded packet, without sockets, kernel or load generator: the
//! virtual-network simulation (`client::sim`) drives the real sans-IO shard with real
//! ICE/DTLS/SRTP participants, and only the time spent inside the shard's entry points is counted
//! (each call is bracketed by the shard probe and timed on the thread's CPU clock).
//!
//! `cargo bench --bench shard_cost` prints one line per scenario. Instruction counts, which do not
//! depend on what else the machine does, come from running the same binary under
//! `valgrind --tool=callgrind --toggle-collect='*Shard*handle*' ...` (see docs/performance.md).

use ringsfu_client::Publish;
use ringsfu_client::sim::Sim;
use ringsfu_core::protocol::messages::MediaType;
use serde_json::json;
use std::cell::Cell;
use std::time::Duration;

thread_local! {
    static INSIDE_SINCE: Cell<u64> = const { Cell::new(0) };
    static INSIDE_TOTAL: Cell<u64> = const { Cell::new(0) };
}

fn thread_cpu_ns() -> u64 {
    let mut ts = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: ts is a valid out-pointer.
    unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

fn probe(entering: bool) {
    let now = thread_cpu_ns();
    if entering {
        INSIDE_SINCE.with(|s| s.set(now));
    } else {
        let since = INSIDE_SINCE.with(|s| s.get());
        INSIDE_TOTAL.with(|t| t.set(t.get() + now.saturating_sub(since)));
    }
}

struct Scenario {
    name: &'static str,
    publishers: usize,
    listeners: usize,
    video: bool,
}

fn run(s: &Scenario, quick: bool) {
    // `cargo test --all-targets` runs this once as a smoke test: a small call, a short window.
    let (listeners, window) = if quick { (s.listeners.min(4), Duration::from_secs(1)) } else { (s.listeners, WINDOW) };
    let mut sim = Sim::new();
    let channel = sim.create_channel(true);
    let publishers: Vec<usize> = (0..s.publishers).map(|i| sim.join(channel, json!(i as i64 + 1))).collect();
    for i in 0..listeners {
        sim.join(channel, json!(1000 + i as i64));
    }
    let now = sim.now;
    for &p in &publishers {
        sim.participant(p).publish(now, Publish::Audio { bytes: 100 });
        if s.video {
            sim.participant(p).publish(
                now,
                Publish::Video { media: MediaType::Camera, bitrates: vec![150_000, 500_000, 1_200_000], fps: 30 },
            );
        }
    }
    // Everyone joined, keys exchanged, layers settled.
    sim.run_for(Duration::from_secs(8));
    let forwarded_before = sim.shard.counters().rtp_forwarded;
    INSIDE_TOTAL.with(|t| t.set(0));
    sim.shard_probe = Some(probe);
    sim.run_for(window);
    sim.shard_probe = None;
    let forwarded = sim.shard.counters().rtp_forwarded - forwarded_before;
    let ns = INSIDE_TOTAL.with(|t| t.get());
    println!(
        "{:<52} forwarded {:>7} packets in {:?} of virtual time; shard core CPU {:>7.1} ms: {:>6.2} µs per forwarded packet",
        s.name,
        forwarded,
        window,
        ns as f64 / 1e6,
        ns as f64 / 1e3 / forwarded.max(1) as f64
    );
}

/// The measured stretch of virtual time, after the warm-up.
const WINDOW: Duration = Duration::from_secs(5);

fn main() {
    let quick = !std::env::args().any(|a| a == "--bench");
    let scenarios = [
        Scenario { name: "audio room: 3 talkers, 60 listeners", publishers: 3, listeners: 60, video: false },
        Scenario { name: "meeting: 6 participants, audio + 3-layer video", publishers: 6, listeners: 0, video: true },
        Scenario {
            name: "broadcast: 1 publisher (audio + video), 60 listeners",
            publishers: 1,
            listeners: 60,
            video: true,
        },
    ];
    for s in &scenarios {
        run(s, quick);
    }
}
