//! `ringsfu`: parse the configuration, start the server, exit 0 after a drained shutdown.

use clap::Parser;
use ringsfu::config::{Args, Config};

fn main() {
    let args = Args::parse();
    let config = match Config::resolve(&args) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("ringsfu: {e}");
            std::process::exit(2);
        }
    };
    ringsfu_common::logging::init(config.log_level, config.log_json);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(ringsfu::control_plane_threads(config.num_workers))
        .thread_name("ringsfu-control")
        // Lines logged while busy go out together when a thread runs out of work
        // (`ringsfu_common::logging`).
        .on_thread_park(ringsfu_common::logging::flush_at_park)
        .enable_all()
        .build()
        .expect("building the tokio runtime");
    if let Err(e) = runtime.block_on(ringsfu::server::run(config)) {
        eprintln!("ringsfu: {e}");
        std::process::exit(1);
    }
}
