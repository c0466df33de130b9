//! `sfu-gateway`: parse the configuration, start the gateway, exit 0 after a graceful stop.
//! Exit codes: 2 for a refused configuration, 1 for a start-up failure.

use clap::Parser;
use sfu_gateway::{Args, GatewayConfig};

/// Every request allocates a few dozen times (hyper, axum, the claims, the placement): mimalloc's
/// per-thread pages cost a fraction of glibc malloc's there (docs/performance.md, "Gateway alone").
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() {
    let args = Args::parse();
    let config = match GatewayConfig::resolve(&args) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("sfu-gateway: {e}");
            std::process::exit(2);
        }
    };
    ringsfu_common::logging::init(config.log_level, config.log_json);
    // One thread by default (`GatewayConfig::threads`): the work-stealing scheduler's hand-offs
    // cost about a sixth of the CPU per request (docs/performance.md, "Gateway alone").
    let mut builder = match config.threads {
        1 => tokio::runtime::Builder::new_current_thread(),
        0 => tokio::runtime::Builder::new_multi_thread(),
        n => {
            let mut b = tokio::runtime::Builder::new_multi_thread();
            b.worker_threads(n);
            b
        }
    };
    // Lines logged while busy go out together when the runtime runs out of work
    // (`ringsfu_common::logging`).
    builder.on_thread_park(ringsfu_common::logging::flush_at_park);
    let runtime = match builder.thread_name("sfu-gateway").enable_all().build() {
        Ok(r) => r,
        Err(e) => {
            eprintln!("sfu-gateway: cannot start the async runtime: {e}");
            std::process::exit(1);
        }
    };
    let result = runtime.block_on(sfu_gateway::run(config));
    ringsfu_common::logging::flush();
    if let Err(e) = result {
        eprintln!("sfu-gateway: {e}");
        std::process::exit(1);
    }
}
