//! Settings of TLS on Sluice's own listeners: Sluice's flags for either listener, and the
//! reference's `GRPC_SERVER_USE_TLS` family for the gRPC one. Every file is read here once, so a
//! missing or unusable certificate stops start-up with the setting's name and the reason.

use std::path::PathBuf;

use super::SettingsError;
use super::reference::parse_bool;
use crate::listener::tls::{self, TlsError, TlsFiles};

/// Flags of listener TLS, flattened into [`super::ServeArgs`].
#[derive(Debug, Default, clap::Args)]
pub struct TlsArgs {
    /// Certificate chain (PEM) of the gRPC listener: turns TLS on there (re-read when it changes).
    #[arg(long, env = "SLUICE_GRPC_TLS_CERT")]
    pub grpc_tls_cert: Option<PathBuf>,
    /// Private key (PEM) of the gRPC listener's certificate.
    #[arg(long, env = "SLUICE_GRPC_TLS_KEY")]
    pub grpc_tls_key: Option<PathBuf>,
    /// CA certificates (PEM): gRPC clients must present a certificate that chains to one (mTLS).
    #[arg(long, env = "SLUICE_GRPC_TLS_CLIENT_CA")]
    pub grpc_tls_client_ca: Option<PathBuf>,
    /// A subject alternative name every gRPC client certificate must carry (needs the CA).
    #[arg(long, env = "SLUICE_GRPC_TLS_CLIENT_SAN")]
    pub grpc_tls_client_san: Option<String>,
    /// Certificate chain (PEM) of the HTTP listener: turns TLS on there (re-read when it changes).
    #[arg(long, env = "SLUICE_HTTP_TLS_CERT")]
    pub http_tls_cert: Option<PathBuf>,
    /// Private key (PEM) of the HTTP listener's certificate.
    #[arg(long, env = "SLUICE_HTTP_TLS_KEY")]
    pub http_tls_key: Option<PathBuf>,
    /// CA certificates (PEM): HTTP clients must present a certificate that chains to one (mTLS).
    #[arg(long, env = "SLUICE_HTTP_TLS_CLIENT_CA")]
    pub http_tls_client_ca: Option<PathBuf>,
    /// A subject alternative name every HTTP client certificate must carry (needs the CA).
    #[arg(long, env = "SLUICE_HTTP_TLS_CLIENT_SAN")]
    pub http_tls_client_san: Option<String>,
}

/// TLS of each listener; `None`: plaintext.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TlsSettings {
    pub grpc: Option<TlsFiles>,
    pub http: Option<TlsFiles>,
}

/// One listener's four values, each with the name it was given under (for errors).
struct Given {
    cert: Option<(&'static str, PathBuf)>,
    key: Option<(&'static str, PathBuf)>,
    client_ca: Option<(&'static str, PathBuf)>,
    client_san: Option<(&'static str, String)>,
}

pub(super) fn resolve(
    args: TlsArgs,
    get: &impl Fn(&'static str) -> Option<String>,
) -> Result<TlsSettings, SettingsError> {
    let flag = |name: &'static str, v: Option<PathBuf>| v.map(|p| (name, p));
    let sluice_grpc = Given {
        cert: flag("--grpc-tls-cert", args.grpc_tls_cert),
        key: flag("--grpc-tls-key", args.grpc_tls_key),
        client_ca: flag("--grpc-tls-client-ca", args.grpc_tls_client_ca),
        client_san: args
            .grpc_tls_client_san
            .map(|s| ("--grpc-tls-client-san", s)),
    };
    let grpc = if sluice_grpc.cert.is_some() || sluice_grpc.key.is_some() {
        sluice_grpc
    } else {
        // The reference's names apply only with GRPC_SERVER_USE_TLS=true, as there.
        let on = match get("GRPC_SERVER_USE_TLS") {
            Some(v) => parse_bool("GRPC_SERVER_USE_TLS", &v)?,
            None => false,
        };
        let env = |name: &'static str| get(name).map(|v| (name, PathBuf::from(v)));
        Given {
            cert: env("GRPC_SERVER_TLS_CERT").filter(|_| on),
            key: env("GRPC_SERVER_TLS_KEY").filter(|_| on),
            client_ca: sluice_grpc
                .client_ca
                .or_else(|| env("GRPC_CLIENT_TLS_CACERT").filter(|_| on)),
            client_san: sluice_grpc.client_san.or_else(|| {
                get("GRPC_CLIENT_TLS_SAN")
                    .filter(|_| on)
                    .map(|s| ("GRPC_CLIENT_TLS_SAN", s))
            }),
        }
        .require_cert_when(on, "GRPC_SERVER_USE_TLS=true")?
    };
    let http = Given {
        cert: flag("--http-tls-cert", args.http_tls_cert),
        key: flag("--http-tls-key", args.http_tls_key),
        client_ca: flag("--http-tls-client-ca", args.http_tls_client_ca),
        client_san: args
            .http_tls_client_san
            .map(|s| ("--http-tls-client-san", s)),
    };
    Ok(TlsSettings {
        grpc: grpc.files(tls::ALPN_GRPC)?,
        http: http.files(tls::ALPN_HTTP)?,
    })
}

impl Given {
    fn require_cert_when(self, on: bool, why: &str) -> Result<Self, SettingsError> {
        if on && (self.cert.is_none() || self.key.is_none()) {
            return Err(SettingsError::Invalid(format!(
                "{why} needs GRPC_SERVER_TLS_CERT and GRPC_SERVER_TLS_KEY (PEM files)"
            )));
        }
        Ok(self)
    }

    /// The files, read once to prove they can be served; `None` without a certificate.
    fn files(self, alpn: &[&[u8]]) -> Result<Option<TlsFiles>, SettingsError> {
        let (cert, key) = match (self.cert, self.key) {
            (None, None) => {
                if let Some((name, _)) = self.client_ca.as_ref() {
                    return Err(SettingsError::Invalid(format!(
                        "{name} asks for client certificates, but the listener has no TLS: \
                         give its certificate and key too"
                    )));
                }
                if let Some((name, _)) = self.client_san.as_ref() {
                    return Err(SettingsError::Invalid(format!(
                        "{name} needs TLS with client certificates on that listener"
                    )));
                }
                return Ok(None);
            }
            (Some(cert), Some(key)) => (cert, key),
            (Some((name, _)), None) | (None, Some((name, _))) => {
                return Err(SettingsError::Invalid(format!(
                    "{name} needs both a certificate and its key"
                )));
            }
        };
        if let (Some((name, _)), None) = (&self.client_san, &self.client_ca) {
            return Err(SettingsError::Invalid(format!(
                "{name} checks client certificates: give the CA they must chain to as well"
            )));
        }
        let names = [
            Some((cert.0, cert.1.clone())),
            Some((key.0, key.1.clone())),
            self.client_ca.clone(),
        ];
        let files = TlsFiles {
            cert: cert.1,
            key: key.1,
            client_ca: self.client_ca.map(|(_, p)| p),
            client_san: self.client_san.map(|(_, s)| s),
        };
        // Read once now, so a bad file stops start-up naming the setting that gave it.
        tls::server_config(&files, alpn).map_err(|TlsError { path, reason }| {
            let name = names
                .into_iter()
                .flatten()
                .find(|(_, p)| *p == path)
                .map_or("TLS", |(name, _)| name);
            SettingsError::Env {
                name,
                value: path.display().to_string(),
                reason,
            }
        })?;
        Ok(Some(files))
    }
}
