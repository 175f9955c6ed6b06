//! The TLS acceptor of the gRPC port, from the configured PEM files.

use std::{path::Path, sync::Arc};

use tokio_rustls::TlsAcceptor;

use super::preflight::SettingError;
use crate::config::TlsFiles;

const CERT: &str = "tls-cert";
const KEY: &str = "tls-key";
const CLIENT_CA: &str = "tls-client-ca";

/// The server's TLS: its certificate chain and key, and with a client CA,
/// mTLS (a client without a certificate that CA signed is refused). ALPN
/// offers h2 only, as tonic's own TLS did. Every file is read and parsed
/// here, and the key must be the certificate's: a failure names the
/// setting of the file.
pub(super) async fn tls_config(files: &TlsFiles) -> Result<TlsAcceptor, SettingError> {
    use tokio_rustls::rustls::{
        Error as TlsError, RootCertStore, ServerConfig,
        crypto::ring::default_provider,
        pki_types::{CertificateDer, PrivateKeyDer, pem::PemObject as _},
        server::WebPkiClientVerifier,
    };
    async fn read(flag: &'static str, path: &Path) -> Result<Vec<u8>, SettingError> {
        tokio::fs::read(path).await.map_err(|e| {
            SettingError::new(
                flag,
                format!("cannot read {}: {}", path.display(), plain_io(&e)),
            )
        })
    }
    let certificates = |flag: &'static str, pem: &[u8], path: &Path| {
        CertificateDer::pem_slice_iter(pem)
            .collect::<Result<Vec<_>, _>>()
            .ok()
            .filter(|certs| !certs.is_empty())
            .ok_or_else(|| {
                SettingError::new(flag, format!("{} holds no PEM certificate", path.display()))
            })
    };
    let chain = certificates(CERT, &read(CERT, &files.cert).await?, &files.cert)?;
    // The parser's error can quote a line of the file: not for a key.
    let key = PrivateKeyDer::from_pem_slice(&read(KEY, &files.key).await?).map_err(|_| {
        SettingError::new(
            KEY,
            format!("{} holds no PEM private key", files.key.display()),
        )
    })?;
    let provider = Arc::new(default_provider());
    let builder = ServerConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| SettingError::new(CERT, format!("TLS configuration: {e}")))?;
    let builder = match &files.client_ca {
        None => builder.with_no_client_auth(),
        Some(path) => {
            let mut roots = RootCertStore::empty();
            let (added, _) = roots.add_parsable_certificates(certificates(
                CLIENT_CA,
                &read(CLIENT_CA, path).await?,
                path,
            )?);
            if added == 0 {
                return Err(SettingError::new(
                    CLIENT_CA,
                    format!("{} holds no usable CA certificate", path.display()),
                ));
            }
            let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider)
                .build()
                .map_err(|e| SettingError::new(CLIENT_CA, format!("{}: {e}", path.display())))?;
            builder.with_client_cert_verifier(verifier)
        }
    };
    let mut config = builder.with_single_cert(chain, key).map_err(|e| match e {
        TlsError::InconsistentKeys(_) => SettingError::new(
            KEY,
            format!(
                "the key in {} does not match the certificate in {}",
                files.key.display(),
                files.cert.display()
            ),
        ),
        other => SettingError::new(
            KEY,
            format!(
                "the key in {} cannot be used with the certificate in {}: {other}",
                files.key.display(),
                files.cert.display()
            ),
        ),
    })?;
    config.alpn_protocols = vec![b"h2".to_vec()];
    Ok(TlsAcceptor::from(Arc::new(config)))
}

/// "No such file or directory", without "(os error 2)".
fn plain_io(e: &std::io::Error) -> String {
    let text = e.to_string();
    match text.find(" (os error") {
        Some(at) => text[..at].to_lowercase(),
        None => text,
    }
}
