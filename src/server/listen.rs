//! Listening sockets with a deep accept queue. `TcpListener::bind` (std's, and tokio's through
//! it) asks the kernel for a queue of 128 connections: a burst of more new connections than that
//! before the accept loop runs (256 clients starting at once, on a busy core) overflows it, and
//! each connection it drops waits for its SYN to be sent again, a second later. nginx asks for
//! 511; this asks for 4096, which Linux caps at `net.core.somaxconn` (4096 by default).

use std::io;
use std::net::SocketAddr;

use tokio::net::{TcpListener, TcpSocket};

/// Connections the kernel may hold for the accept loop.
pub const BACKLOG: u32 = 4096;

/// Binds `addr` (with `SO_REUSEADDR`, as `TcpListener::bind` does on Unix) and listens with a
/// queue of [`BACKLOG`]. Must run inside a tokio runtime.
pub fn bind(addr: SocketAddr) -> io::Result<TcpListener> {
    let socket = match addr {
        SocketAddr::V4(_) => TcpSocket::new_v4()?,
        SocketAddr::V6(_) => TcpSocket::new_v6()?,
    };
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    socket.listen(BACKLOG)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// More connections than std's queue of 128 complete their handshake before any is
    /// accepted: the kernel holds them all.
    #[tokio::test]
    async fn a_burst_beyond_128_waits_in_the_queue() {
        let listener = bind("127.0.0.1:0".parse().unwrap()).unwrap();
        let addr = listener.local_addr().unwrap();
        // The kernel's cap, where it is below the burst.
        let cap = std::fs::read_to_string("/proc/sys/net/core/somaxconn")
            .ok()
            .and_then(|s| s.trim().parse().ok())
            .unwrap_or(4096);
        let burst = 300.min(cap);
        let mut clients = Vec::new();
        for _ in 0..burst {
            let stream = tokio::time::timeout(
                std::time::Duration::from_millis(500),
                tokio::net::TcpStream::connect(addr),
            )
            .await
            .expect("connected without a SYN sent again")
            .unwrap();
            clients.push(stream);
        }
        for _ in 0..burst {
            listener.accept().await.unwrap();
        }
    }

    #[tokio::test]
    async fn binds_ipv6_and_reports_a_taken_port() {
        let taken = bind("127.0.0.1:0".parse().unwrap()).unwrap();
        let err = bind(taken.local_addr().unwrap()).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::AddrInUse);
        // Where the machine has IPv6 loopback.
        if let Ok(v6) = bind("[::1]:0".parse().unwrap()) {
            assert!(v6.local_addr().unwrap().is_ipv6());
        }
    }
}
