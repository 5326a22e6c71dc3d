//! How rollcall makes outgoing HTTP clients (issue 10): every outgoing call
//! (the final report, the LiveKit RoomService, the `rollcall webhook`
//! simulator) goes through [`client`], which speaks HTTPS with rustls.
//!
//! **Trusted roots** are the system's, read once per process by
//! `rustls-native-certs`, which honours `SSL_CERT_FILE` (a PEM bundle) and
//! `SSL_CERT_DIR` (`:`-separated directories) as OpenSSL's tools do: that
//! is how a private CA is trusted, and how the tests trust their test CA.
//! One difference: when either is set, only those locations are read (
//! OpenSSL would still read its default directory when only the file is
//! set), so `SSL_CERT_FILE=<private CA>` trusts exactly that CA.
//!
//! - A **broken `SSL_CERT_FILE`/`SSL_CERT_DIR`** (missing, unreadable, no
//!   certificate in it) is an **error**: [`client`] fails, and since the
//!   report client is built in `Application::build`, the server refuses to
//!   start. The variable is an explicit instruction; carrying on without it
//!   would either fail every delivery later, far from the cause, or trust
//!   roots the operator meant to replace.
//! - A **system store with no usable root** (a bare container without
//!   `ca-certificates`) falls back, with a warning, to Mozilla's roots
//!   compiled in (`webpki-roots`): rollcall can still reach LiveKit Cloud and
//!   a main app with a public certificate, and the log says what it trusts.
//!   Unreadable entries in an otherwise usable system store are logged and
//!   skipped, as every TLS client does.
//!
//! **Crypto provider**: ring, passed explicitly to the rustls config (the
//! provider reqwest's `rustls-tls-*` features bring, and it builds with just
//! a C compiler). Being explicit means no process-wide default provider has
//! to be installed, so rustls never panics for want of one, and there is
//! only one provider in the build.

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use rustls::RootCertStore;
use rustls_native_certs::CertificateResult;

const SSL_CERT_FILE: &str = "SSL_CERT_FILE";
const SSL_CERT_DIR: &str = "SSL_CERT_DIR";

/// An outgoing client could not be made.
#[derive(Debug, thiserror::Error)]
pub enum OutboundError {
    #[error(transparent)]
    Roots(#[from] RootsError),
    #[error("cannot build the HTTP client: {0}")]
    Client(#[from] reqwest::Error),
}

/// The trusted roots could not be loaded. `Clone` because the process keeps
/// the outcome of its one load and hands it to every caller.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RootsError {
    #[error("cannot read trusted certificates from {location}: {reason}")]
    Unreadable {
        location: RootSource,
        reason: String,
    },
    #[error("no usable PEM certificate in {location}")]
    NoCertificates { location: RootSource },
    #[error("TLS configuration: {0}")]
    Tls(String),
}

impl RootsError {
    /// The same error, said of `location` (which variable named the file).
    fn at(self, location: RootSource) -> Self {
        match self {
            Self::Unreadable { reason, .. } => Self::Unreadable { location, reason },
            Self::NoCertificates { .. } => Self::NoCertificates { location },
            other => other,
        }
    }
}

/// Where the trusted roots came from, for logs and errors.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RootSource {
    /// `SSL_CERT_FILE` and/or `SSL_CERT_DIR`, as set.
    Env {
        file: Option<PathBuf>,
        dir: Option<PathBuf>,
    },
    /// A file named by the caller ([`roots_from_file`]).
    File(PathBuf),
    /// The platform's store (on Linux: the bundle OpenSSL would use).
    System,
    /// `webpki-roots`, compiled into rollcall.
    Bundled,
}

