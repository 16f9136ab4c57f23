//! Where webhooks may go: the destination address policy, and the resolver that enforces it.
//!
//! By default a destination may only reach global addresses: loopback, private (RFC 1918,
//! `fc00::/7`), link-local (`169.254.0.0/16`, the cloud metadata address among them,
//! `fe80::/10`), unspecified (`0.0.0.0`, `::`), shared, documentation, multicast and reserved
//! addresses are refused, so that a destination cannot be pointed at the services next to the
//! process. An operator allow-list ([`AddressPolicy::new`]) lets chosen networks (CIDRs) and host
//! names through; `journeys dev` allows loopback for its demo sink.
//!
//! The rule is enforced when a connection is made, on the addresses it connects to: the
//! [`PolicyResolver`] resolves a host name once per connection, checks every address it gets
//! and hands only those to the connector, so a name cannot be re-resolved to something else
//! between the check and the connect (DNS rebinding). Literal IP hosts (also written in
//! decimal, octal or hex, which the resolver normalises) are checked the same way.
//! [`AddressPolicy::check_url`] is the early check the control plane runs on create and
//! update, on what the URL alone shows.

use std::fmt;
use std::future::Future;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use hyper_util::client::legacy::connect::dns::Name;

/// A network on the allow-list: an address and a prefix length.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Cidr {
    network: IpAddr,
    prefix: u8,
}

impl Cidr {
    fn parse(text: &str) -> Option<Cidr> {
        let (addr, prefix) = match text.split_once('/') {
            Some((addr, prefix)) => (addr, Some(prefix)),
            None => (text, None),
        };
        let network: IpAddr = addr.trim().parse().ok()?;
        let max = if network.is_ipv4() { 32 } else { 128 };
        let prefix = match prefix {
            Some(p) => p.trim().parse::<u8>().ok().filter(|p| *p <= max)?,
            None => max,
        };
        Some(Cidr { network, prefix })
    }

    fn contains(&self, ip: IpAddr) -> bool {
        match (self.network, ip) {
            (IpAddr::V4(net), IpAddr::V4(ip)) => {
                let mask = u32::MAX
                    .checked_shl(32 - u32::from(self.prefix))
                    .unwrap_or(0);
                u32::from(net) & mask == u32::from(ip) & mask
            }
            (IpAddr::V6(net), IpAddr::V6(ip)) => {
                let mask = u128::MAX
                    .checked_shl(128 - u32::from(self.prefix))
                    .unwrap_or(0);
                u128::from(net) & mask == u128::from(ip) & mask
            }
            _ => false,
        }
    }
}

impl fmt::Display for Cidr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.network, self.prefix)
    }
}

/// Which destination addresses webhooks may reach. Cheap to clone.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AddressPolicy {
    inner: Arc<Allowed>,
}

#[derive(Debug, Default, PartialEq, Eq)]
struct Allowed {
    networks: Vec<Cidr>,
    /// Lower-case host names, without a trailing dot: any address they resolve to is allowed.
    hosts: Vec<String>,
}

/// The allow-list of `journeys dev`: loopback, where its demo sink listens.
pub const LOOPBACK_ALLOW_LIST: &[&str] = &["127.0.0.0/8", "::1/128"];

impl AddressPolicy {
    /// Global addresses only, plus the networks and host names of `allow`: each entry a CIDR
    /// (`10.0.0.0/8`), an IP address (`10.1.2.3`) or a host name (`hooks.internal`).
    ///
    /// # Errors
    /// The first entry that is none of these, with why.
    pub fn new<S: AsRef<str>>(allow: &[S]) -> Result<AddressPolicy, String> {
        let mut allowed = Allowed::default();
        for entry in allow {
            let entry = entry.as_ref().trim();
            if entry.is_empty() {
                continue;
            }
            if let Some(cidr) = Cidr::parse(entry) {
                allowed.networks.push(cidr);
            } else if entry.contains('/') || entry.parse::<IpAddr>().is_ok() {
                return Err(format!(
                    "'{entry}' is not a valid CIDR (address/prefix, e.g. 10.0.0.0/8)"
                ));
            } else if is_host_name(entry) {
                allowed
                    .hosts
                    .push(entry.trim_end_matches('.').to_ascii_lowercase());
            } else {
                return Err(format!(
                    "'{entry}' is neither a CIDR, an IP address nor a host name"
                ));
            }
        }
        Ok(AddressPolicy {
            inner: Arc::new(allowed),
        })
    }

