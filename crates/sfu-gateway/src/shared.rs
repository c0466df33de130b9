//! State shared by several gateways: placements (`iss` → SFU, channel → SFU), the optimistic
//! load bump, self-registered SFUs and each gateway's view of the fleet. [`Shared::Local`] when
//! `SFU_GATEWAY_REDIS_URL` is unset: every call answers "nothing shared" and the registry's own
//! state is all there is. [`Shared::Redis`] writes through to Redis; the registry keeps its own
//! copy either way, so a Redis outage only makes the gateway forget what the others did.
//!
//! Keys (all under `sfu-gateway:`):
//! - `iss:<iss>` → SFU address, PX = sticky TTL. A new placement is a Lua script that sets it only
//!   when absent (or still held by an SFU this gateway passed over), so two gateways asked at the
//!   same moment agree: the loser reads the winner's SFU and goes there.
//! - `channel:<uuid>` → SFU address, PX = channel TTL, set when absent.
//! - `assigned:<address>` → channels given to that SFU by every gateway, ever (INCR in the same
//!   script as the placement; DECR when the attempt creates nothing). Each gateway notes the
//!   count when its poll of the SFU starts; the bump is the growth since. A counter that one
//!   poll reset would erase the bumps other gateways made after that poll started.
//! - `sfu:<address>` → a registered SFU's announcement, PX = registration TTL; `sfus`: their set.
//! - `gateway:<id>` → that gateway's view of the fleet, PX = a few poll intervals; `gateways`: the set.
//!
//! Every call is bounded by `SFU_GATEWAY_REDIS_TIMEOUT_MS`. A failure or timeout marks Redis down
//! (one warning per outage, `sfu_gateway_redis_up` 0) and requests stop trying it; a probe
//! every half second brings it back, after re-writing this gateway's placements (set when absent:
//! a placement another gateway wrote meanwhile wins, and this gateway adopts it).

use super::placement::{NodeKey, Snapshot};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::gauge::Gauge;
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::{AsyncCommands, Script};
use ringsfu_common::announcement::Announcement;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

const PREFIX: &str = "sfu-gateway:";
/// How long an SFU's shared assignment counter outlives its last use.
const COUNTER_TTL: Duration = Duration::from_secs(86_400);
/// Placements re-written at once during a reconciliation.
const RECONCILE_BATCH: usize = 64;

/// Sets `iss:<iss>` to the SFU unless another holds it. KEYS: placement, counter of ARGV[1].
/// ARGV: SFU, sticky TTL ms, an SFU whose placement may be replaced (or ''), counter TTL ms.
/// Returns {"placed", count} | {"kept", ""} | {"taken", holder}.
const CLAIM: &str = r"
local current = redis.call('GET', KEYS[1])
if current == ARGV[1] then
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
  return {'kept', ''}
end
if current and current ~= ARGV[3] then
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
  return {'taken', current}
end
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
local n = redis.call('INCR', KEYS[2])
redis.call('PEXPIRE', KEYS[2], ARGV[4])
return {'placed', tostring(n)}
";

/// Undoes a placement whose request created nothing. KEYS: placement, counter. ARGV: SFU.
const RELEASE: &str = r"
if redis.call('GET', KEYS[1]) == ARGV[1] then
  redis.call('DEL', KEYS[1])
end
if redis.call('DECR', KEYS[2]) < 0 then
  redis.call('SET', KEYS[2], 0, 'PX', 86400000)
end
return 1
";

/// Sets KEYS[1] to ARGV[1] with PX ARGV[2] if absent; returns the value it holds after.
const PUT_IF_ABSENT: &str = r"
local current = redis.call('GET', KEYS[1])
if current then
  return current
end
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
return ARGV[1]
";

fn key(kind: &str, id: &str) -> String {
    format!("{PREFIX}{kind}:{id}")
}

fn unix_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_millis() as u64).unwrap_or(0)
}

/// Time to live in milliseconds, at least one (PX 0 is an error).
fn px(ttl: Duration) -> u64 {
    (ttl.as_millis() as u64).max(1)
}

/// What the shared store knows before a `/v1/channel`.
#[derive(Debug, Default)]
pub struct Lookup {
    /// The SFU `iss` is placed on, by any gateway.
    pub holder: Option<NodeKey>,
    /// Channels given to each SFU by every gateway.
    pub assigned: Vec<(NodeKey, u64)>,
}

