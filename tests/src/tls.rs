//! Throwaway certificates for TLS tests (made with rcgen), the `redis-server` arguments that
//! make a node speak TLS only, and the ACL lines `docs/operations.md` documents for Sluice.

use std::path::{Path, PathBuf};

use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DistinguishedName, DnType, IsCa, KeyPair,
    KeyUsagePurpose,
};

use crate::node::CliAccess;

/// A CA, a server certificate and a client certificate, as PEM files in a directory.
pub struct Pki {
    pub ca: PathBuf,
    /// Certificate and key. Names `localhost` and `127.0.0.1`: a single server is reached by
    /// name, while Cluster nodes and the master Sentinel names are reached at the address Redis
    /// announces, an IP address.
    pub server: (PathBuf, PathBuf),
    /// Certificate and key for mutual TLS (Redis also uses the server pair as its client
    /// certificate towards other nodes: replication, the cluster bus, Sentinel's links).
    pub client: (PathBuf, PathBuf),
}

fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, text).expect("write certificate file");
    path
}

impl Pki {
    /// Makes a fresh CA and its two leaves in `dir`, their files prefixed with `prefix`.
    pub fn generate(dir: &Path, prefix: &str) -> Self {
        let ca = TestCa::new(dir, prefix);
        Pki {
            server: ca.leaf(&["localhost", "127.0.0.1"], "server", false),
            client: ca.leaf(&["sluice"], "client", false),
            ca: ca.cert,
        }
    }

    /// How `redis-cli` reaches a TLS-only node: this CA, the client certificate.
    pub fn cli_access(&self) -> CliAccess {
        CliAccess {
            auth: None,
            tls: Some((
                self.ca.clone(),
                self.client.0.clone(),
                self.client.1.clone(),
            )),
        }
    }

    /// `redis-cli` options for the same (for commands run outside a node, such as `--cluster`).
    pub fn cli_args(&self) -> Vec<String> {
        vec![
            "--tls".into(),
            "--cacert".into(),
            path(&self.ca),
            "--cert".into(),
            path(&self.client.0),
            "--key".into(),
            path(&self.client.1),
        ]
    }

    /// Turns a node's arguments (from [`crate::node::base_args`]) into a TLS-only node on the same
    /// port, requiring client certificates from this CA, and using TLS to its master
    /// (`tls-replication`) and, in a Cluster, on the bus (`tls-cluster`).
    pub fn serve_tls_only(&self, args: &mut Vec<String>, cluster: bool) {
        let at = args
            .iter()
            .position(|a| a == "--port")
            .expect("a --port argument");
        let port = std::mem::replace(&mut args[at + 1], "0".into());
        args.extend(
            [
                "--tls-port",
                &port,
                "--tls-cert-file",
                &path(&self.server.0),
                "--tls-key-file",
                &path(&self.server.1),
                "--tls-ca-cert-file",
                &path(&self.ca),
                "--tls-auth-clients",
                "yes",
                "--tls-replication",
                "yes",
            ]
            .iter()
            .map(|s| s.to_string()),
        );
        if cluster {
            args.extend(["--tls-cluster".into(), "yes".into()]);
        }
    }

    /// The same settings as lines of a configuration file (for a Sentinel's), listening on
    /// `port`.
    pub fn config_lines(&self, port: u16) -> String {
        format!(
            "port 0\ntls-port {port}\ntls-cert-file {}\ntls-key-file {}\ntls-ca-cert-file {}\n\
             tls-auth-clients yes\ntls-replication yes\n",
            path(&self.server.0),
            path(&self.server.1),
            path(&self.ca),
        )
    }
}

fn path(p: &Path) -> String {
    p.to_string_lossy().into_owned()
}

/// The `ACL SETUSER sluice …` lines of `docs/operations.md`, each split into words with
/// `PASSWORD` replaced by `password`: the base line first, then the additions it documents
/// (Cluster, Sentinel, overrides). Tests pick theirs by content, so the documented lines are the
/// ones tested.
pub fn documented_acl_lines(password: &str) -> Vec<Vec<String>> {
    let doc = include_str!("../../docs/operations.md");
    let lines: Vec<Vec<String>> = doc
        .lines()
        .map(str::trim_start)
        .filter(|l| l.starts_with("ACL SETUSER sluice "))
        .map(|l| {
            l.split_whitespace()
                .map(|w| w.replace("PASSWORD", password))
                .collect()
        })
        .collect();
    assert!(
        lines.first().is_some_and(|l| l.contains(&"on".to_string())),
        "docs/operations.md shows the ACL line first: {lines:?}"
    );
    lines
}

