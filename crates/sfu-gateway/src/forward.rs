//! The calls to SFUs on behalf of a caller: `/v1/channel` with failover and `/v1/disconnect`
//! split by SFU, each re-signed with that SFU's key and carrying the caller's address in
//! `X-Forwarded-For` (the SFUs run in proxy mode and key channels by it).
//!
//! Failover: a timeout, connection error, 5xx, unusable answer or 401 (the SFU does not accept
//! the key the gateway signed with: a configuration fault, not the caller's) moves on to the next
//! candidate, up to `max_retries` SFUs within `retry_timeout`, each attempt bounded by
//! `attempt_timeout`. Any other 4xx is the caller's fault: passed back as is, never retried.

use super::registry::{AttemptOutcome, Ticket};
use super::selection::{Exclusion, Hint};
use super::sfu_client::{CallError, SfuClient, X_FORWARDED_FOR};
use super::shared::Claim;
use super::state::Gateway;
use crate::config::NodeConfig;
use crate::metrics::{Address, NodeLabels, ResultLabels};
use crate::placement::NodeKey;
use axum::body::Bytes;
use axum::http::{HeaderMap, HeaderValue, StatusCode, Uri, header};
use ringsfu_common::auth::{self, Claims};
use ringsfu_common::caller;
use serde_json::{Map, Value};
use std::borrow::Cow;
use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Largest SFU answer read; theirs are a few hundred bytes.
const MAX_SFU_BODY: usize = 64 << 10;
/// Query parameters meant for the gateway, not the SFU.
const GATEWAY_HINTS: [&str; 2] = ["region", "country"];

/// `X-Forwarded-For` for the SFU: its first entry is the caller. Without `trust_proxy` that is
/// the peer, whatever the request claims; with it, the incoming chain is kept and the peer
/// (the proxy) appended.
pub fn forwarded_for(trust_proxy: bool, peer: SocketAddr, headers: &HeaderMap) -> String {
    let peer = caller::peer_address(peer);
    if !trust_proxy {
        return peer;
    }
    let chain = caller::forwarded_chain(headers);
    if chain.is_empty() {
        return peer;
    }
    format!("{}, {peer}", chain.join(", "))
}

/// The raw query minus the gateway's own hints, as sent (other parameters keep their encoding).
pub fn forwarded_query(raw: Option<&str>) -> Option<String> {
    let kept: Vec<&str> = raw?
        .split('&')
        .filter(|pair| !pair.is_empty())
        .filter(|pair| !GATEWAY_HINTS.contains(&pair.split('=').next().unwrap_or_default()))
        .collect();
    (!kept.is_empty()).then(|| kept.join("&"))
}

pub struct ChannelRequest<'a> {
    pub issuer: &'a str,
    /// The verified claims, re-signed unchanged for each SFU.
    pub claims: &'a Claims,
    pub query: Option<&'a str>,
    pub forwarded_for: &'a str,
    pub hint: Hint<'a>,
}

/// An answer from an SFU, passed back untouched.
#[derive(Debug)]
pub struct SfuAnswer {
    pub status: StatusCode,
    pub content_type: Option<HeaderValue>,
    pub body: Bytes,
}

#[derive(Debug)]
pub enum ChannelAnswer {
    Created {
        node: NodeKey,
        answer: SfuAnswer,
    },
    /// An SFU refused with a 4xx: the caller's fault.
    Refused {
        node: NodeKey,
        answer: SfuAnswer,
    },
    /// Nothing could take the channel.
    Unavailable {
        reason: String,
        excluded: Map<String, Value>,
        retry_after: Duration,
    },
}

