//! Who is calling, and which URL they should be given: the socket peer, or in proxy mode what the
//! reverse proxy says (`X-Forwarded-For`, `-Host`, `-Proto`, first entries).

use axum::http::HeaderMap;
use std::net::{IpAddr, SocketAddr};

/// The address of a peer as upstream reports it (IPv4-mapped IPv6 shown as IPv4).
pub fn peer_address(peer: SocketAddr) -> String {
    match peer.ip() {
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => v4.to_string(),
            None => v6.to_string(),
        },
        IpAddr::V4(v4) => v4.to_string(),
    }
}

fn first_entry<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    let value = headers.get(name)?.to_str().ok()?;
    let first = value.split(',').next()?.trim();
    (!first.is_empty()).then_some(first)
}

/// The caller's address: the first `X-Forwarded-For` entry in proxy mode, else the peer.
pub fn remote_address(proxy: bool, peer: SocketAddr, headers: &HeaderMap) -> String {
    if proxy && let Some(forwarded) = first_entry(headers, "x-forwarded-for") {
        return forwarded.to_string();
    }
    peer_address(peer)
}

/// `<http|https>://<host>` for `/v1/channel`: `PUBLIC_IP:PORT` unless a proxy says otherwise.
pub fn public_url(proxy: bool, public_host: &str, headers: &HeaderMap) -> String {
    if !proxy {
        return format!("http://{public_host}");
    }
    let host = first_entry(headers, "x-forwarded-host").unwrap_or(public_host);
    let scheme = match first_entry(headers, "x-forwarded-proto") {
        Some("https") => "https",
        _ => "http",
    };
    format!("{scheme}://{host}")
}

/// `PUBLIC_IP:PORT`, bracketed for IPv6.
pub fn host_port(ip: IpAddr, port: u16) -> String {
    SocketAddr::new(ip, port).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.insert(*k, v.parse().unwrap());
        }
        h
    }

    #[test]
    fn proxy_headers_count_only_in_proxy_mode_and_only_their_first_entry() {
        let peer: SocketAddr = "[::ffff:10.0.0.9]:5000".parse().unwrap();
        let h = headers(&[
            ("x-forwarded-for", "203.0.113.5, 10.0.0.1"),
            ("x-forwarded-host", "sfu.example.com, other"),
            ("x-forwarded-proto", "https,http"),
        ]);
        assert_eq!(remote_address(false, peer, &h), "10.0.0.9");
        assert_eq!(remote_address(true, peer, &h), "203.0.113.5");
        assert_eq!(public_url(false, "1.2.3.4:8070", &h), "http://1.2.3.4:8070");
        assert_eq!(public_url(true, "1.2.3.4:8070", &h), "https://sfu.example.com");
        assert_eq!(public_url(true, "1.2.3.4:8070", &HeaderMap::new()), "http://1.2.3.4:8070");
        assert_eq!(remote_address(true, peer, &HeaderMap::new()), "10.0.0.9");
        assert_eq!(host_port("::1".parse().unwrap(), 8070), "[::1]:8070");
    }
}
