//! The test CA: one per test process, made with rcgen, written to a temporary directory.
//!
//! Every federating test server (kairan, and Synapse in the interoperability tests) uses
//! the same leaf certificate, issued by this CA for `localhost`, `127.0.0.1`, `::1` and `*.kairan.test`,
//! and trusts the CA through its `ca_bundle`. Servers are told apart by port
//! (`localhost:PORT` server names), so one leaf serves them all.
//!
//! ```no_run
//! let ca = kairan_tests::test_ca();
//! // ca.ca_pem: the CA certificate (trust it); ca.cert_pem / ca.key_pem: the leaf to serve.
//! # let _ = (&ca.ca_pem, &ca.cert_pem, &ca.key_pem);
//! ```

use std::{
    path::{Path, PathBuf},
    sync::OnceLock,
};

use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair, KeyUsagePurpose,
};

/// Paths of the test CA and of the leaf certificate it issued. The files live as long as
/// the test process.
#[derive(Debug)]
pub struct TestCa {
    /// The CA certificate (PEM): what servers and clients must trust.
    pub ca_pem: PathBuf,
    /// The leaf certificate (PEM), for `localhost`, `127.0.0.1`, `::1` and `*.kairan.test`.
    pub cert_pem: PathBuf,
    /// The leaf's private key (PEM, PKCS#8).
    pub key_pem: PathBuf,
    /// The directory holding the three files.
    pub dir: PathBuf,
}

/// The process-wide test CA, created on first use.
pub fn test_ca() -> &'static TestCa {
    static CA: OnceLock<TestCa> = OnceLock::new();
    CA.get_or_init(|| TestCa::create().expect("creating the test CA"))
}

impl TestCa {
    fn create() -> anyhow::Result<Self> {
        // Kept for the whole process: servers started by any test read these files.
        let dir = tempfile::Builder::new().prefix("kairan-test-ca-").tempdir()?.keep();
        let ca_key = KeyPair::generate()?;
        let mut ca_params = CertificateParams::new(Vec::<String>::new())?;
        ca_params.distinguished_name.push(DnType::CommonName, "kairan test CA");
        ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca_params.key_usages =
            vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign, KeyUsagePurpose::DigitalSignature];
        let ca_cert = ca_params.self_signed(&ca_key)?;
        let issuer = Issuer::new(ca_params, ca_key);

        let leaf_key = KeyPair::generate()?;
        // `*.kairan.test`: names no DNS knows, for tests of `host_overrides`.
        let names = ["localhost", "127.0.0.1", "::1", "*.kairan.test"];
        let mut leaf_params = CertificateParams::new(names.map(str::to_owned).to_vec())?;
        leaf_params.distinguished_name.push(DnType::CommonName, "localhost");
        leaf_params.extended_key_usages =
            vec![ExtendedKeyUsagePurpose::ServerAuth, ExtendedKeyUsagePurpose::ClientAuth];
        let leaf_cert = leaf_params.signed_by(&leaf_key, &issuer)?;

        let ca = Self {
            ca_pem: dir.join("ca.pem"),
            cert_pem: dir.join("localhost.pem"),
            key_pem: dir.join("localhost.key"),
            dir: dir.clone(),
        };
        write(&ca.ca_pem, &ca_cert.pem())?;
        write(&ca.cert_pem, &leaf_cert.pem())?;
        write(&ca.key_pem, &leaf_key.serialize_pem())?;
        Ok(ca)
    }

    /// The CA certificate as a reqwest root, for test clients that talk to a federation port.
    pub fn reqwest_certificate(&self) -> anyhow::Result<reqwest::Certificate> {
        Ok(reqwest::Certificate::from_pem(&std::fs::read(&self.ca_pem)?)?)
    }
}

fn write(path: &Path, contents: &str) -> anyhow::Result<()> {
    std::fs::write(path, contents).map_err(|e| anyhow::anyhow!("writing {}: {e}", path.display()))
}
