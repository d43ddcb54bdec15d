//! PEM fields (a trunk's TLS certificates and key): checked when written, so a trunk that is
//! stored can always build its TLS connection.

use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};

use crate::parse::FieldError;

/// Most bytes a PEM field may hold (a CA bundle of a few dozen certificates).
const MAX_PEM_BYTES: usize = 256 * 1024;

fn sized(field: &str, pem: &str) -> Result<(), FieldError> {
    if pem.len() > MAX_PEM_BYTES {
        return Err(FieldError::invalid(
            field,
            format!("`{field}` must be at most {MAX_PEM_BYTES} bytes"),
        ));
    }
    Ok(())
}

/// `pem` holds one or more certificates and nothing broken.
pub(crate) fn certificates(field: &str, pem: &str) -> Result<(), FieldError> {
    sized(field, pem)?;
    let mut count = 0usize;
    for cert in CertificateDer::pem_slice_iter(pem.as_bytes()) {
        cert.map_err(|e| {
            FieldError::invalid(field, format!("`{field}` is not PEM certificates: {e}"))
        })?;
        count += 1;
    }
    if count == 0 {
        return Err(FieldError::invalid(
            field,
            format!(
                "`{field}` must hold at least one PEM certificate (-----BEGIN CERTIFICATE-----)"
            ),
        ));
    }
    Ok(())
}

/// `pem` holds a private key (PKCS#8, PKCS#1 or SEC1).
pub(crate) fn private_key(field: &str, pem: &str) -> Result<(), FieldError> {
    sized(field, pem)?;
    PrivateKeyDer::from_pem_slice(pem.as_bytes())
        .map(|_| ())
        .map_err(|e| {
            FieldError::invalid(field, format!("`{field}` must hold a PEM private key: {e}"))
        })
}
