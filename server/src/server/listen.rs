//! Binding the two listeners, and the connection bounds they get.

use std::net::SocketAddr;
use std::path::Path;

use tokio::net::TcpListener;

use super::StartupError;
use crate::listener::{Limits, Listening, nofile};

/// Both listeners, bound before serving so callers (tests) can bind port 0 and read the ports.
pub struct Listeners {
    /// TCP, or a Unix domain socket (`--grpc-uds`, the reference's `GRPC_UDS`) instead.
    pub grpc: Listening,
    pub http: TcpListener,
}

impl Listeners {
    pub async fn bind(
        grpc: SocketAddr,
        grpc_uds: Option<&Path>,
        http: SocketAddr,
    ) -> Result<Self, StartupError> {
        let grpc = match grpc_uds {
            Some(path) => Listening::bind_unix(path).map_err(|source| StartupError::BindUnix {
                path: path.to_path_buf(),
                source,
            })?,
            None => Listening::Tcp(listen(grpc)?),
        };
        Ok(Self {
            grpc,
            http: listen(http)?,
        })
    }

    pub fn http_addr(&self) -> std::io::Result<SocketAddr> {
        self.http.local_addr()
    }
}

/// Connections the kernel may hold for a listener before Sluice accepts them. A burst of
/// connections (a fleet of proxies reconnecting, or a flood) queues here while the accept loop
/// makes room; past it the kernel drops handshakes, and clients wait for their retransmit. The
/// kernel caps it at `net.core.somaxconn` (4096 by default since Linux 5.4).
const LISTEN_BACKLOG: u32 = 4096;

pub(super) fn listen(addr: SocketAddr) -> Result<TcpListener, StartupError> {
    let bind = || -> std::io::Result<TcpListener> {
        let socket = if addr.is_ipv4() {
            tokio::net::TcpSocket::new_v4()?
        } else {
            tokio::net::TcpSocket::new_v6()?
        };
        // As std's and tokio's own bind do, so a restarted Sluice can bind while old
        // connections linger in TIME_WAIT.
        socket.set_reuseaddr(true)?;
        socket.bind(addr)?;
        socket.listen(LISTEN_BACKLOG)
    };
    bind().map_err(|source| StartupError::Bind { addr, source })
}

/// The listener bounds, with the connection cap fitted to the open-file limit (raised to its
/// hard limit first).
pub(super) fn connection_limits(configured: &Limits) -> Limits {
    let mut limits = configured.clone();
    match nofile::raise() {
        Some(files) => {
            let usable = nofile::usable_connections(limits.max_connections, files);
            if usable < limits.max_connections {
                tracing::warn!(
                    open_files = files,
                    configured = limits.max_connections,
                    usable,
                    "the open-file limit allows fewer connections per listener than configured"
                );
            }
            limits.max_connections = usable;
            tracing::info!(
                open_files = files,
                max_connections = usable,
                "connection limits"
            );
        }
        None => tracing::warn!("cannot read the open-file limit"),
    }
    limits
}
