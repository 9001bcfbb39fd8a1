//! Who a per-address throttle counts (SPEC section 6): an IPv4 client by
//! its address, an IPv6 client by its /64 network, and an IPv4-mapped IPv6
//! address as the IPv4 address it carries. One customer line or host is
//! given a whole /64, so counting IPv6 addresses one by one would let a
//! single client spread its attempts over as many addresses as it likes.
//!
//! Every per-address throttle (code attempts, leak reports, the send-code
//! limit per client address) keys its count by [`ThrottleSubject`].

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// The client a per-address throttle counts. Its text form (`203.0.113.9`,
/// `2001:db8:1:2::/64`) is what the stores keep.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ThrottleSubject {
    V4(Ipv4Addr),
    /// The /64 network: the address with its last 64 bits cleared.
    V6Network(Ipv6Addr),
}

impl ThrottleSubject {
    pub fn from_ip(ip: IpAddr) -> ThrottleSubject {
        match ip.to_canonical() {
            IpAddr::V4(v4) => ThrottleSubject::V4(v4),
            IpAddr::V6(v6) => {
                ThrottleSubject::V6Network(Ipv6Addr::from(u128::from(v6) & !u128::from(u64::MAX)))
            }
        }
    }

    /// The name of this subject's count in the throttle `kind` (`code`,
    /// `leak`): `code:203.0.113.9`, `leak:2001:db8::/64`.
    pub fn bucket(&self, kind: &str) -> String {
        format!("{kind}:{self}")
    }
}

impl fmt::Display for ThrottleSubject {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ThrottleSubject::V4(v4) => write!(f, "{v4}"),
            ThrottleSubject::V6Network(net) => write!(f, "{net}/64"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn subject(ip: &str) -> String {
        ThrottleSubject::from_ip(ip.parse().unwrap()).to_string()
    }

    #[test]
    fn ipv6_clients_count_by_their_64_network() {
        assert_eq!(subject("2001:db8::1"), "2001:db8::/64");
        assert_eq!(subject("2001:db8::64"), "2001:db8::/64");
        assert_eq!(subject("2001:db8:0:0:ffff:ffff:ffff:ffff"), "2001:db8::/64");
        assert_eq!(
            subject("2001:db8:aaaa:bbbb:1:2:3:4"),
            "2001:db8:aaaa:bbbb::/64"
        );
        assert_eq!(subject("2001:db8:0:1::1"), "2001:db8:0:1::/64");
        assert_ne!(subject("2001:db8:0:1::1"), subject("2001:db8::1"));
        assert_eq!(subject("::1"), "::/64");
    }

    #[test]
    fn ipv4_clients_count_by_their_address_mapped_or_not() {
        assert_eq!(subject("203.0.113.9"), "203.0.113.9");
        assert_eq!(subject("::ffff:203.0.113.9"), "203.0.113.9");
        assert_ne!(subject("203.0.113.9"), subject("203.0.113.10"));
        assert_eq!(
            ThrottleSubject::from_ip("::ffff:10.1.2.3".parse().unwrap()),
            ThrottleSubject::V4(Ipv4Addr::new(10, 1, 2, 3))
        );
    }

    #[test]
    fn buckets_name_the_throttle_and_the_subject() {
        let v6 = ThrottleSubject::from_ip("2001:db8::86".parse().unwrap());
        assert_eq!(v6.bucket("code"), "code:2001:db8::/64");
        let v4 = ThrottleSubject::from_ip("198.51.100.7".parse().unwrap());
        assert_eq!(v4.bucket("leak"), "leak:198.51.100.7");
    }

    proptest::proptest! {
        /// Two IPv6 addresses share a count exactly when their first 64
        /// bits agree; no IPv6 subject ever equals an IPv4 one.
        #[test]
        fn one_count_per_64(a: u128, b: u128) {
            let (x, y) = (Ipv6Addr::from(a), Ipv6Addr::from(b));
            let mapped = |ip: Ipv6Addr| ip.to_ipv4_mapped().is_some();
            proptest::prop_assume!(!mapped(x) && !mapped(y));
            let same = ThrottleSubject::from_ip(x.into()) == ThrottleSubject::from_ip(y.into());
            proptest::prop_assert_eq!(same, a >> 64 == b >> 64);
            let sibling = Ipv6Addr::from((a & !u128::from(u64::MAX)) | u128::from(b as u64));
            proptest::prop_assert_eq!(
                ThrottleSubject::from_ip(x.into()),
                ThrottleSubject::from_ip(sibling.into())
            );
        }

        #[test]
        fn ipv4_counts_by_address(a: u32) {
            let v4 = Ipv4Addr::from(a);
            proptest::prop_assert_eq!(
                ThrottleSubject::from_ip(v4.into()),
                ThrottleSubject::from_ip(v4.to_ipv6_mapped().into())
            );
            proptest::prop_assert_eq!(ThrottleSubject::from_ip(v4.into()).to_string(), v4.to_string());
        }
    }
}