    /// Global addresses and loopback (`journeys dev`, tests with local sinks).
    #[must_use]
    pub fn allow_loopback() -> AddressPolicy {
        // The entries are constants that parse.
        AddressPolicy::new(LOOPBACK_ALLOW_LIST).unwrap_or_default()
    }

    /// Whether connections to `ip` are allowed; `Err` says why not.
    ///
    /// # Errors
    /// The kind of address that is refused, e.g. "127.0.0.1 is a loopback address".
    pub fn check_ip(&self, ip: IpAddr) -> Result<(), AddressDenied> {
        if self.inner.networks.iter().any(|n| n.contains(ip)) {
            return Ok(());
        }
        match non_global(ip) {
            None => Ok(()),
            Some(kind) => Err(AddressDenied { ip, kind }),
        }
    }

    /// Whether `host` (a host name) is on the allow-list, so that any address it resolves to
    /// is allowed.
    fn allows_host(&self, host: &str) -> bool {
        let host = host.trim_end_matches('.');
        self.inner
            .hosts
            .iter()
            .any(|h| h.eq_ignore_ascii_case(host))
    }

    /// The early check of a destination URL, on what it shows without resolving: a literal
    /// IP host in any form (`http://2130706433/` is 127.0.0.1), and `localhost` names.
    ///
    /// # Errors
    /// Why the URL's host is refused.
    pub fn check_url(&self, url: &url::Url) -> Result<(), String> {
        match url.host() {
            Some(url::Host::Ipv4(ip)) => self.check_ip(IpAddr::V4(ip)).map_err(|e| e.to_string()),
            Some(url::Host::Ipv6(ip)) => self.check_ip(IpAddr::V6(ip)).map_err(|e| e.to_string()),
            Some(url::Host::Domain(name)) => {
                let lower = name.trim_end_matches('.').to_ascii_lowercase();
                let loopback_name = lower == "localhost" || lower.ends_with(".localhost");
                if !loopback_name || self.allows_host(name) {
                    return Ok(());
                }
                self.check_ip(IpAddr::V4(Ipv4Addr::LOCALHOST))
                    .and_then(|()| self.check_ip(IpAddr::V6(Ipv6Addr::LOCALHOST)))
                    .map_err(|_| format!("{name} names this machine (loopback)"))
            }
            None => Err("the URL has no host".to_owned()),
        }
    }

    /// Resolves `host` and checks every address: all of them, or why not.
    ///
    /// # Errors
    /// [`ResolveError::Denied`] when any address is refused (nothing is connected then),
    /// [`ResolveError::Lookup`] when the name does not resolve.
    pub async fn resolve(&self, host: &str) -> Result<Vec<SocketAddr>, ResolveError> {
        let addrs: Vec<SocketAddr> = tokio::net::lookup_host((host, 0))
            .await
            .map_err(|e| ResolveError::Lookup(format!("{host}: {e}")))?
            .collect();
        if addrs.is_empty() {
            return Err(ResolveError::Lookup(format!("{host}: no addresses")));
        }
        if !self.allows_host(host) {
            for addr in &addrs {
                self.check_ip(addr.ip())
                    .map_err(|denied| ResolveError::Denied(format!("{host}: {denied}")))?;
            }
        }
        Ok(addrs)
    }
}

/// An address the policy refuses, and what kind it is.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "{ip} is {kind} address, which destinations may not reach unless the operator allows it (destination_allow)"
)]
pub struct AddressDenied {
    pub ip: IpAddr,
    /// E.g. "a loopback".
    pub kind: &'static str,
}

/// Why a host name gave no address to connect to.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ResolveError {
    /// It resolved to an address the policy refuses.
    #[error("destination address refused: {0}")]
    Denied(String),
    /// It did not resolve.
    #[error("cannot resolve {0}")]
    Lookup(String),
}

/// What kind of non-global address `ip` is, or `None` for a global one.
fn non_global(ip: IpAddr) -> Option<&'static str> {
    match ip {
        IpAddr::V4(ip) => non_global_v4(ip),
        IpAddr::V6(ip) => non_global_v6(ip),
    }
}

