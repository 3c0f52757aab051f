//! Afero data types and the conversion between wire bytes and the string
//! form used in profiles and upstream messages ("attributeDataConverted").
//!
//! Length rules, chosen because afLib does not force values to the declared
//! size (spec §8, vector M23):
//! * integers (and `Q_15_16`) shorter than their width are sign-extended
//!   (`SINT*`, `Q_15_16`) or zero-extended (`UINT*`);
//! * longer integers decode to the number when the extra high bytes are
//!   only sign/zero extension (`01 00 00 00` as SINT16 is `1`), otherwise to
//!   `0x` + lowercase hex so nothing is lost;
//! * BOOLEAN looks at the first byte only;
//! * UTF8S drops trailing NULs (C strings padded to size) and replaces
//!   invalid UTF-8; BYTES is plain lowercase hex;
//! * an empty value is the empty string for every type.
//!
//! Parsing produces exactly the type's width for numbers and the text/bytes
//! as given for UTF8S/BYTES, refused when longer than the declared length.

use alloc::string::String;
use alloc::vec::Vec;
use core::fmt::Write as _;
use core::str::FromStr;

use crate::error::ConvertError;

/// An attribute data type, with the names Afero profiles use.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DataType {
    /// `BOOLEAN`: one byte, 0 or 1.
    Boolean,
    /// `SINT8`.
    Sint8,
    /// `SINT16`, little-endian.
    Sint16,
    /// `SINT32`, little-endian.
    Sint32,
    /// `SINT64`, little-endian.
    Sint64,
    /// `UINT8`.
    Uint8,
    /// `UINT16`, little-endian.
    Uint16,
    /// `UINT32`, little-endian.
    Uint32,
    /// `UINT64`, little-endian.
    Uint64,
    /// `Q_15_16`: signed 32-bit fixed point with 16 fraction bits.
    Q15_16,
    /// `UTF8S`: UTF-8 text without terminator.
    Utf8s,
    /// `BYTES`: opaque bytes.
    Bytes,
}

const NAMES: [(DataType, &str); 12] = [
    (DataType::Boolean, "BOOLEAN"),
    (DataType::Sint8, "SINT8"),
    (DataType::Sint16, "SINT16"),
    (DataType::Sint32, "SINT32"),
    (DataType::Sint64, "SINT64"),
    (DataType::Uint8, "UINT8"),
    (DataType::Uint16, "UINT16"),
    (DataType::Uint32, "UINT32"),
    (DataType::Uint64, "UINT64"),
    (DataType::Q15_16, "Q_15_16"),
    (DataType::Utf8s, "UTF8S"),
    (DataType::Bytes, "BYTES"),
];

/// A `dataType` string that is not one of the Afero names.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("unknown data type name")]
pub struct UnknownDataType;

impl DataType {
    /// The Afero name, e.g. `"SINT16"` or `"Q_15_16"`.
    pub fn as_str(self) -> &'static str {
        NAMES
            .iter()
            .find(|(t, _)| *t == self)
            .map_or("BYTES", |(_, n)| n)
    }

    /// Wire width of numeric types; `None` for UTF8S and BYTES.
    pub fn width(self) -> Option<usize> {
        match self {
            DataType::Boolean | DataType::Sint8 | DataType::Uint8 => Some(1),
            DataType::Sint16 | DataType::Uint16 => Some(2),
            DataType::Sint32 | DataType::Uint32 | DataType::Q15_16 => Some(4),
            DataType::Sint64 | DataType::Uint64 => Some(8),
            DataType::Utf8s | DataType::Bytes => None,
        }
    }

    fn signed(self) -> bool {
        matches!(
            self,
            DataType::Sint8
                | DataType::Sint16
                | DataType::Sint32
                | DataType::Sint64
                | DataType::Q15_16
        )
    }

    /// The value used when an attribute has neither a value nor a default:
    /// zeros of the type's width, or empty for text and bytes.
    pub fn zero_value(self) -> Vec<u8> {
        alloc::vec![0; self.width().unwrap_or(0)]
    }

    /// Converts wire bytes to the string form (see the module doc for
    /// lengths that differ from the type's width).
    pub fn to_display(self, bytes: &[u8]) -> String {
        if bytes.is_empty() {
            return String::new();
        }
        match self {
            DataType::Boolean => String::from(if bytes[0] != 0 { "true" } else { "false" }),
            DataType::Utf8s => {
                let end = bytes.iter().rposition(|b| *b != 0).map_or(0, |i| i + 1);
                String::from_utf8_lossy(&bytes[..end]).into_owned()
            }
            DataType::Bytes => hex(bytes),
            _ => match self.integer(bytes) {
                Some(raw) if self == DataType::Q15_16 => fixed_to_string(raw),
                Some(raw) if self.signed() => alloc::format!("{raw}"),
                Some(raw) => alloc::format!("{}", raw as u64),
                None => alloc::format!("0x{}", hex(bytes)),
            },
        }
    }

    /// Converts the string form to wire bytes. `declared_len` is the profile
    /// length; only UTF8S and BYTES are checked against it, because numbers
    /// always take their type's width.
    ///
    /// # Errors
    /// [`ConvertError`] for malformed or out-of-range input.
    pub fn parse(self, text: &str, declared_len: usize) -> Result<Vec<u8>, ConvertError> {
        let bytes = match self {
            DataType::Boolean => match text.trim() {
                "true" | "1" => alloc::vec![1],
                "false" | "0" => alloc::vec![0],
                _ => return Err(ConvertError::InvalidBool),
            },
            DataType::Utf8s => text.as_bytes().to_vec(),
            DataType::Bytes => unhex(text.trim())?,
            DataType::Q15_16 => parse_fixed(text.trim())?.to_le_bytes().to_vec(),
            _ => return self.parse_integer(text.trim()),
        };
        if matches!(self, DataType::Utf8s | DataType::Bytes) && bytes.len() > declared_len {
            return Err(ConvertError::TooLong {
                len: bytes.len(),
                max: declared_len,
            });
        }
        Ok(bytes)
    }

    /// Reads a little-endian integer of any length, extended or narrowed to
    /// the type's width; `None` when the extra bytes carry information.
    fn integer(self, bytes: &[u8]) -> Option<i64> {
        let width = self.width()?;
        let negative = self.signed() && bytes.last().is_some_and(|b| b & 0x80 != 0);
        let fill = if negative { 0xFF } else { 0x00 };
        let (used, extra) = bytes.split_at(bytes.len().min(width));
        if extra.iter().any(|b| *b != fill) {
            return None;
        }
        let sign_of_used = self.signed() && used.last().is_some_and(|b| b & 0x80 != 0);
        if !extra.is_empty() && sign_of_used != negative {
            return None;
        }
        let mut buf = [if negative { 0xFF } else { 0x00 }; 8];
        buf[..used.len()].copy_from_slice(used);
        Some(i64::from_le_bytes(buf))
    }

    fn parse_integer(self, text: &str) -> Result<Vec<u8>, ConvertError> {
        let width = self.width().unwrap_or(8);
        let bits = (width * 8) as u32;
        if self.signed() {
            let v = i64::from_str(text).map_err(|_| ConvertError::InvalidNumber)?;
            let (min, max) = if bits == 64 {
                (i64::MIN, i64::MAX)
            } else {
                (-(1i64 << (bits - 1)), (1i64 << (bits - 1)) - 1)
            };
            if v < min || v > max {
                return Err(ConvertError::OutOfRange);
            }
            Ok(v.to_le_bytes()[..width].to_vec())
        } else {
            let v = u64::from_str(text).map_err(|_| ConvertError::InvalidNumber)?;
            if bits < 64 && v >> bits != 0 {
                return Err(ConvertError::OutOfRange);
            }
            Ok(v.to_le_bytes()[..width].to_vec())
        }
    }
}

