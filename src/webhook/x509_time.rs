//! The `notAfter` of an X.509 certificate, read from its DER with a minimal walk.
//!
//! Needed for the CA only: the verifier checks a leaf's validity, but treats the trust anchor
//! (our CA) as a bare key and never looks at its expiry, while the apiserver (Go) does. A full
//! X.509 parser would be several crates for one field.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

const SEQUENCE: u8 = 0x30;
const VERSION: u8 = 0xa0;
const UTC_TIME: u8 = 0x17;
const GENERALIZED_TIME: u8 = 0x18;

/// One DER tag-length-value: (tag, content, what follows).
fn tlv(input: &[u8]) -> Option<(u8, &[u8], &[u8])> {
    let (&tag, rest) = input.split_first()?;
    let (&first, rest) = rest.split_first()?;
    let (len, rest) = if first < 0x80 {
        (usize::from(first), rest)
    } else {
        let count = usize::from(first & 0x7f);
        if count == 0 || count > 4 {
            return None;
        }
        let (bytes, rest) = rest.split_at_checked(count)?;
        let len = bytes
            .iter()
            .fold(0usize, |acc, b| (acc << 8) | usize::from(*b));
        (len, rest)
    };
    let (content, rest) = rest.split_at_checked(len)?;
    Some((tag, content, rest))
}

/// `Certificate.tbsCertificate.validity.notAfter`; `None` when `der` is not a certificate.
pub fn not_after(der: &[u8]) -> Option<SystemTime> {
    let (SEQUENCE, certificate, _) = tlv(der)? else {
        return None;
    };
    let (SEQUENCE, tbs, _) = tlv(certificate)? else {
        return None;
    };
    let (tag, _, after_version) = tlv(tbs)?;
    let mut rest = if tag == VERSION { after_version } else { tbs };
    // serialNumber, signature, issuer.
    for _ in 0..3 {
        rest = tlv(rest)?.2;
    }
    let (SEQUENCE, validity, _) = tlv(rest)? else {
        return None;
    };
    let after_not_before = tlv(validity)?.2;
    let (tag, time, _) = tlv(after_not_before)?;
    parse_time(tag, std::str::from_utf8(time).ok()?)
}

/// UTCTime `YYMMDDHHMMSSZ` or GeneralizedTime `YYYYMMDDHHMMSSZ` (the forms RFC 5280 allows).
fn parse_time(tag: u8, text: &str) -> Option<SystemTime> {
    let digits = text.strip_suffix('Z')?;
    if !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let (year, rest) = match (tag, digits.len()) {
        (UTC_TIME, 12) => {
            let yy: i64 = digits.get(..2)?.parse().ok()?;
            (
                if yy >= 50 { 1900 + yy } else { 2000 + yy },
                digits.get(2..)?,
            )
        }
        (GENERALIZED_TIME, 14) => (digits.get(..4)?.parse().ok()?, digits.get(4..)?),
        _ => return None,
    };
    let field = |i: usize| -> Option<i64> { rest.get(i..i + 2)?.parse().ok() };
    let (month, day, hour, minute, second) =
        (field(0)?, field(2)?, field(4)?, field(6)?, field(8)?);
    if !(1..=12).contains(&month)
        || !(1..=31).contains(&day)
        || hour > 23
        || minute > 59
        || second > 60
    {
        return None;
    }
    let seconds = days_from_civil(year, month, day) * 86_400 + hour * 3600 + minute * 60 + second;
    let seconds = u64::try_from(seconds).ok()?;
    UNIX_EPOCH.checked_add(Duration::from_secs(seconds))
}

/// Days since 1970-01-01 of a proleptic Gregorian date (H. Hinnant's algorithm).
fn days_from_civil(year: i64, month: i64, day: i64) -> i64 {
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (month + 9) % 12;
    let doy = (153 * mp + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(secs: u64) -> Option<SystemTime> {
        Some(UNIX_EPOCH + Duration::from_secs(secs))
    }

    #[test]
    fn times() {
        assert_eq!(parse_time(UTC_TIME, "700101000000Z"), at(0));
        assert_eq!(parse_time(UTC_TIME, "491231235959Z"), at(2_524_607_999));
        assert_eq!(
            parse_time(GENERALIZED_TIME, "20500101000000Z"),
            at(2_524_608_000)
        );
        assert_eq!(
            parse_time(GENERALIZED_TIME, "20240229120000Z"),
            at(1_709_208_000)
        );
        for bad in [
            "20240229120000",
            "2024022912000Z",
            "2024-2-29120000Z",
            "20241301000000Z",
        ] {
            assert_eq!(parse_time(GENERALIZED_TIME, bad), None, "{bad}");
        }
        assert_eq!(parse_time(0x05, "700101000000Z"), None);
    }

    #[test]
    fn not_after_of_generated_certificates() {
        let key = rcgen::KeyPair::generate().unwrap();
        for secs in [
            1_800_000_000u64,
            4_102_444_800, /* 2100: GeneralizedTime */
        ] {
            let mut params = rcgen::CertificateParams::default();
            params.not_after = (UNIX_EPOCH + Duration::from_secs(secs)).into();
            let cert = params.self_signed(&key).unwrap();
            assert_eq!(not_after(cert.der()), at(secs));
        }
        assert_eq!(not_after(b"\x30\x03\x02\x01\x01"), None);
        assert_eq!(not_after(b""), None);
    }
}
