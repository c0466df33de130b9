//! Who is calling, and which URL they should be given: the socket peer, or what a trusted reverse
//! proxy says (`X-Forwarded-For`, `-Host`, `-Proto`).

use axum::http::HeaderMap;
use ipnet::IpNet;
use std::net::{IpAddr, SocketAddr};

/// Whose `X-Forwarded-*` headers count.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum ProxyTrust {
    /// Nobody's: the caller is the socket peer.
    #[default]
    Nobody,
    /// `PROXY=1` alone, as upstream: anyone's, and the caller is the first `X-Forwarded-For`
    /// entry. Safe only when nothing but the proxy can reach the HTTP port.
    Anyone,
    /// `TRUSTED_PROXIES`: only peers in these networks, and the caller is the right-most
    /// `X-Forwarded-For` entry that is not one of them (nginx's `real_ip_recursive`), so a client
    /// cannot put a forged address in front of what the proxies appended.
    Only(Vec<IpNet>),
}

impl ProxyTrust {
    fn trusts(&self, ip: IpAddr) -> bool {
        match self {
            ProxyTrust::Nobody => false,
            ProxyTrust::Anyone => true,
            ProxyTrust::Only(nets) => nets.iter().any(|net| net.contains(&canonical(ip))),
        }
    }

    /// The caller's address.
    pub fn remote_address(&self, peer: SocketAddr, headers: &HeaderMap) -> String {
        if !self.trusts(peer.ip()) {
            return peer_address(peer);
        }
        let chain = forwarded_chain(headers);
        let caller = match self {
            ProxyTrust::Only(_) => {
                chain.iter().rev().find(|entry| !entry_ip(entry).is_some_and(|ip| self.trusts(ip))).or(chain.first())
            }
            _ => chain.first(),
        };
        match caller {
            Some(entry) => entry_ip(entry).map(|ip| canonical(ip).to_string()).unwrap_or_else(|| entry.to_string()),
            None => peer_address(peer),
        }
    }

    /// `<http|https>://<host>` for `/v1/channel`: `PUBLIC_IP:PORT` unless a trusted proxy says
    /// otherwise (first `X-Forwarded-Host` / `-Proto` entries: the proxy nearest the client).
    pub fn public_url(&self, peer: SocketAddr, public_host: &str, headers: &HeaderMap) -> String {
        if !self.trusts(peer.ip()) {
            return format!("http://{public_host}");
        }
        let host = first_entry(headers, "x-forwarded-host").unwrap_or(public_host);
        let scheme = match first_entry(headers, "x-forwarded-proto") {
            Some("https") => "https",
            _ => "http",
        };
        format!("{scheme}://{host}")
    }
}

/// Every `X-Forwarded-For` entry, over all the header's lines, client side first.
pub fn forwarded_chain(headers: &HeaderMap) -> Vec<&str> {
    headers
        .get_all("x-forwarded-for")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .collect()
}

/// IPv4-mapped IPv6 as IPv4.
fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map(IpAddr::V4).unwrap_or(ip),
        v4 => v4,
    }
}

/// An `X-Forwarded-For` entry's address: a bare address, or one with a port (`[::1]:80`).
fn entry_ip(entry: &str) -> Option<IpAddr> {
    entry.parse::<IpAddr>().ok().or_else(|| entry.parse::<SocketAddr>().ok().map(|s| s.ip()))
}

/// The address of a peer as upstream reports it (IPv4-mapped IPv6 shown as IPv4).
pub fn peer_address(peer: SocketAddr) -> String {
    canonical(peer.ip()).to_string()
}

fn first_entry<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    let value = headers.get(name)?.to_str().ok()?;
    let first = value.split(',').next()?.trim();
    (!first.is_empty()).then_some(first)
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
            h.append(*k, v.parse().unwrap());
        }
        h
    }

    #[test]
    fn proxy_headers_count_only_when_trusted_and_as_upstream_with_proxy_alone() {
        let peer: SocketAddr = "[::ffff:10.0.0.9]:5000".parse().unwrap();
        let h = headers(&[
            ("x-forwarded-for", "203.0.113.5, 10.0.0.1"),
            ("x-forwarded-host", "sfu.example.com, other"),
            ("x-forwarded-proto", "https,http"),
        ]);
        let nobody = ProxyTrust::Nobody;
        let anyone = ProxyTrust::Anyone;
        assert_eq!(nobody.remote_address(peer, &h), "10.0.0.9");
        assert_eq!(anyone.remote_address(peer, &h), "203.0.113.5");
        assert_eq!(nobody.public_url(peer, "1.2.3.4:8070", &h), "http://1.2.3.4:8070");
        assert_eq!(anyone.public_url(peer, "1.2.3.4:8070", &h), "https://sfu.example.com");
        assert_eq!(anyone.public_url(peer, "1.2.3.4:8070", &HeaderMap::new()), "http://1.2.3.4:8070");
        assert_eq!(anyone.remote_address(peer, &HeaderMap::new()), "10.0.0.9");
        assert_eq!(host_port("::1".parse().unwrap(), 8070), "[::1]:8070");
    }

    #[test]
    fn trusted_proxies_give_the_right_most_untrusted_entry_and_only_from_their_own_peers() {
        let trust = ProxyTrust::Only(vec!["10.0.0.0/8".parse().unwrap(), "2001:db8::1/128".parse().unwrap()]);
        let proxy: SocketAddr = "[::ffff:10.0.0.9]:5000".parse().unwrap();
        let stranger: SocketAddr = "198.51.100.7:5000".parse().unwrap();
        // A client forged the first entry; the proxies appended the real one and themselves.
        let h = headers(&[("x-forwarded-for", "192.0.2.66, 203.0.113.5"), ("x-forwarded-for", "10.1.2.3")]);
        assert_eq!(trust.remote_address(proxy, &h), "203.0.113.5");
        // The same headers from a peer that is not a proxy count for nothing.
        assert_eq!(trust.remote_address(stranger, &h), "198.51.100.7");
        let h2 = headers(&[("x-forwarded-host", "evil.example"), ("x-forwarded-proto", "https")]);
        assert_eq!(trust.public_url(stranger, "1.2.3.4:8070", &h2), "http://1.2.3.4:8070");
        assert_eq!(trust.public_url(proxy, "1.2.3.4:8070", &h2), "https://evil.example");
        // Every entry trusted: the left-most. Ports and brackets are read; garbage is the caller.
        assert_eq!(trust.remote_address(proxy, &headers(&[("x-forwarded-for", "10.0.0.2, 10.0.0.3")])), "10.0.0.2");
        assert_eq!(
            trust.remote_address(proxy, &headers(&[("x-forwarded-for", "[2001:db8::2]:443, [2001:db8::1]:80")])),
            "2001:db8::2"
        );
        assert_eq!(trust.remote_address(proxy, &headers(&[("x-forwarded-for", "unknown, 10.0.0.2")])), "unknown");
        assert_eq!(trust.remote_address(proxy, &HeaderMap::new()), "10.0.0.9");
    }
}