impl FromStr for DataType {
    type Err = UnknownDataType;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        NAMES
            .iter()
            .find(|(_, n)| *n == s)
            .map(|(t, _)| *t)
            .ok_or(UnknownDataType)
    }
}

impl core::fmt::Display for DataType {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Lowercase hex without separators.
pub fn hex(bytes: &[u8]) -> String {
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        // Writing to a String cannot fail.
        let _ = write!(s, "{b:02x}");
    }
    s
}

/// Parses hex in either case, with an optional `0x` prefix.
///
/// # Errors
/// [`ConvertError::InvalidHex`] for odd length or non-hex characters.
pub fn unhex(text: &str) -> Result<Vec<u8>, ConvertError> {
    let digits = text.strip_prefix("0x").unwrap_or(text).as_bytes();
    if digits.len() % 2 != 0 {
        return Err(ConvertError::InvalidHex);
    }
    digits
        .chunks(2)
        .map(|pair| Ok((nibble(pair[0])? << 4) | nibble(pair[1])?))
        .collect()
}

fn nibble(c: u8) -> Result<u8, ConvertError> {
    match c {
        b'0'..=b'9' => Ok(c - b'0'),
        b'a'..=b'f' => Ok(c - b'a' + 10),
        b'A'..=b'F' => Ok(c - b'A' + 10),
        _ => Err(ConvertError::InvalidHex),
    }
}

const FRACTION_DIGITS: u32 = 16;
const Q_ONE: i64 = 1 << 16;

/// Exact decimal form of `raw / 65536`: 2^16 divides 10^16, so sixteen
/// decimal places always suffice; trailing zeros are trimmed down to one.
fn fixed_to_string(raw: i64) -> String {
    let sign = if raw < 0 { "-" } else { "" };
    let abs = raw.unsigned_abs();
    let int = abs >> 16;
    let frac = (abs & 0xFFFF) * (10u64.pow(FRACTION_DIGITS) >> 16);
    let mut digits = alloc::format!("{frac:016}");
    while digits.len() > 1 && digits.ends_with('0') {
        digits.pop();
    }
    alloc::format!("{sign}{int}.{digits}")
}

/// Parses a decimal like `21.5` or `-1` to raw Q15.16, rounding to the
/// nearest representable value.
fn parse_fixed(text: &str) -> Result<i32, ConvertError> {
    let (negative, body) = match text.strip_prefix('-') {
        Some(rest) => (true, rest),
        None => (false, text.strip_prefix('+').unwrap_or(text)),
    };
    let (int_part, frac_part) = body.split_once('.').unwrap_or((body, ""));
    let all_digits = |s: &str| s.bytes().all(|b| b.is_ascii_digit());
    if int_part.is_empty()
        || !all_digits(int_part)
        || !all_digits(frac_part)
        || frac_part.len() > 18
    {
        return Err(ConvertError::InvalidNumber);
    }
    let int = i128::from_str(int_part).map_err(|_| ConvertError::OutOfRange)?;
    let frac = if frac_part.is_empty() {
        0
    } else {
        i128::from_str(frac_part).map_err(|_| ConvertError::InvalidNumber)?
    };
    let scale = 10i128.pow(frac_part.len() as u32);
    let magnitude = int * i128::from(Q_ONE) + (frac * i128::from(Q_ONE) + scale / 2) / scale;
    let raw = if negative { -magnitude } else { magnitude };
    i32::try_from(raw).map_err(|_| ConvertError::OutOfRange)
}
