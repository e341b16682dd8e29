//! TLS for the gateway's TCP listener: the certificate pair from the config, or a self-signed pair
//! for `localhost`/`127.0.0.1`/`::1` generated once and kept under the data directory, served with
//! ALPN `h2` and `http/1.1` (rustls on ring).

use crate::config::TlsConfig;
use crate::error::DataplaneError;
use rustls::ServerConfig;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use std::path::Path;
use std::sync::Arc;

/// ALPN protocols offered, most preferred first.
pub const ALPN: &[&[u8]] = &[b"h2", b"http/1.1"];

fn err(what: &str, path: &Path, e: impl std::fmt::Display) -> DataplaneError {
    DataplaneError::Config(format!("dataplane TLS: {what} {}: {e}", path.display()))
}

/// Writes a self-signed pair for the loopback names unless both files already exist.
pub fn ensure_self_signed(cert_file: &Path, key_file: &Path) -> Result<(), DataplaneError> {
    if cert_file.exists() && key_file.exists() {
        return Ok(());
    }
    let names = vec![
        "localhost".to_owned(),
        "127.0.0.1".to_owned(),
        "::1".to_owned(),
    ];
    let pair = rcgen::generate_simple_self_signed(names).map_err(|e| {
        DataplaneError::Config(format!("dataplane TLS: cannot generate a certificate: {e}"))
    })?;
    if let Some(dir) = cert_file.parent() {
        std::fs::create_dir_all(dir).map_err(|e| err("cannot create", dir, e))?;
    }
    if let Some(dir) = key_file.parent() {
        std::fs::create_dir_all(dir).map_err(|e| err("cannot create", dir, e))?;
    }
    std::fs::write(cert_file, pair.cert.pem()).map_err(|e| err("cannot write", cert_file, e))?;
    write_private(key_file, pair.signing_key.serialize_pem().as_bytes())?;
    tracing::info!(cert = %cert_file.display(), "generated a self-signed TLS certificate for localhost");
    Ok(())
}

/// Writes a private key readable by the owner only.
fn write_private(path: &Path, bytes: &[u8]) -> Result<(), DataplaneError> {
    use std::io::Write;
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    let mut f = options
        .open(path)
        .map_err(|e| err("cannot write", path, e))?;
    f.write_all(bytes).map_err(|e| err("cannot write", path, e))
}

/// The rustls server config for `cfg` (generating the self-signed pair first when asked to).
pub fn server_config(cfg: &TlsConfig) -> Result<Arc<ServerConfig>, DataplaneError> {
    if cfg.generate {
        ensure_self_signed(&cfg.cert_file, &cfg.key_file)?;
    }
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(&cfg.cert_file)
        .map_err(|e| err("cannot read", &cfg.cert_file, e))?
        .collect::<Result<_, _>>()
        .map_err(|e| err("bad certificate in", &cfg.cert_file, e))?;
    if certs.is_empty() {
        return Err(err("no certificate in", &cfg.cert_file, "empty"));
    }
    let key = PrivateKeyDer::from_pem_file(&cfg.key_file)
        .map_err(|e| err("cannot read a private key from", &cfg.key_file, e))?;
    let mut config =
        ServerConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
            .with_safe_default_protocol_versions()
            .map_err(|e| DataplaneError::Config(format!("dataplane TLS: {e}")))?
            .with_no_client_auth()
            .with_single_cert(certs, key)
            .map_err(|e| err("certificate and key do not match in", &cfg.cert_file, e))?;
    config.alpn_protocols = ALPN.iter().map(|p| p.to_vec()).collect();
    Ok(Arc::new(config))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generates_once_and_loads() {
        let dir = std::env::temp_dir().join(format!("nvcf-tls-{}", uuid::Uuid::new_v4()));
        let cfg = TlsConfig {
            listen: "127.0.0.1:0".parse().expect("addr"),
            cert_file: dir.join("tls/cert.pem"),
            key_file: dir.join("tls/key.pem"),
            generate: true,
        };
        let c = server_config(&cfg).expect("generate");
        assert_eq!(c.alpn_protocols, vec![b"h2".to_vec(), b"http/1.1".to_vec()]);
        let first = std::fs::read(&cfg.cert_file).expect("cert");
        server_config(&cfg).expect("reload");
        assert_eq!(
            std::fs::read(&cfg.cert_file).expect("cert"),
            first,
            "kept, not regenerated"
        );
        let missing = TlsConfig {
            generate: false,
            cert_file: dir.join("nope.pem"),
            ..cfg
        };
        let e = server_config(&missing).expect_err("missing");
        assert!(e.to_string().contains("nope.pem"), "{e}");
        let _ = std::fs::remove_dir_all(&dir);
    }
}