/// The documented base line and the documented additions whose text contains one of `needles`.
pub fn documented_acl(password: &str, needles: &[&str]) -> Vec<Vec<String>> {
    let mut lines = documented_acl_lines(password).into_iter();
    let mut chosen = vec![lines.next().expect("the base line")];
    for needle in needles {
        let addition = lines
            .clone()
            .find(|l| l.iter().any(|w| w.contains(needle)))
            .unwrap_or_else(|| panic!("docs/operations.md documents an ACL line with {needle}"));
        chosen.push(addition);
    }
    chosen
}

/// Commands the documented user must never be able to run.
pub const FORBIDDEN: &[&[&str]] = &[
    &["FLUSHALL"],
    &["FLUSHDB"],
    &["KEYS", "*"],
    &["CONFIG", "GET", "*"],
    &["SCAN", "0"],
    &["DEBUG", "SLEEP", "0"],
    &["SHUTDOWN"],
    &["GET", "other:key"],
    &["EVAL", "return 1", "0"],
];

/// Runs every line of `acl` on `node` (ACL users are per node: neither replication nor the
/// Cluster copies them) and checks that the user can run none of [`FORBIDDEN`].
pub fn create_user(node: &crate::node::RedisNode, acl: &[Vec<String>]) {
    for line in acl {
        let words: Vec<&str> = line.iter().map(String::as_str).collect();
        assert_eq!(node.cli(&words).trim(), "OK", "{words:?}");
    }
    for forbidden in FORBIDDEN {
        let mut args = vec!["ACL", "DRYRUN", "sluice"];
        args.extend(forbidden.iter());
        let answer = node.cli(&args);
        assert!(
            answer.contains("no permissions"),
            "the sluice user may run {forbidden:?}: {answer}"
        );
    }
}

/// A test CA that keeps its key, to sign leaves: other names, other roles, certificates already
/// expired. (Distinct names: a leaf named like its issuer would look self-signed to OpenSSL.)
pub struct TestCa {
    issuer: CertifiedIssuer<'static, KeyPair>,
    dir: PathBuf,
    prefix: String,
    /// The CA certificate (PEM file).
    pub cert: PathBuf,
}

impl TestCa {
    pub fn new(dir: &Path, prefix: &str) -> Self {
        let mut params = CertificateParams::new(Vec::<String>::new()).expect("CA params");
        params.distinguished_name = DistinguishedName::new();
        params
            .distinguished_name
            .push(DnType::CommonName, format!("Sluice test CA {prefix}"));
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        let issuer =
            CertifiedIssuer::self_signed(params, KeyPair::generate().expect("CA key")).expect("CA");
        let cert = write(dir, &format!("{prefix}ca.pem"), &issuer.pem());
        Self {
            issuer,
            dir: dir.to_path_buf(),
            prefix: prefix.into(),
            cert,
        }
    }

    /// A leaf with these subject alternative names, written as `<prefix><role>.pem` / `.key`;
    /// `expired` dates it 2020–2021.
    pub fn leaf(&self, names: &[&str], role: &str, expired: bool) -> (PathBuf, PathBuf) {
        let key = KeyPair::generate().expect("leaf key");
        let names: Vec<String> = names.iter().map(|s| (*s).to_owned()).collect();
        let mut params = CertificateParams::new(names).expect("leaf params");
        params.distinguished_name = DistinguishedName::new();
        params.distinguished_name.push(DnType::CommonName, role);
        if expired {
            params.not_before = rcgen::date_time_ymd(2020, 1, 1);
            params.not_after = rcgen::date_time_ymd(2021, 1, 1);
        }
        let cert = params
            .signed_by(&key, &self.issuer)
            .expect("leaf certificate");
        (
            write(
                &self.dir,
                &format!("{}{role}.pem", self.prefix),
                &cert.pem(),
            ),
            write(
                &self.dir,
                &format!("{}{role}.key", self.prefix),
                &key.serialize_pem(),
            ),
        )
    }

    /// The PEM text of a file this CA wrote.
    pub fn read(path: &Path) -> String {
        std::fs::read_to_string(path).expect("read PEM file")
    }
}
