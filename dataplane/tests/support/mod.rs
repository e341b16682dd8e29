//! Pieces the dataplane's test binaries share: TLS clients that trust the gateway's generated
//! certificate.

use std::path::Path;
use std::sync::Arc;

use rustls_pki_types::CertificateDer;
use rustls_pki_types::pem::PemObject;

/// The certificates of the PEM file `cert` as the only roots.
pub(crate) fn roots(cert: &Path) -> rustls::RootCertStore {
    let mut roots = rustls::RootCertStore::empty();
    for c in CertificateDer::pem_file_iter(cert).expect("cert file") {
        roots.add(c.expect("cert")).expect("root");
    }
    roots
}

/// A TLS client over TCP trusting only `cert`, offering `alpn`.
pub(crate) fn tls_client(cert: &Path, alpn: &[u8]) -> tokio_rustls::TlsConnector {
    let mut config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .expect("versions")
    .with_root_certificates(roots(cert))
    .with_no_client_auth();
    config.alpn_protocols = vec![alpn.to_vec()];
    tokio_rustls::TlsConnector::from(Arc::new(config))
}
