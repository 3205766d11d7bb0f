//! TLS: rustls on the `ring` provider, trusting the system's roots plus the CA certificates a
//! configuration names.

use std::path::Path;
use std::sync::Arc;

use rustls_pki_types::CertificateDer;
use rustls_pki_types::pem::PemObject;

/// Why CA certificates could not be used. The file's contents are never shown.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CertificateError {
    /// The file could not be read.
    #[error("cannot read {path}: {reason}")]
    Unreadable {
        /// The file.
        path: String,
        /// The system's reason.
        reason: String,
    },
    /// Not PEM certificates, or none.
    #[error("{0}")]
    Invalid(String),
}

/// The CA certificates (PEM) a connection trusts besides the system's.
///
/// ```
/// use dspex_telemetry_http::CaCertificates;
/// assert!(CaCertificates::from_pem(b"not a certificate".to_vec()).is_err());
/// assert!(!CaCertificates::none().is_set());
/// ```
#[derive(Clone, Default, PartialEq, Eq)]
pub struct CaCertificates {
    pem: Option<Arc<[u8]>>,
}

impl CaCertificates {
    /// None besides the system's.
    pub fn none() -> Self {
        CaCertificates::default()
    }

    /// The certificates in `pem`; an error says what is wrong with them.
    pub fn from_pem(pem: Vec<u8>) -> Result<Self, CertificateError> {
        let count = CertificateDer::pem_slice_iter(&pem)
            .map(|c| {
                c.map_err(|e| CertificateError::Invalid(format!("not a PEM certificate: {e}")))
            })
            .collect::<Result<Vec<_>, _>>()?
            .len();
        if count == 0 {
            return Err(CertificateError::Invalid("holds no PEM certificate".into()));
        }
        Ok(CaCertificates {
            pem: Some(pem.into()),
        })
    }

    /// The certificates in the PEM file at `path`.
    pub fn from_file(path: impl AsRef<Path>) -> Result<Self, CertificateError> {
        let path = path.as_ref();
        let pem = std::fs::read(path).map_err(|e| CertificateError::Unreadable {
            path: path.display().to_string(),
            reason: e.to_string(),
        })?;
        Self::from_pem(pem)
    }

    /// Whether any are given.
    pub fn is_set(&self) -> bool {
        self.pem.is_some()
    }

    /// The PEM text, if any.
    pub fn pem(&self) -> Option<&[u8]> {
        self.pem.as_deref()
    }
}

impl std::fmt::Debug for CaCertificates {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(if self.pem.is_some() {
            "CaCertificates(ca file)"
        } else {
            "CaCertificates(system)"
        })
    }
}

#[cfg(feature = "client")]
/// A rustls client configuration on the `ring` provider with the system's roots (which honour
/// `SSL_CERT_FILE` and `SSL_CERT_DIR`) and `extra`.
pub fn tls_config(extra: &CaCertificates) -> Result<rustls::ClientConfig, CertificateError> {
    let mut roots = rustls::RootCertStore::empty();
    // A system without a certificate store still reaches a peer whose CA is given.
    let system = rustls_native_certs::load_native_certs();
    roots.add_parsable_certificates(system.certs);
    if let Some(pem) = extra.pem() {
        for cert in CertificateDer::pem_slice_iter(pem) {
            let cert =
                cert.map_err(|e| CertificateError::Invalid(format!("not a PEM certificate: {e}")))?;
            roots
                .add(cert)
                .map_err(|e| CertificateError::Invalid(format!("unusable CA certificate: {e}")))?;
        }
    }
    // Other rustls users in the process (a client built without a provider of its own, as
    // features unify) need a process-wide provider: give them ours when none is set.
    if rustls::crypto::CryptoProvider::get_default().is_none() {
        let _ = rustls::crypto::ring::default_provider().install_default();
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| CertificateError::Invalid(e.to_string()))?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(config)
}
