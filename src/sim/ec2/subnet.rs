//! Address allocation in one simulated subnet: a bitmap of the CIDR (one bit per address, so a
//! /16 costs 8 KiB), AWS's five reserved addresses (network, +1 router, +2 DNS, +3 future use,
//! broadcast), lowest-free /32s, and aligned, wholly free /28s for prefixes.

use std::net::Ipv4Addr;

use ipnet::Ipv4Net;

/// Addresses per /28 prefix.
pub const PREFIX_SIZE: u32 = 16;

#[derive(Debug, Clone)]
pub struct SubnetAlloc {
    base: u32,
    size: u32,
    /// Bit set = address in use (or reserved, or beyond the CIDR's end in the last word).
    words: Vec<u64>,
    used: u32,
}

impl SubnetAlloc {
    /// A subnet with only AWS's reserved addresses taken. EC2 subnets are /16 to /28; other
    /// lengths are clamped into that range.
    pub fn new(cidr: Ipv4Net) -> Self {
        let cidr = cidr.trunc();
        let size = 1u32 << (32 - u32::from(cidr.prefix_len()).clamp(16, 28));
        let words_len = size.div_ceil(64) as usize;
        let mut alloc = SubnetAlloc {
            base: u32::from(cidr.network()),
            size,
            words: vec![0; words_len],
            used: 0,
        };
        // Bits past the end of a small subnet are never free.
        for offset in size..(words_len as u32 * 64) {
            alloc.words[(offset / 64) as usize] |= 1 << (offset % 64);
        }
        for offset in [0, 1, 2, 3, size - 1] {
            alloc.set(offset);
        }
        alloc
    }

    pub fn cidr(&self) -> Ipv4Net {
        let len = 32 - self.size.trailing_zeros() as u8;
        Ipv4Net::new(Ipv4Addr::from(self.base), len).unwrap_or_else(|_| Ipv4Net::default())
    }

    /// Free addresses (what DescribeSubnets calls AvailableIpAddressCount).
    pub fn available(&self) -> u32 {
        self.size - 5 - self.used
    }

    pub fn contains(&self, addr: Ipv4Addr) -> bool {
        u32::from(addr).wrapping_sub(self.base) < self.size
    }

    pub fn is_free(&self, addr: Ipv4Addr) -> bool {
        self.offset(addr).is_some_and(|o| !self.get(o))
    }

    /// `count` lowest free addresses, or `None` (nothing taken) if there are fewer.
    pub fn alloc_ips(&mut self, count: u32) -> Option<Vec<Ipv4Addr>> {
        if count > self.available() {
            return None;
        }
        let mut out = Vec::with_capacity(count as usize);
        for (w, word) in self.words.iter_mut().enumerate() {
            while *word != u64::MAX && out.len() < count as usize {
                let bit = word.trailing_ones();
                *word |= 1 << bit;
                out.push(Ipv4Addr::from(self.base + w as u32 * 64 + bit));
            }
            if out.len() == count as usize {
                break;
            }
        }
        self.used += count;
        Some(out)
    }

    /// Takes specific addresses (used by something else in the VPC). All or nothing.
    pub fn take_ips(&mut self, addrs: &[Ipv4Addr]) -> bool {
        if !addrs.iter().all(|a| self.is_free(*a)) {
            return false;
        }
        for a in addrs {
            if let Some(o) = self.offset(*a)
                && !self.get(o)
            {
                self.set(o);
                self.used += 1;
            }
        }
        true
    }

    /// `count` aligned /28s with all 16 addresses free (lowest first), or `None` (nothing taken).
    /// Free single addresses do not help: a fragmented subnet can have many free /32s and no /28.
    pub fn alloc_prefixes(&mut self, count: u32) -> Option<Vec<Ipv4Net>> {
        let chunks = self.size / PREFIX_SIZE;
        let free: Vec<u32> = (0..chunks)
            .filter(|&k| self.chunk_free(k))
            .take(count as usize)
            .collect();
        if free.len() < count as usize {
            return None;
        }
        let mut out = Vec::with_capacity(free.len());
        for k in free {
            let w = (k / 4) as usize;
            self.words[w] |= 0xFFFF << ((k % 4) * 16);
            self.used += PREFIX_SIZE;
            let net = Ipv4Net::new(Ipv4Addr::from(self.base + k * PREFIX_SIZE), 28);
            out.extend(net.ok());
        }
        Some(out)
    }

    /// Gives addresses back. Addresses outside the subnet or already free are ignored.
    pub fn free_ips(&mut self, addrs: &[Ipv4Addr]) {
        for a in addrs {
            if let Some(o) = self.offset(*a)
                && self.get(o)
                && !self.is_reserved(o)
            {
                self.clear(o);
                self.used -= 1;
            }
        }
    }

    /// Gives /28 prefixes back.
    pub fn free_prefixes(&mut self, prefixes: &[Ipv4Net]) {
        for p in prefixes {
            let first = u32::from(p.network());
            let addrs: Vec<Ipv4Addr> = (first..first + PREFIX_SIZE).map(Ipv4Addr::from).collect();
            self.free_ips(&addrs);
        }
    }

    /// Aligned /28s with every address free.
    pub fn free_prefix_count(&self) -> u32 {
        (0..self.size / PREFIX_SIZE)
            .filter(|&k| self.chunk_free(k))
            .count() as u32
    }

