//! Who is on the other end of a call: user agent and IP address.

use std::net::IpAddr;

use ipnet::IpNet;
use tonic::Request;

use crate::domain::types::ClientInfo;

/// The peer address, or, when the peer is a trusted proxy, the first
/// (client-most) hop of its `x-forwarded-for`. A malformed header is ignored.
pub fn client_info<T>(request: &Request<T>, trusted_proxies: &[IpNet]) -> ClientInfo {
    let metadata = request.metadata();
    let user_agent = metadata
        .get("user-agent")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    let Some(peer) = request.remote_addr().map(|a| canonical(a.ip())) else {
        return ClientInfo {
            user_agent,
            ip_address: String::new(),
        };
    };
    let forwarded = || {
        metadata
            .get("x-forwarded-for")?
            .to_str()
            .ok()?
            .split(',')
            .next()?
            .trim()
            .parse::<IpAddr>()
            .ok()
    };
    let ip = if trusted_proxies.iter().any(|net| net.contains(&peer)) {
        forwarded().map_or(peer, canonical)
    } else {
        peer
    };
    ClientInfo {
        user_agent,
        ip_address: ip.to_string(),
    }
}

/// `::ffff:10.0.0.1` is `10.0.0.1`: dual-stack sockets report IPv4 peers so.
fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        v4 => v4,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::SocketAddr;
    use tonic::transport::server::TcpConnectInfo;

    fn request(peer: &str, xff: Option<&str>) -> Request<()> {
        let mut request = Request::new(());
        request.extensions_mut().insert(TcpConnectInfo {
            local_addr: None,
            remote_addr: Some(peer.parse::<SocketAddr>().unwrap()),
        });
        request
            .metadata_mut()
            .insert("user-agent", "grpcurl/1.9".parse().unwrap());
        if let Some(v) = xff {
            request
                .metadata_mut()
                .insert("x-forwarded-for", v.parse().unwrap());
        }
        request
    }

    fn proxies() -> Vec<IpNet> {
        vec!["10.0.0.0/8".parse().unwrap()]
    }

    #[test]
    fn the_peer_address_is_used_without_trusted_proxies() {
        let info = client_info(&request("203.0.113.7:5000", Some("198.51.100.1")), &[]);
        assert_eq!(info.ip_address, "203.0.113.7");
        assert_eq!(info.user_agent, "grpcurl/1.9");
    }

    #[test]
    fn a_trusted_proxy_forwards_the_first_hop() {
        let info = client_info(
            &request("10.1.2.3:5000", Some("198.51.100.1, 10.1.2.3")),
            &proxies(),
        );
        assert_eq!(info.ip_address, "198.51.100.1");
    }

    #[test]
    fn an_untrusted_peer_cannot_forward() {
        let info = client_info(
            &request("203.0.113.7:5000", Some("198.51.100.1")),
            &proxies(),
        );
        assert_eq!(info.ip_address, "203.0.113.7");
    }

    #[test]
    fn a_malformed_forwarded_header_is_ignored() {
        let info = client_info(&request("10.1.2.3:5000", Some("not-an-ip")), &proxies());
        assert_eq!(info.ip_address, "10.1.2.3");
    }

    #[test]
    fn ipv4_mapped_peers_are_shown_as_ipv4() {
        let info = client_info(
            &request("[::ffff:10.1.2.3]:5000", Some("198.51.100.9")),
            &proxies(),
        );
        assert_eq!(info.ip_address, "198.51.100.9");
    }
}
