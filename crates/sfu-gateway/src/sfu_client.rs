//! The HTTP client for `/v1/channel` calls to SFUs reached over plain http: hyper-util's pooled
//! client, without reqwest's layers (redirect bookkeeping that re-parses the URL, default-header
//! merging, boxing), which cost more per request than the rest of the gateway's own work (see
//! docs/performance.md). It sends what reqwest sent (`accept`, `user-agent`, the caller's
//! headers), bounds the whole call by one timeout and describes failures in the same words.
//! https SFUs, and any URL this client cannot take, still go through reqwest.

use axum::body::{Body, Bytes};
use axum::http::{HeaderMap, HeaderName, HeaderValue, Request, StatusCode, Uri, header};
use futures_util::StreamExt;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioTimer};
use std::time::Duration;

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
    plain: Client<HttpConnector, Body>,
    user_agent: HeaderValue,
}

impl SfuClient {
    pub fn new(idle_timeout: Duration, user_agent: &'static str) -> SfuClient {
        let mut connector = HttpConnector::new();
        connector.set_nodelay(true);
        let plain = Client::builder(TokioExecutor::new())
            .pool_idle_timeout(idle_timeout)
            .pool_timer(TokioTimer::new())
            .build(connector);
        SfuClient { plain, user_agent: HeaderValue::from_static(user_agent) }
    }

    /// Whether `url` is one this client takes (plain http, a URL `http::Uri` accepts).
    pub fn takes(url: &str) -> Option<Uri> {
        url.starts_with("http://").then(|| url.parse::<Uri>().ok()).flatten()
    }

    /// `GET uri` with `headers`, the whole exchange (connect, send, read at most `cap` bytes)
    /// bounded by `timeout`.
    pub async fn get(&self, uri: Uri, headers: HeaderMap, cap: usize, timeout: Duration) -> Result<Answer, CallError> {
        let mut request = Request::new(Body::empty());
        *request.uri_mut() = uri;
        let sent = request.headers_mut();
        sent.insert(header::ACCEPT, HeaderValue::from_static("*/*"));
        sent.insert(header::USER_AGENT, self.user_agent.clone());
        sent.extend(headers);
        match tokio::time::timeout(timeout, self.exchange(request, cap)).await {
            Ok(result) => result,
            Err(_) => Err(CallError::Failed(format!("timed out after {} ms", timeout.as_millis()))),
        }
    }

    async fn exchange(&self, request: Request<Body>, cap: usize) -> Result<Answer, CallError> {
        let response = self.plain.request(request).await.map_err(|e| {
            let what = if e.is_connect() { "connection failed" } else { "request failed" };
            CallError::Failed(format!("{what}: {}", innermost(&e)))
        })?;
        let (parts, body) = response.into_parts();
        let content_type = parts.headers.get(header::CONTENT_TYPE).cloned();
        let announced = parts.headers.get(header::CONTENT_LENGTH).and_then(|v| v.to_str().ok()?.parse::<u64>().ok());
        if announced.is_some_and(|n| n > cap as u64) {
            return Err(CallError::TooLarge);
        }
        let body = read_capped(Body::new(body), cap).await?;
        Ok(Answer { status: parts.status, content_type, body })
    }
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
