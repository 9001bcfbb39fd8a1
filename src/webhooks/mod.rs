//! Outgoing webhooks: the events, endpoint validation, Standard Webhooks
//! signatures, and the server-side request forgery rule. Events are written
//! to an outbox in the transaction of the change that causes them
//! (`store::work::emit`); `worker` delivers them.

pub mod connect;
pub mod worker;

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use base64::Engine;
use ring::hmac;
use ring::rand::{SecureRandom, SystemRandom};

/// Every event type a webhook can subscribe to.
pub const EVENTS: &[&str] = &[
    "key.created",
    "key.updated",
    "key.revoked",
    "key.rotated",
    "key.leaked",
    "member.added",
    "member.removed",
    "billing.plan_changed",
];

pub use crate::store::work::TEST_EVENT;

/// A signing secret: `whsec_` + base64 of 32 random bytes.
pub fn new_secret() -> String {
    let mut bytes = [0u8; 32];
    SystemRandom::new()
        .fill(&mut bytes)
        .expect("the system CSPRNG is available");
    format!(
        "whsec_{}",
        base64::engine::general_purpose::STANDARD.encode(bytes)
    )
}

/// The Standard Webhooks signature: `v1,` + base64 of HMAC-SHA256 over
/// `{id}.{timestamp}.{body}`, keyed with the base64-decoded part of the secret.
pub fn sign(secret: &str, id: &str, timestamp: i64, body: &str) -> Option<String> {
    let key = base64::engine::general_purpose::STANDARD
        .decode(secret.strip_prefix("whsec_")?)
        .ok()?;
    let key = hmac::Key::new(hmac::HMAC_SHA256, &key);
    let tag = hmac::sign(&key, format!("{id}.{timestamp}.{body}").as_bytes());
    Some(format!(
        "v1,{}",
        base64::engine::general_purpose::STANDARD.encode(tag.as_ref())
    ))
}

/// Whether a webhook may be sent to an address: the verdict of the most
/// specific row of [`IPV4_SPECIAL`] / [`IPV6_SPECIAL`] that contains it
/// (IANA's IPv4 and IPv6 Special-Purpose Address Registries, column
/// "Globally Reachable"). An address in no row is globally reachable (IPv4;
/// for IPv6 the `::/0` and `2000::/3` rows say that only global unicast is).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Reach {
    /// "Globally Reachable: True".
    Global,
    /// "False", or "N/A" (deprecated or not a unicast destination): refused.
    NotGlobal,
    /// IPv4 written inside IPv6 (6to4, the NAT64 well-known prefix): the
    /// verdict of the IPv4 address it carries.
    Embedded(Embedding),
}

/// Where an IPv6 prefix carries an IPv4 address.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Embedding {
    /// 6to4 (RFC 3056): bits 16-47.
    SixToFour,
    /// NAT64 (RFC 6052) with a /96 prefix: the last 32 bits.
    Last32,
}

/// One registry row: a prefix, its length, its name and verdict.
#[derive(Clone, Copy, Debug)]
pub struct Row<T> {
    pub prefix: T,
    pub len: u8,
    pub name: &'static str,
    pub reach: Reach,
}

const fn v4(a: u8, b: u8, c: u8, d: u8, len: u8, name: &'static str, reach: Reach) -> Row<u32> {
    Row {
        prefix: u32::from_be_bytes([a, b, c, d]),
        len,
        name,
        reach,
    }
}

const fn v6(segments: [u16; 8], len: u8, name: &'static str, reach: Reach) -> Row<u128> {
    let mut prefix = 0u128;
    let mut i = 0;
    while i < 8 {
        prefix = (prefix << 16) | segments[i] as u128;
        i += 1;
    }
    Row {
        prefix,
        len,
        name,
        reach,
    }
}

use Reach::{Embedded, Global, NotGlobal};

