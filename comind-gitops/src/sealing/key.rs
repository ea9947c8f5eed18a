//! The sealing key pair: a 4096-bit RSA key and the self-signed certificate the
//! controller publishes, made the way the controller makes its own (so `kubeseal` and
//! Comind both accept a certificate of either).

use std::str::FromStr;
use std::time::{Duration, SystemTime};

use comind_core::secret::Secret;
use comind_core::{Error, Result};
use rand_core::{OsRng, RngCore};
use rsa::pkcs1::{DecodeRsaPrivateKey, EncodeRsaPrivateKey, LineEnding};
use rsa::pkcs8::{DecodePublicKey, EncodePublicKey};
use rsa::traits::PublicKeyParts;
use rsa::{RsaPrivateKey, RsaPublicKey};
use serde::{Deserialize, Serialize};
use x509_cert::Certificate;
use x509_cert::builder::{Builder, CertificateBuilder, Profile};
use x509_cert::der::{DecodePem, EncodePem};
use x509_cert::name::Name;
use x509_cert::serial_number::SerialNumber;
use x509_cert::spki::SubjectPublicKeyInfoOwned;
use x509_cert::time::Validity;

/// The controller's key size (`--key-size`, 4096 by default).
pub const KEY_BITS: usize = 4096;

/// How long the certificate is valid: the controller's default `--key-ttl`, 10 years.
/// Comind does not renew the key (the controller runs with `keyrenewperiod: 0`), so a
/// SealedSecret in Git stays decryptable for this long.
pub const CERTIFICATE_VALIDITY: Duration = Duration::from_secs(10 * 365 * 24 * 60 * 60);

/// The certificate's subject: the controller's own (`CN=sealed-secret,O=sealed-secret`).
const SUBJECT: &str = "CN=sealed-secret,O=sealed-secret";

/// The environment's sealing key: the private key that the controller decrypts with,
/// and its certificate, which sealing needs.
///
/// Stored in the state directory as JSON (`credentials/sealed-secrets.json`, 0600).
/// `Debug` shows the certificate's fingerprint, never the key.
#[derive(Clone, Serialize, Deserialize)]
pub struct SealingKey {
    /// The private key, PKCS#1 PEM (`tls.key` of the controller's key Secret).
    #[serde(with = "comind_core::secret::revealing")]
    private_key: Secret,
    /// The certificate, PEM (`tls.crt`).
    certificate: String,
}

impl std::fmt::Debug for SealingKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SealingKey")
            .field("certificate", &self.certificate)
            .field("private_key", &"<redacted>")
            .finish()
    }
}

impl SealingKey {
    /// A new key pair and its self-signed certificate, valid from now for
    /// [`CERTIFICATE_VALIDITY`]. Generating a 4096-bit key takes a few seconds: call
    /// it off the async runtime's worker threads (`spawn_blocking`).
    ///
    /// # Errors
    /// When the system's random source fails, or the certificate cannot be encoded.
    pub fn generate() -> Result<Self> {
        let private = RsaPrivateKey::new(&mut OsRng, KEY_BITS)
            .map_err(|e| Error::internal(format!("cannot generate the sealing key: {e}")))?;
        let certificate = self_signed_certificate(&private)?;
        let private_key = private
            .to_pkcs1_pem(LineEnding::LF)
            .map_err(|e| Error::internal(format!("cannot encode the sealing key: {e}")))?;
        Ok(SealingKey {
            private_key: Secret::new(private_key.as_str()),
            certificate,
        })
    }

    /// A key pair from its PEM parts (`tls.key` in PKCS#1 or PKCS#8, `tls.crt`), as
    /// the controller's key Secret holds them.
    ///
    /// # Errors
    /// Invalid input when either part does not parse, or the certificate is not the
    /// key's.
    pub fn from_pem(private_key: &str, certificate: &str) -> Result<Self> {
        let private = parse_private_key(private_key)?;
        let cert = SealingCertificate::from_pem(certificate)?;
        if cert.public != RsaPublicKey::from(&private) {
            return Err(Error::invalid_input(
                "the sealing certificate is not the private key's",
            ));
        }
        Ok(SealingKey {
            private_key: Secret::new(private_key),
            certificate: certificate.to_string(),
        })
    }

    /// The private key, PEM. Secret: it decrypts every SealedSecret of the
    /// environment.
    pub fn private_key_pem(&self) -> &Secret {
        &self.private_key
    }

    /// The certificate, PEM: public, the input of sealing.
    pub fn certificate_pem(&self) -> &str {
        &self.certificate
    }

    /// The certificate, parsed, to seal with.
    ///
    /// # Errors
    /// When the stored certificate does not parse.
    pub fn certificate(&self) -> Result<SealingCertificate> {
        SealingCertificate::from_pem(&self.certificate)
    }
}

fn parse_private_key(pem: &str) -> Result<RsaPrivateKey> {
    use rsa::pkcs8::DecodePrivateKey;
    RsaPrivateKey::from_pkcs1_pem(pem)
        .or_else(|_| RsaPrivateKey::from_pkcs8_pem(pem))
        // The parser's message could quote the input: say only what it is not.
        .map_err(|_| {
            Error::invalid_input(
                "the sealing key is not an RSA private key in PEM (PKCS#1 or PKCS#8)",
            )
        })
}