impl fmt::Display for RootSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Env { file, dir } => {
                let mut parts = Vec::new();
                if let Some(file) = file {
                    parts.push(format!("{SSL_CERT_FILE}={}", file.display()));
                }
                if let Some(dir) = dir {
                    parts.push(format!("{SSL_CERT_DIR}={}", dir.display()));
                }
                f.write_str(&parts.join(" "))
            }
            Self::File(path) => write!(f, "{}", path.display()),
            Self::System => f.write_str("the system trust store"),
            Self::Bundled => f.write_str("webpki-roots (Mozilla's roots built into rollcall)"),
        }
    }
}

/// A loaded set of trusted roots.
#[derive(Debug, Clone)]
pub struct Roots {
    store: Arc<RootCertStore>,
    source: RootSource,
    /// Certificates found but not usable as trust anchors.
    skipped: usize,
}

impl Roots {
    pub fn len(&self) -> usize {
        self.store.len()
    }

    pub fn is_empty(&self) -> bool {
        self.store.is_empty()
    }

    pub fn source(&self) -> &RootSource {
        &self.source
    }

    pub fn skipped(&self) -> usize {
        self.skipped
    }
}

/// A client for outgoing calls: HTTPS with the process's trusted roots
/// (see the module docs), HTTP/2 or 1.1 as the server prefers, and
/// `timeout` for each whole request. Build one per purpose and keep it
/// (it pools connections); building is cheap after the first, which loads
/// the roots and logs what was loaded.
///
/// This is the one way rollcall makes a `reqwest::Client` for the outside
/// world (reports, the LiveKit RoomService, the webhook simulator).
pub fn client(timeout: Duration) -> Result<reqwest::Client, OutboundError> {
    let roots = process_roots()?;
    Ok(reqwest::Client::builder()
        .timeout(timeout)
        .use_preconfigured_tls(tls_config(roots)?)
        .build()?)
}

/// The rustls configuration of every outgoing client. Ours rather than
/// reqwest's so that the roots are the ones loaded once here and the
/// provider is chosen explicitly; reqwest takes it as it is.
fn tls_config(roots: &Roots) -> Result<rustls::ClientConfig, RootsError> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| RootsError::Tls(e.to_string()))?
        .with_root_certificates(Arc::clone(&roots.store))
        .with_no_client_auth();
    // reqwest sets ALPN only on configs it builds itself; offer what it
    // would (its `http2` feature is on), so either protocol is negotiated.
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(config)
}

/// The process's roots, loaded (and logged) on first use; later calls get
/// the same outcome, an error included, so a bad `SSL_CERT_FILE` is
/// reported the same way by every caller.
pub fn process_roots() -> Result<&'static Roots, RootsError> {
    static ROOTS: OnceLock<Result<Roots, RootsError>> = OnceLock::new();
    ROOTS
        .get_or_init(|| {
            let roots = load_roots();
            match &roots {
                Ok(r) if r.source == RootSource::Bundled => tracing::warn!(
                    roots = r.len(),
                    source = %r.source,
                    "no trusted root in the system store (is ca-certificates installed?); outgoing HTTPS trusts the roots built into rollcall"
                ),
                Ok(r) => tracing::info!(
                    roots = r.len(),
                    skipped = r.skipped,
                    source = %r.source,
                    "trusted roots for outgoing HTTPS loaded"
                ),
                Err(e) => tracing::error!(error = %e, "no trusted roots for outgoing HTTPS"),
            }
            roots
        })
        .as_ref()
        .map_err(Clone::clone)
}

/// Reads the environment once and loads from where it points: the
/// `SSL_CERT_*` locations (strictly), else the system store, else the
/// bundled roots.
fn load_roots() -> Result<Roots, RootsError> {
    // `load_native_certs` reads the same two variables and, when either is
    // set, loads only from them (see the module docs): we rely on it, and
    // only decide how strict to be about what it found.
    // Whether a variable counts as set must match what it decided, or its
    // errors would be judged by the wrong rule: `SSL_CERT_FILE` is set even
    // when empty (then unreadable: a startup error, not a silent fallback),
    // `SSL_CERT_DIR` only when it lists a non-empty directory.
    let file = std::env::var_os(SSL_CERT_FILE).map(PathBuf::from);
    let dir = std::env::var_os(SSL_CERT_DIR)
        .filter(|dirs| std::env::split_paths(dirs).any(|d| !d.as_os_str().is_empty()))
        .map(PathBuf::from);
    roots_from(rustls_native_certs::load_native_certs(), file, dir)
}