/// IANA IPv4 Special-Purpose Address Registry (RFC 6890), every row, plus
/// multicast (RFC 5771), which the registry leaves out but which is never
/// a unicast webhook target.
pub const IPV4_SPECIAL: &[Row<u32>] = &[
    v4(0, 0, 0, 0, 8, "\"this network\" (RFC 791)", NotGlobal),
    v4(
        0,
        0,
        0,
        0,
        32,
        "\"this host on this network\" (RFC 1122)",
        NotGlobal,
    ),
    v4(10, 0, 0, 0, 8, "private-use (RFC 1918)", NotGlobal),
    v4(
        100,
        64,
        0,
        0,
        10,
        "shared address space, carrier-grade NAT (RFC 6598)",
        NotGlobal,
    ),
    v4(127, 0, 0, 0, 8, "loopback (RFC 1122)", NotGlobal),
    v4(
        169,
        254,
        0,
        0,
        16,
        "link-local, cloud metadata (RFC 3927)",
        NotGlobal,
    ),
    v4(172, 16, 0, 0, 12, "private-use (RFC 1918)", NotGlobal),
    v4(
        192,
        0,
        0,
        0,
        24,
        "IETF protocol assignments (RFC 6890)",
        NotGlobal,
    ),
    v4(
        192,
        0,
        0,
        0,
        29,
        "IPv4 service continuity prefix (RFC 7335)",
        NotGlobal,
    ),
    v4(192, 0, 0, 8, 32, "IPv4 dummy address (RFC 7600)", NotGlobal),
    v4(
        192,
        0,
        0,
        9,
        32,
        "Port Control Protocol anycast (RFC 7723)",
        Global,
    ),
    v4(192, 0, 0, 10, 32, "TURN anycast (RFC 8155)", Global),
    v4(
        192,
        0,
        0,
        170,
        32,
        "NAT64/DNS64 discovery (RFC 7050)",
        NotGlobal,
    ),
    v4(
        192,
        0,
        0,
        171,
        32,
        "NAT64/DNS64 discovery (RFC 7050)",
        NotGlobal,
    ),
    v4(
        192,
        0,
        2,
        0,
        24,
        "documentation, TEST-NET-1 (RFC 5737)",
        NotGlobal,
    ),
    v4(192, 31, 196, 0, 24, "AS112-v4 (RFC 7535)", Global),
    v4(192, 52, 193, 0, 24, "AMT (RFC 7450)", Global),
    v4(
        192,
        88,
        99,
        0,
        24,
        "deprecated 6to4 relay anycast (RFC 7526)",
        NotGlobal,
    ),
    v4(192, 168, 0, 0, 16, "private-use (RFC 1918)", NotGlobal),
    v4(
        192,
        175,
        48,
        0,
        24,
        "direct delegation AS112 service (RFC 7534)",
        Global,
    ),
    v4(198, 18, 0, 0, 15, "benchmarking (RFC 2544)", NotGlobal),
    v4(
        198,
        51,
        100,
        0,
        24,
        "documentation, TEST-NET-2 (RFC 5737)",
        NotGlobal,
    ),
    v4(
        203,
        0,
        113,
        0,
        24,
        "documentation, TEST-NET-3 (RFC 5737)",
        NotGlobal,
    ),
    v4(224, 0, 0, 0, 4, "multicast (RFC 5771)", NotGlobal),
    v4(240, 0, 0, 0, 4, "reserved (RFC 1112)", NotGlobal),
    v4(
        255,
        255,
        255,
        255,
        32,
        "limited broadcast (RFC 919)",
        NotGlobal,
    ),
];