/// Asks the best SFU for a channel, failing over to the next ones. With a shared store, where
/// other gateways placed this `iss` and what they assigned count too, and each new placement is
/// claimed there first: a gateway that loses the race goes where the winner went.
pub async fn channel(gw: &Gateway, request: ChannelRequest<'_>) -> ChannelAnswer {
    let started = Instant::now();
    let lookup = if gw.shared.is_enabled() {
        let addresses = gw.registry().addresses();
        gw.shared.lookup(request.issuer, &addresses).await
    } else {
        None
    };
    // Planning and letting the first attempt through happen under one lock, so its load bump is
    // seen by the next request's plan even in a burst.
    let (plan, failover, balancing, mut first_ticket) = {
        let mut registry = gw.registry();
        if let Some(lookup) = &lookup {
            registry.apply_shared(request.issuer, lookup.holder.as_ref(), &lookup.assigned, started);
        }
        let plan = registry.plan(request.issuer, request.hint, started);
        let first = plan.candidates.first().and_then(|n| registry.begin_attempt(&n.address, request.issuer, started));
        (plan, registry.tuning().failover, registry.tuning().balancing, first)
    };
    let excluded = count_exclusions(&plan.excluded);
    if plan.candidates.is_empty() {
        let summary: Vec<String> = excluded.iter().map(|(reason, n)| format!("{n} {reason}")).collect();
        return ChannelAnswer::Unavailable {
            reason: format!("no SFU can take the channel ({})", summary.join(", ")),
            excluded,
            retry_after: gw.registry().retry_after(Instant::now()),
        };
    }
    // A shared holder this gateway passed over (unhealthy, circuit open, draining) may be replaced.
    let mut replaceable = lookup
        .and_then(|l| l.holder)
        .filter(|holder| !(plan.sticky && plan.candidates.first().is_some_and(|c| c.address == *holder)));
    let deadline = started + failover.retry_timeout;
    let mut failures = Vec::new();
    let mut tried: Vec<NodeKey> = Vec::new();
    let mut queue: VecDeque<Arc<NodeConfig>> = plan.candidates.iter().cloned().collect();
    let mut first = true;
    let mut redirected = false;
    while let Some(node) = queue.pop_front() {
        if tried.len() >= failover.max_retries as usize {
            break;
        }
        let now = Instant::now();
        let left = deadline.saturating_duration_since(now);
        if left.is_zero() {
            break;
        }
        let ticket = if std::mem::take(&mut first) {
            first_ticket.take()
        } else {
            gw.registry().begin_attempt(&node.address, request.issuer, now)
        };
        let Some(ticket) = ticket else { continue };
        let mut in_flight =
            InFlight { gw, node: &node.address, issuer: request.issuer, ticket, finished: false, claimed: false };
        let claim = gw.shared.claim(request.issuer, &node.address, replaceable.as_ref(), balancing.sticky_ttl).await;
        let follow = match &claim {
            Claim::Taken(winner) if !redirected && !tried.contains(winner) => gw.registry().config_of(winner),
            _ => None,
        };
        if let Some(winner) = follow {
            // Another gateway placed this iss a moment ago: go where it went, as a concurrent
            // request through this gateway would.
            tracing::debug!(issuer = request.issuer, sfu = %winner.address, "placed by another gateway first; following it");
            drop(in_flight);
            gw.registry().adopt(request.issuer, &winner.address, Instant::now());
            redirected = true;
            queue.retain(|c| c.address != winner.address);
            queue.push_front(winner);
            continue;
        }
        if let Claim::Placed { assigned } = claim {
            in_flight.claimed = true;
            gw.registry().set_shared_assigned(&[(node.address.clone(), assigned)]);
        }
        if !tried.is_empty() {
            gw.metrics.failovers.inc();
        }
        tried.push(node.address.clone());
        let attempt = ask_channel(gw, &node, &request, left.min(failover.attempt_timeout)).await;
        in_flight.finished = true;
        let (outcome, label) = match &attempt {
            Attempt::Created { channel, .. } => (AttemptOutcome::Created { channel: channel.clone() }, "created"),
            Attempt::Refused(_) => (AttemptOutcome::Answered, "refused"),
            Attempt::Failed(_) => (AttemptOutcome::Failed, "failed"),
        };
        let finished = gw.registry().finish_attempt(&node.address, request.issuer, ticket, &outcome, Instant::now());
        gw.metrics.attempts.get_or_create(&NodeLabels { node: Address(node.address.clone()), outcome: label }).inc();
        if let Some(cooldown) = finished.tripped {
            tracing::warn!(sfu = %node.address, cooldown_ms = cooldown.as_millis() as u64, "circuit opened");
        }
        match attempt {
            Attempt::Created { answer, channel } => {
                gw.shared.confirm(&channel, &node.address, balancing.channel_ttl).await;
                // A line per channel placed; its repeats (the same caller asking again for the
                // channel the SFU holds) at debug: formatting and writing the line was a
                // tenth of a repeat's CPU (docs/performance.md, "Gateway alone"). `sticky` and
                // `attempts` only when they tell something: each field costs the line ~70 ns.
                if finished.new_channel {
                    let (sticky, attempts) = (plan.sticky.then_some(true), (tried.len() > 1).then_some(tried.len()));
                    tracing::info!(sfu = %node.address, issuer = request.issuer, %channel, sticky, attempts, "channel placed");
                } else {
                    tracing::debug!(sfu = %node.address, issuer = request.issuer, %channel, attempts = tried.len(), "channel placed again");
                }
                return ChannelAnswer::Created { node: node.address.clone(), answer };
            }
            Attempt::Refused(answer) => {
                if in_flight.claimed {
                    gw.shared.release(request.issuer, &node.address).await;
                }
                tracing::info!(sfu = %node.address, status = answer.status.as_u16(), "SFU refused the channel request");
                return ChannelAnswer::Refused { node: node.address.clone(), answer };
            }
            Attempt::Failed(reason) => {
                if in_flight.claimed {
                    gw.shared.release(request.issuer, &node.address).await;
                }
                // Whoever holds the placement now, this SFU failed: the next one may take it over.
                replaceable = Some(node.address.clone());
                tracing::warn!(sfu = %node.address, %reason, "channel request failed; trying the next SFU");
                failures.push(format!("{}: {reason}", node.address));
            }
        }
    }
    if let (Some(ticket), Some(node)) = (first_ticket, plan.candidates.first()) {
        // Never sent (no budget at all): hand the first attempt back.
        gw.registry().abandon_attempt(&node.address, request.issuer, ticket);
    }
    let reason = if failures.is_empty() {
        "no SFU could be tried (circuits open or the failover budget spent)".to_string()
    } else {
        format!("every SFU tried failed ({})", failures.join("; "))
    };
    ChannelAnswer::Unavailable { reason, excluded, retry_after: gw.registry().retry_after(Instant::now()) }
}

