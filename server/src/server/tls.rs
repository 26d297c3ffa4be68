//! Starting TLS on the listeners: each listener's terminator, and the watches that rotate its
//! certificate.

use std::sync::Arc;

use super::StartupError;
use crate::file_watch::WatchHandle;
use crate::listener::tls::{ALPN_GRPC, ALPN_HTTP, Terminator, TlsFiles};
use crate::settings::TlsSettings;

type Terminators = (
    Option<Arc<Terminator>>,
    Option<Arc<Terminator>>,
    Vec<WatchHandle>,
);

/// The gRPC and HTTP listeners' terminators (`None`: plaintext), and the watches that keep their
/// certificates current (rotation stops when they are dropped).
pub(super) fn terminators(settings: &TlsSettings) -> Result<Terminators, StartupError> {
    let mut watches = Vec::new();
    let mut open = |listener: &'static str,
                    alpn: &'static [&'static [u8]],
                    files: &Option<TlsFiles>|
     -> Result<Option<Arc<Terminator>>, StartupError> {
        let Some(files) = files else {
            return Ok(None);
        };
        let tls = Terminator::new(listener, files.clone(), alpn)
            .map_err(|source| StartupError::Tls { listener, source })?;
        match tls.watch() {
            Ok(watch) => watches.push(watch),
            // Still serving, with the certificate as loaded: say that rotation will not happen.
            Err(e) => tracing::error!(
                listener,
                error = %e,
                "cannot watch the TLS files: a rotated certificate is not picked up until restart"
            ),
        }
        Ok(Some(tls))
    };
    let grpc = open("grpc", ALPN_GRPC, &settings.grpc)?;
    let http = open("http", ALPN_HTTP, &settings.http)?;
    Ok((grpc, http, watches))
}
