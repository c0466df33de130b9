//! The health monitor: polls every SFU's `/v1/load` each `interval`, all at once, each bounded by
//! `timeout`, and hands the results to the registry. An SFU without `/v1/load` (404: the
//! upstream Node SFU) is asked `/v1/noop` instead: alive, load unknown.
//!
//! With several gateways each one polls by itself (no single poller to lose). Each round also
//! takes in the SFUs registered through other gateways, notes the shared assignment counts at
//! the poll's start (the optimistic bump is what was assigned after it), and publishes this
//! gateway's view for the others' `/v1/health`.

use super::config::NodeConfig;
use super::forward::describe;
use super::health::{HealthState, PollOutcome};
use super::metrics::{Address, NodeLabels};
use super::placement::NodeKey;
use super::register;
use super::selection::Load;
use super::state::Gateway;
use serde::Deserialize;
use serde_json::{Value, json};
use std::collections::HashMap;
use std::time::{Duration, Instant};

/// Largest `/v1/load` answer read (ringsfu's is about 200 bytes per shard).
const MAX_LOAD_BODY: usize = 1 << 20;

/// Polls forever; a reload wakes it early so new SFUs are polled at once.
pub async fn run(gw: Gateway) {
    loop {
        let interval = gw.registry().tuning().health.interval;
        let next = tokio::time::Instant::now() + interval;
        tokio::select! {
            _ = tokio::time::sleep_until(next) => {}
            _ = gw.wake_monitor.notified() => {}
        }
        poll_round(&gw).await;
    }
}

/// Polls every SFU once, concurrently.
pub async fn poll_round(gw: &Gateway) {
    register::sync(gw).await;
    let (targets, timeout, interval) = {
        let mut registry = gw.registry();
        registry.sweep(Instant::now());
        gw.sfu_client.sweep();
        (registry.poll_targets(), registry.tuning().health.timeout, registry.tuning().health.interval)
    };
    let addresses: Vec<NodeKey> = targets.iter().map(|(node, _)| node.address.clone()).collect();
    let shared_then: HashMap<NodeKey, u64> =
        gw.shared.assigned(&addresses).await.map(|counts| counts.into_iter().collect()).unwrap_or_default();
    let polls = targets.into_iter().map(|(node, assignments)| async move {
        let started = Instant::now();
        let outcome = poll(&gw.client, &node, timeout).await;
        (node, assignments, outcome, started.elapsed())
    });
    for (node, assignments, outcome, elapsed) in futures_util::future::join_all(polls).await {
        let label = match outcome {
            PollOutcome::Load(_) => "load",
            PollOutcome::Alive => "alive",
            PollOutcome::Failed(_) => "failed",
        };
        gw.metrics.polls.get_or_create(&NodeLabels { node: Address(node.address.clone()), outcome: label }).inc();
        let reason = match &outcome {
            PollOutcome::Failed(reason) => Some(reason.clone()),
            _ => None,
        };
        let transition = {
            let mut registry = gw.registry();
            if let (false, Some(count)) = (reason.is_some(), shared_then.get(&node.address)) {
                registry.shared_polled(&node.address, *count);
            }
            registry.handle_poll(&node.address, assignments, outcome, elapsed, Instant::now())
        };
        match (transition.map(|t| t.to), reason) {
            (Some(HealthState::Healthy), _) => tracing::info!(sfu = %node.address, "SFU is healthy"),
            (Some(HealthState::Unhealthy), reason) => {
                tracing::warn!(sfu = %node.address, reason = reason.unwrap_or_default(), "SFU is unhealthy")
            }
            (_, Some(reason)) => tracing::debug!(sfu = %node.address, %reason, "health poll failed"),
            _ => {}
        }
    }
    exchange_views(gw, interval).await;
}

/// Publishes what this gateway sees of each SFU and keeps the other gateways' views for `/v1/health`.
async fn exchange_views(gw: &Gateway, interval: Duration) {
    if !gw.shared.is_enabled() {
        return;
    }
    let now = Instant::now();
    let report = gw.registry().report(now);
    let nodes: Vec<Value> = report["nodes"]
        .as_array()
        .map(|nodes| {
            nodes
                .iter()
                .map(|n| {
                    json!({
                        "address": n["address"],
                        "state": n["state"],
                        "available": n["available"],
                        "sessions": n["load"]["sessions"],
                        "draining": n["load"]["draining"],
                        "lastPollMsAgo": n["lastPollMsAgo"],
                    })
                })
                .collect()
        })
        .unwrap_or_default();
    let view = json!({"gateway": gw.id, "nodes": nodes});
    // Kept a few rounds: a gateway that stops publishing disappears from the others' reports.
    let ttl = (interval * 3).max(Duration::from_secs(2));
    if let Some(others) = gw.shared.exchange_views(&gw.id, &view, ttl).await {
        *gw.peers.lock().unwrap_or_else(|p| p.into_inner()) = others;
    }
}