/// The answer to "place `iss` on this SFU".
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Claim {
    /// Placed here by this request: a new channel, counted in the SFU's shared assignments.
    Placed { assigned: u64 },
    /// Already placed on this SFU (a repeat, or a concurrent request through another gateway).
    Kept,
    /// Another gateway placed it on that SFU first.
    Taken(NodeKey),
    /// Nothing shared (no Redis, or Redis unreachable): this gateway's placement is all there is.
    Unshared,
}

/// A registered SFU's announcement as stored, with when it runs out.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct StoredRegistration {
    #[serde(flatten)]
    pub announcement: Announcement,
    pub expires_at_ms: u64,
}

impl StoredRegistration {
    /// Time left from `now_ms`.
    pub fn left(&self, now_ms: u64) -> Duration {
        Duration::from_millis(self.expires_at_ms.saturating_sub(now_ms))
    }
}

/// What a reconciliation found for one placement this gateway re-wrote.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reconciled {
    /// Redis holds this gateway's SFU (it was written, or was there already).
    Agreed,
    /// Another gateway wrote another SFU meanwhile: it wins, this gateway adopts it.
    Conflict(NodeKey),
}

/// `ours` was written if absent; Redis answered that it now holds `stored`.
pub fn reconciled(ours: &NodeKey, stored: &str) -> Reconciled {
    if **ours == *stored { Reconciled::Agreed } else { Reconciled::Conflict(Arc::from(stored)) }
}

/// The outcome of a reconciliation, for the log.
#[derive(Debug, Default)]
pub struct Reconciliation {
    pub written: usize,
    /// Issuers whose placement another gateway made meanwhile: (iss, its SFU).
    pub issuer_conflicts: Vec<(String, NodeKey)>,
    pub channel_conflicts: Vec<(String, NodeKey)>,
    /// Redis failed again before the end.
    pub interrupted: bool,
}

/// Redis' two gauges, shared with `/metrics`.
#[derive(Clone, Default)]
pub struct RedisMetrics {
    pub up: Gauge,
    pub errors: Counter,
}

pub enum Shared {
    Local,
    Redis(RedisStore),
}

pub struct RedisStore {
    conn: ConnectionManager,
    timeout: Duration,
    up: AtomicBool,
    /// The current outage was logged (one warning per outage, not per request).
    warned: AtomicBool,
    metrics: RedisMetrics,
    claim: Script,
    release: Script,
    put_if_absent: Script,
}

