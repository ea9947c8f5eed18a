//! IPv4 CIDR blocks: the VPC's, and the sixteenths its subnets are carved from.

use std::net::Ipv4Addr;

/// An IPv4 CIDR block.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Cidr {
    base: u32,
    prefix: u8,
}

impl Cidr {
    /// Parses `a.b.c.d/n`.
    pub(crate) fn parse(text: &str) -> std::result::Result<Cidr, String> {
        let (addr, prefix) = text
            .split_once('/')
            .ok_or_else(|| format!("`{text}` is not a CIDR block such as 10.40.0.0/16"))?;
        let addr: Ipv4Addr = addr
            .parse()
            .map_err(|_| format!("`{text}` does not start with an IPv4 address"))?;
        let prefix: u8 = prefix
            .parse()
            .map_err(|_| format!("`{text}` has no prefix length after `/`"))?;
        if !(16..=24).contains(&prefix) {
            return Err(format!(
                "`{text}`: use a prefix from /16 to /24, so that each of the six subnets \
                 (a sixteenth of the VPC) can hold nodes and pods"
            ));
        }
        let base = u32::from(addr);
        let mask = u32::MAX << (32 - u32::from(prefix));
        if base & !mask != 0 {
            return Err(format!(
                "`{text}` has host bits set; did you mean {}/{prefix}?",
                Ipv4Addr::from(base & mask)
            ));
        }
        Ok(Cidr { base, prefix })
    }

    fn range(self) -> (u64, u64) {
        let start = u64::from(self.base);
        (start, start + (1u64 << (32 - u32::from(self.prefix))))
    }

    /// Whether the two blocks share an address.
    pub(super) fn overlaps(self, other: Cidr) -> bool {
        let (a, b) = (self.range(), other.range());
        a.0 < b.1 && b.0 < a.1
    }

    /// The `index`th block of a sixteenth of this one.
    pub(super) fn sixteenth(self, index: u32) -> Cidr {
        let prefix = self.prefix + 4;
        Cidr {
            base: self.base + (index << (32 - u32::from(prefix))),
            prefix,
        }
    }
}

impl std::fmt::Display for Cidr {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", Ipv4Addr::from(self.base), self.prefix)
    }
}

pub(super) fn cidr_of(text: Option<&str>) -> Option<Cidr> {
    let (addr, prefix) = text?.split_once('/')?;
    let addr: Ipv4Addr = addr.parse().ok()?;
    let prefix: u8 = prefix.parse().ok()?;
    (prefix <= 32).then(|| Cidr {
        base: u32::from(addr) & u32::MAX.checked_shl(32 - u32::from(prefix)).unwrap_or(0),
        prefix,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cidr_blocks_are_carved_in_sixteenths() {
        let vpc = Cidr::parse("10.40.0.0/16").unwrap();
        assert_eq!(vpc.sixteenth(0).to_string(), "10.40.0.0/20");
        assert_eq!(vpc.sixteenth(2).to_string(), "10.40.32.0/20");
        assert_eq!(vpc.sixteenth(8).to_string(), "10.40.128.0/20");
        assert_eq!(vpc.sixteenth(10).to_string(), "10.40.160.0/20");
        let small = Cidr::parse("192.168.4.0/24").unwrap();
        assert_eq!(small.sixteenth(9).to_string(), "192.168.4.144/28");
    }

    #[test]
    fn blocks_overlap_by_range() {
        let vpc = Cidr::parse("10.40.0.0/16").unwrap();
        let foreign = cidr_of(Some("10.40.4.0/24")).unwrap();
        assert!(vpc.sixteenth(0).overlaps(foreign));
        assert!(!vpc.sixteenth(1).overlaps(foreign));
        assert!(vpc.overlaps(vpc.sixteenth(15)));
        assert_eq!(cidr_of(Some("10.40.4.7/24")), Some(foreign));
    }

    #[test]
    fn bad_cidrs_say_why() {
        assert!(Cidr::parse("10.40.0.0").unwrap_err().contains("CIDR"));
        assert!(
            Cidr::parse("10.40.0.0/8")
                .unwrap_err()
                .contains("/16 to /24")
        );
        assert!(
            Cidr::parse("10.40.1.0/16")
                .unwrap_err()
                .contains("10.40.0.0/16")
        );
        assert!(Cidr::parse("10.400.0.0/16").is_err());
    }
}