/// IANA IPv6 Special-Purpose Address Registry (RFC 6890), every row, plus
/// the IPv6 address space itself (only 2000::/3 is global unicast;
/// multicast ff00::/8 is never a webhook target) and the deprecated
/// IPv4-compatible block ::/96 (RFC 4291), which no one may use.
pub const IPV6_SPECIAL: &[Row<u128>] = &[
    v6(
        [0; 8],
        0,
        "not allocated for global unicast (IANA IPv6 address space)",
        NotGlobal,
    ),
    v6([0x2000, 0, 0, 0, 0, 0, 0, 0], 3, "global unicast", Global),
    v6([0; 8], 128, "unspecified (RFC 4291)", NotGlobal),
    v6(
        [0, 0, 0, 0, 0, 0, 0, 1],
        128,
        "loopback (RFC 4291)",
        NotGlobal,
    ),
    v6(
        [0; 8],
        96,
        "deprecated IPv4-compatible (RFC 4291)",
        NotGlobal,
    ),
    v6(
        [0, 0, 0, 0, 0, 0xffff, 0, 0],
        96,
        "IPv4-mapped (RFC 4291)",
        NotGlobal,
    ),
    v6(
        [0x64, 0xff9b, 0, 0, 0, 0, 0, 0],
        96,
        "IPv4/IPv6 translation, well-known NAT64 prefix (RFC 6052)",
        Embedded(Embedding::Last32),
    ),
    v6(
        [0x64, 0xff9b, 1, 0, 0, 0, 0, 0],
        48,
        "IPv4/IPv6 translation, local-use NAT64 (RFC 8215)",
        NotGlobal,
    ),
    v6(
        [0x100, 0, 0, 0, 0, 0, 0, 0],
        64,
        "discard-only (RFC 6666)",
        NotGlobal,
    ),
    v6(
        [0x100, 0, 0, 1, 0, 0, 0, 0],
        64,
        "dummy IPv6 prefix (RFC 9780)",
        NotGlobal,
    ),
    v6(
        [0x2001, 0, 0, 0, 0, 0, 0, 0],
        23,
        "IETF protocol assignments (RFC 2928)",
        NotGlobal,
    ),
    v6(
        [0x2001, 0, 0, 0, 0, 0, 0, 0],
        32,
        "Teredo (RFC 4380)",
        NotGlobal,
    ),
    v6(
        [0x2001, 1, 0, 0, 0, 0, 0, 1],
        128,
        "Port Control Protocol anycast (RFC 7723)",
        Global,
    ),
    v6(
        [0x2001, 1, 0, 0, 0, 0, 0, 2],
        128,
        "TURN anycast (RFC 8155)",
        Global,
    ),
    v6(
        [0x2001, 1, 0, 0, 0, 0, 0, 3],
        128,
        "DNS-SD service registration anycast (RFC 9665)",
        Global,
    ),
    v6(
        [0x2001, 2, 0, 0, 0, 0, 0, 0],
        48,
        "benchmarking (RFC 5180)",
        NotGlobal,
    ),
    v6([0x2001, 3, 0, 0, 0, 0, 0, 0], 32, "AMT (RFC 7450)", Global),
    v6(
        [0x2001, 4, 0x112, 0, 0, 0, 0, 0],
        48,
        "AS112-v6 (RFC 7535)",
        Global,
    ),
    v6(
        [0x2001, 0x10, 0, 0, 0, 0, 0, 0],
        28,
        "deprecated, previously ORCHID (RFC 4843)",
        NotGlobal,
    ),
    v6(
        [0x2001, 0x20, 0, 0, 0, 0, 0, 0],
        28,
        "ORCHIDv2 (RFC 7343)",
        Global,
    ),
    v6(
        [0x2001, 0x30, 0, 0, 0, 0, 0, 0],
        28,
        "drone remote ID entity tags (RFC 9374)",
        Global,
    ),
    v6(
        [0x2001, 0xdb8, 0, 0, 0, 0, 0, 0],
        32,
        "documentation (RFC 3849)",
        NotGlobal,
    ),
    v6(
        [0x2002, 0, 0, 0, 0, 0, 0, 0],
        16,
        "6to4 (RFC 3056)",
        Embedded(Embedding::SixToFour),
    ),
    v6(
        [0x2620, 0x4f, 0x8000, 0, 0, 0, 0, 0],
        48,
        "direct delegation AS112 service (RFC 7534)",
        Global,
    ),
    v6(
        [0x3fff, 0, 0, 0, 0, 0, 0, 0],
        20,
        "documentation (RFC 9637)",
        NotGlobal,
    ),
    v6(
        [0x5f00, 0, 0, 0, 0, 0, 0, 0],
        16,
        "segment routing SIDs (RFC 9602)",
        NotGlobal,
    ),
    v6(
        [0xfc00, 0, 0, 0, 0, 0, 0, 0],
        7,
        "unique-local (RFC 4193)",
        NotGlobal,
    ),
    v6(
        [0xfe80, 0, 0, 0, 0, 0, 0, 0],
        10,
        "link-local unicast (RFC 4291)",
        NotGlobal,
    ),
    v6(
        [0xff00, 0, 0, 0, 0, 0, 0, 0],
        8,
        "multicast (RFC 4291)",
        NotGlobal,
    ),
];

fn most_specific<T>(rows: &[Row<T>], contains: impl Fn(&Row<T>) -> bool) -> Option<&Row<T>> {
    rows.iter().filter(|r| contains(r)).max_by_key(|r| r.len)
}

fn mask<const BITS: u32>(len: u8) -> u128 {
    if len == 0 {
        0
    } else {
        (u128::MAX << (128 - len as u32)) >> (128 - BITS)
    }
}

