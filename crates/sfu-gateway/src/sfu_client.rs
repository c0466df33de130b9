//! The HTTP client for `/v1/channel` calls to SFUs reached over plain http: hyper's HTTP/1
//! connections, kept open between calls in a small pool per SFU. Not reqwest (redirect
//! bookkeeping that re-parses the URL, default-header merging, boxing: a sixth of the gateway's
//! samples when it was in use), nor hyper-util's pooled client (a pool keyed by scheme and host
//! behind a lock, a checkout future, the URL rewritten on every call: 7-9% of the gateway's CPU
//! per request), see docs/performance.md, "Gateway alone". It sends what reqwest sent (`host`, `accept`,
//! `user-agent`, the caller's headers), bounds the whole call by one timeout and describes
//! failures in the same words. https SFUs, and any URL this client cannot take, still go through
//! reqwest.
//!
//! The pool hands out the most recently used idle connection (the others age out and close), keeps
//! at most [`MAX_IDLE_PER_SFU`] per SFU, and drops (closes) an idle connection once the SFU has
//! closed it or it has been idle for `idle_timeout`: when a call to that SFU meets it, or at
//! [`SfuClient::sweep`]. A request that an idle connection could not send (the SFU closed it
//! meanwhile) goes out on another; one that was sent and got no answer is a failure, as with
//! hyper-util's client (the SFU may have acted on it).

use axum::body::{Body, Bytes};
use axum::http::uri::Authority;
use axum::http::{HeaderMap, HeaderName, HeaderValue, Request, StatusCode, Uri, header};
use futures_util::StreamExt;
use hyper::client::conn::http1::{self, SendRequest};
use hyper_util::rt::TokioIo;
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};
use tokio::net::TcpStream;

/// Idle connections kept per SFU; more are closed when they come back.
pub const MAX_IDLE_PER_SFU: usize = 256;

/// An SFU's answer: status, content type and body (at most the caller's cap).
pub struct Answer {
    pub status: StatusCode,
    pub content_type: Option<HeaderValue>,
    pub body: Bytes,
}

/// Why a call gave no answer, in the words the gateway logs and returns.
#[derive(Debug, PartialEq, Eq)]
pub enum CallError {
    /// The body was larger than the cap.
    TooLarge,
    /// Timed out, could not connect, or the connection failed: described.
    Failed(String),
}

pub struct SfuClient {
    idle: Mutex<Vec<Idle>>,
    idle_timeout: Duration,
    user_agent: HeaderValue,
}

/// Idle connections to one SFU, the most recently used last.
struct Idle {
    authority: Authority,
    connections: Vec<(SendRequest<Body>, Instant)>,
}

impl SfuClient {
    pub fn new(idle_timeout: Duration, user_agent: &'static str) -> SfuClient {
        SfuClient { idle: Mutex::new(Vec::new()), idle_timeout, user_agent: HeaderValue::from_static(user_agent) }
    }

    /// Whether `url` is one this client takes (plain http, a URL `http::Uri` accepts).
    pub fn takes(url: &str) -> Option<Uri> {
        let uri = url.starts_with("http://").then(|| url.parse::<Uri>().ok()).flatten()?;
        uri.authority().is_some().then_some(uri)
    }

