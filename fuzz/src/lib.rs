//! The checks behind each fuzz target (`fuzz_targets/*.rs` only call these). Every check feeds
//! the bytes to the code that reads them from outside the process, then asserts what must hold
//! whatever the bytes: no panic, and the property that matters for that input.

mod admission;
mod certs;
mod ec2;
mod fields;

pub use admission::admission;
pub use certs::certs;
pub use ec2::ec2_response;
pub use fields::{annotation, config, flags, node_fields};

/// The first byte picks a variant, the rest is the input.
pub fn split_selector(data: &[u8]) -> Option<(u8, &[u8])> {
    let (&selector, rest) = data.split_first()?;
    Some((selector, rest))
}

const BASE64: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

/// Standard base64 with padding (PEM bodies).
pub fn base64_encode(bytes: &[u8]) -> String {
    let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for chunk in bytes.chunks(3) {
        let b = [
            chunk[0],
            chunk.get(1).copied().unwrap_or(0),
            chunk.get(2).copied().unwrap_or(0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(char::from(BASE64[((n >> (18 - 6 * i)) & 63) as usize]));
            } else {
                out.push('=');
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base64_of_known_texts() {
        assert_eq!(base64_encode(b""), "");
        assert_eq!(base64_encode(b"f"), "Zg==");
        assert_eq!(base64_encode(b"Man"), "TWFu");
        assert_eq!(base64_encode(b"Ma"), "TWE=");
    }
}
