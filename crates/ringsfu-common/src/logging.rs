//! Logging to stderr with `tracing`: text or JSON, at `LOG_LEVEL` (overridable by `RUST_LOG`).

use tracing_subscriber::EnvFilter;

pub fn init(level: LogLevel, json: bool) {
    // Noisy dependencies stay at warn unless RUST_LOG says otherwise.
    let default = format!("{},str0m=warn,is=warn,dimpl=warn,hyper=warn,tungstenite=warn", level.as_filter());
    let filter = EnvFilter::try_from_env("RUST_LOG").unwrap_or_else(|_| EnvFilter::new(default));
    use std::io::IsTerminal;
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal());
    if json {
        builder.json().init();
    } else {
        builder.init();
    }
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