/// What `load_native_certs` found → roots, given the `SSL_CERT_*` values it
/// was loaded under.
fn roots_from(
    found: CertificateResult,
    file: Option<PathBuf>,
    dir: Option<PathBuf>,
) -> Result<Roots, RootsError> {
    if file.is_some() || dir.is_some() {
        let location = RootSource::Env { file, dir };
        if let RootSource::Env {
            file: Some(path), ..
        } = &location
        {
            // SSL_CERT_FILE must hold a root itself, whatever SSL_CERT_DIR
            // adds: a private CA file that lost its certificate is a mistake
            // to report, not to paper over with the directory's roots.
            roots_from_file(path).map_err(|e| e.at(location.clone()))?;
        }
        return collect(found, location, true);
    }
    let system = collect(found, RootSource::System, false)?;
    if !system.is_empty() {
        return Ok(system);
    }
    let mut store = RootCertStore::empty();
    store.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
    Ok(Roots {
        store: Arc::new(store),
        source: RootSource::Bundled,
        skipped: 0,
    })
}

/// Roots from one PEM file, as `SSL_CERT_FILE=<path>` would give them: a
/// missing or unreadable file, or one without a usable certificate, is an
/// error. (The environment-free core of [`process_roots`], for tests.)
pub fn roots_from_file(path: &Path) -> Result<Roots, RootsError> {
    let found = rustls_native_certs::load_certs_from_paths(Some(path), None);
    collect(found, RootSource::File(path.to_path_buf()), true)
}

