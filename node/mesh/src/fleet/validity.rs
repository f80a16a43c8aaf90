//! The end of a certificate's validity (`notAfter`), read from its DER.
//!
//! webpki checks validity but does not expose the dates, and the X.509 parsers in reach are
//! large dependencies for one field, so this walks the few DER elements in front of it:
//! `Certificate ::= SEQUENCE { tbsCertificate SEQUENCE { [0] version OPTIONAL, serialNumber,
//! signature, issuer, validity SEQUENCE { notBefore, notAfter }, … } … }`. Every length is
//! bounds-checked; malformed input is an error, never a panic.

use std::time::SystemTime;

use rustls::pki_types::CertificateDer;
use time::{Date, Month, PrimitiveDateTime, Time};

const SEQUENCE: u8 = 0x30;
const INTEGER: u8 = 0x02;
const VERSION: u8 = 0xA0;
const UTC_TIME: u8 = 0x17;
const GENERALIZED_TIME: u8 = 0x18;

/// Why the validity could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("cannot read the certificate's validity: {0}")]
pub struct ValidityError(&'static str);

/// The certificate's `notAfter`.
pub fn not_after(cert: &CertificateDer<'_>) -> Result<SystemTime, ValidityError> {
    let (cert_body, _) = element(cert.as_ref(), SEQUENCE)?;
    let (tbs, _) = element(cert_body, SEQUENCE)?;
    let mut rest = tbs;
    if rest.first() == Some(&VERSION) {
        rest = element(rest, VERSION)?.1;
    }
    rest = element(rest, INTEGER)?.1; // serialNumber
    rest = element(rest, SEQUENCE)?.1; // signature algorithm
    rest = element(rest, SEQUENCE)?.1; // issuer
    let (validity, _) = element(rest, SEQUENCE)?;
    let (_, after_not_before) = any_time(validity)?;
    let (not_after, _) = any_time(after_not_before)?;
    Ok(not_after)
}

/// Reads one element with tag `tag`: its content and what follows it.
fn element(input: &[u8], tag: u8) -> Result<(&[u8], &[u8]), ValidityError> {
    let (&found, rest) = input.split_first().ok_or(ValidityError("truncated"))?;
    if found != tag {
        return Err(ValidityError("unexpected DER element"));
    }
    let (len, rest) = length(rest)?;
    if rest.len() < len {
        return Err(ValidityError("truncated"));
    }
    Ok(rest.split_at(len))
}

/// A DER length (short form, or long form of up to 4 bytes).
fn length(input: &[u8]) -> Result<(usize, &[u8]), ValidityError> {
    let (&first, rest) = input.split_first().ok_or(ValidityError("truncated"))?;
    if first < 0x80 {
        return Ok((usize::from(first), rest));
    }
    let n = usize::from(first & 0x7f);
    if n == 0 || n > 4 || rest.len() < n {
        return Err(ValidityError("bad length"));
    }
    let (bytes, rest) = rest.split_at(n);
    let len = bytes
        .iter()
        .fold(0usize, |acc, b| (acc << 8) | usize::from(*b));
    Ok((len, rest))
}

/// A UTCTime or GeneralizedTime, and what follows it.
fn any_time(input: &[u8]) -> Result<(SystemTime, &[u8]), ValidityError> {
    let tag = *input.first().ok_or(ValidityError("truncated"))?;
    let (text, rest) = match tag {
        UTC_TIME | GENERALIZED_TIME => element(input, tag)?,
        _ => return Err(ValidityError("validity is not a time")),
    };
    Ok((parse_time(text, tag == UTC_TIME)?, rest))
}

/// `YYMMDDHHMMSSZ` (UTCTime, years 1950–2049) or `YYYYMMDDHHMMSSZ` (GeneralizedTime).
fn parse_time(text: &[u8], utc: bool) -> Result<SystemTime, ValidityError> {
    let bad = ValidityError("bad time");
    let digits = text.strip_suffix(b"Z").ok_or(bad.clone())?;
    if digits.len() != if utc { 12 } else { 14 } || !digits.iter().all(u8::is_ascii_digit) {
        return Err(bad);
    }
    let num = |s: &[u8]| s.iter().fold(0u32, |acc, d| acc * 10 + u32::from(d - b'0'));
    let (year, rest) = if utc {
        let yy = num(&digits[..2]);
        (if yy >= 50 { 1900 + yy } else { 2000 + yy }, &digits[2..])
    } else {
        (num(&digits[..4]), &digits[4..])
    };
    let part = |i: usize| num(&rest[i * 2..i * 2 + 2]) as u8;
    let month = Month::try_from(part(0)).map_err(|_| bad.clone())?;
    let date = Date::from_calendar_date(year as i32, month, part(1)).map_err(|_| bad.clone())?;
    let time = Time::from_hms(part(2), part(3), part(4)).map_err(|_| bad)?;
    Ok(PrimitiveDateTime::new(date, time).assume_utc().into())
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use std::time::{Duration, UNIX_EPOCH};

    #[test]
    fn reads_not_after_of_an_rcgen_certificate() {
        let mut params = rcgen::CertificateParams::new(vec!["x.test".into()]).unwrap();
        let end = UNIX_EPOCH + Duration::from_secs(2_000_000_000);
        params.not_after = time::OffsetDateTime::from(end);
        let key = rcgen::KeyPair::generate().unwrap();
        let cert = params.self_signed(&key).unwrap();
        assert_eq!(not_after(cert.der()).unwrap(), end);
        // GeneralizedTime (years from 2050 on).
        let far = UNIX_EPOCH + Duration::from_secs(4_000_000_000);
        params.not_after = time::OffsetDateTime::from(far);
        let cert = params.self_signed(&key).unwrap();
        assert_eq!(not_after(cert.der()).unwrap(), far);
    }

    #[test]
    fn malformed_input_is_an_error() {
        let cases: [&[u8]; 4] = [
            &[],
            &[0x30],
            &[0x30, 0x85, 1, 1, 1, 1, 1],
            &[0x30, 0x05, 0x30],
        ];
        for bytes in cases {
            assert!(not_after(&CertificateDer::from(bytes.to_vec())).is_err());
        }
        let mut params = rcgen::CertificateParams::new(vec!["x.test".into()]).unwrap();
        params.not_after = time::OffsetDateTime::from(UNIX_EPOCH + Duration::from_secs(1 << 31));
        let key = rcgen::KeyPair::generate().unwrap();
        let der = params.self_signed(&key).unwrap().der().to_vec();
        for cut in 0..der.len().min(200) {
            assert!(not_after(&CertificateDer::from(der[..cut].to_vec())).is_err());
        }
    }
}
