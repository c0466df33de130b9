//! Logging to stderr with `tracing`: text or JSON, at `LOG_LEVEL` (overridable by `RUST_LOG`).
//!
//! A line is one `write` to stderr, except on a tokio runtime thread whose runtime calls
//! [`flush_at_park`] before it parks: such a thread keeps its lines and writes them together when
//! it runs out of work, at once with a warning or an error, and when it logs once [`BATCH_BYTES`]
//! have piled up or its oldest kept line is [`BATCH_AGE`] old. An idle server's lines are as
//! prompt as before; a busy one writes a batch where it wrote several lines (seven at a time in
//! `gateway-bench`). Batched so, a request that places a new channel cost the gateway 6-12% less
//! CPU than with its line written alone (docs/performance.md, "Gateway alone").

use std::cell::RefCell;
use std::fmt;
use std::io::{self, Write};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};
use tracing::{Level, Metadata};
use tracing_subscriber::EnvFilter;
use tracing_subscriber::fmt::MakeWriter;
use tracing_subscriber::fmt::format::Writer;
use tracing_subscriber::fmt::time::FormatTime;

/// What a batching thread keeps before it writes anyway.
pub const BATCH_BYTES: usize = 16 << 10;
/// How long a batching thread that keeps logging keeps a line.
pub const BATCH_AGE: Duration = Duration::from_millis(100);

pub fn init(level: LogLevel, json: bool) {
    // Noisy dependencies stay at warn unless RUST_LOG says otherwise.
    let default = format!("{},str0m=warn,is=warn,dimpl=warn,hyper=warn,tungstenite=warn", level.as_filter());
    let filter = EnvFilter::try_from_env("RUST_LOG").unwrap_or_else(|_| EnvFilter::new(default));
    use std::io::IsTerminal;
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(Stderr)
        .with_timer(Timestamp)
        .with_ansi(std::io::stderr().is_terminal());
    if json {
        builder.json().init();
    } else {
        builder.init();
    }
    // A panic's message follows the lines its thread logged before it.
    let report = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        flush();
        report(info);
    }));
}

/// For `tokio::runtime::Builder::on_thread_park`: writes what this thread logged since it last
/// parked, and from now on keeps its lines until it parks again.
pub fn flush_at_park() {
    with_batch(|batch| {
        batch.on = true;
        batch.write_to(&mut io::stderr());
    });
}

/// Writes what this thread kept (before it exits, or the process does).
pub fn flush() {
    with_batch(|batch| batch.write_to(&mut io::stderr()));
}

/// This thread's batch, unless it is gone (the thread is exiting) or in use (a panic while
/// writing it).
fn with_batch<R>(f: impl FnOnce(&mut Batch) -> R) -> Option<R> {
    BATCH.try_with(|batch| batch.try_borrow_mut().ok().map(|mut b| f(&mut b))).ok().flatten()
}

thread_local! {
    static BATCH: RefCell<Batch> = const { RefCell::new(Batch { on: false, lines: Vec::new(), since: None }) };
}

/// One thread's lines not yet written.
#[derive(Debug, Default)]
struct Batch {
    /// The thread batches (its runtime flushes it when it parks).
    on: bool,
    lines: Vec<u8>,
    /// When the oldest kept line came.
    since: Option<Instant>,
}

impl Batch {
    /// Takes one formatted line (or part of one) at `now`: kept when batching, written through
    /// `out` with what was kept when not, when urgent (a warning or an error), when the batch is
    /// full or its oldest line old enough.
    fn push(&mut self, line: &[u8], urgent: bool, now: Instant, out: &mut impl Write) -> io::Result<()> {
        if !self.on {
            return out.write_all(line);
        }
        self.lines.extend_from_slice(line);
        let since = *self.since.get_or_insert(now);
        if urgent || self.lines.len() >= BATCH_BYTES || now.saturating_duration_since(since) >= BATCH_AGE {
            self.write_to(out);
        }
        Ok(())
    }

    /// Writes the kept lines; on an error they are dropped, as a line is when stderr fails.
    fn write_to(&mut self, out: &mut impl Write) {
        self.since = None;
        if !self.lines.is_empty() {
            let _ = out.write_all(&self.lines);
            self.lines.clear();
            // After a burst, the memory goes back.
            if self.lines.capacity() > BATCH_BYTES * 2 {
                self.lines = Vec::new();
            }
        }
    }
}

impl Drop for Batch {
    fn drop(&mut self) {
        self.write_to(&mut io::stderr());
    }
}

/// The writer `tracing-subscriber` formats each line into.
struct Stderr;

/// One line on its way: `tracing-subscriber` writes a formatted line with one `write_all`.
struct Line {
    urgent: bool,
}

impl<'a> MakeWriter<'a> for Stderr {
    type Writer = Line;

    fn make_writer(&'a self) -> Line {
        Line { urgent: false }
    }

    fn make_writer_for(&'a self, meta: &Metadata<'_>) -> Line {
        Line { urgent: is_urgent(meta.level()) }
    }
}

/// A warning or an error is written at once.
fn is_urgent(level: &Level) -> bool {
    *level <= Level::WARN
}