    fn chunk_free(&self, k: u32) -> bool {
        let w = (k / 4) as usize;
        (self.words[w] >> ((k % 4) * 16)) & 0xFFFF == 0
    }

    fn is_reserved(&self, offset: u32) -> bool {
        offset <= 3 || offset == self.size - 1
    }

    fn offset(&self, addr: Ipv4Addr) -> Option<u32> {
        let o = u32::from(addr).wrapping_sub(self.base);
        (o < self.size).then_some(o)
    }

    fn get(&self, o: u32) -> bool {
        self.words[(o / 64) as usize] & (1 << (o % 64)) != 0
    }

    fn set(&mut self, o: u32) {
        self.words[(o / 64) as usize] |= 1 << (o % 64);
    }

    fn clear(&mut self, o: u32) {
        self.words[(o / 64) as usize] &= !(1 << (o % 64));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn net(s: &str) -> Ipv4Net {
        s.parse().unwrap()
    }

    fn ip(s: &str) -> Ipv4Addr {
        s.parse().unwrap()
    }

    #[test]
    fn reserves_the_five_aws_addresses() {
        let mut s = SubnetAlloc::new(net("10.0.1.0/24"));
        assert_eq!(s.available(), 251);
        for reserved in ["10.0.1.0", "10.0.1.1", "10.0.1.2", "10.0.1.3", "10.0.1.255"] {
            assert!(!s.is_free(ip(reserved)), "{reserved}");
        }
        assert_eq!(
            s.alloc_ips(2).unwrap(),
            vec![ip("10.0.1.4"), ip("10.0.1.5")]
        );
        assert_eq!(s.available(), 249);
        // The reserved ones are never given back as free.
        s.free_ips(&[ip("10.0.1.0"), ip("10.0.1.255")]);
        assert_eq!(s.available(), 249);
    }

    #[test]
    fn small_subnet_has_eleven_usable_addresses() {
        let mut s = SubnetAlloc::new(net("10.0.0.16/28"));
        assert_eq!(s.available(), 11);
        let all = s.alloc_ips(11).unwrap();
        assert_eq!(all.first(), Some(&ip("10.0.0.20")));
        assert_eq!(all.last(), Some(&ip("10.0.0.30")));
        assert!(s.alloc_ips(1).is_none());
        assert_eq!(s.available(), 0);
        // A /28 subnet never has a free /28 prefix (the reserved addresses are in it).
        s.free_ips(&all);
        assert_eq!(s.free_prefix_count(), 0);
    }

    #[test]
    fn alloc_is_all_or_nothing() {
        let mut s = SubnetAlloc::new(net("10.0.0.0/28"));
        assert!(s.alloc_ips(12).is_none());
        assert_eq!(s.available(), 11);
    }

    #[test]
    fn prefixes_are_aligned_and_wholly_free() {
        let mut s = SubnetAlloc::new(net("10.0.2.0/24"));
        // 16 /28s; the first and last hold reserved addresses.
        assert_eq!(s.free_prefix_count(), 14);
        s.alloc_ips(1).unwrap(); // 10.0.2.4, inside the first /28 anyway
        let p = s.alloc_prefixes(2).unwrap();
        assert_eq!(p, vec![net("10.0.2.16/28"), net("10.0.2.32/28")]);
        assert_eq!(s.available(), 251 - 1 - 32);
        assert!(!s.is_free(ip("10.0.2.47")));
        s.free_prefixes(&[net("10.0.2.16/28")]);
        assert!(s.is_free(ip("10.0.2.16")));
        assert_eq!(s.free_prefix_count(), 13);
    }

    #[test]
    fn fragmented_subnet_has_free_ips_but_no_prefix() {
        let mut s = SubnetAlloc::new(net("10.0.3.0/24"));
        // One address taken in every /28.
        let taken: Vec<Ipv4Addr> = (1..15)
            .map(|k| ip(&format!("10.0.3.{}", k * 16 + 5)))
            .collect();
        assert!(s.take_ips(&taken));
        assert_eq!(s.free_prefix_count(), 0);
        assert!(s.alloc_prefixes(1).is_none());
        assert_eq!(s.available(), 251 - 14);
        assert_eq!(s.alloc_ips(5).unwrap().len(), 5);
        // Taking an address already in use fails and takes nothing.
        assert!(!s.take_ips(&[ip("10.0.3.200"), ip("10.0.3.21")]));
        assert!(s.is_free(ip("10.0.3.200")));
    }

    #[test]
    fn large_subnet_uses_one_bit_per_address() {
        let mut s = SubnetAlloc::new(net("10.1.0.0/16"));
        assert_eq!(s.words.len(), 1024);
        assert_eq!(s.available(), 65_531);
        let got = s.alloc_ips(150).unwrap();
        assert_eq!(got.len(), 150);
        assert_eq!(s.alloc_prefixes(100).unwrap().len(), 100);
        assert_eq!(s.available(), 65_531 - 150 - 1600);
        assert_eq!(s.cidr(), net("10.1.0.0/16"));
    }

    #[test]
    fn freed_addresses_are_reused_lowest_first() {
        let mut s = SubnetAlloc::new(net("10.0.4.0/24"));
        let a = s.alloc_ips(10).unwrap();
        s.free_ips(&a[2..4]);
        assert_eq!(s.alloc_ips(3).unwrap(), vec![a[2], a[3], ip("10.0.4.14")]);
    }
}
