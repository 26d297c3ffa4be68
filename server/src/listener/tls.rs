//! TLS on a listener: the server certificate and key, optional client-certificate verification
//! against a CA bundle (mTLS) with an optional required subject alternative name, all re-read
//! when their files change.
//!
//! rustls with ring, TLS 1.2 and 1.3 only. Each connection's handshake runs in that connection's
//! own task, within the listener's handshake timeout, so a client that stalls a handshake holds
//! only its own connection.
//!
//! **Rotation.** cert-manager and Kubernetes Secret mounts replace certificates by swapping a
//! symlink, and a rotation writes the certificate and the key one after the other. The files'
//! directories are watched ([`crate::file_watch`]); after each burst of changes everything is
//! read again and, only if it all loads and the key matches the certificate, swapped in for new
//! connections. Connections already open keep their session; a bad new file is logged and the
//! old certificate keeps serving.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use arc_swap::ArcSwap;
use rustls::client::danger::HandshakeSignatureValid;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, UnixTime};
use rustls::server::WebPkiClientVerifier;
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::{DigitallySignedStruct, DistinguishedName, RootCertStore, ServerConfig};

use super::stream::Stream;
use crate::file_watch::{self, Spec, WatchHandle};

/// Largest certificate, key or CA file read: a bundle of a few hundred CAs is well under it.
const MAX_PEM_BYTES: u64 = 1024 * 1024;

/// Where a listener's TLS material lives.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsFiles {
    /// The server's certificate chain (PEM), leaf first.
    pub cert: PathBuf,
    /// Its private key (PEM: PKCS#8, PKCS#1 or SEC1).
    pub key: PathBuf,
    /// CA certificates (PEM) a client certificate must chain to; `None`: no client certificate
    /// is asked for.
    pub client_ca: Option<PathBuf>,
    /// A name the client certificate must carry among its subject alternative names (DNS, URI,
    /// email or IP address); needs `client_ca`.
    pub client_san: Option<String>,
}

/// Why TLS material could not be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{path}: {reason}")]
pub struct TlsError {
    pub path: PathBuf,
    pub reason: String,
}

impl TlsError {
    fn new(path: &Path, reason: impl std::fmt::Display) -> Self {
        Self {
            path: path.to_path_buf(),
            reason: reason.to_string(),
        }
    }
}

/// The protocols a listener offers in ALPN: gRPC needs `h2`; the HTTP listener serves both.
pub const ALPN_GRPC: &[&[u8]] = &[b"h2"];
pub const ALPN_HTTP: &[&[u8]] = &[b"h2", b"http/1.1"];

/// Reads `files` into a server configuration offering `alpn`.
pub fn server_config(files: &TlsFiles, alpn: &[&[u8]]) -> Result<ServerConfig, TlsError> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let certs = read_certs(&files.cert)?;
    let key_pem = read_pem(&files.key)?;
    let key = PrivateKeyDer::from_pem_slice(&key_pem).map_err(|e| {
        TlsError::new(
            &files.key,
            format!("no private key in it (PKCS#8, PKCS#1 or SEC1 PEM expected): {e}"),
        )
    })?;
    let builder = ServerConfig::builder_with_provider(Arc::clone(&provider))
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
        .map_err(|e| TlsError::new(&files.cert, e))?;
    let builder = match &files.client_ca {
        None => builder.with_no_client_auth(),
        Some(ca) => {
            let mut roots = RootCertStore::empty();
            for cert in read_certs(ca)? {
                roots
                    .add(cert)
                    .map_err(|e| TlsError::new(ca, format!("not a usable CA certificate: {e}")))?;
            }
            let verifier =
                WebPkiClientVerifier::builder_with_provider(Arc::new(roots), Arc::clone(&provider))
                    .build()
                    .map_err(|e| TlsError::new(ca, e))?;
            match &files.client_san {
                None => builder.with_client_cert_verifier(verifier),
                Some(san) => builder.with_client_cert_verifier(Arc::new(RequireSan {
                    inner: verifier,
                    san: san.clone(),
                })),
            }
        }
    };
    let mut config = builder.with_single_cert(certs, key).map_err(|e| {
        TlsError::new(
            &files.key,
            format!(
                "cannot be used with the certificate in {}: {e}",
                files.cert.display()
            ),
        )
    })?;
    config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    Ok(config)
}

fn read_pem(path: &Path) -> Result<Vec<u8>, TlsError> {
    let file = std::fs::File::open(path).map_err(|e| TlsError::new(path, e))?;
    let mut bytes = Vec::new();
    file.take(MAX_PEM_BYTES + 1)
        .read_to_end(&mut bytes)
        .map_err(|e| TlsError::new(path, e))?;
    if bytes.len() as u64 > MAX_PEM_BYTES {
        return Err(TlsError::new(
            path,
            format!("larger than {MAX_PEM_BYTES} bytes: not a certificate or key file"),
        ));
    }
    Ok(bytes)
}

