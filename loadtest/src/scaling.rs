//! `ringsfu-loadtest scaling`: one channel over more and more shards (docs/cross-shard.md). A
//! broadcast of one publisher to N × `per_shard` listeners on N shards, for N = 1 up to the
//! largest asked, each shard taking `per_shard` of them (`CHANNEL_SHARD_BUDGET`). What scales
//! is read against N = 1: forwarded packets per second over N times N = 1's (the offered load
//! grows with N, so below 1 means some was not served), and forwarded packets per shard-CPU-second
//! over N = 1's (the per-shard efficiency: below 1 is what the relay and the shared machine cost).

use crate::ceiling::{self, Ceiling, RunCeiling};
use crate::machine::Machine;
use crate::run::{self, RunArgs};
use crate::scenario::Kind;
use serde_json::{Value, json};
use std::path::PathBuf;

pub struct ScalingArgs {
    pub out: PathBuf,
    pub duration: u64,
    pub per_shard: usize,
    pub max_shards: usize,
}

pub async fn scaling(args: ScalingArgs) -> Result<(), String> {
    eprintln!("measuring the ceiling (loopback UDP, AES-128-GCM) ...");
    let ceiling: Ceiling =
        tokio::task::spawn_blocking(|| ceiling::measure_all(2.0)).await.map_err(|e| e.to_string())?;
    let mut rows: Vec<(usize, Value)> = Vec::new();
    for shards in 1..=args.max_shards {
        let mut params = run::default_params();
        params.duration = args.duration;
        params.listeners = shards * args.per_shard;
        eprintln!("{shards} shard(s): 1 publisher to {} listeners for {} s ...", params.listeners, args.duration);
        let out = args.out.join(format!("scaling-{shards}"));
        let measured = RunCeiling::of(ceiling.clone(), "measured by scaling before its runs");
        let mut run_args = RunArgs::in_series(Kind::Broadcast, params, shards, out, measured);
        run_args.quiet = true;
        run_args.server_env = vec![("CHANNEL_SHARD_BUDGET".into(), args.per_shard.to_string())];
        let report = run::run(run_args).await?;
        rows.push((shards, report));
    }
    let (table, summary) = summarize(&rows, &ceiling, args.per_shard);
    std::fs::create_dir_all(&args.out).map_err(|e| e.to_string())?;
    std::fs::write(args.out.join("scaling.md"), &table).map_err(|e| e.to_string())?;
    let json = json!({"machine": Machine::read(), "ceiling": ceiling, "perShard": args.per_shard, "runs": summary});
    std::fs::write(args.out.join("scaling.json"), serde_json::to_string_pretty(&json).expect("serializable"))
        .map_err(|e| e.to_string())?;
    println!("{table}");
    Ok(())
}

/// The table (Markdown) and the per-N figures, read against N = 1.
fn summarize(rows: &[(usize, Value)], ceiling: &Ceiling, per_shard: usize) -> (String, Vec<Value>) {
    let machine = Machine::read();
    let num = |r: &Value, key: &str| r[key].as_f64().unwrap_or(0.0);
    let base =
        rows.first().map(|(_, r)| (num(r, "forwardedPacketsPerSecond"), num(r, "forwardedPacketsPerShardCpuSecond")));
    let (base_rate, base_per_cpu) = base.unwrap_or((0.0, 0.0));
    let mut table = format!(
        "Machine: {} ({} cores). Broadcast of 1 publisher to {per_shard} listeners per shard. Ceiling per CPU-second: sendmmsg {:.0}.\n\n",
        machine.cpu, machine.cores, ceiling.sendmmsg_per_cpu_second,
    );
    table.push_str("| shards | listeners | forwarded pkt/s | ÷ (N × N=1) | shard CPU (sum) | fwd pkt per shard-CPU-s | per-shard efficiency (÷ N=1) | ÷ sendmmsg | relayed out pkt/s | relay drops | video p99 ms | loss |\n");
    table.push_str("|---|---|---|---|---|---|---|---|---|---|---|---|\n");
    let mut summary = Vec::new();
    for (shards, r) in rows {
        let rate = num(r, "forwardedPacketsPerSecond");
        let per_cpu = num(r, "forwardedPacketsPerShardCpuSecond");
        let cpu: f64 =
            r["shardCpuUtilization"].as_array().map(|a| a.iter().filter_map(Value::as_f64).sum()).unwrap_or(0.0);
        let served = rate / (base_rate * *shards as f64).max(1e-9);
        let efficiency = per_cpu / base_per_cpu.max(1e-9);
        let relayed = num(r, "relayedOutPacketsPerSecond");
        let drops = r["droppedPackets"]["relay_full"].as_f64().unwrap_or(0.0);
        table.push_str(&format!(
            "| {shards} | {} | {rate:.0} | {served:.2} | {:.1}% | {per_cpu:.0} | {efficiency:.2} | {:.3} | {relayed:.0} | {drops:.0} | {} | {:.2}% |\n",
            shards * per_shard,
            cpu * 100.0,
            per_cpu / ceiling.sendmmsg_per_cpu_second,
            r["latencyMs"]["video"]["p99"].as_f64().map_or("-".into(), |x| format!("{x:.1}")),
            num(r, "lossRatio") * 100.0,
        ));
        summary.push(json!({
            "shards": shards,
            "listeners": shards * per_shard,
            "servedRatio": served,
            "perShardEfficiency": efficiency,
            "report": r,
        }));
    }
    (table, summary)
}
