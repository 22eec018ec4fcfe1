//! Certificate checks: does a CA bundle verify a server certificate for the
//! name clients use (the chain, the name and the dates, by rustls's webpki
//! verifier: what the API server's own TLS client would refuse, this
//! refuses), and how long is each certificate valid.

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use rustls::client::danger::ServerCertVerifier;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};

/// Below this a certificate's remaining validity is a warning.
pub const WARN_BEFORE: Duration = Duration::from_secs(30 * 86_400);

/// Every certificate in a PEM text, in order.
pub fn parse_pem(pem: &[u8]) -> anyhow::Result<Vec<CertificateDer<'static>>> {
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(pem)
        .collect::<Result<_, _>>()
        .map_err(|e| anyhow::anyhow!("not PEM certificates: {e:?}"))?;
    anyhow::ensure!(!certs.is_empty(), "no certificate in the PEM text");
    Ok(certs)
}

/// Whether the roots in `ca_pem` verify the chain `chain_pem` (leaf first)
/// for `server_name` at `now`. The error says why not.
pub fn verify(
    ca_pem: &[u8],
    chain_pem: &[u8],
    server_name: &str,
    now: SystemTime,
) -> anyhow::Result<()> {
    let chain = parse_pem(chain_pem)?;
    let verifier = verifier(ca_pem)?;
    let name = ServerName::try_from(server_name.to_string())
        .map_err(|e| anyhow::anyhow!("{server_name:?} is not a server name: {e}"))?;
    verifier
        .verify_server_cert(
            &chain[0],
            &chain[1..],
            &name,
            &[],
            UnixTime::since_unix_epoch(now.duration_since(UNIX_EPOCH).unwrap_or_default()),
        )
        .map(|_| ())
        .map_err(|e| anyhow::anyhow!("{}", describe(&e)))
}

/// A rustls verifier trusting exactly the certificates of `ca_pem`.
pub fn verifier(ca_pem: &[u8]) -> anyhow::Result<Arc<rustls::client::WebPkiServerVerifier>> {
    let mut roots = rustls::RootCertStore::empty();
    for cert in parse_pem(ca_pem)? {
        roots
            .add(cert)
            .map_err(|e| anyhow::anyhow!("a CA certificate does not parse: {e}"))?;
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    rustls::client::WebPkiServerVerifier::builder_with_provider(Arc::new(roots), provider)
        .build()
        .map_err(|e| anyhow::anyhow!("no usable CA certificate: {e}"))
}

/// rustls's errors, in words a user acts on.
fn describe(error: &rustls::Error) -> String {
    use rustls::CertificateError as E;
    match error {
        rustls::Error::InvalidCertificate(E::UnknownIssuer) => {
            "signed by a CA the bundle does not hold".into()
        }
        // The chart names every CA it makes alike: a regenerated CA matches
        // by name, and only the signature tells them apart.
        rustls::Error::InvalidCertificate(E::BadSignature) => {
            "not signed by the bundle's CA (bad signature: a CA of the same name, regenerated?)"
                .into()
        }
        rustls::Error::InvalidCertificate(E::Expired | E::ExpiredContext { .. }) => {
            "the certificate has expired".into()
        }
        rustls::Error::InvalidCertificate(E::NotValidYet | E::NotValidYetContext { .. }) => {
            "the certificate is not valid yet".into()
        }
        rustls::Error::InvalidCertificate(E::NotValidForName) => {
            "not valid for the Service's name".into()
        }
        rustls::Error::InvalidCertificate(E::NotValidForNameContext { expected, .. }) => {
            format!("not valid for {expected:?}")
        }
        other => other.to_string(),
    }
}

/// What the dates say about one certificate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Validity {
    /// The subject's common name, or the whole subject.
    pub subject: String,
    /// Seconds since the epoch.
    pub not_before: i64,
    pub not_after: i64,
}

/// The dates of each certificate in `pem`.
pub fn validity(pem: &[u8]) -> anyhow::Result<Vec<Validity>> {
    parse_pem(pem)?
        .iter()
        .map(|der| {
            let (_, cert) = x509_parser::parse_x509_certificate(der)
                .map_err(|e| anyhow::anyhow!("the certificate does not parse: {e}"))?;
            let subject = cert
                .subject()
                .iter_common_name()
                .next()
                .and_then(|cn| cn.as_str().ok())
                .map_or_else(|| cert.subject().to_string(), str::to_string);
            Ok(Validity {
                subject,
                not_before: cert.validity().not_before.timestamp(),
                not_after: cert.validity().not_after.timestamp(),
            })
        })
        .collect()
}

/// How a certificate's dates stand at `now`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Expiry {
    NotYetValid,
    /// Valid for this long yet, at least [`WARN_BEFORE`].
    Valid(Duration),
    /// Valid for less than [`WARN_BEFORE`].
    ExpiresSoon(Duration),
    /// Expired this long ago.
    Expired(Duration),
}

