//! The TLS acceptor of the gRPC port, from the configured PEM files.

use std::sync::Arc;

use anyhow::Context as _;
use tokio_rustls::TlsAcceptor;

use crate::config::TlsFiles;

/// The server's TLS: its certificate chain and key, and with a client CA,
/// mTLS (a client without a certificate that CA signed is refused). ALPN
/// offers h2 only, as tonic's own TLS did.
pub(super) async fn tls_config(files: &TlsFiles) -> anyhow::Result<TlsAcceptor> {
    use tokio_rustls::rustls::{
        RootCertStore, ServerConfig,
        crypto::ring::default_provider,
        pki_types::{CertificateDer, PrivateKeyDer, pem::PemObject as _},
        server::WebPkiClientVerifier,
    };
    let read = |path: std::path::PathBuf| async move {
        tokio::fs::read(&path)
            .await
            .with_context(|| format!("cannot read {}", path.display()))
    };
    let certificates = |pem: &[u8], path: &std::path::Path| {
        let certs = CertificateDer::pem_slice_iter(pem)
            .collect::<Result<Vec<_>, _>>()
            .ok()
            .filter(|certs| !certs.is_empty());
        certs.with_context(|| format!("{} holds no PEM certificate", path.display()))
    };
    let chain = certificates(&read(files.cert.clone()).await?, &files.cert)?;
    // The parser's error can quote a line of the file: not for a key.
    let key = PrivateKeyDer::from_pem_slice(&read(files.key.clone()).await?)
        .ok()
        .with_context(|| format!("{} holds no PEM private key", files.key.display()))?;
    let provider = Arc::new(default_provider());
    let builder = ServerConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .context("TLS configuration")?;
    let builder = match &files.client_ca {
        None => builder.with_no_client_auth(),
        Some(path) => {
            let mut roots = RootCertStore::empty();
            let (added, _) =
                roots.add_parsable_certificates(certificates(&read(path.clone()).await?, path)?);
            anyhow::ensure!(
                added > 0,
                "{} holds no usable CA certificate",
                path.display()
            );
            let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider)
                .build()
                .context("TLS client CA")?;
            builder.with_client_cert_verifier(verifier)
        }
    };
    let mut config = builder
        .with_single_cert(chain, key)
        .context("TLS certificate and key")?;
    config.alpn_protocols = vec![b"h2".to_vec()];
    Ok(TlsAcceptor::from(Arc::new(config)))
}
