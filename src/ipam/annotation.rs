//! The pod annotation value (SPEC 2): `<ip>/<subnet prefix length>` for a secondary IP,
//! `<ip>/32` for an address inside a /28 prefix. The Windows CNI parses it as a CIDR, so we accept
//! exactly what a CIDR parser would and nothing looser.

use std::net::Ipv4Addr;

use ipnet::Ipv4Net;

/// The address an annotation names, or `None` when the value is not an IPv4 CIDR.
pub fn parse_annotation(value: &str) -> Option<Ipv4Addr> {
    value.trim().parse::<Ipv4Net>().ok().map(|net| net.addr())
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
        ] {
            assert_eq!(parse_annotation(bad), None, "{bad:?}");
        }
    }
}
