//! Who is on the other end of a call: user agent and IP address.

use std::net::IpAddr;

use ipnet::IpNet;
use tonic::Request;

use crate::domain::types::ClientInfo;

/// The user agent and the client address of a call (see `client_address`).
pub fn client_info<T>(request: &Request<T>, trusted_proxies: &[IpNet]) -> ClientInfo {
    let metadata = request.metadata();
    let user_agent = metadata
        .get("user-agent")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    let Some(peer) = request.remote_addr().map(|a| a.ip()) else {
        return ClientInfo {
            user_agent,
            ip_address: String::new(),
        };
    };
    // Several `x-forwarded-for` fields are one list, in order (RFC 9110
    // §5.3). Bytes that are not text cannot make an address: they become
    // hops that are not one.
    let forwarded: Vec<String> = metadata
        .get_all("x-forwarded-for")
        .iter()
        .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned())
        .collect();
    let hops = forwarded.iter().flat_map(|field| field.split(','));
    ClientInfo {
        user_agent,
        ip_address: client_address(peer, hops, trusted_proxies).to_string(),
    }
}

/// The client's address: the peer's, unless the peer is a trusted proxy.
/// Then `x-forwarded-for` is read from the right, where each proxy appends
/// the address it saw, and the first hop outside the trusted proxies is the
/// client (RFC 7239 §8.1). Everything to its left was written by the client
/// itself and proves nothing, so reading the leftmost hop would let anyone
/// choose the address recorded for their session. A hop that is not an
/// address, met before the client, means the list cannot be trusted: the
/// peer is used. When every hop is a trusted proxy, the leftmost is the
/// client (a proxy calling for itself).
pub fn client_address<'a>(
    peer: IpAddr,
    hops: impl DoubleEndedIterator<Item = &'a str>,
    trusted_proxies: &[IpNet],
) -> IpAddr {
    // `::ffff:10.0.0.1` is `10.0.0.1`: dual-stack sockets report IPv4
    // peers so, and some proxies write them so.
    let peer = peer.to_canonical();
    let trusted = |ip: &IpAddr| trusted_proxies.iter().any(|net| net.contains(ip));
    if !trusted(&peer) {
        return peer;
    }
    let mut leftmost = None;
    // Empty list elements are no hops (RFC 9110 §5.6.1).
    for hop in hops.map(str::trim).filter(|h| !h.is_empty()).rev() {
        let Ok(ip) = hop.parse::<IpAddr>().map(|ip| ip.to_canonical()) else {
            return peer;
        };
        if !trusted(&ip) {
            return ip;
        }
        leftmost = Some(ip);
    }
    leftmost.unwrap_or(peer)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::SocketAddr;
    use tonic::transport::server::TcpConnectInfo;

    fn request(peer: &str, xff: &[&str]) -> Request<()> {
        let mut request = Request::new(());
        request.extensions_mut().insert(TcpConnectInfo {
            local_addr: None,
            remote_addr: Some(peer.parse::<SocketAddr>().unwrap()),
        });
        request
            .metadata_mut()
            .insert("user-agent", "grpcurl/1.9".parse().unwrap());
        for v in xff {
            request
                .metadata_mut()
                .append("x-forwarded-for", v.parse().unwrap());
        }
        request
    }

    fn proxies() -> Vec<IpNet> {
        vec!["10.0.0.0/8".parse().unwrap()]
    }

    fn address(peer: &str, xff: &[&str]) -> String {
        client_info(&request(peer, xff), &proxies()).ip_address
    }

    #[test]
    fn the_peer_address_is_used_without_trusted_proxies() {
        let info = client_info(&request("203.0.113.7:5000", &["198.51.100.1"]), &[]);
        assert_eq!(info.ip_address, "203.0.113.7");
        assert_eq!(info.user_agent, "grpcurl/1.9");
    }

    #[test]
    fn a_trusted_proxy_forwards_the_hop_it_appended() {
        assert_eq!(address("10.1.2.3:5000", &["198.51.100.1"]), "198.51.100.1");
    }

    #[test]
    fn addresses_a_client_puts_in_front_never_count() {
        assert_eq!(
            address("10.1.2.3:5000", &["1.1.1.1, 198.51.100.1"]),
            "198.51.100.1"
        );
    }

    #[test]
    fn trusted_hops_are_skipped_from_the_right() {
        assert_eq!(
            address(
                "10.1.2.3:5000",
                &["1.1.1.1, 198.51.100.1, 10.9.9.9,10.0.0.2"]
            ),
            "198.51.100.1"
        );
    }

    #[test]
    fn when_every_hop_is_trusted_the_leftmost_is_the_client() {
        assert_eq!(
            address("10.1.2.3:5000", &["10.0.0.5, 10.0.0.6"]),
            "10.0.0.5"
        );
    }

    #[test]
    fn a_hop_that_is_not_an_address_before_the_client_means_the_peer() {
        assert_eq!(
            address("10.1.2.3:5000", &["203.0.113.7, garbage"]),
            "10.1.2.3"
        );
        assert_eq!(address("10.1.2.3:5000", &["not-an-ip"]), "10.1.2.3");
        assert_eq!(
            address("10.1.2.3:5000", &["198.51.100.1:443, 10.0.0.2"]),
            "10.1.2.3"
        );
    }

    #[test]
    fn garbage_left_of_the_client_does_not_matter() {
        assert_eq!(
            address("10.1.2.3:5000", &["garbage, 198.51.100.1"]),
            "198.51.100.1"
        );
    }

    #[test]
    fn several_forwarded_fields_are_one_list_in_order() {
        assert_eq!(
            address("10.1.2.3:5000", &["1.1.1.1", "198.51.100.1, 10.0.0.2"]),
            "198.51.100.1"
        );
        assert_eq!(
            address("10.1.2.3:5000", &["198.51.100.1", "10.0.0.2"]),
            "198.51.100.1"
        );
    }

    #[test]
    fn empty_list_elements_are_no_hops() {
        assert_eq!(
            address("10.1.2.3:5000", &["198.51.100.1,, 10.0.0.2,"]),
            "198.51.100.1"
        );
        assert_eq!(address("10.1.2.3:5000", &[""]), "10.1.2.3");
        assert_eq!(address("10.1.2.3:5000", &[]), "10.1.2.3");
    }

    #[test]
    fn an_untrusted_peer_cannot_forward() {
        assert_eq!(
            address("203.0.113.7:5000", &["198.51.100.1"]),
            "203.0.113.7"
        );
    }

    #[test]
    fn ipv6_hops_are_walked_like_ipv4_ones() {
        let proxies: Vec<IpNet> = vec!["fd00::/8".parse().unwrap()];
        let info = client_info(
            &request("[fd00::1]:5000", &["2001:db8::7, 2001:db8::8, fd00::2"]),
            &proxies,
        );
        assert_eq!(info.ip_address, "2001:db8::8");
    }

    #[test]
    fn ipv4_mapped_addresses_are_shown_and_trusted_as_ipv4() {
        assert_eq!(
            address("[::ffff:10.1.2.3]:5000", &["198.51.100.9, ::ffff:10.0.0.2"]),
            "198.51.100.9"
        );
        assert_eq!(
            address("[::ffff:203.0.113.7]:5000", &["198.51.100.9"]),
            "203.0.113.7"
        );
    }
}
