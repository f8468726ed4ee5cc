//! The pod annotation value (SPEC 2): `<ip>/<subnet prefix length>` for a secondary IP,
//! `<ip>/32` for an address inside a /28 prefix. The Windows CNI parses it as a CIDR, so we accept
//! exactly what a CIDR parser would and nothing looser.

use std::net::Ipv4Addr;

/// The address an annotation names, or `None` when the value is not an IPv4 CIDR as Go's
/// `net.ParseCIDR` reads one: four decimal octets without leading zeros (ipnet's parser takes
/// `10.0.00.1`, Go's does not), `/`, and a decimal prefix length up to 32.
pub fn parse_annotation(value: &str) -> Option<Ipv4Addr> {
    let (addr, len) = value.trim().split_once('/')?;
    // std's parser rejects leading zeros, as Go's does.
    let addr = addr.parse::<Ipv4Addr>().ok()?;
    let len_ok = !len.is_empty()
        && len.bytes().all(|b| b.is_ascii_digit())
        && len.parse::<u8>().is_ok_and(|l| l <= 32);
    len_ok.then_some(addr)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_cidr_forms_the_cni_writes_and_reads() {
        assert_eq!(
            parse_annotation("10.0.37.15/19"),
            Some(Ipv4Addr::new(10, 0, 37, 15))
        );
        assert_eq!(
            parse_annotation("10.0.37.15/32"),
            Some(Ipv4Addr::new(10, 0, 37, 15))
        );
        assert_eq!(
            parse_annotation(" 10.0.0.1/24 "),
            Some(Ipv4Addr::new(10, 0, 0, 1))
        );
    }

    #[test]
    fn rejects_anything_else() {
        for bad in [
            "",
            "10.0.0.1",
            "10.0.0.1/33",
            "10.0.0/24",
            "abc",
            "::1/128",
            "10.0.0.1/-1",
            "10.0.0.1/+24",
            "10.0.0.1/",
            "10.0.0.1/24/",
        ] {
            assert_eq!(parse_annotation(bad), None, "{bad:?}");
        }
    }

    /// Found by the `annotation` fuzz target: ipnet read `1.0.00.1/24` as 1.0.0.1, which the
    /// Windows CNI (Go) rejects; a leading zero in any octet is not an address.
    #[test]
    fn annotation_with_leading_zero_octet_is_rejected() {
        for bad in [
            " 1.0.00.1/24 ",
            "010.0.0.1/19",
            "10.0.0.01/32",
            "10.00.0.1/24",
        ] {
            assert_eq!(parse_annotation(bad), None, "{bad:?}");
        }
        // Go's ParseCIDR takes leading zeros in the prefix length.
        assert_eq!(
            parse_annotation("10.0.0.1/032"),
            Some(Ipv4Addr::new(10, 0, 0, 1))
        );
    }
}