/// The registry row deciding `ip`, if any.
fn row_v4(ip: Ipv4Addr) -> Option<&'static Row<u32>> {
    let bits = u32::from(ip);
    most_specific(IPV4_SPECIAL, |r| {
        let m = mask::<32>(r.len) as u32;
        bits & m == r.prefix & m
    })
}

fn row_v6(ip: Ipv6Addr) -> Option<&'static Row<u128>> {
    let bits = u128::from(ip);
    most_specific(IPV6_SPECIAL, |r| {
        let m = mask::<128>(r.len);
        bits & m == r.prefix & m
    })
}

/// Why `ip` may not be a webhook target outside local mode: the name of
/// the registry row that makes it not globally reachable. `None` = allowed.
pub fn refusal(ip: IpAddr) -> Option<&'static str> {
    match ip {
        IpAddr::V4(v4) => match row_v4(v4) {
            Some(row) if row.reach != Global => Some(row.name),
            _ => None,
        },
        IpAddr::V6(v6) => {
            let row = row_v6(v6)?;
            match row.reach {
                Global => None,
                NotGlobal => Some(row.name),
                Embedded(how) => {
                    let bits = u128::from(v6);
                    let inner = match how {
                        Embedding::SixToFour => (bits >> 80) as u32,
                        Embedding::Last32 => bits as u32,
                    };
                    refusal(IpAddr::V4(Ipv4Addr::from(inner)))
                }
            }
        }
    }
}

/// Whether a webhook may not target `ip` (outside local mode, unless
/// `webhooks.allow_private_targets`): see [`refusal`].
pub fn is_forbidden_target(ip: IpAddr) -> bool {
    refusal(ip).is_some()
}

