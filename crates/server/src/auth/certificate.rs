//! The names a client certificate identifies its client by: its DNS subject alternative names and
//! its subject's common names, matched against a client's `certificate_names`. The TLS listener
//! verifies the certificate chain; this module only reads the names of the leaf it verified.

use std::sync::Arc;

use rustls_pki_types::CertificateDer;
use webpki::EndEntityCert;

use crate::auth::PeerCertificateNames;

/// The DER tag of an OBJECT IDENTIFIER, and the encoded OID 2.5.4.3 (commonName).
const OID: u8 = 0x06;
const COMMON_NAME: &[u8] = &[0x55, 0x04, 0x03];

impl PeerCertificateNames {
    /// The names of the leaf (first) certificate of a verified chain, or `None` when there is
    /// none or it does not parse.
    pub fn of(chain: &[CertificateDer<'_>]) -> Option<PeerCertificateNames> {
        names(chain.first()?)
            .ok()
            .map(|names| PeerCertificateNames(Arc::new(names)))
    }
}

/// The DNS subject alternative names, then the subject common names, of `certificate`.
pub fn names(certificate: &CertificateDer<'_>) -> Result<Vec<String>, String> {
    let cert =
        EndEntityCert::try_from(certificate).map_err(|e| format!("not a certificate: {e}"))?;
    let mut names: Vec<String> = cert.valid_dns_names().map(str::to_owned).collect();
    names.extend(common_names(cert.subject())?);
    Ok(names)
}

/// The commonName values of a DER Name (an RDNSequence, without its outer SEQUENCE header): each
/// RDN is a SET of SEQUENCE { OID, value } and the value a string type.
fn common_names(mut rdns: &[u8]) -> Result<Vec<String>, String> {
    let mut found = Vec::new();
    while !rdns.is_empty() {
        let (_, mut set, rest) = tlv(rdns)?;
        rdns = rest;
        while !set.is_empty() {
            let (_, attribute, rest) = tlv(set)?;
            set = rest;
            let (tag, oid, value) = tlv(attribute)?;
            if tag == OID && oid == COMMON_NAME {
                let (_, text, _) = tlv(value)?;
                found.push(String::from_utf8_lossy(text).into_owned());
            }
        }
    }
    Ok(found)
}

/// One DER tag-length-value at the start of `input`: its tag, its value, and what follows.
fn tlv(input: &[u8]) -> Result<(u8, &[u8], &[u8]), String> {
    let bad = || "a malformed subject".to_owned();
    let (&tag, rest) = input.split_first().ok_or_else(bad)?;
    let (&first, rest) = rest.split_first().ok_or_else(bad)?;
    let (len, rest) = if first < 0x80 {
        (usize::from(first), rest)
    } else {
        let count = usize::from(first & 0x7f);
        if count == 0 || count > 4 || rest.len() < count {
            return Err(bad());
        }
        let len = rest[..count]
            .iter()
            .fold(0usize, |len, &byte| (len << 8) | usize::from(byte));
        (len, &rest[count..])
    };
    if rest.len() < len {
        return Err(bad());
    }
    Ok((tag, &rest[..len], &rest[len..]))
}

#[cfg(test)]
mod tests {
    use base64::{Engine, engine::general_purpose::STANDARD};

    use super::*;
    use crate::auth::file::Clients;

    /// Made once with `openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -subj
    /// "/O=Jetway test/CN=tenant-a-cn" -addext
    /// "subjectAltName=DNS:tenant-a.clients.example,DNS:other.example"`.
    const CERTIFICATE: &str = "MIIB5DCCAYmgAwIBAgIUQj5iNi0+Prpy2540NhkY62l6t08wCgYIKoZIzj0EAwIwLDEUMBIGA1UECgwLSmV0d2F5IHRlc3QxFDASBgNVBAMMC3RlbmFudC1hLWNuMB4XDTI2MTIwNjE3NDE0N1oXDTM2MTIwMzE3NDE0N1owLDEUMBIGA1UECgwLSmV0d2F5IHRlc3QxFDASBgNVBAMMC3RlbmFudC1hLWNuMFkwEwYHKoZIzj0CAQYIKoZIzj0DAQcDQgAEHsU1CC0WHWbylwVMHdn/fqq3EBDUlIxlUujIq5h5+cAZEBCBtRHE+U+44LlYZPxDkqhboEE8mJNVovm7vmZoOaOBiDCBhTAdBgNVHQ4EFgQUAlpBBWTFanjTdFE2BQMfB4X0FF8wHwYDVR0jBBgwFoAUAlpBBWTFanjTdFE2BQMfB4X0FF8wDwYDVR0TAQH/BAUwAwEB/zAyBgNVHREEKzApghh0ZW5hbnQtYS5jbGllbnRzLmV4YW1wbGWCDW90aGVyLmV4YW1wbGUwCgYIKoZIzj0EAwIDSQAwRgIhAN03PLleB+XJpDT0h0+z0bk5RKGJttxFTDxNE9DRoY9eAiEA3Cn7jeusvQBrMmOasbu8dOLyXZmAbdFng4e7QQ+IqqQ=";

    #[test]
    fn a_certificate_names_its_dns_names_and_common_name() {
        let der = CertificateDer::from(STANDARD.decode(CERTIFICATE).unwrap());
        assert_eq!(
            names(&der).unwrap(),
            ["tenant-a.clients.example", "other.example", "tenant-a-cn"]
        );
        assert!(names(&CertificateDer::from(vec![0x30, 0x03, 1, 2, 3])).is_err());
    }

    #[test]
    fn a_client_is_found_by_a_name_of_its_certificate() {
        let der = CertificateDer::from(STANDARD.decode(CERTIFICATE).unwrap());
        let PeerCertificateNames(presented) = PeerCertificateNames::of(&[der]).unwrap();
        let clients = Clients::parse(
            r#"{"clients": [
                {"id": "b", "certificate_names": ["tenant-b.clients.example"]},
                {"id": "a", "certificate_names": ["tenant-a.clients.example"]},
                {"id": "cn", "certificate_names": ["tenant-a-cn"]}]}"#,
        )
        .unwrap();
        assert_eq!(clients.by_certificate(&presented).unwrap().id, "a");
        assert!(
            clients
                .by_certificate(&["nobody.example".to_owned()])
                .is_none()
        );
        assert!(PeerCertificateNames::of(&[]).is_none());
    }
}
