//! Loopback ports for test processes.

use std::collections::HashSet;
use std::net::{TcpListener, UdpSocket};
use std::sync::{Mutex, OnceLock};

/// How many candidate ports to try before giving up.
const MAX_ATTEMPTS: usize = 1000;

fn handed_out() -> &'static Mutex<HashSet<u16>> {
    static SET: OnceLock<Mutex<HashSet<u16>>> = OnceLock::new();
    SET.get_or_init(|| Mutex::new(HashSet::new()))
}

/// A port on 127.0.0.1 that was free for both TCP and UDP when checked and that no earlier call
/// in this process returned. RESP listeners use TCP, QUIC peer links use UDP; checking both lets
/// one helper serve either.
///
/// The port is released before returning (the process under test binds it), so another program
/// could still take it in between; the window is small and the process-wide set rules out the
/// common collision, two tests of this binary getting the same port.
pub fn free_port() -> u16 {
    for _ in 0..MAX_ATTEMPTS {
        let Ok(tcp) = TcpListener::bind("127.0.0.1:0") else {
            continue;
        };
        let Ok(addr) = tcp.local_addr() else {
            continue;
        };
        let port = addr.port();
        if UdpSocket::bind(("127.0.0.1", port)).is_err() {
            continue;
        }
        let mut set = handed_out().lock().unwrap_or_else(|e| e.into_inner());
        if set.insert(port) {
            return port;
        }
    }
    panic!("no free loopback port (TCP and UDP) after {MAX_ATTEMPTS} attempts");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ports_never_repeat() {
        let ports: Vec<u16> = (0..200).map(|_| free_port()).collect();
        let set: HashSet<u16> = ports.iter().copied().collect();
        assert_eq!(set.len(), ports.len());
    }
}