fn count_exclusions(excluded: &[(NodeKey, Exclusion)]) -> Map<String, Value> {
    let mut counts = Map::new();
    for (_, reason) in excluded {
        let n = counts.get(reason.label()).and_then(Value::as_u64).unwrap_or(0);
        counts.insert(reason.label().to_string(), Value::from(n + 1));
    }
    counts
}

/// Tells the registry when an attempt ends without an outcome (the caller's request was dropped
/// mid-flight), so the breaker's probe slot and the reservation are freed.
struct InFlight<'a> {
    gw: &'a Gateway,
    node: &'a NodeKey,
    issuer: &'a str,
    ticket: Ticket,
    finished: bool,
    /// The placement was made in the shared store by this attempt: undo it there too.
    claimed: bool,
}

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        if !self.finished {
            self.gw.registry().abandon_attempt(self.node, self.issuer, self.ticket);
            if self.claimed {
                let (gw, issuer, node) = (self.gw.clone(), self.issuer.to_string(), self.node.clone());
                tokio::spawn(async move { gw.shared.release(&issuer, &node).await });
            }
        }
    }
}

enum Attempt {
    Created { channel: String, answer: SfuAnswer },
    Refused(SfuAnswer),
    Failed(String),
}

async fn ask_channel(gw: &Gateway, node: &NodeConfig, request: &ChannelRequest<'_>, timeout: Duration) -> Attempt {
    let mut url = format!("{}/v1/channel", node.address);
    if let Some(query) = request.query {
        url.push('?');
        url.push_str(query);
    }
    let mut authorization = String::from("Bearer ");
    auth::sign_onto(request.claims, &node.key, &mut authorization);
    let sent = match SfuClient::takes(&url) {
        Some(uri) => ask_plain(gw, uri, authorization, request.forwarded_for, timeout).await,
        None => ask_reqwest(gw, url, authorization, request.forwarded_for, timeout).await,
    };
    let answer = match sent {
        Ok(answer) => answer,
        Err(reason) => return Attempt::Failed(reason),
    };
    let status = answer.status;
    if status == StatusCode::UNAUTHORIZED {
        return Attempt::Failed("refused the gateway's token (401): is this SFU's key right?".into());
    }
    if status.is_client_error() {
        return Attempt::Refused(answer);
    }
    if !status.is_success() {
        return Attempt::Failed(format!("answered {status}"));
    }
    match channel_uuid(&answer.body) {
        Some(channel) => Attempt::Created { channel, answer },
        None => Attempt::Failed("answered 2xx without a JSON {uuid, url}".into()),
    }
}

