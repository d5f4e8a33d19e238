//! rustls configuration for node links: mutual TLS against the cluster CA.

use std::path::Path;
use std::sync::Arc;

use quinn::crypto::rustls::{QuicClientConfig, QuicServerConfig};
use rustls::crypto::CryptoProvider;
use rustls::server::WebPkiClientVerifier;
use rustls::RootCertStore;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer, ServerName};

use super::{LinkConfig, LinkError, ALPN};

/// The node's TLS material, loaded once at start.
pub(crate) struct TlsMaterial {
    roots: Arc<RootCertStore>,
    chain: Vec<CertificateDer<'static>>,
    key: PrivateKeyDer<'static>,
    /// Raw key bytes (DER), the seed of the stateless reset key.
    key_der: Vec<u8>,
}

fn read(path: &Path) -> Result<Vec<u8>, LinkError> {
    std::fs::read(path).map_err(|source| LinkError::ReadFile {
        path: path.to_owned(),
        source,
    })
}

fn certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, LinkError> {
    let pem = read(path)?;
    let certs: Vec<_> = CertificateDer::pem_slice_iter(&pem)
        .filter_map(Result::ok)
        .collect();
    if certs.is_empty() {
        return Err(LinkError::Pem {
            path: path.to_owned(),
            what: "certificate",
        });
    }
    Ok(certs)
}

/// The process-wide provider: ring.
pub(crate) fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

impl TlsMaterial {
    pub(crate) fn load(config: &LinkConfig) -> Result<TlsMaterial, LinkError> {
        let mut roots = RootCertStore::empty();
        for ca in certs(&config.ca_cert)? {
            roots.add(ca)?;
        }
        let chain = certs(&config.cert)?;
        let key_pem = read(&config.key)?;
        let key = PrivateKeyDer::from_pem_slice(&key_pem).map_err(|_| LinkError::Pem {
            path: config.key.clone(),
            what: "private key",
        })?;
        let key_der = key.secret_der().to_vec();
        Ok(TlsMaterial {
            roots: Arc::new(roots),
            chain,
            key,
            key_der,
        })
    }

    pub(crate) fn key_der(&self) -> &[u8] {
        &self.key_der
    }

    /// Server side: TLS 1.3, client certificate required and chained to the CA.
    pub(crate) fn server_config(&self) -> Result<QuicServerConfig, LinkError> {
        let provider = provider();
        let verifier =
            WebPkiClientVerifier::builder_with_provider(self.roots.clone(), provider.clone())
                .build()?;
        let mut tls = rustls::ServerConfig::builder_with_provider(provider)
            .with_protocol_versions(&[&rustls::version::TLS13])?
            .with_client_cert_verifier(verifier)
            .with_single_cert(self.chain.clone(), self.key.clone_key())?;
        tls.alpn_protocols = vec![ALPN.to_vec()];
        tls.max_early_data_size = 0;
        Ok(QuicServerConfig::try_from(tls)?)
    }

    /// Client side: TLS 1.3, server verified against the CA, our certificate presented.
    pub(crate) fn client_config(&self) -> Result<QuicClientConfig, LinkError> {
        let mut tls = rustls::ClientConfig::builder_with_provider(provider())
            .with_protocol_versions(&[&rustls::version::TLS13])?
            .with_root_certificates(self.roots.clone())
            .with_client_auth_cert(self.chain.clone(), self.key.clone_key())?;
        tls.alpn_protocols = vec![ALPN.to_vec()];
        tls.enable_early_data = false;
        Ok(QuicClientConfig::try_from(tls)?)
    }
}

/// Whether the peer's (already CA-verified) end-entity certificate is issued for `name`.
pub(crate) fn peer_cert_valid_for(conn: &quinn::Connection, name: &str) -> bool {
    let Some(identity) = conn.peer_identity() else {
        return false;
    };
    let Ok(chain) = identity.downcast::<Vec<CertificateDer<'static>>>() else {
        return false;
    };
    let Some(end_entity) = chain.first() else {
        return false;
    };
    let Ok(server_name) = ServerName::try_from(name.to_owned()) else {
        return false;
    };
    match rustls::server::ParsedCertificate::try_from(end_entity) {
        Ok(parsed) => rustls::client::verify_server_name(&parsed, &server_name).is_ok(),
        Err(_) => false,
    }
}
