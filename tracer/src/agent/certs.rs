//! `dye certs DIR`: a cluster CA and one agent and one client certificate signed by it (rcgen,
//! ECDSA P-256). Roles as [`super::tls`] checks them: EKU serverAuth + SAN URI
//! `dye://role/agent` + DNS name `dye-agent` for agents, EKU clientAuth + `dye://role/client`
//! for clients. Keys are written mode 0600; nothing existing is overwritten.

use std::fs::OpenOptions;
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose, SanType,
};
use time::{Duration, OffsetDateTime};

use super::tls::{Role, AGENT_NAME};

/// How long the certificates are valid.
const VALIDITY_DAYS: i64 = 365;

#[derive(Debug, thiserror::Error)]
pub enum CertsError {
    #[error("generating certificates: {0}")]
    Generate(#[from] rcgen::Error),
    #[error("{path}: {source}")]
    Write {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("random CA name: {0}")]
    Random(String),
    #[error("{0} already exists: dye certs never overwrites certificates or keys")]
    Exists(PathBuf),
}

/// The files `dye certs` writes, in order.
pub const FILES: [&str; 5] = [
    "ca.pem",
    "agent.pem",
    "agent-key.pem",
    "client.pem",
    "client-key.pem",
];

/// Creates `dir` (it may exist, empty of these files) and writes the CA and both certificates.
pub fn create(dir: &Path) -> Result<(), CertsError> {
    let io = |path: &Path| {
        let path = path.to_path_buf();
        move |source| CertsError::Write { path, source }
    };
    for f in FILES {
        let p = dir.join(f);
        if p.exists() {
            return Err(CertsError::Exists(p));
        }
    }
    std::fs::create_dir_all(dir).map_err(io(dir))?;

    let now = OffsetDateTime::now_utc();
    let mut ca = CertificateParams::new(Vec::<String>::new())?;
    // A name of its own per CA, so a certificate from another `dye certs` run is refused as
    // from an unknown issuer rather than as a bad signature.
    let mut tag = [0u8; 4];
    dye_capture::random::fill(&mut tag).map_err(|e| CertsError::Random(e.to_string()))?;
    ca.distinguished_name.push(
        DnType::CommonName,
        format!("dye cluster CA {:08x}", u32::from_be_bytes(tag)),
    );
    ca.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    ca.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    validity(&mut ca, now);
    let ca_key = KeyPair::generate()?;
    let ca_cert = ca.self_signed(&ca_key)?;
    let issuer = Issuer::new(ca, ca_key);

    let mut files = vec![("ca.pem", ca_cert.pem(), false)];
    for role in [Role::Agent, Role::Client] {
        let names = match role {
            Role::Agent => vec![AGENT_NAME.to_string()],
            Role::Client => Vec::new(),
        };
        let mut p = CertificateParams::new(names)?;
        p.distinguished_name
            .push(DnType::CommonName, format!("dye {role}"));
        p.subject_alt_names
            .push(SanType::URI(role.uri().try_into()?));
        p.extended_key_usages = vec![match role {
            Role::Agent => ExtendedKeyUsagePurpose::ServerAuth,
            Role::Client => ExtendedKeyUsagePurpose::ClientAuth,
        }];
        p.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        validity(&mut p, now);
        let key = KeyPair::generate()?;
        let cert = p.signed_by(&key, &issuer)?;
        let (cert_file, key_file) = role.files();
        files.push((cert_file, cert.pem(), false));
        files.push((key_file, key.serialize_pem(), true));
    }
    for (name, pem, secret) in files {
        let path = dir.join(name);
        let mut f = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(if secret { 0o600 } else { 0o644 })
            .open(&path)
            .map_err(io(&path))?;
        f.write_all(pem.as_bytes()).map_err(io(&path))?;
    }
    Ok(())
}

/// From an hour ago (clocks differ between nodes) for [`VALIDITY_DAYS`].
fn validity(p: &mut CertificateParams, now: OffsetDateTime) {
    p.not_before = now - Duration::hours(1);
    p.not_after = now + Duration::days(VALIDITY_DAYS);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::agent::tls::{roles_of, Identity};
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::CertificateDer;

    #[test]
    fn certificates_carry_their_roles_and_load_as_identities() {
        let dir = std::env::temp_dir().join(format!("dye-certs-test-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        create(&dir).unwrap();
        for (file, role) in [("agent.pem", Role::Agent), ("client.pem", Role::Client)] {
            let cert = CertificateDer::from_pem_file(dir.join(file)).unwrap();
            assert_eq!(roles_of(&cert), vec![role], "{file}");
        }
        let ca = CertificateDer::from_pem_file(dir.join("ca.pem")).unwrap();
        assert!(roles_of(&ca).is_empty());
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(dir.join("client-key.pem"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
        Identity::load(&dir, Role::Agent)
            .unwrap()
            .server_config()
            .unwrap();
        Identity::load(&dir, Role::Client)
            .unwrap()
            .client_config()
            .unwrap();
        // A second run refuses to overwrite.
        assert!(matches!(create(&dir), Err(CertsError::Exists(_))));
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