pub fn expiry(validity: &Validity, now: SystemTime) -> Expiry {
    let now = now
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64);
    if now < validity.not_before {
        Expiry::NotYetValid
    } else if now > validity.not_after {
        Expiry::Expired(Duration::from_secs((now - validity.not_after) as u64))
    } else {
        let left = Duration::from_secs((validity.not_after - now) as u64);
        if left < WARN_BEFORE {
            Expiry::ExpiresSoon(left)
        } else {
            Expiry::Valid(left)
        }
    }
}

/// `YYYY-MM-DD` of seconds since the epoch.
pub fn date(secs: i64) -> String {
    k8s_openapi::jiff::Timestamp::from_second(secs)
        .map(|t| t.strftime("%Y-%m-%d").to_string())
        .unwrap_or_else(|_| secs.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use rcgen::{BasicConstraints, CertificateParams, IsCa, KeyPair};

    struct Ca {
        pem: String,
        params: CertificateParams,
        key: KeyPair,
    }

    fn ca() -> Ca {
        named_ca("rcgen self signed cert")
    }

    fn named_ca(name: &str) -> Ca {
        let key = KeyPair::generate().unwrap();
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.distinguished_name = rcgen::DistinguishedName::new();
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, name);
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        let pem = params.self_signed(&key).unwrap().pem();
        Ca { pem, params, key }
    }

    fn leaf(ca: &Ca, name: &str, not_after: Option<(i32, u8, u8)>) -> String {
        let mut params = CertificateParams::new(vec![name.to_string()]).unwrap();
        if let Some((y, m, d)) = not_after {
            params.not_before = rcgen::date_time_ymd(2020, 1, 1);
            params.not_after = rcgen::date_time_ymd(y, m, d);
        }
        let issuer = rcgen::Issuer::from_params(&ca.params, &ca.key);
        params
            .signed_by(&KeyPair::generate().unwrap(), &issuer)
            .unwrap()
            .pem()
    }

    const NAME: &str = "outrigger-webhook.outrigger-system.svc";

    #[test]
    fn the_signing_ca_verifies_for_the_service_name() {
        let ca = ca();
        let cert = leaf(&ca, NAME, None);
        verify(ca.pem.as_bytes(), cert.as_bytes(), NAME, SystemTime::now()).unwrap();
    }

    #[test]
    fn another_ca_a_wrong_name_or_an_expired_cert_do_not() {
        let (ca, other) = (ca(), ca());
        let cert = leaf(&ca, NAME, None);
        let err = verify(
            other.pem.as_bytes(),
            cert.as_bytes(),
            NAME,
            SystemTime::now(),
        );
        assert!(
            err.unwrap_err().to_string().contains("bad signature"),
            "another CA of the same name"
        );
        let stranger = named_ca("someone else's CA");
        let err = verify(
            stranger.pem.as_bytes(),
            cert.as_bytes(),
            NAME,
            SystemTime::now(),
        );
        assert!(err.is_err(), "a CA of another name");
        let err = verify(
            ca.pem.as_bytes(),
            cert.as_bytes(),
            "other.svc",
            SystemTime::now(),
        );
        assert!(
            err.unwrap_err().to_string().starts_with("not valid for"),
            "wrong name"
        );
        let old = leaf(&ca, NAME, Some((2021, 1, 1)));
        let err = verify(ca.pem.as_bytes(), old.as_bytes(), NAME, SystemTime::now());
        assert_eq!(err.unwrap_err().to_string(), "the certificate has expired");
        assert!(verify(b"junk", cert.as_bytes(), NAME, SystemTime::now()).is_err());
    }

    #[test]
    fn expiry_warns_within_30_days_and_fails_after() {
        let ca = ca();
        let cert = leaf(&ca, NAME, Some((2030, 6, 1)));
        let v = &validity(cert.as_bytes()).unwrap()[0];
        assert_eq!(date(v.not_after), "2030-06-01");
        // `days` before the end of validity.
        let at = |days: u64| {
            UNIX_EPOCH + Duration::from_secs(v.not_after as u64)
                - Duration::from_secs(days * 86_400)
        };
        assert!(matches!(expiry(v, at(100)), Expiry::Valid(_)));
        assert_eq!(
            expiry(v, at(10)),
            Expiry::ExpiresSoon(Duration::from_secs(10 * 86_400))
        );
        let after = UNIX_EPOCH + Duration::from_secs(v.not_after as u64 + 3600);
        assert_eq!(expiry(v, after), Expiry::Expired(Duration::from_secs(3600)));
        let before = UNIX_EPOCH + Duration::from_secs(v.not_before as u64 - 1);
        assert_eq!(expiry(v, before), Expiry::NotYetValid);
        // The CA reads too (rcgen's default name).
        let ca_validity = validity(ca.pem.as_bytes()).unwrap();
        assert_eq!(ca_validity.len(), 1);
        assert_eq!(ca_validity[0].subject, "rcgen self signed cert");
    }
}