/// Checks an endpoint URL: absolute http(s), a host, at most 2048
/// characters, no credentials; and, unless `allow_private`, no loopback
/// name and no literal address that [`refusal`] refuses. Names are checked
/// again on the addresses actually connected to at delivery time (so a name
/// cannot be re-pointed at a private address).
pub fn validate_url(raw: &str, allow_private: bool) -> Result<url::Url, String> {
    if raw.len() > 2048 {
        return Err("must be at most 2048 characters".into());
    }
    let url = url::Url::parse(raw).map_err(|_| "must be an absolute http(s) URL".to_string())?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err("must use http or https".into());
    }
    if !url.username().is_empty() || url.password().is_some() {
        return Err("must not contain credentials".into());
    }
    let host = url.host().ok_or("must have a host")?;
    if !allow_private {
        let literal = match host {
            url::Host::Ipv4(ip) => IpAddr::V4(ip),
            url::Host::Ipv6(ip) => IpAddr::V6(ip),
            url::Host::Domain(d) => {
                let name = d.trim_end_matches('.');
                if name.eq_ignore_ascii_case("localhost")
                    || name.to_ascii_lowercase().ends_with(".localhost")
                {
                    return Err("must not target a loopback name".into());
                }
                return Ok(url);
            }
        };
        if let Some(why) = refusal(literal) {
            return Err(format!(
                "must not target an address that is not globally reachable ({why})"
            ));
        }
    }
    Ok(url)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signature_follows_the_standard_webhooks_example() {
        // The example of the Standard Webhooks specification.
        let sig = sign(
            "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw",
            "msg_p5jXN8AQM9LWM0D4loKWxJek",
            1614265330,
            r#"{"test": 2432232314}"#,
        )
        .unwrap();
        assert_eq!(sig, "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=");
        assert!(sign("no-prefix", "id", 1, "").is_none());
    }

    /// One case per registry row (and the embedded IPv4 forms), with the
    /// row's name, or `None` for an address that may be targeted.
    #[test]
    fn the_rule_follows_the_registries() {
        let cases: &[(&str, Option<&str>)] = &[
            ("0.1.2.3", Some("this network")),
            ("0.0.0.0", Some("this host")),
            ("10.1.2.3", Some("private-use")),
            ("100.64.0.1", Some("shared address space")),
            ("100.127.255.255", Some("shared address space")),
            ("100.128.0.1", None),
            ("127.0.0.1", Some("loopback")),
            ("127.255.0.9", Some("loopback")),
            ("169.254.169.254", Some("link-local")),
            ("172.16.0.1", Some("private-use")),
            ("172.31.255.255", Some("private-use")),
            ("172.32.0.1", None),
            ("192.0.0.1", Some("service continuity")),
            ("192.0.0.8", Some("dummy")),
            ("192.0.0.9", None),
            ("192.0.0.10", None),
            ("192.0.0.11", Some("IETF protocol assignments")),
            ("192.0.0.170", Some("NAT64/DNS64")),
            ("192.0.2.7", Some("TEST-NET-1")),
            ("192.31.196.1", None),
            ("192.52.193.1", None),
            ("192.88.99.1", Some("6to4 relay")),
            ("192.168.1.1", Some("private-use")),
            ("192.175.48.1", None),
            ("198.18.0.1", Some("benchmarking")),
            ("198.19.255.255", Some("benchmarking")),
            ("198.51.100.1", Some("TEST-NET-2")),
            ("203.0.113.1", Some("TEST-NET-3")),
            ("224.0.0.251", Some("multicast")),
            ("240.0.0.1", Some("reserved")),
            ("255.255.255.255", Some("broadcast")),
            ("93.184.216.34", None),
            ("1.1.1.1", None),
            ("::", Some("unspecified")),
            ("::1", Some("loopback")),
            ("::127.0.0.1", Some("IPv4-compatible")),
            ("::8.8.8.8", Some("IPv4-compatible")),
            ("::ffff:127.0.0.1", Some("IPv4-mapped")),
            ("::ffff:93.184.216.34", Some("IPv4-mapped")),
            ("64:ff9b::10.0.0.1", Some("private-use")),
            ("64:ff9b::127.0.0.1", Some("loopback")),
            ("64:ff9b::169.254.169.254", Some("link-local")),
            ("64:ff9b::93.184.216.34", None),
            ("64:ff9b:1::93.184.216.34", Some("local-use NAT64")),
            ("100::1", Some("discard-only")),
            ("100:0:0:1::1", Some("dummy IPv6")),
            ("2001::1", Some("Teredo")),
            ("2001:1::1", None),
            ("2001:1::2", None),
            ("2001:1::3", None),
            ("2001:1::4", Some("IETF protocol assignments")),
            ("2001:2::1", Some("benchmarking")),
            ("2001:3::1", None),
            ("2001:4:112::1", None),
            ("2001:10::1", Some("ORCHID")),
            ("2001:20::1", None),
            ("2001:30::1", None),
            ("2001:db8::1", Some("documentation")),
            ("2002:7f00:1::", Some("loopback")),
            ("2002:a00:1::1", Some("private-use")),
            ("2002:a9fe:a9fe::", Some("link-local")),
            ("2002:5db8:d822::1", None),
            ("2620:4f:8000::1", None),
            ("3fff::1", Some("documentation")),
            ("5f00::1", Some("segment routing")),
            ("fc00::1", Some("unique-local")),
            ("fd12:3456::1", Some("unique-local")),
            ("fe80::1", Some("link-local")),
            ("febf::1", Some("link-local")),
            ("ff02::1", Some("multicast")),
            ("4000::1", Some("not allocated")),
            ("2606:4700::1111", None),
            ("2a00:1450:4001::200e", None),
        ];
        for (ip, expected) in cases {
            let got = refusal(ip.parse().unwrap());
            match expected {
                None => assert_eq!(got, None, "{ip}"),
                Some(part) => assert!(
                    got.is_some_and(|why| why.contains(part)),
                    "{ip}: expected {part:?}, got {got:?}"
                ),
            }
        }
    }

    #[test]
    fn endpoint_urls_are_checked_at_creation() {
        for bad in [
            "http://127.0.0.1:9/x",
            "http://2130706433/",
            "http://0x7f.1/",
            "http://localhost/x",
            "http://LOCALHOST./x",
            "http://api.localhost/x",
            "http://[::1]/",
            "http://[::ffff:10.0.0.1]/",
            "http://[64:ff9b::a9fe:a9fe]/latest/meta-data",
            "http://[2002:7f00:1::]/",
            "http://[fd00::1]/",
            "http://169.254.169.254/latest/meta-data",
        ] {
            let why = validate_url(bad, false).unwrap_err();
            assert!(why.starts_with("must not target"), "{bad}: {why}");
            assert!(
                validate_url(bad, true).is_ok(),
                "{bad} with private targets allowed"
            );
        }
        assert!(validate_url("https://hooks.acme.test/in", false).is_ok());
        assert!(validate_url("http://[2606:4700::1111]:8443/in", false).is_ok());
        assert!(validate_url("ftp://hooks.acme.test/", false).is_err());
        assert!(validate_url("https://user:pw@hooks.acme.test/", false).is_err());
        assert!(validate_url(&format!("https://a.test/{}", "x".repeat(2048)), true).is_err());
    }

    /// Every address in `row`'s range that no more specific row covers.
    fn covered_by_more_specific<T: Copy>(
        rows: &[Row<T>],
        row: &Row<T>,
        contains: impl Fn(&Row<T>) -> bool,
    ) -> bool {
        rows.iter().any(|r| r.len > row.len && contains(r))
    }

    proptest::proptest! {
        #[test]
        fn ipv4_inside_ipv6_has_the_verdict_of_the_ipv4(a: u32) {
            let v4 = Ipv4Addr::from(a);
            let plain = refusal(IpAddr::V4(v4));
            let [p, q, r, s] = v4.octets();
            let six_to_four = Ipv6Addr::new(0x2002, u16::from_be_bytes([p, q]), u16::from_be_bytes([r, s]), 0, 0, 0, 0, 1);
            proptest::prop_assert_eq!(refusal(IpAddr::V6(six_to_four)), plain);
            let nat64 = Ipv6Addr::new(0x64, 0xff9b, 0, 0, 0, 0, u16::from_be_bytes([p, q]), u16::from_be_bytes([r, s]));
            proptest::prop_assert_eq!(refusal(IpAddr::V6(nat64)), plain);
            // Mapped, compatible and local-use NAT64 forms are refused whatever they carry.
            proptest::prop_assert!(is_forbidden_target(IpAddr::V6(v4.to_ipv6_mapped())));
            proptest::prop_assert!(is_forbidden_target(IpAddr::V6(Ipv6Addr::new(0x64, 0xff9b, 1, 0, 0, 0, u16::from_be_bytes([p, q]), u16::from_be_bytes([r, s])))));
            if a > 1 {
                proptest::prop_assert!(is_forbidden_target(IpAddr::V6(v4.to_ipv6_compatible())));
            }
        }

        #[test]
        fn what_std_calls_local_is_refused(a: u32, b: u128) {
            let v4 = Ipv4Addr::from(a);
            if v4.is_private() || v4.is_loopback() || v4.is_link_local() || v4.is_unspecified()
                || v4.is_broadcast() || v4.is_documentation() || v4.is_multicast()
            {
                proptest::prop_assert!(is_forbidden_target(IpAddr::V4(v4)), "{}", v4);
            }
            let v6 = Ipv6Addr::from(b);
            if v6.is_loopback() || v6.is_unspecified() || v6.is_multicast()
                || v6.is_unique_local() || v6.is_unicast_link_local()
            {
                proptest::prop_assert!(is_forbidden_target(IpAddr::V6(v6)), "{}", v6);
            }
        }

        /// Any address inside a row and inside no more specific row gets
        /// that row's verdict.
        #[test]
        fn each_row_decides_its_range(index in 0..IPV4_SPECIAL.len(), host4: u32, index6 in 0..IPV6_SPECIAL.len(), host6: u128) {
            let row = &IPV4_SPECIAL[index];
            let m = mask::<32>(row.len) as u32;
            let ip = Ipv4Addr::from((row.prefix & m) | (host4 & !m));
            let bits = u32::from(ip);
            if !covered_by_more_specific(IPV4_SPECIAL, row, |r| { let rm = mask::<32>(r.len) as u32; bits & rm == r.prefix & rm }) {
                proptest::prop_assert_eq!(refusal(IpAddr::V4(ip)).is_none(), row.reach == Global, "{} in {}", ip, row.name);
            }
            let row = &IPV6_SPECIAL[index6];
            let m = mask::<128>(row.len);
            let ip = Ipv6Addr::from((row.prefix & m) | (host6 & !m));
            let bits = u128::from(ip);
            if !covered_by_more_specific(IPV6_SPECIAL, row, |r| { let rm = mask::<128>(r.len); bits & rm == r.prefix & rm }) {
                match row.reach {
                    Global => proptest::prop_assert!(refusal(IpAddr::V6(ip)).is_none(), "{} in {}", ip, row.name),
                    NotGlobal => proptest::prop_assert_eq!(refusal(IpAddr::V6(ip)), Some(row.name)),
                    Embedded(_) => {}
                }
            }
        }

        #[test]
        fn validate_url_never_panics(raw in "\\PC{0,80}", allow: bool) {
            let _ = validate_url(&raw, allow);
            let _ = validate_url(&format!("http://{raw}/"), allow);
        }
    }
}
