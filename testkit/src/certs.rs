//! Test PKI: certificate authorities and the certificates they issue, made with rcgen.
//!
//! Every key is a fresh ECDSA P-256 key (fast to generate, accepted by both OpenSSL in
//! mosquitto and rustls). Nothing is cached: each [`TestCa`] is unrelated to every other
//! one, which is what "untrusted certificate refused" tests rely on.

use std::net::IpAddr;

use rcgen::{
    BasicConstraints, Certificate, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa,
    KeyPair, KeyUsagePurpose, SanType,
};

/// A certificate and its private key, both PEM (the key is PKCS#8).
#[derive(Clone, Debug)]
pub struct Issued {
    pub cert_pem: String,
    pub key_pem: String,
}

/// A self-signed certificate authority that can issue server and client certificates.
pub struct TestCa {
    cert: Certificate,
    key: KeyPair,
}

impl TestCa {
    /// Creates a new CA whose subject common name is `common_name`.
    ///
    /// # Panics
    ///
    /// If rcgen fails to generate a key or sign, which only happens on a broken build.
    pub fn new(common_name: &str) -> TestCa {
        let mut params = CertificateParams::new(Vec::<String>::new()).expect("no SANs is valid");
        params
            .distinguished_name
            .push(DnType::CommonName, common_name);
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        let key = KeyPair::generate().expect("generate CA key");
        let cert = params.self_signed(&key).expect("self-sign CA");
        TestCa { cert, key }
    }

    /// The CA certificate, PEM.
    pub fn cert_pem(&self) -> String {
        self.cert.pem()
    }

    /// Issues a server certificate for `hosts`; each entry that parses as an IP address
    /// becomes an IP SAN, every other one a DNS SAN. The first host is also the CN.
    pub fn issue_server(&self, hosts: &[&str]) -> Issued {
        let mut params = CertificateParams::new(Vec::<String>::new()).expect("no SANs is valid");
        params.subject_alt_names = hosts
            .iter()
            .map(|h| match h.parse::<IpAddr>() {
                Ok(ip) => SanType::IpAddress(ip),
                Err(_) => SanType::DnsName((*h).try_into().expect("host is an IA5 string")),
            })
            .collect();
        if let Some(first) = hosts.first() {
            params.distinguished_name.push(DnType::CommonName, *first);
        }
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        self.sign(params)
    }

    /// Issues a client certificate whose subject CN is `common_name` (mosquitto's
    /// `use_identity_as_username` turns that CN into the MQTT username).
    pub fn issue_client(&self, common_name: &str) -> Issued {
        let mut params = CertificateParams::new(Vec::<String>::new()).expect("no SANs is valid");
        params
            .distinguished_name
            .push(DnType::CommonName, common_name);
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        self.sign(params)
    }

    fn sign(&self, mut params: CertificateParams) -> Issued {
        params.is_ca = IsCa::ExplicitNoCa;
        params.key_usages = vec![
            KeyUsagePurpose::DigitalSignature,
            KeyUsagePurpose::KeyEncipherment,
        ];
        let key = KeyPair::generate().expect("generate leaf key");
        let cert = params
            .signed_by(&key, &self.cert, &self.key)
            .expect("sign leaf certificate");
        Issued {
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
        }
    }
}

/// The test CA and the server certificate the broker presents (`localhost`, `127.0.0.1`).
pub(crate) struct TestPki {
    pub(crate) ca: TestCa,
    pub(crate) server: Issued,
}

impl TestPki {
    pub(crate) fn new() -> TestPki {
        let ca = TestCa::new("tether test CA");
        let server = ca.issue_server(&["localhost", "127.0.0.1"]);
        TestPki { ca, server }
    }
}

/// A CA that has nothing to do with any broker's: a client trusting only this one must
/// refuse the broker's certificate.
pub fn untrusted_ca_pem() -> String {
    TestCa::new("unrelated test CA").cert_pem()
}
