//! The HTTP listener of ringsfu and of sfu-gateway: hyper connections with bounded headers, a
//! header read timeout, a time bound on each whole request (a body trickled one byte at a time
//! cannot hold a connection), a cap on simultaneous connections overall and per source address,
//! each served by an axum app (WebSocket upgrades included), and a graceful stop that lets
//! requests in flight finish.

use axum::body::Body;
use axum::extract::{ConnectInfo, Request};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use ipnet::IpNet;
use std::collections::HashMap;
use std::convert::Infallible;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::sync::{OwnedSemaphorePermit, Semaphore, watch};
use tower::{Service, ServiceExt};

/// Request line plus headers must fit in this (hyper answers 431 beyond it).
const MAX_HEAD: usize = 16 << 10;
const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(10);
/// A request's handling, body included, must end within this (WebSockets are handed off at the
/// upgrade and are not bound by it); beyond it the client gets 408 and the connection closes.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
/// How much of a body over the limit is read and dropped so that its sender, still sending, gets
/// to read the 413 (nginx's lingering close); beyond it the connection is cut (a reset).
pub const MAX_DISCARDED_BODY: usize = 16 << 20;
/// How long a stop waits for requests in flight.
const DRAIN: Duration = Duration::from_secs(10);

/// Binds the listener, with a message that names the settings to change (`settings`) when it fails.
pub async fn bind(addr: SocketAddr, settings: &str) -> Result<TcpListener, String> {
    TcpListener::bind(addr)
        .await
        .map_err(|e| format!("cannot listen on {addr} ({settings}): {e}; choose another port or stop what holds it"))
}

/// The connection caps and the settings that raise them (named in the warnings when reached).
pub struct Limit {
    pub max_connections: usize,
    pub setting: &'static str,
    /// Simultaneous connections from one address (IPv6: one /64); 0 is no cap.
    pub per_address: usize,
    pub per_address_setting: &'static str,
    /// Peers exempt from the per-address cap (reverse proxies, whose clients all share their
    /// address).
    pub exempt: Vec<IpNet>,
}

/// IPv4-mapped IPv6 (a dual-stack listener's IPv4 peers) as IPv4.
fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map(IpAddr::V4).unwrap_or(ip),
        v4 => v4,
    }
}

/// Open connections per source address; an entry leaves with its last connection.
#[derive(Default)]
struct PerAddress(Mutex<HashMap<IpAddr, usize>>);

/// One connection's place in [`PerAddress`], given back on drop.
struct AddressSlot {
    table: Arc<PerAddress>,
    key: IpAddr,
}

impl PerAddress {
    /// The key an address is counted under: IPv4 itself, IPv6 its /64 (one host's share).
    fn key(ip: IpAddr) -> IpAddr {
        match ip {
            IpAddr::V6(v6) => IpAddr::V6((u128::from(v6) & !((1u128 << 64) - 1)).into()),
            v4 => v4,
        }
    }

    fn take(self: &Arc<Self>, ip: IpAddr, max: usize) -> Option<AddressSlot> {
        let key = Self::key(ip);
        let mut open = self.0.lock().expect("never poisoned: no panics under the lock");
        let count = open.entry(key).or_insert(0);
        if *count >= max {
            return None;
        }
        *count += 1;
        Some(AddressSlot { table: self.clone(), key })
    }
}

impl Drop for AddressSlot {
    fn drop(&mut self) {
        let mut open = self.table.0.lock().expect("never poisoned: no panics under the lock");
        if let Some(count) = open.get_mut(&self.key) {
            *count -= 1;
            if *count == 0 {
                open.remove(&self.key);
            }
        }
    }
}