/// Through [`SfuClient`] (plain http).
async fn ask_plain(
    gw: &Gateway,
    uri: Uri,
    authorization: String,
    forwarded_for: &str,
    timeout: Duration,
) -> Result<SfuAnswer, String> {
    let mut headers = HeaderMap::with_capacity(2);
    let invalid = |e: axum::http::header::InvalidHeaderValue| format!("request failed: {e}");
    headers.insert(header::AUTHORIZATION, HeaderValue::try_from(authorization).map_err(invalid)?);
    headers.insert(X_FORWARDED_FOR, HeaderValue::from_str(forwarded_for).map_err(invalid)?);
    match gw.sfu_client.get(uri, headers, MAX_SFU_BODY, timeout).await {
        Ok(a) => Ok(SfuAnswer { status: a.status, content_type: a.content_type, body: a.body }),
        Err(CallError::TooLarge) => Err(format!("answered more than {MAX_SFU_BODY} bytes")),
        Err(CallError::Failed(reason)) => Err(reason),
    }
}

/// Through reqwest (https SFUs).
async fn ask_reqwest(
    gw: &Gateway,
    url: String,
    authorization: String,
    forwarded_for: &str,
    timeout: Duration,
) -> Result<SfuAnswer, String> {
    let sent = gw
        .client
        .get(url)
        .header(header::AUTHORIZATION, authorization)
        .header(X_FORWARDED_FOR, forwarded_for)
        .timeout(timeout)
        .send()
        .await;
    let response = sent.map_err(|e| describe(&e, timeout))?;
    let status = response.status();
    let content_type = response.headers().get(header::CONTENT_TYPE).cloned();
    let body = read_capped(response).await.map_err(|reason| describe_read(reason, timeout))?;
    Ok(SfuAnswer { status, content_type, body })
}

/// The uuid of an SFU's `{uuid, url}` answer (both strings; other fields are ignored), read
/// without building a JSON tree.
fn channel_uuid(body: &[u8]) -> Option<String> {
    #[derive(serde::Deserialize)]
    struct Created<'a> {
        #[serde(borrow)]
        uuid: Cow<'a, str>,
        #[serde(borrow)]
        #[allow(dead_code)] // only its presence and type are checked
        url: Cow<'a, str>,
    }
    // A struct would also be read from an array: only an object is an answer.
    if body.trim_ascii_start().first() != Some(&b'{') {
        return None;
    }
    serde_json::from_slice::<Created>(body).ok().map(|c| c.uuid.into_owned())
}

