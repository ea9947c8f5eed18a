//! Free TCP ports on 127.0.0.1 for the servers and containers a test starts.

use std::collections::BTreeSet;
use std::net::{Ipv4Addr, TcpListener};
use std::ops::Range;
use std::sync::{Mutex, PoisonError};

/// Where ports are taken from: below Linux's ephemeral range (32768-60999 by default),
/// so an outgoing connection cannot take a port between the check and its use.
pub const RANGE: Range<u16> = 20_000..32_000;

static TAKEN: Mutex<BTreeSet<u16>> = Mutex::new(BTreeSet::new());

/// A port in [`RANGE`] that nothing listens on now and that this process has not
/// handed out before (so two fixtures of one test never get the same port).
///
/// Another process may still bind it before the caller does; callers that start a
/// server retry with another port when the server cannot bind.
pub fn free_port() -> u16 {
    // The set stays consistent even if a holder panicked: it is only ever inserted into.
    let mut taken = TAKEN.lock().unwrap_or_else(PoisonError::into_inner);
    pick(RANGE, &mut taken)
}

fn pick(range: Range<u16>, taken: &mut BTreeSet<u16>) -> u16 {
    loop {
        let port = fastrand::u16(range.clone());
        if !taken.contains(&port) && TcpListener::bind((Ipv4Addr::LOCALHOST, port)).is_ok() {
            taken.insert(port);
            return port;
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[test]
    fn ports_are_in_range_free_and_never_handed_out_twice() {
        let ports: Vec<u16> = (0..200).map(|_| free_port()).collect();
        let distinct: BTreeSet<u16> = ports.iter().copied().collect();
        assert_eq!(distinct.len(), ports.len(), "a port was handed out twice");
        for port in ports {
            assert!(RANGE.contains(&port), "{port}");
            TcpListener::bind((Ipv4Addr::LOCALHOST, port)).unwrap();
        }
    }

    #[test]
    fn a_port_something_listens_on_is_not_handed_out() {
        // Two neighbouring free ports: hold the first, and only the second may come.
        let (held, port) = loop {
            let port = fastrand::u16(RANGE.start..RANGE.end - 1);
            if let (Ok(held), Ok(_)) = (
                TcpListener::bind((Ipv4Addr::LOCALHOST, port)),
                TcpListener::bind((Ipv4Addr::LOCALHOST, port + 1)),
            ) {
                break (held, port);
            }
        };
        let mut taken = BTreeSet::new();
        for _ in 0..20 {
            taken.clear();
            assert_eq!(pick(port..port + 2, &mut taken), port + 1);
        }
        drop(held);
    }
}
