//! Reads a certificate's expiry (`notAfter`) so it can be exported as a
//! metric: an expired device certificate is a silent outage otherwise.
//! A minimal DER walk: Certificate → tbsCertificate → validity.

use std::path::Path;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::CertificateDer;

/// `notAfter` of the first certificate in a PEM file, as Unix seconds.
pub(crate) fn pem_file_not_after(path: &Path) -> Option<u64> {
    let data = std::fs::read(path).ok()?;
    let first = CertificateDer::pem_slice_iter(&data).next()?.ok()?;
    not_after(&first)
}

/// `notAfter` of a DER certificate, as Unix seconds.
pub(crate) fn not_after(der: &[u8]) -> Option<u64> {
    let (cert, _) = element(der, 0x30)?;
    let (mut tbs, _) = element(cert, 0x30)?;
    if tbs.first() == Some(&0xA0) {
        tbs = element(tbs, 0xA0)?.1; // explicit version
    }
    let rest = element(tbs, 0x02)?.1; // serial
    let rest = element(rest, 0x30)?.1; // signature algorithm
    let rest = element(rest, 0x30)?.1; // issuer
    let (validity, _) = element(rest, 0x30)?;
    let after_not_before = skip_any(validity)?;
    let tag = *after_not_before.first()?;
    let (time, _) = element(after_not_before, tag)?;
    parse_time(tag, time)
}

/// Splits off one TLV with the expected tag: (contents, rest).
fn element(input: &[u8], tag: u8) -> Option<(&[u8], &[u8])> {
    if *input.first()? != tag {
        return None;
    }
    let (len, header) = length(&input[1..])?;
    let body = input.get(1 + header..1 + header + len)?;
    Some((body, &input[1 + header + len..]))
}

fn skip_any(input: &[u8]) -> Option<&[u8]> {
    let tag = *input.first()?;
    element(input, tag).map(|(_, rest)| rest)
}

/// DER length: (length, bytes used).
fn length(input: &[u8]) -> Option<(usize, usize)> {
    let first = *input.first()?;
    if first < 0x80 {
        return Some((first as usize, 1));
    }
    let n = (first & 0x7f) as usize;
    if n == 0 || n > 4 {
        return None;
    }
    let bytes = input.get(1..1 + n)?;
    let len = bytes.iter().fold(0usize, |acc, b| (acc << 8) | *b as usize);
    Some((len, 1 + n))
}

/// UTCTime `YYMMDDHHMMSSZ` or GeneralizedTime `YYYYMMDDHHMMSSZ`.
fn parse_time(tag: u8, s: &[u8]) -> Option<u64> {
    let s = std::str::from_utf8(s).ok()?.strip_suffix('Z')?;
    let (year, rest) = match tag {
        0x17 => {
            let yy: i64 = s.get(0..2)?.parse().ok()?;
            (if yy >= 50 { 1900 + yy } else { 2000 + yy }, s.get(2..)?)
        }
        0x18 => (s.get(0..4)?.parse().ok()?, s.get(4..)?),
        _ => return None,
    };
    let field = |i: usize| -> Option<i64> { rest.get(i..i + 2)?.parse().ok() };
    let (month, day, h, m, sec) = (field(0)?, field(2)?, field(4)?, field(6)?, field(8)?);
    let days = days_from_civil(year, month, day);
    u64::try_from(days * 86_400 + h * 3600 + m * 60 + sec).ok()
}

/// Days since 1970-01-01 for a proleptic Gregorian date.
fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = if y >= 0 { y } else { y - 399 } / 400;
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_not_after_from_a_generated_certificate() {
        let mut params = rcgen::CertificateParams::new(vec!["device".into()]).unwrap();
        params.not_after = rcgen::date_time_ymd(2031, 7, 15);
        let key = rcgen::KeyPair::generate().unwrap();
        let cert = params.self_signed(&key).unwrap();
        // 2031-07-15T00:00:00Z
        assert_eq!(not_after(cert.der()), Some(1_941_840_000));
    }

    #[test]
    fn generalized_time_after_2049_is_read() {
        let mut params = rcgen::CertificateParams::new(vec!["device".into()]).unwrap();
        params.not_after = rcgen::date_time_ymd(2060, 1, 1);
        let key = rcgen::KeyPair::generate().unwrap();
        let cert = params.self_signed(&key).unwrap();
        assert_eq!(not_after(cert.der()), Some(2_840_140_800));
    }

    #[test]
    fn garbage_is_none_not_a_panic() {
        assert_eq!(not_after(&[]), None);
        assert_eq!(not_after(&[0x30, 0x84, 0xff, 0xff, 0xff, 0xff]), None);
        assert_eq!(not_after(&[0x30, 0x03, 0x30, 0x01]), None);
    }
}