async fn poll(client: &reqwest::Client, node: &NodeConfig, timeout: Duration) -> PollOutcome {
    let deadline = Instant::now() + timeout;
    let mut request = client.get(format!("{}/v1/load", node.address)).timeout(timeout);
    if let Some(secret) = &node.load_secret {
        request = request.header("x-load-secret", secret);
    }
    let response = match request.send().await {
        Ok(r) => r,
        Err(e) => return PollOutcome::Failed(describe(&e, timeout)),
    };
    let status = response.status();
    if status == reqwest::StatusCode::NOT_FOUND {
        return poll_noop(client, node, deadline.saturating_duration_since(Instant::now())).await;
    }
    if status == reqwest::StatusCode::UNAUTHORIZED || status == reqwest::StatusCode::FORBIDDEN {
        return PollOutcome::Failed(format!("/v1/load answered {status}: set this SFU's load_secret"));
    }
    if !status.is_success() {
        return PollOutcome::Failed(format!("/v1/load answered {status}"));
    }
    if response.content_length().is_some_and(|n| n > MAX_LOAD_BODY as u64) {
        return PollOutcome::Failed("/v1/load answer is too large".into());
    }
    match response.bytes().await {
        Ok(body) if body.len() <= MAX_LOAD_BODY => match parse_load(&body) {
            Ok(load) => PollOutcome::Load(load),
            Err(reason) => PollOutcome::Failed(reason),
        },
        Ok(_) => PollOutcome::Failed("/v1/load answer is too large".into()),
        Err(e) => PollOutcome::Failed(describe(&e, timeout)),
    }
}

async fn poll_noop(client: &reqwest::Client, node: &NodeConfig, left: Duration) -> PollOutcome {
    if left.is_zero() {
        return PollOutcome::Failed("no /v1/load, and no time left for /v1/noop".into());
    }
    match client.get(format!("{}/v1/noop", node.address)).timeout(left).send().await {
        Ok(r) if r.status().is_success() => PollOutcome::Alive,
        Ok(r) => PollOutcome::Failed(format!("no /v1/load, and /v1/noop answered {}", r.status())),
        Err(e) => PollOutcome::Failed(describe(&e, left)),
    }
}

/// `/v1/load` as ringsfu writes it; unknown fields (channels, shards) are ignored.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct LoadBody {
    #[serde(default)]
    sessions: f64,
    #[serde(default)]
    cpu_usage: f64,
    #[serde(default)]
    memory_usage: f64,
    max_sessions: Option<f64>,
    #[serde(default)]
    draining: bool,
}

fn parse_load(body: &[u8]) -> Result<Load, String> {
    let raw: LoadBody =
        serde_json::from_slice(body).map_err(|e| format!("/v1/load answer is not a load report: {e}"))?;
    let fraction = |v: f64| if v.is_finite() { v.clamp(0.0, 1.0) } else { 0.0 };
    let count = |v: f64| if v.is_finite() && v > 0.0 { v as u64 } else { 0 };
    Ok(Load {
        sessions: count(raw.sessions),
        cpu: fraction(raw.cpu_usage),
        memory: fraction(raw.memory_usage),
        max_sessions: raw.max_sessions.map(count).filter(|&m| m > 0),
        draining: raw.draining,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Each row: a `/v1/load` body and what is read from it (None = refused).
    #[test]
    fn load_reports_are_read_leniently_but_must_be_reports() {
        let load = |sessions, cpu, memory, max_sessions, draining| {
            Some(Load { sessions, cpu, memory, max_sessions, draining })
        };
        let rows: &[(&str, Option<Load>)] = &[
            (
                r#"{"channels":2,"sessions":7,"cpuUsage":0.25,"memoryUsage":0.5,"maxSessions":1000,"draining":false,"shards":[]}"#,
                load(7, 0.25, 0.5, Some(1000), false),
            ),
            (r#"{"sessions":1,"draining":true}"#, load(1, 0.0, 0.0, None, true)),
            (r#"{"cpuUsage":3,"memoryUsage":-1}"#, load(0, 1.0, 0.0, None, false)), // fractions clamped
            (r#"{"maxSessions":0}"#, load(0, 0.0, 0.0, None, false)),               // zero capacity is unknown
            (r#"{"sessions":"many"}"#, None),
            ("[1,2]", None),
            ("<html>", None),
        ];
        for (body, expected) in rows {
            assert_eq!(parse_load(body.as_bytes()).ok(), *expected, "{body}");
        }
    }
}