fn read_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let pem = read_pem(path)?;
    let certs = CertificateDer::pem_slice_iter(&pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| TlsError::new(path, format!("not PEM certificates: {e}")))?;
    if certs.is_empty() {
        return Err(TlsError::new(path, "no PEM certificate in it"));
    }
    Ok(certs)
}

/// Client-certificate verification that also requires one subject alternative name.
#[derive(Debug)]
struct RequireSan {
    inner: Arc<dyn ClientCertVerifier>,
    san: String,
}

impl ClientCertVerifier for RequireSan {
    fn offer_client_auth(&self) -> bool {
        self.inner.offer_client_auth()
    }

    fn client_auth_mandatory(&self) -> bool {
        self.inner.client_auth_mandatory()
    }

    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        self.inner.root_hint_subjects()
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        let verified = self
            .inner
            .verify_client_cert(end_entity, intermediates, now)?;
        if has_san(end_entity, &self.san) {
            Ok(verified)
        } else {
            Err(rustls::Error::InvalidCertificate(
                rustls::CertificateError::NotValidForName,
            ))
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.inner.supported_verify_schemes()
    }
}

/// Whether the certificate lists `want` among its DNS, URI, email or IP subject alternative
/// names (exactly; a wildcard in the certificate is not expanded).
fn has_san(cert: &CertificateDer<'_>, want: &str) -> bool {
    use x509_parser::extensions::GeneralName;
    let Ok((_, parsed)) = x509_parser::parse_x509_certificate(cert.as_ref()) else {
        return false;
    };
    let Ok(Some(sans)) = parsed.subject_alternative_name() else {
        return false;
    };
    let want_ip: Option<std::net::IpAddr> = want.parse().ok();
    sans.value.general_names.iter().any(|name| match name {
        GeneralName::DNSName(s) | GeneralName::URI(s) | GeneralName::RFC822Name(s) => *s == want,
        GeneralName::IPAddress(bytes) => want_ip.is_some_and(|ip| match ip {
            std::net::IpAddr::V4(v4) => *bytes == v4.octets(),
            std::net::IpAddr::V6(v6) => *bytes == v6.octets(),
        }),
        _ => false,
    })
}

/// A listener's TLS termination: the configuration in force, swapped whole on rotation.
pub struct Terminator {
    listener: &'static str,
    files: TlsFiles,
    alpn: &'static [&'static [u8]],
    config: ArcSwap<ServerConfig>,
}

impl std::fmt::Debug for Terminator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Terminator")
            .field("listener", &self.listener)
            .field("files", &self.files)
            .finish_non_exhaustive()
    }
}

impl Terminator {
    /// Loads `files` for `listener` (`grpc`, `http`: in logs).
    pub fn new(
        listener: &'static str,
        files: TlsFiles,
        alpn: &'static [&'static [u8]],
    ) -> Result<Arc<Self>, TlsError> {
        let config = server_config(&files, alpn)?;
        Ok(Arc::new(Self {
            listener,
            files,
            alpn,
            config: ArcSwap::from_pointee(config),
        }))
    }

    /// Reads the files again; on success new connections use them, on failure nothing changes.
    pub fn reload(&self) -> Result<(), TlsError> {
        let config = server_config(&self.files, self.alpn)?;
        self.config.store(Arc::new(config));
        Ok(())
    }

    /// The server side of a TLS handshake on `stream` (the caller bounds its time).
    pub async fn accept(&self, stream: Stream) -> std::io::Result<Stream> {
        let tls = tokio_rustls::TlsAcceptor::from(self.config.load_full())
            .accept(stream)
            .await?;
        Ok(Stream::Tls(Box::new(tls)))
    }

    /// Reloads after each burst of changes to the files, logging the outcome, until the handle
    /// is dropped.
    pub fn watch(self: &Arc<Self>) -> Result<WatchHandle, notify::Error> {
        let files = &self.files;
        let paths: Vec<PathBuf> = [
            Some(&files.cert),
            Some(&files.key),
            files.client_ca.as_ref(),
        ]
        .into_iter()
        .flatten()
        .cloned()
        .collect();
        let spec = Spec {
            dirs: paths.iter().map(|p| file_watch::dir_of(p)).collect(),
            thread: "sluice-tls-watch",
            stack: 256 * 1024,
        };
        let names: Vec<_> = paths
            .iter()
            .filter_map(|p| p.file_name())
            .map(|n| n.to_os_string())
            .collect();
        let this = Arc::clone(self);
        file_watch::watch(
            spec,
            move |p| p.file_name().is_some_and(|n| names.iter().any(|m| m == n)),
            move || match this.reload() {
                Ok(()) => tracing::info!(listener = this.listener, "TLS certificate reloaded"),
                Err(e) => tracing::warn!(
                    listener = this.listener,
                    error = %e,
                    "TLS files changed but cannot be used; the previous certificate keeps serving"
                ),
            },
        )
    }
}
