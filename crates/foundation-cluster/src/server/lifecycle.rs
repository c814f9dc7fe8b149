//! What a node says about itself in the log: its start (name, id,
//! addresses, data directory, whether TLS is on; never the secret), a
//! warning when its mesh traffic can be read on the network, and its stop.

use super::ServerConfig;

/// Whether `addr` (`HOST:PORT`) can only be reached from this host: a
/// loopback IP, `localhost`, or a name under `.localhost`. Anything else
/// (a wildcard such as `0.0.0.0`, a public or private IP, a host name) can
/// be reached from the network.
pub(crate) fn loopback(addr: &str) -> bool {
    let host = addr.rsplit_once(':').map_or(addr, |(host, _)| host);
    let host = host.trim_start_matches('[').trim_end_matches(']');
    if host.eq_ignore_ascii_case("localhost") || host.to_ascii_lowercase().ends_with(".localhost") {
        return true;
    }
    host.parse::<std::net::IpAddr>().is_ok_and(|ip| ip.is_loopback())
}

/// Logs a started node (and the warning about plain traffic, if it applies).
pub(super) fn started(config: &ServerConfig, listen: &str, http: Option<&str>) {
    let data_dir = config.data_dir.as_ref().map_or_else(|| "(in memory)".to_owned(), |d| d.display().to_string());
    tracing::info!(
        node = %config.name,
        id = config.id,
        listen = %listen,
        http = http.unwrap_or("-"),
        data_dir = %data_dir,
        tls = config.tls.is_some(),
        "node started"
    );
    if config.tls.is_none() && !loopback(&config.listen) {
        tracing::warn!(
            node = %config.name,
            listen = %config.listen,
            "listening on a non-loopback address without TLS: traffic between nodes is integrity-protected but not encrypted; \
             give --tls-cert, --tls-key and --tls-ca (TlsConfig) to encrypt it"
        );
    }
}

/// Logs a node that has stopped.
pub(super) fn stopped(name: &str) {
    tracing::info!(node = %name, "node stopped");
}

#[cfg(test)]
mod tests {
    use super::loopback;

    #[test]
    fn loopback_addresses_and_the_others() {
        for addr in ["127.0.0.1:7000", "127.5.0.1:1", "[::1]:7000", "localhost:7000", "node.localhost:1"] {
            assert!(loopback(addr), "{addr}");
        }
        for addr in ["0.0.0.0:7000", "[::]:7000", "10.0.0.5:7000", "192.168.1.2:1", "node1.example.com:7000", "node1:7000"] {
            assert!(!loopback(addr), "{addr}");
        }
    }
}
