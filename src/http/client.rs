//! The client's address: the connection's peer, or, when the peer is a
//! trusted reverse proxy (`PUSHTOKEN_TRUSTED_PROXIES`), the address that the
//! proxies put in `X-Forwarded-For`. The per-address limit counts it, and the
//! request's log line shows it.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};

use axum::extract::ConnectInfo;
use axum::http::{HeaderMap, HeaderName, Request};
use ipnet::IpNet;

pub const X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");

/// A request's client address, found once (by the observation middleware,
/// which logs it) and kept in the request's extensions for the limits.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ClientAddress(pub IpAddr);

impl ClientAddress {
    /// The client of `request`, trusting `X-Forwarded-For` from the peers
    /// in `trusted` only.
    pub fn of<B>(request: &Request<B>, trusted: &[IpNet]) -> Self {
        let peer = request
            .extensions()
            .get::<ConnectInfo<SocketAddr>>()
            .map(|ConnectInfo(peer)| peer.ip());
        Self(client_address(peer, request.headers(), trusted))
    }
}

/// The client of a request that came from `peer` with `headers`. A peer
/// outside `trusted` is the client, whatever the headers say. A trusted
/// peer forwarded the request: the client is the right-most address of
/// `X-Forwarded-For` (several headers read as one list, in order) that is
/// not itself a trusted proxy, each proxy having appended the address it
/// was reached from; addresses left of it were written by the client and
/// are not read at all. Every address trusted: the left-most. A header
/// missing, or malformed where it is read: the peer. No peer (a request
/// not from a socket): the unspecified address.
pub fn client_address(peer: Option<IpAddr>, headers: &HeaderMap, trusted: &[IpNet]) -> IpAddr {
    let Some(peer) = peer.map(|peer| peer.to_canonical()) else {
        return IpAddr::V4(Ipv4Addr::UNSPECIFIED);
    };
    if !is_trusted(peer, trusted) {
        return peer;
    }
    forwarded_client(headers, trusted).unwrap_or(peer)
}

fn is_trusted(address: IpAddr, trusted: &[IpNet]) -> bool {
    trusted.iter().any(|net| net.contains(&address))
}

/// The client that trusted proxies forwarded for, or `None` when the header
/// is missing or malformed before the client is found.
fn forwarded_client(headers: &HeaderMap, trusted: &[IpNet]) -> Option<IpAddr> {
    let mut leftmost = None;
    for value in headers.get_all(X_FORWARDED_FOR).iter().rev() {
        for hop in value.to_str().ok()?.rsplit(',') {
            let address = hop_address(hop.trim())?;
            if !is_trusted(address, trusted) {
                return Some(address);
            }
            leftmost = Some(address);
        }
    }
    leftmost
}

/// One address of `X-Forwarded-For`: `203.0.113.7` or `2001:db8::7`, also
/// with a port (`203.0.113.7:4711`, `[2001:db8::7]:4711`), as some proxies
/// write it.
fn hop_address(hop: &str) -> Option<IpAddr> {
    hop.parse::<IpAddr>()
        .or_else(|_| hop.parse::<SocketAddr>().map(|socket| socket.ip()))
        .ok()
        .map(|address| address.to_canonical())
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    fn nets(list: &[&str]) -> Vec<IpNet> {
        list.iter().map(|net| net.parse().unwrap()).collect()
    }

    fn forwarded(values: &[&str]) -> HeaderMap {
        let mut headers = HeaderMap::new();
        for value in values {
            headers.append(X_FORWARDED_FOR, HeaderValue::from_str(value).unwrap());
        }
        headers
    }

    fn ip(text: &str) -> IpAddr {
        text.parse().unwrap()
    }

    /// The client of a request from `peer` with these `X-Forwarded-For`
    /// values, behind proxies in 10.0.0.0/8 and fd00::/8.
    fn client(peer: &str, values: &[&str]) -> IpAddr {
        let trusted = nets(&["10.0.0.0/8", "fd00::/8"]);
        client_address(Some(ip(peer)), &forwarded(values), &trusted)
    }

    #[test]
    fn an_untrusted_peer_is_the_client_whatever_it_forwards() {
        assert_eq!(client("203.0.113.9", &["198.51.100.1"]), ip("203.0.113.9"));
        let none = client_address(Some(ip("10.0.0.1")), &forwarded(&["198.51.100.1"]), &[]);
        assert_eq!(none, ip("10.0.0.1"), "no trusted proxies: never");
    }

    #[test]
    fn a_trusted_peer_forwards_the_right_most_untrusted_address() {
        assert_eq!(client("10.0.0.1", &["198.51.100.1"]), ip("198.51.100.1"));
        // The client wrote the left part; the proxies appended the rest.
        let chain = ["192.0.2.66, 198.51.100.1, 10.0.0.2"];
        assert_eq!(client("10.0.0.1", &chain), ip("198.51.100.1"));
        // Several headers are one list, in order.
        let split = ["192.0.2.66", "198.51.100.1,10.0.0.2"];
        assert_eq!(client("10.0.0.1", &split), ip("198.51.100.1"));
        assert_eq!(
            client("fd00::1", &["2001:db8::7, fd00::2"]),
            ip("2001:db8::7")
        );
    }

    #[test]
    fn garbage_left_of_the_client_is_never_read() {
        let chain = ["not an address, 198.51.100.1"];
        assert_eq!(client("10.0.0.1", &chain), ip("198.51.100.1"));
    }

    #[test]
    fn a_malformed_or_missing_header_falls_back_to_the_peer() {
        for values in [
            &[][..],
            &[""],
            &["not an address"],
            &["198.51.100.1, proxy.internal"],
            &["198.51.100.1,,10.0.0.2"],
            &["198.51.100.1/32"],
        ] {
            assert_eq!(client("10.0.0.1", values), ip("10.0.0.1"), "{values:?}");
        }
    }

    #[test]
    fn only_trusted_addresses_give_the_left_most() {
        assert_eq!(client("10.0.0.1", &["10.9.9.9, 10.0.0.2"]), ip("10.9.9.9"));
    }

    #[test]
    fn ports_and_mapped_ipv4_are_read_as_the_address() {
        assert_eq!(
            client("::ffff:10.0.0.1", &["198.51.100.1:4711"]),
            ip("198.51.100.1")
        );
        assert_eq!(
            client("10.0.0.1", &["[2001:db8::7]:4711"]),
            ip("2001:db8::7")
        );
        assert_eq!(
            client("10.0.0.1", &["::ffff:198.51.100.1"]),
            ip("198.51.100.1")
        );
    }

    #[test]
    fn a_request_without_a_peer_has_the_unspecified_address() {
        let trusted = nets(&["0.0.0.0/0"]);
        assert_eq!(
            client_address(None, &forwarded(&["198.51.100.1"]), &trusted),
            ip("0.0.0.0")
        );
    }
}