enum ReadError {
    TooLarge,
    Transport(reqwest::Error),
}

async fn read_capped(mut response: reqwest::Response) -> Result<Bytes, ReadError> {
    if response.content_length().is_some_and(|n| n > MAX_SFU_BODY as u64) {
        return Err(ReadError::TooLarge);
    }
    // An SFU's answer is usually one chunk: kept as it came, copied only when there are more.
    let Some(first) = response.chunk().await.map_err(ReadError::Transport)? else { return Ok(Bytes::new()) };
    if first.len() > MAX_SFU_BODY {
        return Err(ReadError::TooLarge);
    }
    let Some(second) = response.chunk().await.map_err(ReadError::Transport)? else { return Ok(first) };
    let mut body = first.to_vec();
    let mut next = Some(second);
    while let Some(chunk) = next {
        if body.len() + chunk.len() > MAX_SFU_BODY {
            return Err(ReadError::TooLarge);
        }
        body.extend_from_slice(&chunk);
        next = response.chunk().await.map_err(ReadError::Transport)?;
    }
    Ok(Bytes::from(body))
}

fn describe_read(error: ReadError, timeout: Duration) -> String {
    match error {
        ReadError::TooLarge => format!("answered more than {MAX_SFU_BODY} bytes"),
        ReadError::Transport(e) => describe(&e, timeout),
    }
}

/// A transport error in a few words: what happened, and the innermost cause.
pub fn describe(error: &reqwest::Error, timeout: Duration) -> String {
    if error.is_timeout() {
        return format!("timed out after {} ms", timeout.as_millis());
    }
    let mut cause: &dyn std::error::Error = error;
    while let Some(next) = cause.source() {
        cause = next;
    }
    let what = if error.is_connect() { "connection failed" } else { "request failed" };
    format!("{what}: {cause}")
}

/// Sends each SFU its share of a disconnect. Returns the SFUs known to hold a channel that could
/// not be told (unknown channels sent to every SFU are best effort).
pub async fn disconnect(
    gw: &Gateway,
    claims: &Claims,
    by_channel: &Map<String, Value>,
    forwarded_for: &str,
) -> Vec<String> {
    // Channels this gateway did not place may be known to another one.
    let unknown = gw.registry().unknown_channels(by_channel.keys(), Instant::now());
    let holders = gw.shared.holders(&unknown).await;
    let (routes, timeout) = {
        let mut registry = gw.registry();
        registry.adopt_channels(&holders, Instant::now());
        (registry.disconnect_routes(by_channel, Instant::now()), registry.tuning().failover.attempt_timeout)
    };
    let calls = routes.into_iter().map(|route| async move {
        let mut part = claims.clone();
        part.insert("sessionIdsByChannel".into(), Value::Object(route.channels));
        let token = auth::sign(&part, &route.node.key);
        let sent = gw
            .client
            .post(format!("{}/v1/disconnect", route.node.address))
            .header(X_FORWARDED_FOR, forwarded_for)
            .body(token)
            .timeout(timeout)
            .send()
            .await;
        let result = match sent {
            Ok(r) if r.status().is_success() => Ok(()),
            Ok(r) => Err(format!("answered {}", r.status())),
            Err(e) => Err(describe(&e, timeout)),
        };
        (route.node, route.holder, result)
    });
    let mut failed = Vec::new();
    for (node, holder, result) in futures_util::future::join_all(calls).await {
        let outcome = if result.is_ok() { "ok" } else { "failed" };
        gw.metrics.disconnects.get_or_create(&NodeLabels { node: Address(node.address.clone()), outcome }).inc();
        if let Err(reason) = result {
            tracing::warn!(sfu = %node.address, holder, %reason, "disconnect not delivered");
            if holder {
                failed.push(format!("{}: {reason}", node.address));
            }
        }
    }
    failed
}

