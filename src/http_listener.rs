//! The HTTP listener of ringsfu and of sfu-gateway: hyper connections with bounded headers, a
//! header read timeout and a cap on simultaneous connections, each served by an axum app
//! (WebSocket upgrades included), and a graceful stop that lets requests in flight finish.

use axum::Router;
use axum::extract::ConnectInfo;
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::sync::{OwnedSemaphorePermit, Semaphore, watch};
use tower::ServiceExt;

/// Request line plus headers must fit in this (hyper answers 431 beyond it).
const MAX_HEAD: usize = 16 << 10;
const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a stop waits for requests in flight.
const DRAIN: Duration = Duration::from_secs(10);

/// Binds the listener, with a message that names the settings to change (`settings`) when it fails.
pub async fn bind(addr: SocketAddr, settings: &str) -> Result<TcpListener, String> {
    TcpListener::bind(addr)
        .await
        .map_err(|e| format!("cannot listen on {addr} ({settings}): {e}; choose another port or stop what holds it"))
}

/// The connection cap and the setting that raises it (named in the warning when it is reached).
pub struct Limit {
    pub max_connections: usize,
    pub setting: &'static str,
}

/// One accepted connection's place under the cap, in every request's extensions. hyper lets go of
/// a connection when it upgrades, so a WebSocket handler keeps a clone for as long as the socket
/// lives: WebSockets count against the cap too.
#[derive(Clone)]
pub struct ConnectionSlot(#[allow(dead_code)] Arc<OwnedSemaphorePermit>);

/// Serves until `stop` turns true, then lets open connections finish what they are doing.
pub async fn serve(listener: TcpListener, app: Router, limit: Limit, stop: watch::Receiver<bool>) {
    let max_connections = limit.max_connections;
    let permits = u32::try_from(max_connections).unwrap_or(u32::MAX);
    let slots = Arc::new(Semaphore::new(permits as usize));
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
        let _ = stream.set_nodelay(true);
        let app = app.clone();
        let mut stop = stop.clone();
        let slot = ConnectionSlot(Arc::new(permit));
        tokio::spawn(async move {
            let request_slot = slot.clone();
            let service = hyper::service::service_fn(move |mut request: hyper::Request<Incoming>| {
                request.extensions_mut().insert(ConnectInfo(peer));
                request.extensions_mut().insert(request_slot.clone());
                app.clone().oneshot(request)
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