impl Shared {
    /// `Local` without a URL. The connection is made lazily: a Redis down at start-up is an
    /// outage like any other, not a refusal to start.
    pub fn new(url: Option<&str>, timeout: Duration, metrics: RedisMetrics) -> Result<Shared, String> {
        let Some(url) = url else { return Ok(Shared::Local) };
        let client = redis::Client::open(url).map_err(|e| format!("SFU_GATEWAY_REDIS_URL: {:?}", e.kind()))?;
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(timeout))
            .set_response_timeout(Some(timeout))
            .set_number_of_retries(1)
            .set_max_delay(Duration::from_millis(500));
        let conn = ConnectionManager::new_lazy_with_config(client, config)
            .map_err(|e| format!("cannot set up the Redis connection: {e}"))?;
        Ok(Shared::Redis(RedisStore {
            conn,
            timeout,
            up: AtomicBool::new(false),
            warned: AtomicBool::new(false),
            metrics,
            claim: Script::new(CLAIM),
            release: Script::new(RELEASE),
            put_if_absent: Script::new(PUT_IF_ABSENT),
        }))
    }

    fn store(&self) -> Option<&RedisStore> {
        match self {
            Shared::Redis(store) if store.is_up() => Some(store),
            _ => None,
        }
    }

    /// Whether anything is shared at all (a Redis URL is configured).
    pub fn is_enabled(&self) -> bool {
        matches!(self, Shared::Redis(_))
    }

    /// "off", "up" or "down", for `/v1/health`.
    pub fn label(&self) -> &'static str {
        match self {
            Shared::Local => "off",
            Shared::Redis(store) if store.is_up() => "up",
            Shared::Redis(_) => "down",
        }
    }

    /// Where `issuer` is and every SFU's shared assignment count; `None` when nothing is shared.
    pub async fn lookup(&self, issuer: &str, nodes: &[NodeKey]) -> Option<Lookup> {
        let store = self.store()?;
        let mut pipe = redis::pipe();
        pipe.get(key("iss", issuer));
        pipe.cmd("MGET").arg(nodes.iter().map(|n| key("assigned", n)).collect::<Vec<_>>());
        let mut conn = store.conn.clone();
        let (holder, counts): (Option<String>, Vec<Option<u64>>) = if nodes.is_empty() {
            let holder = store.run("lookup", async move { conn.get(key("iss", issuer)).await }).await?;
            (holder, Vec::new())
        } else {
            store.run("lookup", async move { pipe.query_async(&mut conn).await }).await?
        };
        let assigned = nodes.iter().zip(counts).map(|(n, c)| (n.clone(), c.unwrap_or(0))).collect();
        Some(Lookup { holder: holder.map(Arc::from), assigned })
    }

    /// Places `issuer` on `node` unless another gateway placed it elsewhere; `replaceable` is a
    /// holder this gateway passed over (unhealthy, open circuit, draining), which may be replaced.
    pub async fn claim(
        &self,
        issuer: &str,
        node: &NodeKey,
        replaceable: Option<&NodeKey>,
        sticky_ttl: Duration,
    ) -> Claim {
        let Some(store) = self.store() else { return Claim::Unshared };
        let mut invocation = store.claim.key(key("iss", issuer));
        invocation
            .key(key("assigned", node))
            .arg(&**node)
            .arg(px(sticky_ttl))
            .arg(replaceable.map_or("", |r| &**r))
            .arg(px(COUNTER_TTL));
        let mut conn = store.conn.clone();
        let answer: Option<(String, String)> =
            store.run("claim", async move { invocation.invoke_async(&mut conn).await }).await;
        match answer {
            None => Claim::Unshared,
            Some((what, value)) => match what.as_str() {
                "placed" => Claim::Placed { assigned: value.parse().unwrap_or(0) },
                "kept" => Claim::Kept,
                _ => Claim::Taken(Arc::from(value)),
            },
        }
    }

    /// The request placed by [`Claim::Placed`] created nothing: free the placement and the count.
    pub async fn release(&self, issuer: &str, node: &NodeKey) {
        let Some(store) = self.store() else { return };
        let mut invocation = store.release.key(key("iss", issuer));
        invocation.key(key("assigned", node)).arg(&**node);
        let mut conn = store.conn.clone();
        let _: Option<i64> = store.run("release", async move { invocation.invoke_async(&mut conn).await }).await;
    }

    /// `node` answered with `channel`: remember which SFU holds it, for any gateway's disconnects.
    pub async fn confirm(&self, channel: &str, node: &NodeKey, channel_ttl: Duration) {
        let Some(store) = self.store() else { return };
        let _ = store.put_if_absent(&key("channel", channel), node, channel_ttl).await;
    }

    /// The SFUs holding `channels`, as far as any gateway knows.
    pub async fn holders(&self, channels: &[String]) -> Vec<(String, NodeKey)> {
        let Some(store) = self.store().filter(|_| !channels.is_empty()) else { return Vec::new() };
        let keys: Vec<String> = channels.iter().map(|c| key("channel", c)).collect();
        let mut conn = store.conn.clone();
        let found: Option<Vec<Option<String>>> = store
            .run("channel holders", async move { redis::cmd("MGET").arg(keys).query_async(&mut conn).await })
            .await;
        let found = found.unwrap_or_default();
        channels.iter().zip(found).filter_map(|(c, h)| Some((c.clone(), Arc::from(h?)))).collect()
    }

    /// Every SFU's shared assignment count (read when a poll round starts).
    pub async fn assigned(&self, nodes: &[NodeKey]) -> Option<Vec<(NodeKey, u64)>> {
        let store = self.store().filter(|_| !nodes.is_empty())?;
        let keys: Vec<String> = nodes.iter().map(|n| key("assigned", n)).collect();
        let mut conn = store.conn.clone();
        let counts: Vec<Option<u64>> =
            store.run("assignments", async move { redis::cmd("MGET").arg(keys).query_async(&mut conn).await }).await?;
        Some(nodes.iter().zip(counts).map(|(n, c)| (n.clone(), c.unwrap_or(0))).collect())
    }

    /// Stores a registration for every gateway to see, for `ttl`.
    pub async fn register(&self, announcement: &Announcement, ttl: Duration) {
        let Some(store) = self.store() else { return };
        let stored = StoredRegistration { announcement: announcement.clone(), expires_at_ms: unix_ms() + px(ttl) };
        let Ok(json) = serde_json::to_string(&stored) else { return };
        let mut pipe = redis::pipe();
        pipe.cmd("SET").arg(key("sfu", &announcement.url)).arg(json).arg("PX").arg(px(ttl)).ignore();
        pipe.sadd(format!("{PREFIX}sfus"), &announcement.url).ignore();
        let mut conn = store.conn.clone();
        let _: Option<()> = store.run("register", async move { pipe.query_async(&mut conn).await }).await;
    }

    /// The registrations every gateway received that have not run out; `None` when nothing is shared.
    pub async fn registrations(&self) -> Option<Vec<StoredRegistration>> {
        let values = self.members_and_values("sfus", "sfu", "registrations").await?;
        Some(values.into_iter().filter_map(|v| serde_json::from_str(&v).ok()).collect())
    }

    /// Publishes this gateway's view of the fleet (for `ttl`) and reads the other gateways'
    /// views, each with its age in milliseconds.
    pub async fn exchange_views(&self, id: &str, view: &Value, ttl: Duration) -> Option<Vec<Value>> {
        let store = self.store()?;
        let mut published = view.clone();
        published["publishedAtMs"] = unix_ms().into();
        let mut pipe = redis::pipe();
        pipe.cmd("SET").arg(key("gateway", id)).arg(published.to_string()).arg("PX").arg(px(ttl)).ignore();
        pipe.sadd(format!("{PREFIX}gateways"), id).ignore();
        let mut conn = store.conn.clone();
        let _: () = store.run("publish view", async move { pipe.query_async(&mut conn).await }).await?;
        let now = unix_ms();
        let views = self.members_and_values("gateways", "gateway", "gateway views").await?;
        let mut others: Vec<Value> = views
            .iter()
            .filter_map(|v| serde_json::from_str::<Value>(v).ok())
            .filter(|v| v["gateway"] != id)
            .map(|mut v| {
                let at = v["publishedAtMs"].as_u64().unwrap_or(0);
                v["ageMs"] = now.saturating_sub(at).into();
                v
            })
            .collect();
        others.sort_by(|a, b| a["gateway"].as_str().cmp(&b["gateway"].as_str()));
        Some(others)
    }

    /// The values of the keys whose ids are in the set `set`; ids whose key expired leave the set.
    async fn members_and_values(&self, set: &str, kind: &str, what: &'static str) -> Option<Vec<String>> {
        let store = self.store()?;
        let set = format!("{PREFIX}{set}");
        let mut conn = store.conn.clone();
        let set_key = set.clone();
        let ids: Vec<String> = store.run(what, async move { conn.smembers(set_key).await }).await?;
        if ids.is_empty() {
            return Some(Vec::new());
        }
        let keys: Vec<String> = ids.iter().map(|id| key(kind, id)).collect();
        let mut conn = store.conn.clone();
        let values: Vec<Option<String>> =
            store.run(what, async move { redis::cmd("MGET").arg(keys).query_async(&mut conn).await }).await?;
        let gone: Vec<&String> = ids.iter().zip(&values).filter(|(_, v)| v.is_none()).map(|(id, _)| id).collect();
        if !gone.is_empty() {
            let mut conn = store.conn.clone();
            let gone: Vec<String> = gone.into_iter().cloned().collect();
            let _: Option<i64> = store.run(what, async move { conn.srem(set, gone).await }).await;
        }
        Some(values.into_iter().flatten().collect())
    }

    /// Redis is marked down: try it, and if it answers, re-write `snapshot` (placements are set
    /// only where absent) and mark it up. `None` when there is nothing to do or it still fails.
    pub async fn recover(&self, snapshot: impl FnOnce() -> Snapshot) -> Option<Reconciliation> {
        let Shared::Redis(store) = self else { return None };
        if store.is_up() {
            return None;
        }
        let mut conn = store.conn.clone();
        let pong: Option<String> =
            store.run_always("ping", async move { redis::cmd("PING").query_async(&mut conn).await }).await;
        pong?;
        // Up before the writes: placements made from now on are written through as usual.
        let snapshot = snapshot();
        store.mark_up();
        let mut report = Reconciliation::default();
        let entries =
            snapshot.issuers.iter().map(|e| ("iss", e)).chain(snapshot.channels.iter().map(|e| ("channel", e)));
        let entries: Vec<_> = entries.collect();
        for batch in entries.chunks(RECONCILE_BATCH) {
            let writes = batch.iter().map(|(kind, (id, node, left))| async move {
                (*kind, id, node, store.put_if_absent(&key(kind, id), node, *left).await)
            });
            for (kind, id, node, stored) in futures_util::future::join_all(writes).await {
                let Some(stored) = stored else {
                    report.interrupted = true;
                    return Some(report);
                };
                match (reconciled(node, &stored), kind) {
                    (Reconciled::Agreed, _) => report.written += 1,
                    (Reconciled::Conflict(winner), "iss") => report.issuer_conflicts.push((id.clone(), winner)),
                    (Reconciled::Conflict(winner), _) => report.channel_conflicts.push((id.clone(), winner)),
                }
            }
        }
        Some(report)
    }
}