    /// `GET uri` with `headers`, the whole exchange (connect, send, read at most `cap` bytes)
    /// bounded by `timeout`.
    pub async fn get(&self, uri: Uri, headers: HeaderMap, cap: usize, timeout: Duration) -> Result<Answer, CallError> {
        let Some(authority) = uri.authority().cloned() else {
            return Err(CallError::Failed("request failed: no host in the URL".into()));
        };
        let mut request = Request::new(Body::empty());
        // HTTP/1.1 to an origin server: the path and query as the target, the host in `Host`.
        *request.uri_mut() = uri.path_and_query().map_or_else(|| Uri::from_static("/"), |p| Uri::from(p.clone()));
        let sent = request.headers_mut();
        let host = authority.as_str().rsplit('@').next().unwrap_or_default();
        let host = HeaderValue::from_str(host).map_err(|e| CallError::Failed(format!("request failed: {e}")))?;
        sent.insert(header::HOST, host);
        sent.insert(header::ACCEPT, HeaderValue::from_static("*/*"));
        sent.insert(header::USER_AGENT, self.user_agent.clone());
        sent.extend(headers);
        match tokio::time::timeout(timeout, self.exchange(&authority, request, cap)).await {
            Ok(result) => result,
            Err(_) => Err(CallError::Failed(format!("timed out after {} ms", timeout.as_millis()))),
        }
    }

    async fn exchange(
        &self,
        authority: &Authority,
        mut request: Request<Body>,
        cap: usize,
    ) -> Result<Answer, CallError> {
        loop {
            let (mut connection, reused) = match self.checkout(authority) {
                Some(idle) => (idle, true),
                None => (connect(authority).await?, false),
            };
            // A connection is ready again once its task has seen the end of the last answer.
            if reused && connection.ready().await.is_err() {
                continue;
            }
            let response = match connection.try_send_request(request).await {
                Ok(response) => response,
                Err(mut e) => match e.take_message() {
                    // An idle connection the SFU closed before the request went out: on a new one.
                    Some(unsent) if reused => {
                        request = unsent;
                        continue;
                    }
                    _ => return Err(CallError::Failed(format!("request failed: {}", innermost(e.error())))),
                },
            };
            let (parts, body) = response.into_parts();
            let content_type = parts.headers.get(header::CONTENT_TYPE).cloned();
            let announced =
                parts.headers.get(header::CONTENT_LENGTH).and_then(|v| v.to_str().ok()?.parse::<u64>().ok());
            if announced.is_some_and(|n| n > cap as u64) {
                return Err(CallError::TooLarge);
            }
            let body = read_capped(Body::new(body), cap).await?;
            self.checkin(authority, connection);
            return Ok(Answer { status: parts.status, content_type, body });
        }
    }

    /// The most recently used idle connection to `authority` that is still open and not idle for
    /// too long; the others met on the way are dropped (closed).
    fn checkout(&self, authority: &Authority) -> Option<SendRequest<Body>> {
        let now = Instant::now();
        let mut idle = self.idle();
        let pool = idle.iter_mut().find(|i| i.authority == *authority)?;
        while let Some((connection, since)) = pool.connections.pop() {
            if !connection.is_closed() && now.duration_since(since) < self.idle_timeout {
                return Some(connection);
            }
        }
        None
    }

    fn checkin(&self, authority: &Authority, connection: SendRequest<Body>) {
        if connection.is_closed() {
            return;
        }
        let mut idle = self.idle();
        let at = match idle.iter().position(|i| i.authority == *authority) {
            Some(at) => at,
            None => {
                idle.push(Idle { authority: authority.clone(), connections: Vec::new() });
                idle.len() - 1
            }
        };
        let pool = &mut idle[at].connections;
        if pool.len() < MAX_IDLE_PER_SFU {
            pool.push((connection, Instant::now()));
        }
    }

    /// Closes the idle connections the SFUs closed or that were idle for too long, and forgets
    /// the SFUs left with none (called with the health polls).
    pub fn sweep(&self) {
        let now = Instant::now();
        let mut idle = self.idle();
        for pool in idle.iter_mut() {
            pool.connections.retain(|(c, since)| !c.is_closed() && now.duration_since(*since) < self.idle_timeout);
        }
        idle.retain(|pool| !pool.connections.is_empty());
    }

    fn idle(&self) -> MutexGuard<'_, Vec<Idle>> {
        // Nothing under the lock panics; a poisoned list is still a list of connections.
        self.idle.lock().unwrap_or_else(|p| p.into_inner())
    }
}