/// One accepted connection's place under the cap, in every request's extensions. hyper lets go of
/// a connection when it upgrades, so a WebSocket handler keeps a clone for as long as the socket
/// lives: WebSockets count against the cap too.
#[derive(Clone)]
pub struct ConnectionSlot(#[allow(dead_code)] Arc<(OwnedSemaphorePermit, Option<AddressSlot>)>);

/// Serves `app` (an axum `Router`, or a service around one) until `stop` turns true, then lets
/// open connections finish what they are doing.
pub async fn serve<S>(listener: TcpListener, app: S, limit: Limit, stop: watch::Receiver<bool>)
where
    S: Service<Request, Response = Response, Error = Infallible> + Clone + Send + 'static,
    S::Future: Send + 'static,
{
    let max_connections = limit.max_connections;
    let permits = u32::try_from(max_connections).unwrap_or(u32::MAX);
    let slots = Arc::new(Semaphore::new(permits as usize));
    let per_address = Arc::new(PerAddress::default());
    loop {
        let mut stop_accepting = stop.clone();
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(e) => {
                    // EMFILE and friends: back off instead of spinning.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            _ = stopped(&mut stop_accepting) => break,
        };
        let Ok(permit) = slots.clone().try_acquire_owned() else {
            tracing::warn!(%peer, "connection refused: {} reached", limit.setting);
            continue;
        };
        let ip = canonical(peer.ip());
        let address_slot = if limit.per_address == 0 || limit.exempt.iter().any(|net| net.contains(&ip)) {
            None
        } else {
            match per_address.take(ip, limit.per_address) {
                Some(slot) => Some(slot),
                None => {
                    tracing::debug!(%peer, "connection refused: {} reached", limit.per_address_setting);
                    continue;
                }
            }
        };
        let _ = stream.set_nodelay(true);
        let app = app.clone();
        let mut stop = stop.clone();
        let slot = ConnectionSlot(Arc::new((permit, address_slot)));
        tokio::spawn(async move {
            let request_slot = slot.clone();
            let service = hyper::service::service_fn(move |mut request: hyper::Request<Incoming>| {
                request.extensions_mut().insert(ConnectInfo(peer));
                request.extensions_mut().insert(request_slot.clone());
                let handled = app.clone().oneshot(request.map(Body::new));
                async move {
                    match tokio::time::timeout(REQUEST_TIMEOUT, handled).await {
                        Ok(response) => response,
                        Err(_) => {
                            // Unread body left behind: hyper closes the connection after this.
                            let mut response = error_response(StatusCode::REQUEST_TIMEOUT, "request timeout".into());
                            response
                                .headers_mut()
                                .insert(axum::http::header::CONNECTION, axum::http::HeaderValue::from_static("close"));
                            Ok(response)
                        }
                    }
                }
            });
            let connection = hyper::server::conn::http1::Builder::new()
                .max_buf_size(MAX_HEAD)
                .timer(TokioTimer::new())
                .header_read_timeout(HEADER_READ_TIMEOUT)
                .serve_connection(TokioIo::new(stream), service)
                .with_upgrades();
            tokio::pin!(connection);
            let result = tokio::select! {
                result = connection.as_mut() => result,
                _ = stopped(&mut stop) => {
                    // Finishes the request in flight, then closes; idle connections close at once.
                    connection.as_mut().graceful_shutdown();
                    connection.await
                }
            };
            if let Err(e) = result {
                tracing::debug!(%peer, error = %e, "connection ended with an error");
            }
            drop(slot);
        });
    }
    drop(listener);
    if tokio::time::timeout(DRAIN, slots.acquire_many(permits)).await.is_err() {
        tracing::warn!("stopping with requests still in flight after {} s", DRAIN.as_secs());
    }
}

/// Resolves once the stop flag is true (also when it already was).
async fn stopped(stop: &mut watch::Receiver<bool>) {
    while !*stop.borrow_and_update() {
        if stop.changed().await.is_err() {
            // The sender is gone: nobody can ask for a stop any more.
            std::future::pending::<()>().await;
        }
    }
}

/// Middleware: reads the body before any handler does. At most `LIMIT` bytes are kept; beyond it
/// the rest is read and dropped (up to [`MAX_DISCARDED_BODY`]) before a 413 goes out with
/// `Connection: close`, so a client still sending its body sees the status, not a reset.
/// [`REQUEST_TIMEOUT`] bounds how long this may take.
pub async fn bounded_body<const LIMIT: usize>(
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> axum::response::Response {
    use axum::body::HttpBody;
    use futures_util::StreamExt;
    // Most requests have no body (GET): nothing to read or put back.
    if request.body().is_end_stream() {
        return next.run(request).await;
    }
    let announced = request
        .headers()
        .get(axum::http::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if announced.is_some_and(|n| n > MAX_DISCARDED_BODY as u64) {
        return too_large(LIMIT);
    }
    let (parts, body) = request.into_parts();
    let mut stream = body.into_data_stream();
    let mut kept = Vec::new();
    let mut total = 0usize;
    while let Some(chunk) = stream.next().await {
        let Ok(chunk) = chunk else {
            return error_response(StatusCode::BAD_REQUEST, "request body could not be read".into());
        };
        total += chunk.len();
        if total <= LIMIT {
            kept.extend_from_slice(&chunk);
        } else if total > MAX_DISCARDED_BODY {
            return too_large(LIMIT);
        }
    }
    if total > LIMIT {
        return too_large(LIMIT);
    }
    next.run(axum::extract::Request::from_parts(parts, axum::body::Body::from(kept))).await
}

fn too_large(limit: usize) -> axum::response::Response {
    let mut response = error_response(StatusCode::PAYLOAD_TOO_LARGE, format!("request body over {} KiB", limit >> 10));
    response.headers_mut().insert(axum::http::header::CONNECTION, axum::http::HeaderValue::from_static("close"));
    response
}

/// `{"error": ...}`, the shape both binaries answer errors in.
fn error_response(status: StatusCode, error: String) -> axum::response::Response {
    (status, axum::Json(serde_json::json!({ "error": error }))).into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_address_or_one_ipv6_slash_64_shares_a_cap_and_gets_its_slots_back() {
        let table = Arc::new(PerAddress::default());
        let a: IpAddr = "2001:db8:1:2::5".parse().unwrap();
        let same_64: IpAddr = "2001:db8:1:2:ffff::9".parse().unwrap();
        let other_64: IpAddr = "2001:db8:1:3::5".parse().unwrap();
        let first = table.take(a, 2).unwrap();
        let _second = table.take(same_64, 2).unwrap();
        assert!(table.take(a, 2).is_none(), "two from the same /64");
        assert!(table.take(other_64, 2).is_some());
        drop(first);
        assert!(table.take(same_64, 2).is_some(), "a closed connection frees its slot");
        assert_eq!(canonical("::ffff:10.0.0.1".parse().unwrap()), "10.0.0.1".parse::<IpAddr>().unwrap());
    }
}