fn non_global_v4(ip: Ipv4Addr) -> Option<&'static str> {
    let [a, b, c, _] = ip.octets();
    let kind = match (a, b, c) {
        (0, _, _) => "an unspecified (this-network)",
        (127, _, _) => "a loopback",
        (10, _, _) | (192, 168, _) => "a private",
        (172, b, _) if (16..32).contains(&b) => "a private",
        (169, 254, _) => "a link-local",
        (100, b, _) if (64..128).contains(&b) => "a shared (carrier-grade NAT)",
        (192, 0, 0) => "an IETF protocol",
        (192, 0, 2) | (198, 51, 100) | (203, 0, 113) => "a documentation",
        (198, 18 | 19, _) => "a benchmarking",
        (224..=239, _, _) => "a multicast",
        (240..=255, _, _) => "a reserved (or broadcast)",
        _ => return None,
    };
    Some(kind)
}

fn non_global_v6(ip: Ipv6Addr) -> Option<&'static str> {
    if ip.is_unspecified() {
        return Some("an unspecified");
    }
    if ip.is_loopback() {
        return Some("a loopback");
    }
    // Addresses that carry an IPv4 address are judged by it.
    if let Some(v4) = ip.to_ipv4_mapped() {
        return non_global_v4(v4);
    }
    let segments = ip.segments();
    let embedded = |hi: u16, lo: u16| {
        let [a, b] = hi.to_be_bytes();
        let [c, d] = lo.to_be_bytes();
        Ipv4Addr::new(a, b, c, d)
    };
    match segments {
        // IPv4-compatible (deprecated), NAT64, 6to4
        [0, 0, 0, 0, 0, 0, hi, lo] | [0x64, 0xff9b, 0, 0, 0, 0, hi, lo] => {
            return non_global_v4(embedded(hi, lo));
        }
        [0x2002, hi, lo, ..] => return non_global_v4(embedded(hi, lo)),
        _ => {}
    }
    let first = segments[0];
    let kind = match first {
        _ if first & 0xfe00 == 0xfc00 => "a private (unique local)",
        _ if first & 0xffc0 == 0xfe80 => "a link-local",
        _ if first & 0xffc0 == 0xfec0 => "a site-local",
        _ if first & 0xff00 == 0xff00 => "a multicast",
        0x2001 if segments[1] == 0x0db8 => "a documentation",
        // 2001::/23: IETF protocol assignments (Teredo among them)
        0x2001 if segments[1] < 0x0200 => "an IETF protocol",
        0x0100 if segments[1..4] == [0, 0, 0] => "a discard-only",
        _ => return None,
    };
    Some(kind)
}

/// Whether `text` is a syntactically valid DNS host name.
fn is_host_name(text: &str) -> bool {
    let text = text.trim_end_matches('.');
    !text.is_empty()
        && text.len() <= 253
        && text.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && label
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-')
                && !label.starts_with('-')
                && !label.ends_with('-')
        })
}

/// The webhook client's resolver: [`AddressPolicy::resolve`] as the connector's DNS step, so
/// the connector only ever gets checked addresses.
#[derive(Debug, Clone)]
pub(crate) struct PolicyResolver {
    pub policy: AddressPolicy,
}

