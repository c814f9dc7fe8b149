//! Loopback ports for test nodes that must know each other's address
//! before they listen.

use std::collections::BTreeSet;
use std::sync::Mutex;

/// Ports this process has handed out: two clusters started side by side
/// (tests run in parallel) never get the same port.
static PORTS_GIVEN: Mutex<BTreeSet<u16>> = Mutex::new(BTreeSet::new());

/// Where listening ports are chosen: below the kernel's ephemeral range
/// (`/proc/sys/net/ipv4/ip_local_port_range`, 32768–60999 if unreadable),
/// or above it if it starts too low. A port the kernel picked for `:0` was
/// free only at that instant: any outgoing connection (a node dialling its
/// peers) may take it as its local port before the node binds it, which
/// failed CI with `AddrInUse`. The kernel never hands out a port outside
/// that range by itself.
fn listen_range() -> std::ops::Range<u32> {
    let ephemeral = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|s| {
            let mut it = s.split_whitespace().map(|w| w.parse::<u32>().ok());
            Some((it.next()??, it.next()??))
        })
        .unwrap_or((32_768, 60_999));
    if ephemeral.0 >= 12_000 { 10_000..ephemeral.0 } else { ephemeral.1 + 1..65_536 }
}

/// Free loopback ports for nodes to listen on: outside the ephemeral range
/// (see `listen_range`), probed free, never one this process handed out
/// before; each process starts at its own place in the range. Another
/// program may still bind one between the probe and the node; that node
/// then fails to start.
///
/// # Errors
/// No free port in the whole range.
pub fn free_ports(n: usize) -> std::io::Result<Vec<u16>> {
    let range = listen_range();
    let len = range.end - range.start;
    let mut given = PORTS_GIVEN.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
    let offset = std::process::id().wrapping_mul(7_919) % len;
    let start = offset + given.len() as u32;
    let mut ports = Vec::new();
    for k in 0..len {
        if ports.len() == n {
            break;
        }
        let port = (range.start + (start + k) % len) as u16;
        if given.contains(&port) {
            continue;
        }
        #[allow(clippy::disallowed_methods)] // a probe for a free loopback port, closed at once
        if std::net::TcpListener::bind(("127.0.0.1", port)).is_ok() {
            given.insert(port);
            ports.push(port);
        }
    }
    if ports.len() < n {
        return Err(std::io::Error::new(std::io::ErrorKind::AddrInUse, format!("no free loopback port left in {range:?}")));
    }
    Ok(ports)
}