fn self_signed_certificate(private: &RsaPrivateKey) -> Result<String> {
    let fail = |what: &str, e: &dyn std::fmt::Display| {
        Error::internal(format!("cannot make the sealing certificate: {what}: {e}"))
    };
    // A random positive 127-bit serial (RFC 5280: positive, at most 20 octets), like
    // the controller's.
    let mut serial = [0u8; 16];
    OsRng.fill_bytes(&mut serial);
    serial[0] &= 0x7f;
    let serial = SerialNumber::new(&serial).map_err(|e| fail("serial", &e))?;
    let validity = Validity::from_now(CERTIFICATE_VALIDITY).map_err(|e| fail("validity", &e))?;
    let subject = Name::from_str(SUBJECT).map_err(|e| fail("subject", &e))?;
    let public_der = RsaPublicKey::from(private)
        .to_public_key_der()
        .map_err(|e| fail("public key", &e))?;
    let spki = SubjectPublicKeyInfoOwned::try_from(public_der.as_bytes())
        .map_err(|e| fail("public key", &e))?;
    let signer = rsa::pkcs1v15::SigningKey::<sha2::Sha256>::new(private.clone());
    let certificate =
        CertificateBuilder::new(Profile::Root, serial, validity, subject, spki, &signer)
            .map_err(|e| fail("builder", &e))?
            .build::<rsa::pkcs1v15::Signature>()
            .map_err(|e| fail("signature", &e))?;
    certificate
        .to_pem(x509_cert::der::pem::LineEnding::LF)
        .map_err(|e| fail("encoding", &e))
}

/// A sealing certificate: the public half that sealing encrypts with, from the state
/// directory, a file, or the controller.
#[derive(Debug, Clone)]
pub struct SealingCertificate {
    pub(super) public: RsaPublicKey,
    not_after: SystemTime,
}

impl SealingCertificate {
    /// Parses a PEM certificate holding an RSA public key.
    ///
    /// # Errors
    /// Invalid input when it is not a PEM X.509 certificate of an RSA key of at least
    /// 2048 bits.
    pub fn from_pem(pem: &str) -> Result<Self> {
        let certificate = Certificate::from_pem(pem.trim().as_bytes()).map_err(|e| {
            Error::invalid_input(format!("the sealing certificate is not a PEM X.509 certificate: {e}"))
                .with_hint("pass the controller's certificate (`kubeseal --fetch-cert` prints one), or leave --cert out to use the environment's")
        })?;
        let spki = &certificate.tbs_certificate.subject_public_key_info;
        let der = x509_cert::der::Encode::to_der(spki).map_err(|e| {
            Error::invalid_input(format!("the sealing certificate's public key: {e}"))
        })?;
        let public = RsaPublicKey::from_public_key_der(&der).map_err(|e| {
            Error::invalid_input(format!(
                "the sealing certificate does not hold an RSA public key: {e}"
            ))
        })?;
        if public.size() * 8 < 2048 {
            return Err(Error::invalid_input(format!(
                "the sealing certificate's RSA key has {} bits; the controller's have 4096 and fewer than 2048 are refused",
                public.size() * 8
            )));
        }
        Ok(SealingCertificate {
            public,
            not_after: certificate
                .tbs_certificate
                .validity
                .not_after
                .to_system_time(),
        })
    }

    /// Reads a PEM certificate from `path` (`--cert`).
    ///
    /// # Errors
    /// Invalid input when it cannot be read or is not a certificate [`Self::from_pem`]
    /// takes; the error names the file.
    pub fn from_file(path: &std::path::Path) -> Result<Self> {
        let pem = std::fs::read_to_string(path).map_err(|e| {
            Error::invalid_input(format!("cannot read --cert {}: {e}", path.display()))
        })?;
        Self::from_pem(&pem).map_err(|e| e.with_resource(path.display().to_string()))
    }

    /// When the certificate expires.
    pub fn not_after(&self) -> SystemTime {
        self.not_after
    }

    /// Invalid input when the certificate has expired (the controller has renewed its
    /// key since, or the certificate is not this environment's).
    pub(super) fn check_valid(&self) -> Result<()> {
        if SystemTime::now() > self.not_after {
            return Err(Error::invalid_input(format!(
                "the sealing certificate expired on {}",
                humantime::format_rfc3339_seconds(self.not_after)
            ))
            .with_hint("fetch the controller's current certificate, or leave --cert out"));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    #[test]
    fn a_generated_key_round_trips_through_its_pem_and_hides_in_debug() {
        let key = SealingKey::generate().unwrap();
        assert!(
            key.private_key_pem()
                .expose()
                .starts_with("-----BEGIN RSA PRIVATE KEY-----")
        );
        assert!(
            key.certificate_pem()
                .starts_with("-----BEGIN CERTIFICATE-----")
        );
        assert!(!format!("{key:?}").contains("PRIVATE"));
        let again =
            SealingKey::from_pem(key.private_key_pem().expose(), key.certificate_pem()).unwrap();
        let cert = again.certificate().unwrap();
        assert_eq!(cert.public.size() * 8, KEY_BITS);
        let years = cert
            .not_after()
            .duration_since(SystemTime::now())
            .unwrap()
            .as_secs()
            / (365 * 86400);
        assert_eq!(years, 9, "valid for (almost) ten years from now");
        cert.check_valid().unwrap();

        let other = SealingKey::generate().unwrap();
        let err = SealingKey::from_pem(key.private_key_pem().expose(), other.certificate_pem())
            .unwrap_err();
        assert!(err.to_string().contains("not the private key's"), "{err}");
        let err = SealingKey::from_pem(
            "-----BEGIN RSA PRIVATE KEY-----\nnope\n",
            key.certificate_pem(),
        )
        .unwrap_err();
        assert!(!err.to_string().contains("nope"), "{err}");
    }
}