impl RedisStore {
    fn is_up(&self) -> bool {
        self.up.load(Ordering::Relaxed)
    }

    /// Runs one call within the time limit; a failure marks Redis down.
    async fn run<T>(&self, what: &str, call: impl Future<Output = redis::RedisResult<T>>) -> Option<T> {
        match tokio::time::timeout(self.timeout, call).await {
            Ok(Ok(value)) => Some(value),
            Ok(Err(e)) => {
                self.mark_down(what, &e.to_string());
                None
            }
            Err(_) => {
                self.mark_down(what, &format!("no answer within {} ms", self.timeout.as_millis()));
                None
            }
        }
    }

    /// As [`RedisStore::run`], for the probe that runs while Redis is down.
    async fn run_always<T>(&self, what: &str, call: impl Future<Output = redis::RedisResult<T>>) -> Option<T> {
        self.run(what, call).await
    }

    async fn put_if_absent(&self, key: &str, value: &NodeKey, ttl: Duration) -> Option<String> {
        let mut invocation = self.put_if_absent.key(key);
        invocation.arg(&**value).arg(px(ttl));
        let mut conn = self.conn.clone();
        self.run("write", async move { invocation.invoke_async(&mut conn).await }).await
    }

    fn mark_down(&self, what: &str, reason: &str) {
        self.metrics.errors.inc();
        self.metrics.up.set(0);
        self.up.store(false, Ordering::Relaxed);
        if !self.warned.swap(true, Ordering::Relaxed) {
            tracing::warn!(
                call = what,
                %reason,
                "Redis unavailable: serving from this gateway's own placements until it returns"
            );
        } else {
            tracing::debug!(call = what, %reason, "Redis call failed");
        }
    }