/// Certificates found → roots. `strict` (locations an operator named): any
/// read error, or no usable root at all, is an error. Otherwise (the system
/// store) read errors are logged and an empty result is the caller's to
/// handle.
fn collect(
    found: CertificateResult,
    source: RootSource,
    strict: bool,
) -> Result<Roots, RootsError> {
    if let Some(first) = found.errors.first() {
        if strict {
            return Err(RootsError::Unreadable {
                location: source,
                reason: first.to_string(),
            });
        }
        for e in &found.errors {
            tracing::warn!(error = %e, source = %source, "skipped part of the trust store");
        }
    }
    let mut store = RootCertStore::empty();
    // Stores often hold a few certificates webpki cannot use as anchors
    // (ancient or malformed); skip those, as every TLS client does.
    let (_, skipped) = store.add_parsable_certificates(found.certs);
    if strict && store.is_empty() {
        return Err(RootsError::NoCertificates { location: source });
    }
    Ok(Roots {
        store: Arc::new(store),
        source,
        skipped,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn test_ca_pem() -> String {
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, "rollcall unit-test CA");
        let key = rcgen::KeyPair::generate().unwrap();
        params.self_signed(&key).unwrap().pem()
    }

    #[test]
    fn a_pem_file_with_a_ca_gives_its_root() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("ca.pem");
        // Text around the certificate is ignored, as in system bundles.
        std::fs::write(&path, format!("# our CA\n{}\n", test_ca_pem())).unwrap();
        let roots = roots_from_file(&path).unwrap();
        assert_eq!(roots.len(), 1);
        assert_eq!(roots.skipped(), 0);
        assert_eq!(roots.source(), &RootSource::File(path.clone()));
        // And a client can be configured with them.
        tls_config(&roots).unwrap();
    }

    #[test]
    fn a_missing_file_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("nowhere.pem");
        let err = roots_from_file(&path).unwrap_err();
        assert!(
            matches!(&err, RootsError::Unreadable { location: RootSource::File(p), .. } if *p == path),
            "{err:?}"
        );
        assert!(err.to_string().contains("nowhere.pem"), "{err}");
    }

    #[test]
    fn a_file_without_certificates_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("empty.pem");
        std::fs::write(&path, "not a certificate\n").unwrap();
        assert_eq!(
            roots_from_file(&path).unwrap_err(),
            RootsError::NoCertificates {
                location: RootSource::File(path.clone())
            }
        );
        // A private key alone is not a root either.
        let key = rcgen::KeyPair::generate().unwrap().serialize_pem();
        std::fs::write(&path, key).unwrap();
        assert!(matches!(
            roots_from_file(&path),
            Err(RootsError::NoCertificates { .. })
        ));
    }

    #[test]
    fn an_unusable_certificate_is_not_a_root() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("garbage.pem");
        // Well-formed PEM, but its contents are no certificate.
        std::fs::write(
            &path,
            "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n",
        )
        .unwrap();
        assert!(matches!(
            roots_from_file(&path),
            Err(RootsError::NoCertificates { .. })
        ));
    }

    #[test]
    fn an_empty_system_store_falls_back_to_the_bundled_roots() {
        let roots = roots_from(CertificateResult::default(), None, None).unwrap();
        assert_eq!(roots.source(), &RootSource::Bundled);
        assert!(roots.len() > 100, "{} bundled roots", roots.len());
    }

    #[test]
    fn named_locations_never_fall_back() {
        // SSL_CERT_DIR set, nothing usable found there: no bundled roots.
        let dir = PathBuf::from("/etc/private-certs");
        let err = roots_from(CertificateResult::default(), None, Some(dir.clone())).unwrap_err();
        assert_eq!(
            err,
            RootsError::NoCertificates {
                location: RootSource::Env {
                    file: None,
                    dir: Some(dir)
                }
            }
        );
        // SSL_CERT_FILE naming a missing file.
        let file = PathBuf::from("/nonexistent/private-ca.pem");
        let err = roots_from(CertificateResult::default(), Some(file), None).unwrap_err();
        assert!(
            err.to_string().starts_with(
                "cannot read trusted certificates from SSL_CERT_FILE=/nonexistent/private-ca.pem"
            ),
            "{err}"
        );
    }

    #[test]
    fn a_cert_file_without_certificates_is_an_error_even_beside_a_cert_dir() {
        let tmp = tempfile::tempdir().unwrap();
        let file = tmp.path().join("ca.pem");
        std::fs::write(&file, "the certificate was lost in a copy\n").unwrap();
        let dir = PathBuf::from("/etc/ssl/certs");
        // What SSL_CERT_DIR gave: one root.
        let ca = tmp.path().join("dir-ca.pem");
        std::fs::write(&ca, test_ca_pem()).unwrap();
        let from_dir = rustls_native_certs::load_certs_from_paths(Some(&ca), None);
        assert_eq!(from_dir.certs.len(), 1);
        let err = roots_from(from_dir, Some(file.clone()), Some(dir.clone())).unwrap_err();
        assert_eq!(
            err,
            RootsError::NoCertificates {
                location: RootSource::Env {
                    file: Some(file),
                    dir: Some(dir)
                }
            }
        );
        assert!(
            err.to_string()
                .starts_with("no usable PEM certificate in SSL_CERT_FILE=")
        );
    }

    #[test]
    fn sources_say_where_roots_came_from() {
        let env = RootSource::Env {
            file: Some("/etc/ca.pem".into()),
            dir: None,
        };
        assert_eq!(env.to_string(), "SSL_CERT_FILE=/etc/ca.pem");
        let both = RootSource::Env {
            file: Some("/a.pem".into()),
            dir: Some("/certs".into()),
        };
        assert_eq!(both.to_string(), "SSL_CERT_FILE=/a.pem SSL_CERT_DIR=/certs");
    }
}