impl Write for Line {
    fn write(&mut self, line: &[u8]) -> io::Result<usize> {
        match with_batch(|batch| batch.push(line, self.urgent, Instant::now(), &mut io::stderr())) {
            Some(result) => result.map(|()| line.len()),
            None => io::stderr().write_all(line).map(|()| line.len()),
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// A line's time as `tracing-subscriber` writes it (RFC 3339, UTC, microseconds:
/// `2026-12-01T06:15:26.874719Z`), with the part up to the second formatted once a second per
/// thread: formatting all of it was a third of a gateway's line.
struct Timestamp;

thread_local! {
    /// The second last formatted (since the epoch) and its text up to the `.`.
    static SECOND: RefCell<(u64, String)> = const { RefCell::new((u64::MAX, String::new())) };
}

impl FormatTime for Timestamp {
    fn format_time(&self, w: &mut Writer<'_>) -> fmt::Result {
        let now = since_epoch();
        let cached = SECOND.try_with(|second| {
            let Ok(mut second) = second.try_borrow_mut() else { return false };
            if second.0 != now.as_secs() && !second_text(now.as_secs(), &mut second.1) {
                return false;
            }
            second.0 = now.as_secs();
            w.write_str(&second.1).is_ok()
        });
        if cached != Ok(true) {
            // A second boundary passed while its text was formatted, or the thread is exiting.
            return tracing_subscriber::fmt::time::SystemTime.format_time(w);
        }
        write!(w, ".{:06}Z", now.subsec_micros())
    }
}

fn since_epoch() -> Duration {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default()
}

/// Puts the text of `second` up to its `.` in `text`, as `tracing-subscriber` formats it; false
/// when the clock moved to another second meanwhile.
fn second_text(second: u64, text: &mut String) -> bool {
    let mut full = String::new();
    if tracing_subscriber::fmt::time::SystemTime.format_time(&mut Writer::new(&mut full)).is_err()
        || since_epoch().as_secs() != second
    {
        return false;
    }
    text.clear();
    text.push_str(full.split('.').next().unwrap_or_default());
    true
}

/// `LOG_LEVEL`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogLevel {
    Off,
    Error,
    Warn,
    Info,
    Debug,
    Trace,
}

impl LogLevel {
    pub fn as_filter(self) -> &'static str {
        match self {
            LogLevel::Off => "off",
            LogLevel::Error => "error",
            LogLevel::Warn => "warn",
            LogLevel::Info => "info",
            LogLevel::Debug => "debug",
            LogLevel::Trace => "trace",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_timestamp_reads_as_tracing_subscribers_own() {
        let format = |timer: &dyn FormatTime| {
            let mut text = String::new();
            timer.format_time(&mut Writer::new(&mut text)).unwrap();
            text
        };
        // Twice from the cache, within the same second as tracing-subscriber's (tried until no
        // second boundary falls between them).
        for attempt in 0.. {
            let (ours, cached, theirs) =
                (format(&Timestamp), format(&Timestamp), format(&tracing_subscriber::fmt::time::SystemTime));
            if ours[..19] != theirs[..19] || cached[..19] != theirs[..19] {
                assert!(attempt < 3, "{ours} {cached} {theirs}");
                continue;
            }
            for text in [&ours, &cached] {
                assert_eq!(text.len(), theirs.len(), "{text} {theirs}");
                assert!(text.ends_with('Z') && text.as_bytes()[19] == b'.', "{text}");
                assert!(text[20..26].bytes().all(|b| b.is_ascii_digit()), "{text}");
            }
            break;
        }
    }

    #[test]
    fn a_thread_that_does_not_batch_writes_each_line() {
        let (mut batch, mut out) = (Batch::default(), Vec::new());
        batch.push(b"one\n", false, Instant::now(), &mut out).unwrap();
        assert_eq!(out, b"one\n");
        assert!(batch.lines.is_empty());
    }

    #[test]
    fn a_batching_thread_keeps_lines_until_a_warning_a_full_batch_or_an_old_line() {
        let t0 = Instant::now();
        let (mut batch, mut out) = (Batch::default(), Vec::new());
        batch.on = true;
        batch.push(b"info 1\n", false, t0, &mut out).unwrap();
        batch.push(b"info 2\n", false, t0, &mut out).unwrap();
        assert!(out.is_empty(), "kept");
        batch.push(b"warn 3\n", true, t0, &mut out).unwrap();
        assert_eq!(out, b"info 1\ninfo 2\nwarn 3\n", "a warning goes out at once, after what waited, in order");

        out.clear();
        let line = [b'x'; 1000];
        for _ in 0..BATCH_BYTES / line.len() {
            batch.push(&line, false, t0, &mut out).unwrap();
        }
        assert!(out.is_empty());
        batch.push(&line, false, t0, &mut out).unwrap();
        assert_eq!(out.len(), (BATCH_BYTES / line.len() + 1) * line.len(), "written once full");
        assert!(batch.lines.is_empty());

        out.clear();
        let t1 = t0 + Duration::from_secs(5);
        batch.push(b"old\n", false, t1, &mut out).unwrap();
        batch.push(b"newer\n", false, t1 + BATCH_AGE / 2, &mut out).unwrap();
        assert!(out.is_empty(), "the oldest kept line is younger than {BATCH_AGE:?}");
        batch.push(b"newest\n", false, t1 + BATCH_AGE, &mut out).unwrap();
        assert_eq!(out, b"old\nnewer\nnewest\n", "written once the oldest line is {BATCH_AGE:?} old");

        out.clear();
        batch.push(b"last\n", false, t1 + BATCH_AGE * 3, &mut out).unwrap();
        assert!(out.is_empty(), "the age counts from the oldest line kept since the last write");
        batch.write_to(&mut out);
        assert_eq!(out, b"last\n", "what a park writes");
    }

    #[test]
    fn warnings_and_errors_are_urgent() {
        assert!(is_urgent(&Level::ERROR) && is_urgent(&Level::WARN));
        assert!(!is_urgent(&Level::INFO) && !is_urgent(&Level::DEBUG) && !is_urgent(&Level::TRACE));
    }
}