    fn mark_up(&self) {
        self.up.store(true, Ordering::Relaxed);
        self.warned.store(false, Ordering::Relaxed);
        self.metrics.up.set(1);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_reconciliation_keeps_what_redis_holds() {
        let ours: NodeKey = Arc::from("http://a");
        assert_eq!(reconciled(&ours, "http://a"), Reconciled::Agreed, "written, or already there");
        assert_eq!(
            reconciled(&ours, "http://b"),
            Reconciled::Conflict(Arc::from("http://b")),
            "another gateway's wins"
        );
    }

    #[test]
    fn stored_registrations_keep_the_announcement_and_when_it_runs_out() {
        let stored = StoredRegistration {
            announcement: Announcement {
                url: "http://10.0.0.5:8070".into(),
                region: None,
                capacity: 10,
                draining: true,
                id: "p".into(),
            },
            expires_at_ms: 20_000,
        };
        let json = serde_json::to_string(&stored).unwrap();
        assert_eq!(serde_json::from_str::<StoredRegistration>(&json).unwrap(), stored);
        assert_eq!(stored.left(5_000), Duration::from_secs(15));
        assert_eq!(stored.left(25_000), Duration::ZERO);
    }

    #[test]
    fn local_state_shares_nothing() {
        let shared = Shared::new(None, Duration::from_millis(100), RedisMetrics::default()).unwrap();
        assert_eq!(shared.label(), "off");
        let rt = tokio::runtime::Builder::new_current_thread().build().unwrap();
        let node: NodeKey = Arc::from("http://a");
        rt.block_on(async {
            assert!(shared.lookup("iss", std::slice::from_ref(&node)).await.is_none());
            assert_eq!(shared.claim("iss", &node, None, Duration::from_secs(1)).await, Claim::Unshared);
            assert!(shared.holders(&["c".into()]).await.is_empty());
        });
    }
}