async fn connect(authority: &Authority) -> Result<SendRequest<Body>, CallError> {
    let failed =
        |e: &(dyn std::error::Error + 'static)| CallError::Failed(format!("connection failed: {}", innermost(e)));
    let host = authority.host().trim_start_matches('[').trim_end_matches(']');
    let stream = TcpStream::connect((host, authority.port_u16().unwrap_or(80))).await.map_err(|e| failed(&e))?;
    let _ = stream.set_nodelay(true);
    let (sender, connection) = http1::handshake(TokioIo::new(stream)).await.map_err(|e| failed(&e))?;
    tokio::spawn(async move {
        let _ = connection.await;
    });
    Ok(sender)
}

/// The body, at most `cap` bytes. An SFU's answer is usually one chunk: kept as it came, copied
/// only when more follow.
async fn read_capped(body: Body, cap: usize) -> Result<Bytes, CallError> {
    let mut chunks = body.into_data_stream();
    let read_failed = |e: axum::Error| CallError::Failed(format!("request failed: {}", innermost(&e)));
    let Some(first) = chunks.next().await.transpose().map_err(read_failed)? else { return Ok(Bytes::new()) };
    if first.len() > cap {
        return Err(CallError::TooLarge);
    }
    let Some(mut next) = chunks.next().await.transpose().map_err(read_failed)? else { return Ok(first) };
    let mut body = first.to_vec();
    loop {
        if body.len() + next.len() > cap {
            return Err(CallError::TooLarge);
        }
        body.extend_from_slice(&next);
        match chunks.next().await.transpose().map_err(read_failed)? {
            Some(chunk) => next = chunk,
            None => return Ok(Bytes::from(body)),
        }
    }
}

/// The innermost cause of an error, as reqwest's errors were described.
fn innermost(error: &(dyn std::error::Error + 'static)) -> String {
    let mut cause = error;
    while let Some(next) = cause.source() {
        cause = next;
    }
    cause.to_string()
}

/// `X-Forwarded-For`, as a constant name.
pub const X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_plain_http_urls_are_taken() {
        assert!(SfuClient::takes("http://10.0.0.5:8070/v1/channel?webRTC=false").is_some());
        assert!(SfuClient::takes("https://sfu.example.com/v1/channel").is_none());
        assert!(SfuClient::takes("http://sfu/v1/channel?a b").is_none(), "a URL hyper would refuse goes to reqwest");
    }

    /// An SFU that answers `{}` to every request, keeps a connection open after an answer unless
    /// `close_after` answers were given on it, and counts the connections it accepted and those
    /// still open.
    struct Sfu {
        address: std::net::SocketAddr,
        accepted: Arc<AtomicUsize>,
        open: Arc<AtomicUsize>,
    }

    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};

    impl Sfu {
        async fn start(close_after: usize) -> Sfu {
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
            let address = listener.local_addr().unwrap();
            let (accepted, open) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
            let (counted, still_open) = (accepted.clone(), open.clone());
            tokio::spawn(async move {
                loop {
                    let (stream, _) = listener.accept().await.unwrap();
                    counted.fetch_add(1, Ordering::SeqCst);
                    still_open.fetch_add(1, Ordering::SeqCst);
                    let still_open = still_open.clone();
                    let answered = Arc::new(AtomicUsize::new(0));
                    tokio::spawn(async move {
                        let service = hyper::service::service_fn(move |_request| {
                            let close = answered.fetch_add(1, Ordering::SeqCst) + 1 >= close_after;
                            async move {
                                let mut answer = hyper::Response::new(Body::from("{}"));
                                if close {
                                    answer.headers_mut().insert(header::CONNECTION, HeaderValue::from_static("close"));
                                }
                                Ok::<_, std::convert::Infallible>(answer)
                            }
                        });
                        let _ = hyper::server::conn::http1::Builder::new()
                            .serve_connection(TokioIo::new(stream), service)
                            .await;
                        still_open.fetch_sub(1, Ordering::SeqCst);
                    });
                }
            });
            Sfu { address, accepted, open }
        }

        fn uri(&self) -> Uri {
            SfuClient::takes(&format!("http://{}/v1/channel", self.address)).unwrap()
        }
    }

    async fn call(client: &SfuClient, sfu: &Sfu) -> StatusCode {
        match client.get(sfu.uri(), HeaderMap::new(), 1024, Duration::from_secs(2)).await {
            Ok(answer) => answer.status,
            Err(e) => panic!("{e:?}"),
        }
    }

    /// Waits (bounded) until the SFU has `n` connections open.
    async fn open_connections(sfu: &Sfu, n: usize) {
        let deadline = Instant::now() + Duration::from_secs(2);
        while sfu.open.load(Ordering::SeqCst) != n {
            assert!(Instant::now() < deadline, "{} connections open, not {n}", sfu.open.load(Ordering::SeqCst));
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }

    #[tokio::test]
    async fn a_connection_serves_the_next_call_unless_the_sfu_closed_it() {
        let client = SfuClient::new(Duration::from_secs(60), "test");
        let keeps = Sfu::start(usize::MAX).await;
        for _ in 0..3 {
            assert_eq!(call(&client, &keeps).await, StatusCode::OK);
        }
        assert_eq!(keeps.accepted.load(Ordering::SeqCst), 1, "three calls in turn, one connection");

        let closes = Sfu::start(1).await;
        assert_eq!(call(&client, &closes).await, StatusCode::OK);
        open_connections(&closes, 0).await;
        assert_eq!(call(&client, &closes).await, StatusCode::OK, "the closed connection is not used");
        assert_eq!(closes.accepted.load(Ordering::SeqCst), 2);
    }

    #[tokio::test]
    async fn idle_connections_close_after_the_idle_timeout_and_at_most_the_cap_are_kept() {
        let client = SfuClient::new(Duration::from_millis(100), "test");
        let sfu = Sfu::start(usize::MAX).await;
        // More calls at once than the pool keeps.
        let calls = (0..MAX_IDLE_PER_SFU + 4).map(|_| call(&client, &sfu));
        assert!(futures_util::future::join_all(calls).await.iter().all(|s| *s == StatusCode::OK));
        let opened = sfu.accepted.load(Ordering::SeqCst);
        assert!(opened > MAX_IDLE_PER_SFU, "{opened} connections for {} calls at once", MAX_IDLE_PER_SFU + 4);
        open_connections(&sfu, MAX_IDLE_PER_SFU).await;
        client.sweep();
        assert_eq!(sfu.open.load(Ordering::SeqCst), MAX_IDLE_PER_SFU, "not idle for long enough yet");
        tokio::time::sleep(Duration::from_millis(150)).await;
        client.sweep();
        open_connections(&sfu, 0).await;
        assert!(client.idle().is_empty(), "an SFU without idle connections is forgotten");
    }

    #[tokio::test]
    async fn a_refused_connection_and_a_silent_sfu_are_described() {
        let client = SfuClient::new(Duration::from_secs(1), "test");
        // A port nothing listens on: bound, then closed.
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let uri = SfuClient::takes(&format!("http://127.0.0.1:{port}/v1/channel")).unwrap();
        match client.get(uri, HeaderMap::new(), 1024, Duration::from_secs(2)).await {
            Err(CallError::Failed(reason)) => assert!(reason.starts_with("connection failed: "), "{reason}"),
            other => panic!("{:?}", other.map(|a| a.status)),
        }
        // Accepts and never answers.
        let silent = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let uri = SfuClient::takes(&format!("http://{}/v1/channel", silent.local_addr().unwrap())).unwrap();
        let answer = client.get(uri, HeaderMap::new(), 1024, Duration::from_millis(100)).await;
        assert_eq!(answer.err(), Some(CallError::Failed("timed out after 100 ms".into())));
    }
}