/// Counts one `/v1/channel` answer.
pub fn count_answer(gw: &Gateway, answer: &ChannelAnswer) {
    let result = match answer {
        ChannelAnswer::Created { .. } => "created",
        ChannelAnswer::Refused { .. } => "refused",
        ChannelAnswer::Unavailable { .. } => "unavailable",
    };
    gw.metrics.channel_requests.get_or_create(&ResultLabels { result }).inc();
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(xff: &[&'static str]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for v in xff {
            h.append("x-forwarded-for", HeaderValue::from_static(v));
        }
        h
    }

    /// Each row: trust_proxy, incoming X-Forwarded-For headers, what the SFU is sent.
    #[test]
    fn the_caller_is_the_first_forwarded_entry() {
        let peer: SocketAddr = "[::ffff:10.0.0.9]:5000".parse().unwrap();
        let rows: &[(bool, &[&'static str], &str)] = &[
            (false, &[], "10.0.0.9"),
            (false, &["203.0.113.5"], "10.0.0.9"), // an untrusted header is ignored: no spoofing
            (true, &[], "10.0.0.9"),
            (true, &["203.0.113.5"], "203.0.113.5, 10.0.0.9"),
            (true, &["203.0.113.5, 192.0.2.1"], "203.0.113.5, 192.0.2.1, 10.0.0.9"),
            (true, &["203.0.113.5", "192.0.2.1"], "203.0.113.5, 192.0.2.1, 10.0.0.9"), // repeated headers
            (true, &[" , "], "10.0.0.9"),
        ];
        for (trust, incoming, expected) in rows {
            assert_eq!(forwarded_for(*trust, peer, &headers(incoming)), *expected, "{trust} {incoming:?}");
        }
    }

    /// Each row: raw query, what the SFU is sent.
    #[test]
    fn hints_are_taken_out_of_the_forwarded_query() {
        let rows: &[(Option<&str>, Option<&str>)] = &[
            (None, None),
            (Some(""), None),
            (Some("webRTC=false"), Some("webRTC=false")),
            (Some("region=eu&webRTC=false&country=FR"), Some("webRTC=false")),
            (Some("region=eu"), None),
            (
                Some("recordingAddress=http%3A%2F%2Fx%2Fy&regionx=1"),
                Some("recordingAddress=http%3A%2F%2Fx%2Fy&regionx=1"),
            ),
            (Some("a=1&&b"), Some("a=1&b")),
        ];
        for (raw, expected) in rows {
            assert_eq!(forwarded_query(*raw).as_deref(), *expected, "{raw:?}");
        }
    }

    #[test]
    fn a_channel_answer_needs_a_uuid_and_a_url() {
        assert_eq!(channel_uuid(br#"{"uuid":"u","url":"http://x"}"#).as_deref(), Some("u"));
        for body in [&b"{}"[..], br#"{"uuid":"u"}"#, br#"{"uuid":1,"url":"x"}"#, b"<html>", b""] {
            assert_eq!(channel_uuid(body), None, "{}", String::from_utf8_lossy(body));
        }
    }

    /// Each row: an SFU's 2xx body, the uuid read from it.
    #[test]
    fn a_channel_answer_is_an_object_read_as_json() {
        let rows: &[(&[u8], Option<&str>)] = &[
            (br#" {"url":"http://x","uuid":"u","extra":[1]}"#, Some("u")), // order and extra fields do not matter
            (br#"{"uuid":"a\"b\u00e9","url":"x"}"#, Some("a\"b\u{e9}")),   // escapes are decoded
            (br#"["u","http://x"]"#, None),                                // an array is not an answer
            (br#"{"uuid":"u","url":null}"#, None),
            (br#"{"uuid":"u","url":"x"} trailing"#, None),
        ];
        for (body, expected) in rows {
            assert_eq!(channel_uuid(body).as_deref(), *expected, "{}", String::from_utf8_lossy(body));
        }
    }
}
