//! A pod's UID, kept compact: a cluster of 150,000 pods holds each UID in several indexes (the
//! watch index, the node worker, the pool's two maps), and as a 36-character heap string each
//! copy costs about 70 bytes.
//!
//! The apiserver generates UIDs as lowercase 8-4-4-4-12 hex UUIDs; those are kept as their 16
//! bytes. Anything else (an apiserver or a test that makes other UIDs) is kept as the string
//! itself, so the conversion back is exact whatever the input: the annotation patch's UID
//! precondition needs the very string the apiserver gave.

use std::cmp::Ordering;
use std::fmt;

/// Identity of a pod for address bookkeeping: its UID (never its name, which can be reused).
///
/// Compares, hashes and displays as the UID string; 24 bytes, no heap for a canonical UUID.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct PodUid(Repr);

#[derive(Clone, PartialEq, Eq, Hash)]
enum Repr {
    /// A canonical lowercase UUID: its 16 bytes, most significant first.
    Uuid([u8; 16]),
    /// Any other string; never one that `Uuid` could hold, so equality is the strings'.
    Other(Box<str>),
}

/// Length of `xxxxxxxx-xxxx-xxxx-xxxx-xxxxxxxxxxxx`.
const UUID_LEN: usize = 36;
const DASHES: [usize; 4] = [8, 13, 18, 23];
const HEX: &[u8; 16] = b"0123456789abcdef";

impl PodUid {
    pub fn new(uid: &str) -> Self {
        match parse_uuid(uid.as_bytes()) {
            Some(bytes) => PodUid(Repr::Uuid(bytes)),
            None => PodUid(Repr::Other(uid.into())),
        }
    }

    /// Calls `f` with the UID string, without allocating for a canonical UUID.
    pub fn with_str<R>(&self, f: impl FnOnce(&str) -> R) -> R {
        match &self.0 {
            Repr::Uuid(bytes) => {
                let buf = format_uuid(bytes);
                // Only ASCII hex digits and dashes were written.
                f(std::str::from_utf8(&buf).unwrap_or_default())
            }
            Repr::Other(s) => f(s),
        }
    }

    /// Does this UID spell `s`?
    pub fn is(&self, s: &str) -> bool {
        match &self.0 {
            Repr::Uuid(bytes) => parse_uuid(s.as_bytes()).is_some_and(|b| b == *bytes),
            Repr::Other(own) => **own == *s,
        }
    }
}

/// The 16 bytes of a canonical lowercase UUID; `None` for anything else (upper case, braces,
/// missing dashes...), which then stays a string so it is given back exactly as it came.
fn parse_uuid(s: &[u8]) -> Option<[u8; 16]> {
    if s.len() != UUID_LEN || DASHES.iter().any(|&i| s[i] != b'-') {
        return None;
    }
    let mut out = [0u8; 16];
    let mut nibbles = s
        .iter()
        .enumerate()
        .filter(|(i, _)| !DASHES.contains(i))
        .map(|(_, &c)| match c {
            b'0'..=b'9' => Some(c - b'0'),
            b'a'..=b'f' => Some(c - b'a' + 10),
            _ => None,
        });
    for byte in &mut out {
        let hi = nibbles.next()??;
        let lo = nibbles.next()??;
        *byte = hi << 4 | lo;
    }
    Some(out)
}

fn format_uuid(bytes: &[u8; 16]) -> [u8; UUID_LEN] {
    let mut buf = [b'-'; UUID_LEN];
    let mut positions = (0..UUID_LEN).filter(|i| !DASHES.contains(i));
    for byte in bytes {
        for nibble in [byte >> 4, byte & 0xf] {
            if let Some(i) = positions.next() {
                buf[i] = HEX[usize::from(nibble)];
            }
        }
    }
    buf
}

impl From<&str> for PodUid {
    fn from(uid: &str) -> Self {
        PodUid::new(uid)
    }
}

impl From<String> for PodUid {
    fn from(uid: String) -> Self {
        PodUid::new(&uid)
    }
}

/// The order of the UID strings: lowercase hex digits sort like the nibbles they stand for, so
/// two UUIDs compare as their bytes; mixed forms compare as strings.
impl Ord for PodUid {
    fn cmp(&self, other: &Self) -> Ordering {
        match (&self.0, &other.0) {
            (Repr::Uuid(a), Repr::Uuid(b)) => a.cmp(b),
            (Repr::Other(a), Repr::Other(b)) => a.cmp(b),
            _ => self.with_str(|a| other.with_str(|b| a.cmp(b))),
        }
    }
}

impl PartialOrd for PodUid {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl fmt::Display for PodUid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.with_str(|s| f.write_str(s))
    }
}

impl fmt::Debug for PodUid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.with_str(|s| fmt::Debug::fmt(s, f))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const CANONICAL: &str = "3f1c2b9e-7d4a-4c1e-9b2f-0a1b2c3d4e5f";

    #[test]
    fn canonical_uuid_is_compact_and_exact() {
        let uid = PodUid::new(CANONICAL);
        assert!(matches!(uid.0, Repr::Uuid(_)));
        assert_eq!(uid.to_string(), CANONICAL);
        assert!(uid.is(CANONICAL));
        assert!(!uid.is("3f1c2b9e-7d4a-4c1e-9b2f-0a1b2c3d4e50"));
        assert_eq!(format!("{uid:?}"), format!("{CANONICAL:?}"));
        assert_eq!(std::mem::size_of::<PodUid>(), 24);
    }

    #[test]
    fn anything_else_stays_a_string() {
        for s in [
            "",
            "uid-1",
            "3F1C2B9E-7D4A-4C1E-9B2F-0A1B2C3D4E5F",
            "3f1c2b9e7d4a4c1e9b2f0a1b2c3d4e5f",
            "{3f1c2b9e-7d4a-4c1e-9b2f-0a1b2c3d4e5}",
            "3f1c2b9e-7d4a-4c1e-9b2f-0a1b2c3d4e5g",
            "3f1c2b9e-7d4a-4c1e-9b2f+0a1b2c3d4e5f",
            "3f1c2b9e-7d4a-4c1e-9b2f-0a1b2c3d4e5f0",
            "héllo-wörld-ünicode-ßtring-000000000",
        ] {
            let uid = PodUid::new(s);
            assert!(matches!(uid.0, Repr::Other(_)), "{s}");
            assert_eq!(uid.to_string(), s);
            assert!(uid.is(s));
            assert_ne!(uid, PodUid::new(CANONICAL));
        }
        // Upper case is another string to the apiserver: not equal to its lowercase form.
        assert_ne!(
            PodUid::new("3F1C2B9E-7D4A-4C1E-9B2F-0A1B2C3D4E5F"),
            PodUid::new(CANONICAL)
        );
    }

    fn uid_strings() -> impl Strategy<Value = String> {
        prop_oneof![
            "[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}",
            "[0-9a-fA-F-]{34,38}",
            ".{0,40}",
        ]
    }

    proptest! {
        #[test]
        fn round_trip_order_and_equality_are_the_strings(a in uid_strings(), b in uid_strings()) {
            let (ua, ub) = (PodUid::new(&a), PodUid::new(&b));
            prop_assert_eq!(ua.to_string(), a.clone());
            prop_assert_eq!(ua.cmp(&ub), a.cmp(&b));
            prop_assert_eq!(ua == ub, a == b);
            prop_assert_eq!(ua.is(&b), a == b);
        }
    }
}
