//! Mutual TLS between coordinator and agents, both sides rustls with the ring provider.
//!
//! Trust is one cluster CA (`ca.pem`). A certificate carries its role twice: the extended key
//! usage (serverAuth for an agent, clientAuth for a client — webpki refuses a certificate whose
//! EKU does not fit the side presenting it) and a SAN URI `dye://role/agent` or
//! `dye://role/client` that both verifiers below require on top of the CA's signature. Agents
//! share one certificate whose DNS name is [`AGENT_NAME`]; the client verifies that name
//! whatever address it dialled, so an agent is reachable by IP.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::server::WebPkiClientVerifier;
use rustls::{
    client::WebPkiServerVerifier, DigitallySignedStruct, DistinguishedName, RootCertStore,
    SignatureScheme,
};

/// The DNS name in the agents' certificate, verified by clients.
pub const AGENT_NAME: &str = "dye-agent";
/// ALPN for gRPC over HTTP/2.
const ALPN_H2: &[u8] = b"h2";

/// Which side a certificate is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    Agent,
    Client,
}

impl Role {
    /// The SAN URI marking this role.
    pub fn uri(self) -> &'static str {
        match self {
            Role::Agent => "dye://role/agent",
            Role::Client => "dye://role/client",
        }
    }

    /// Certificate and key file names inside a certificate directory.
    pub fn files(self) -> (&'static str, &'static str) {
        match self {
            Role::Agent => ("agent.pem", "agent-key.pem"),
            Role::Client => ("client.pem", "client-key.pem"),
        }
    }
}

impl std::fmt::Display for Role {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Role::Agent => "agent",
            Role::Client => "client",
        })
    }
}

#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("reading {path}: {detail}")]
    Read { path: PathBuf, detail: String },
    #[error("{path} holds no certificate")]
    NoCertificate { path: PathBuf },
    #[error("TLS configuration: {0}")]
    Config(String),
}

/// The CA, this side's certificate chain and key, read from a certificate directory.
#[derive(Debug)]
pub struct Identity {
    roots: Arc<RootCertStore>,
    chain: Vec<CertificateDer<'static>>,
    key: PrivateKeyDer<'static>,
}

impl Identity {
    /// Reads `DIR/ca.pem` and `role`'s certificate and key.
    pub fn load(dir: &Path, role: Role) -> Result<Identity, TlsError> {
        let ca_path = dir.join("ca.pem");
        let mut roots = RootCertStore::empty();
        for ca in read_certs(&ca_path)? {
            roots.add(ca).map_err(|e| TlsError::Read {
                path: ca_path.clone(),
                detail: e.to_string(),
            })?;
        }
        let (cert, key) = role.files();
        let chain = read_certs(&dir.join(cert))?;
        let key_path = dir.join(key);
        let key = PrivateKeyDer::from_pem_file(&key_path).map_err(|e| TlsError::Read {
            path: key_path,
            detail: e.to_string(),
        })?;
        Ok(Identity {
            roots: Arc::new(roots),
            chain,
            key,
        })
    }

    /// The agent's server configuration: client certificates required, signed by the CA,
    /// clientAuth EKU, client role.
    pub fn server_config(self) -> Result<rustls::ServerConfig, TlsError> {
        let provider = provider();
        let inner = WebPkiClientVerifier::builder_with_provider(self.roots, provider.clone())
            .build()
            .map_err(|e| TlsError::Config(e.to_string()))?;
        let verifier = Arc::new(RoleClientVerifier { inner });
        let mut config = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| TlsError::Config(e.to_string()))?
            .with_client_cert_verifier(verifier)
            .with_single_cert(self.chain, self.key)
            .map_err(|e| TlsError::Config(e.to_string()))?;
        config.alpn_protocols = vec![ALPN_H2.to_vec()];
        Ok(config)
    }

    /// The coordinator's client configuration: agents must present a CA-signed certificate
    /// for [`AGENT_NAME`] with serverAuth EKU and the agent role.
    pub fn client_config(self) -> Result<rustls::ClientConfig, TlsError> {
        let provider = provider();
        let inner = WebPkiServerVerifier::builder_with_provider(self.roots, provider.clone())
            .build()
            .map_err(|e| TlsError::Config(e.to_string()))?;
        let verifier = Arc::new(RoleServerVerifier { inner });
        let mut config = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| TlsError::Config(e.to_string()))?
            .dangerous()
            .with_custom_certificate_verifier(verifier)
            .with_client_auth_cert(self.chain, self.key)
            .map_err(|e| TlsError::Config(e.to_string()))?;
        config.alpn_protocols = vec![ALPN_H2.to_vec()];
        Ok(config)
    }
}

/// The server name clients verify.
pub fn agent_server_name() -> ServerName<'static> {
    ServerName::try_from(AGENT_NAME).expect("AGENT_NAME is a valid DNS name")
}

fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

fn read_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let certs = CertificateDer::pem_file_iter(path)
        .and_then(|it| it.collect::<Result<Vec<_>, _>>())
        .map_err(|e| TlsError::Read {
            path: path.to_path_buf(),
            detail: e.to_string(),
        })?;
    if certs.is_empty() {
        return Err(TlsError::NoCertificate {
            path: path.to_path_buf(),
        });
    }
    Ok(certs)
}

/// The roles a certificate's SAN URIs mark (a certificate that cannot be parsed has none).
pub fn roles_of(cert: &CertificateDer<'_>) -> Vec<Role> {
    use x509_parser::prelude::{FromDer, GeneralName, X509Certificate};
    let Ok((_, parsed)) = X509Certificate::from_der(cert.as_ref()) else {
        return Vec::new();
    };
    let Ok(Some(san)) = parsed.subject_alternative_name() else {
        return Vec::new();
    };
    san.value
        .general_names
        .iter()
        .filter_map(|n| match n {
            GeneralName::URI(u) if *u == Role::Agent.uri() => Some(Role::Agent),
            GeneralName::URI(u) if *u == Role::Client.uri() => Some(Role::Client),
            _ => None,
        })
        .collect()
}

fn require_role(cert: &CertificateDer<'_>, role: Role) -> Result<(), rustls::Error> {
    if roles_of(cert).contains(&role) {
        Ok(())
    } else {
        Err(rustls::Error::General(format!(
            "the certificate is not marked for the {role} role (no SAN URI {})",
            role.uri()
        )))
    }
}

/// webpki's client verification (CA, validity, clientAuth EKU) plus the client role.
#[derive(Debug)]
struct RoleClientVerifier {
    inner: Arc<dyn ClientCertVerifier>,
}

impl ClientCertVerifier for RoleClientVerifier {
    fn offer_client_auth(&self) -> bool {
        true
    }

    fn client_auth_mandatory(&self) -> bool {
        true
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
        let ok = self
            .inner
            .verify_client_cert(end_entity, intermediates, now)?;
        require_role(end_entity, Role::Client)?;
        Ok(ok)
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

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.inner.supported_verify_schemes()
    }
}

/// webpki's server verification (CA, validity, serverAuth EKU, [`AGENT_NAME`]) plus the agent
/// role.
#[derive(Debug)]
struct RoleServerVerifier {
    inner: Arc<WebPkiServerVerifier>,
}

impl ServerCertVerifier for RoleServerVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        _dialled: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let ok = self.inner.verify_server_cert(
            end_entity,
            intermediates,
            &agent_server_name(),
            ocsp_response,
            now,
        )?;
        require_role(end_entity, Role::Agent)?;
        Ok(ok)
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

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.inner.supported_verify_schemes()
    }
}
