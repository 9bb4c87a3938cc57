//! The cluster's PKI, made fresh for every control plane: one CA that signs the
//! apiserver's serving certificate and every client certificate (the apiserver trusts it as
//! `--client-ca-file`), and the service-account signing key. All keys are ECDSA P-256.

use std::net::{IpAddr, Ipv4Addr};
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose, SanType,
};

/// A certificate and its key, as PEM text and as the files the components read.
pub struct CertFiles {
    pub cert_pem: String,
    pub key_pem: String,
    pub cert: PathBuf,
    pub key: PathBuf,
}

pub struct Pki {
    pub ca: CertFiles,
    pub serving: CertFiles,
    /// Private key (PKCS#8) that signs service-account tokens (apiserver, KCM).
    pub service_account_key: PathBuf,
    /// Its public key, which verifies them: the apiserver's `--service-account-key-file`
    /// reads no PKCS#8 private key ("data does not contain any valid RSA or ECDSA public keys").
    pub service_account_pub: PathBuf,
    issuer: Issuer<'static, KeyPair>,
    dir: PathBuf,
}

fn validity(params: &mut CertificateParams) {
    let now = rcgen::date_time_ymd(2000, 1, 1);
    params.not_before = now;
    params.not_after = rcgen::date_time_ymd(2100, 1, 1);
}

fn write(path: &Path, text: &str) -> Result<()> {
    std::fs::write(path, text).with_context(|| format!("writing {}", path.display()))
}

impl Pki {
    /// Makes the CA, the apiserver's serving certificate (for 127.0.0.1, localhost and the
    /// in-cluster names of the `kubernetes` Service) and the service-account key in `dir`.
    pub fn generate(dir: &Path) -> Result<Pki> {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        let ca_key = KeyPair::generate().context("generating the CA key")?;
        let mut ca_params = CertificateParams::new(Vec::<String>::new())?;
        ca_params
            .distinguished_name
            .push(DnType::CommonName, "fluxgate-realstack-ca");
        ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca_params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        validity(&mut ca_params);
        let ca_cert = ca_params
            .self_signed(&ca_key)
            .context("self-signing the CA certificate")?;
        let ca = CertFiles {
            cert_pem: ca_cert.pem(),
            key_pem: ca_key.serialize_pem(),
            cert: dir.join("ca.crt"),
            key: dir.join("ca.key"),
        };
        write(&ca.cert, &ca.cert_pem)?;
        write(&ca.key, &ca.key_pem)?;
        let issuer = Issuer::new(ca_params, ca_key);

        let mut pki = Pki {
            serving: CertFiles {
                cert_pem: String::new(),
                key_pem: String::new(),
                cert: PathBuf::new(),
                key: PathBuf::new(),
            },
            ca,
            service_account_key: dir.join("service-account.key"),
            service_account_pub: dir.join("service-account.pub"),
            issuer,
            dir: dir.to_path_buf(),
        };
        pki.serving = pki.sign("kube-apiserver", "kube-apiserver", None, true)?;

        let sa_key = KeyPair::generate().context("generating the service-account key")?;
        write(&pki.service_account_key, &sa_key.serialize_pem())?;
        write(&pki.service_account_pub, &sa_key.public_key_pem())?;
        Ok(pki)
    }

    /// A client certificate for `user` in `group` (e.g. `system:masters`), signed by the CA.
    pub fn client(&self, file_stem: &str, user: &str, group: Option<&str>) -> Result<CertFiles> {
        self.sign(file_stem, user, group, false)
    }

    fn sign(
        &self,
        file_stem: &str,
        common_name: &str,
        organization: Option<&str>,
        server: bool,
    ) -> Result<CertFiles> {
        let key =
            KeyPair::generate().with_context(|| format!("generating the key of {file_stem}"))?;
        let mut params = CertificateParams::new(Vec::<String>::new())?;
        params
            .distinguished_name
            .push(DnType::CommonName, common_name);
        if let Some(org) = organization {
            params
                .distinguished_name
                .push(DnType::OrganizationName, org);
        }
        params.key_usages = vec![
            KeyUsagePurpose::DigitalSignature,
            KeyUsagePurpose::KeyEncipherment,
        ];
        if server {
            params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
            params.subject_alt_names = vec![
                SanType::IpAddress(IpAddr::V4(Ipv4Addr::LOCALHOST)),
                // The first address of --service-cluster-ip-range: the `kubernetes` Service.
                SanType::IpAddress(IpAddr::V4(Ipv4Addr::new(10, 0, 0, 1))),
            ];
            for name in [
                "localhost",
                "kubernetes",
                "kubernetes.default",
                "kubernetes.default.svc",
                "kubernetes.default.svc.cluster.local",
            ] {
                params
                    .subject_alt_names
                    .push(SanType::DnsName(name.try_into()?));
            }
        } else {
            params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        }
        validity(&mut params);
        let cert = params
            .signed_by(&key, &self.issuer)
            .with_context(|| format!("signing the certificate of {file_stem}"))?;
        let files = CertFiles {
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
            cert: self.dir.join(format!("{file_stem}.crt")),
            key: self.dir.join(format!("{file_stem}.key")),
        };
        write(&files.cert, &files.cert_pem)?;
        write(&files.key, &files.key_pem)?;
        Ok(files)
    }
}