impl tower_service::Service<Name> for PolicyResolver {
    type Response = std::vec::IntoIter<SocketAddr>;
    type Error = ResolveError;
    type Future =
        Pin<Box<dyn Future<Output = Result<Self::Response, ResolveError>> + Send + 'static>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), ResolveError>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, name: Name) -> Self::Future {
        let policy = self.policy.clone();
        Box::pin(async move {
            policy
                .resolve(name.as_str())
                .await
                .map(IntoIterator::into_iter)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn denied(policy: &AddressPolicy, ip: &str) -> Option<&'static str> {
        policy.check_ip(ip.parse().unwrap()).err().map(|e| e.kind)
    }

    #[test]
    fn non_global_addresses_are_refused_by_default() {
        let policy = AddressPolicy::default();
        for (ip, kind) in [
            ("127.0.0.1", "a loopback"),
            ("127.1.2.3", "a loopback"),
            ("0.0.0.0", "an unspecified (this-network)"),
            ("10.0.0.1", "a private"),
            ("172.16.0.1", "a private"),
            ("172.31.255.255", "a private"),
            ("192.168.1.1", "a private"),
            ("169.254.169.254", "a link-local"),
            ("100.64.0.1", "a shared (carrier-grade NAT)"),
            ("224.0.0.1", "a multicast"),
            ("255.255.255.255", "a reserved (or broadcast)"),
            ("::", "an unspecified"),
            ("::1", "a loopback"),
            ("fc00::1", "a private (unique local)"),
            ("fd12:3456::1", "a private (unique local)"),
            ("fe80::1", "a link-local"),
            ("::ffff:127.0.0.1", "a loopback"),
            ("::ffff:169.254.169.254", "a link-local"),
            ("64:ff9b::a9fe:a9fe", "a link-local"),
            ("2002:7f00:1::", "a loopback"),
            ("2001:db8::1", "a documentation"),
            ("ff02::1", "a multicast"),
        ] {
            assert_eq!(denied(&policy, ip), Some(kind), "{ip}");
        }
        for ip in [
            "93.184.216.34",
            "172.32.0.1",
            "8.8.8.8",
            "2606:4700::1111",
            "::ffff:8.8.8.8",
        ] {
            assert_eq!(denied(&policy, ip), None, "{ip}");
        }
    }

    #[test]
    fn the_allow_list_lets_networks_and_hosts_through() {
        let policy =
            AddressPolicy::new(&["10.1.0.0/16", "192.168.7.7", "Hooks.Internal."]).unwrap();
        assert_eq!(denied(&policy, "10.1.200.3"), None);
        assert_eq!(denied(&policy, "10.2.0.1"), Some("a private"));
        assert_eq!(denied(&policy, "192.168.7.7"), None);
        assert_eq!(denied(&policy, "192.168.7.8"), Some("a private"));
        assert!(policy.allows_host("hooks.internal"));
        assert!(!policy.allows_host("other.internal"));
        let loopback = AddressPolicy::allow_loopback();
        assert_eq!(denied(&loopback, "127.0.0.1"), None);
        assert_eq!(denied(&loopback, "::1"), None);
        assert_eq!(denied(&loopback, "169.254.169.254"), Some("a link-local"));
    }

    #[test]
    fn bad_allow_list_entries_are_named() {
        for (entry, why) in [
            ("10.0.0.0/33", "not a valid CIDR"),
            ("nope/8", "not a valid CIDR"),
            ("under_score.example", "neither a CIDR"),
        ] {
            let err = AddressPolicy::new(&[entry]).unwrap_err();
            assert!(err.contains(entry) && err.contains(why), "{entry}: {err}");
        }
    }

    #[test]
    fn urls_with_ip_hosts_in_any_form_are_checked() {
        let policy = AddressPolicy::default();
        for url in [
            "http://2130706433/x",
            "http://0x7f.1/",
            "http://017700000001/",
            "http://127.1/",
            "http://[::1]:8080/",
            "http://0.0.0.0/",
            "http://169.254.169.254/latest/meta-data/",
            "http://localhost:8088/dev/sink",
            "http://sink.LOCALHOST./",
        ] {
            let parsed = url::Url::parse(url).unwrap();
            assert!(policy.check_url(&parsed).is_err(), "{url}");
        }
        let err = policy
            .check_url(&url::Url::parse("http://2130706433/").unwrap())
            .unwrap_err();
        assert!(err.starts_with("127.0.0.1 is a loopback address"), "{err}");
        assert!(
            policy
                .check_url(&url::Url::parse("https://hooks.example.com/in").unwrap())
                .is_ok()
        );
        let loopback = AddressPolicy::allow_loopback();
        assert!(
            loopback
                .check_url(&url::Url::parse("http://localhost:8088/dev/sink").unwrap())
                .is_ok()
        );
    }

    #[tokio::test]
    async fn names_are_resolved_and_every_address_checked() {
        let policy = AddressPolicy::default();
        let err = policy.resolve("localhost").await.unwrap_err();
        assert!(
            matches!(&err, ResolveError::Denied(m) if m.starts_with("localhost: ") && m.contains("loopback")),
            "{err}"
        );
        // Numeric forms a resolver reads as addresses are caught on what they resolve to.
        let err = policy.resolve("2130706433").await.unwrap_err();
        assert!(matches!(err, ResolveError::Denied(_)), "{err}");
        let allowed = AddressPolicy::new(&["localhost"]).unwrap();
        assert!(!allowed.resolve("localhost").await.unwrap().is_empty());
    }
}
