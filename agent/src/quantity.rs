//! Exact resource quantities: parses and prints Kubernetes `Quantity` strings
//! the way `k8s.io/apimachinery/pkg/api/resource` does, for node capacity,
//! reservations, QoS and cgroup sizing.

use std::cmp::Ordering;
use std::fmt;

use k8s_openapi::apimachinery::pkg::api::resource::Quantity;

/// Error text of upstream `ErrFormatWrong`.
const FORMAT_WRONG: &str =
    "quantities must match the regular expression '^([+-]?[0-9.]+)([eEinumkKMGTP]*[-+]?[0-9]*)$'";

/// Why a quantity string could not be parsed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum QuantityError {
    /// Upstream `ErrFormatWrong`.
    #[error("{FORMAT_WRONG}")]
    FormatWrong,
    /// Upstream `ErrSuffix`.
    #[error("unable to parse quantity's suffix")]
    Suffix,
    /// The value does not fit the exact representation used here.
    #[error("quantity {0:?} is too large")]
    TooLarge(String),
}

pub type Result<T, E = QuantityError> = std::result::Result<T, E>;

/// How a quantity prints, as upstream `resource.Format`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// `m`, ``, `k`, `M`, ... (powers of 1000).
    DecimalSI,
    /// `Ki`, `Mi`, ... (powers of 1024).
    BinarySI,
    /// `e3`, `e6`, ...
    DecimalExponent,
}

/// Finest precision kept, as upstream: nano units (values are rounded up to it).
const MAX_SCALE: u32 = 9;

/// An exact quantity: `mantissa * 10^-scale`.
#[derive(Debug, Clone, Copy)]
pub struct ParsedQuantity {
    mantissa: i128,
    scale: u32,
    format: Format,
}

impl PartialEq for ParsedQuantity {
    fn eq(&self, other: &Self) -> bool {
        self.cmp(other) == Ordering::Equal
    }
}

impl Eq for ParsedQuantity {}

impl PartialOrd for ParsedQuantity {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for ParsedQuantity {
    fn cmp(&self, other: &Self) -> Ordering {
        let (a, b, _) = align(self, other);
        a.cmp(&b)
    }
}

fn pow10(e: u32) -> Option<i128> {
    10i128.checked_pow(e)
}

/// Both mantissas at the larger scale (saturating: only absurd values overflow).
fn align(a: &ParsedQuantity, b: &ParsedQuantity) -> (i128, i128, u32) {
    let scale = a.scale.max(b.scale);
    let up = |q: &ParsedQuantity| {
        pow10(scale - q.scale)
            .and_then(|f| q.mantissa.checked_mul(f))
            .unwrap_or(if q.mantissa < 0 { i128::MIN } else { i128::MAX })
    };
    (up(a), up(b), scale)
}

/// Integer division rounding toward positive infinity.
fn div_ceil(n: i128, d: i128) -> i128 {
    let q = n / d;
    if n % d != 0 && ((n > 0) == (d > 0)) {
        q + 1
    } else {
        q
    }
}

fn saturate(v: i128) -> i64 {
    i64::try_from(v).unwrap_or(if v < 0 { i64::MIN } else { i64::MAX })
}

impl ParsedQuantity {
    /// Parses a quantity string as upstream `resource.ParseQuantity`.
    pub fn parse(s: &str) -> Result<Self> {
        let bytes = s.as_bytes();
        if bytes.is_empty() {
            return Err(QuantityError::FormatWrong);
        }
        let mut pos = 0;
        let mut negative = false;
        if bytes[0] == b'+' || bytes[0] == b'-' {
            negative = bytes[0] == b'-';
            pos = 1;
        }
        let int_start = pos;
        while pos < bytes.len() && bytes[pos].is_ascii_digit() {
            pos += 1;
        }
        let int_part = &s[int_start..pos];
        let mut frac_part = "";
        if pos < bytes.len() && bytes[pos] == b'.' {
            pos += 1;
            let frac_start = pos;
            while pos < bytes.len() && bytes[pos].is_ascii_digit() {
                pos += 1;
            }
            frac_part = &s[frac_start..pos];
        }
        if int_part.is_empty() && frac_part.is_empty() {
            return Err(QuantityError::FormatWrong);
        }
        let suffix = &s[pos..];
        check_suffix_shape(suffix)?;
        let too_large = || QuantityError::TooLarge(s.to_owned());

        let mut mantissa: i128 = 0;
        for d in int_part.bytes().chain(frac_part.bytes()) {
            mantissa = mantissa
                .checked_mul(10)
                .and_then(|m| m.checked_add(i128::from(d - b'0')))
                .ok_or_else(too_large)?;
        }
        let mut scale = u32::try_from(frac_part.len()).map_err(|_| too_large())?;
        let (format, binary_pow, decimal_exp) = parse_suffix(suffix)?;
        if binary_pow > 0 {
            let factor = 1024i128.checked_pow(binary_pow).ok_or_else(too_large)?;
            mantissa = mantissa.checked_mul(factor).ok_or_else(too_large)?;
        }
        if decimal_exp >= 0 {
            let e = decimal_exp.unsigned_abs();
            if scale >= e {
                scale -= e;
            } else {
                let factor = pow10(e - scale).ok_or_else(too_large)?;
                mantissa = mantissa.checked_mul(factor).ok_or_else(too_large)?;
                scale = 0;
            }
        } else {
            scale = scale
                .checked_add(decimal_exp.unsigned_abs())
                .ok_or_else(too_large)?;
        }
        if negative {
            mantissa = -mantissa;
        }
        if scale > MAX_SCALE {
            let drop = scale - MAX_SCALE;
            mantissa = match pow10(drop) {
                Some(d) => div_ceil(mantissa, d),
                // Far below a nano unit: rounds up to one nano, or to zero when negative.
                None => i128::from(mantissa > 0),
            };
            scale = MAX_SCALE;
        }
        Ok(Self {
            mantissa,
            scale,
            format,
        }
        .normalized())
    }

    /// Parses an API `Quantity`.
    pub fn from_quantity(q: &Quantity) -> Result<Self> {
        Self::parse(&q.0)
    }

    /// An integer quantity in the given format.
    pub fn from_i64(value: i64, format: Format) -> Self {
        Self {
            mantissa: i128::from(value),
            scale: 0,
            format,
        }
    }

    /// A quantity of `milli` thousandths, as upstream `NewMilliQuantity`.
    pub fn from_milli(milli: i64, format: Format) -> Self {
        Self {
            mantissa: i128::from(milli),
            scale: 3,
            format,
        }
        .normalized()
    }

    /// Zero, printed as `0`.
    pub fn zero(format: Format) -> Self {
        Self::from_i64(0, format)
    }

    fn normalized(mut self) -> Self {
        while self.scale > 0 && self.mantissa % 10 == 0 {
            self.mantissa /= 10;
            self.scale -= 1;
        }
        if self.mantissa == 0 {
            self.scale = 0;
        }
        self
    }

    /// The print format.
    pub fn format(&self) -> Format {
        self.format
    }

    /// The same value printed in another format.
    pub fn with_format(mut self, format: Format) -> Self {
        self.format = format;
        self
    }

    /// Whether the value is exactly zero.
    pub fn is_zero(&self) -> bool {
        self.mantissa == 0
    }

    /// Whether the value is below zero.
    pub fn is_negative(&self) -> bool {
        self.mantissa < 0
    }

    /// The value rounded up to an integer, as upstream `Value()`.
    pub fn value(&self) -> i64 {
        match pow10(self.scale) {
            Some(d) => saturate(div_ceil(self.mantissa, d)),
            None => 0,
        }
    }

    /// The value in thousandths rounded up, as upstream `MilliValue()`.
    pub fn milli_value(&self) -> i64 {
        if self.scale <= 3 {
            let f = pow10(3 - self.scale).unwrap_or(1);
            saturate(self.mantissa.saturating_mul(f))
        } else {
            match pow10(self.scale - 3) {
                Some(d) => saturate(div_ceil(self.mantissa, d)),
                None => 0,
            }
        }
    }

    /// `self + other`, keeping `self`'s format, or `other`'s when `self` is
    /// zero (as upstream `Add`: a quota's `0` plus `1Gi` is `1Gi`).
    pub fn add(&self, other: &Self) -> Self {
        let (a, b, scale) = align(self, other);
        Self {
            mantissa: a.saturating_add(b),
            scale,
            format: if self.is_zero() {
                other.format
            } else {
                self.format
            },
        }
        .normalized()
    }

    /// `self - other`, keeping `self`'s format (as upstream `Sub`).
    pub fn sub(&self, other: &Self) -> Self {
        let (a, b, scale) = align(self, other);
        Self {
            mantissa: a.saturating_sub(b),
            scale,
            format: self.format,
        }
        .normalized()
    }

    /// The API form, printed canonically.
    pub fn to_quantity(&self) -> Quantity {
        Quantity(self.to_string())
    }
}

/// Checks the suffix against `[eEinumkKMGTP]*[-+]?[0-9]*`.
fn check_suffix_shape(suffix: &str) -> Result<()> {
    let rest = suffix.trim_start_matches(|c: char| "eEinumkKMGTP".contains(c));
    let rest = rest.strip_prefix(['+', '-']).unwrap_or(rest);
    if rest.bytes().all(|b| b.is_ascii_digit()) {
        Ok(())
    } else {
        Err(QuantityError::FormatWrong)
    }
}

/// Returns the format, the power of 1024 and the power of 10 of a suffix.
fn parse_suffix(suffix: &str) -> Result<(Format, u32, i32)> {
    let binary = ["", "Ki", "Mi", "Gi", "Ti", "Pi", "Ei"];
    if let Some(i) = binary.iter().skip(1).position(|b| *b == suffix) {
        let pow = u32::try_from(i + 1).map_err(|_| QuantityError::Suffix)?;
        return Ok((Format::BinarySI, pow, 0));
    }
    let decimal = match suffix {
        "n" => Some(-9),
        "u" => Some(-6),
        "m" => Some(-3),
        "" => Some(0),
        "k" => Some(3),
        "M" => Some(6),
        "G" => Some(9),
        "T" => Some(12),
        "P" => Some(15),
        "E" => Some(18),
        _ => None,
    };
    if let Some(e) = decimal {
        return Ok((Format::DecimalSI, 0, e));
    }
    if let Some(exp) = suffix.strip_prefix(['e', 'E']) {
        let e: i32 = exp.parse().map_err(|_| QuantityError::Suffix)?;
        return Ok((Format::DecimalExponent, 0, e));
    }
    Err(QuantityError::Suffix)
}

impl fmt::Display for ParsedQuantity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.mantissa == 0 {
            return f.write_str("0");
        }
        if self.format == Format::BinarySI
            && self.scale == 0
            && (self.mantissa <= -1024 || self.mantissa >= 1024)
        {
            let mut m = self.mantissa;
            let mut pow = 0;
            while pow < 6 && m % 1024 == 0 {
                m /= 1024;
                pow += 1;
            }
            let suffix = ["", "Ki", "Mi", "Gi", "Ti", "Pi", "Ei"][pow];
            return write!(f, "{m}{suffix}");
        }
        // Decimal: the exponent is lowered to a multiple of three with an integer mantissa.
        let mut m = self.mantissa;
        let mut exp = -i64::from(self.scale);
        while m % 10 == 0 {
            m /= 10;
            exp += 1;
        }
        let extra = exp.rem_euclid(3);
        for _ in 0..extra {
            m *= 10;
        }
        exp -= extra;
        if self.format == Format::DecimalExponent {
            return if exp == 0 {
                write!(f, "{m}")
            } else {
                write!(f, "{m}e{exp}")
            };
        }
        let suffix = match exp {
            -9 => "n",
            -6 => "u",
            -3 => "m",
            0 => "",
            3 => "k",
            6 => "M",
            9 => "G",
            12 => "T",
            15 => "P",
            18 => "E",
            _ => return write!(f, "{m}e{exp}"),
        };
        write!(f, "{m}{suffix}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn q(s: &str) -> ParsedQuantity {
        ParsedQuantity::parse(s).unwrap()
    }

    #[test]
    fn binary_suffixes_scale_by_powers_of_1024() {
        assert_eq!(q("1Ki").value(), 1024);
        assert_eq!(q("256Mi").value(), 256 * 1024 * 1024);
        assert_eq!(q("2Gi").value(), 2 << 30);
        assert_eq!(q("1Ti").value(), 1 << 40);
        assert_eq!(q("1Pi").value(), 1 << 50);
        assert_eq!(q("1Ei").value(), 1 << 60);
        assert_eq!(q("1.5Gi").value(), 3 << 29);
    }

    #[test]
    fn decimal_suffixes_scale_by_powers_of_1000() {
        assert_eq!(q("1k").value(), 1000);
        assert_eq!(q("1M").value(), 1_000_000);
        assert_eq!(q("1G").value(), 1_000_000_000);
        assert_eq!(q("1T").value(), 1_000_000_000_000);
        assert_eq!(q("1P").value(), 1_000_000_000_000_000);
        assert_eq!(q("1E").value(), 1_000_000_000_000_000_000);
        assert_eq!(q("100m").milli_value(), 100);
        assert_eq!(q("1n").milli_value(), 1);
        assert_eq!(q("1u").milli_value(), 1);
    }

    #[test]
    fn exponents_are_powers_of_ten() {
        assert_eq!(q("1e3").value(), 1000);
        assert_eq!(q("1E6").value(), 1_000_000);
        assert_eq!(q("5e-3").milli_value(), 5);
        assert_eq!(q("1.5e3").value(), 1500);
    }

    #[test]
    fn cpu_values_round_up_like_upstream() {
        assert_eq!(q("100m").value(), 1);
        assert_eq!(q("0.5").milli_value(), 500);
        assert_eq!(q("2").milli_value(), 2000);
        assert_eq!(q("0.0001").milli_value(), 1);
        assert_eq!(q("-100m").value(), 0);
    }

    #[test]
    fn malformed_strings_are_rejected_with_upstream_errors() {
        assert_eq!(ParsedQuantity::parse(""), Err(QuantityError::FormatWrong));
        assert_eq!(
            ParsedQuantity::parse("abc"),
            Err(QuantityError::FormatWrong)
        );
        assert_eq!(
            ParsedQuantity::parse("1 Mi"),
            Err(QuantityError::FormatWrong)
        );
        assert_eq!(ParsedQuantity::parse("1x"), Err(QuantityError::FormatWrong));
        assert_eq!(ParsedQuantity::parse("1ki"), Err(QuantityError::Suffix));
        assert_eq!(ParsedQuantity::parse("1Mm"), Err(QuantityError::Suffix));
        assert_eq!(ParsedQuantity::parse("."), Err(QuantityError::FormatWrong));
        assert_eq!(
            QuantityError::FormatWrong.to_string(),
            "quantities must match the regular expression '^([+-]?[0-9.]+)([eEinumkKMGTP]*[-+]?[0-9]*)$'"
        );
    }

    #[test]
    fn canonical_printing_matches_upstream() {
        assert_eq!(q("1024").with_format(Format::BinarySI).to_string(), "1Ki");
        assert_eq!(q("1536Mi").to_string(), "1536Mi");
        assert_eq!(q("1.5Gi").to_string(), "1536Mi");
        assert_eq!(q("1000").to_string(), "1k");
        assert_eq!(q("1500m").to_string(), "1500m");
        assert_eq!(q("2000m").to_string(), "2");
        assert_eq!(q("0.1").to_string(), "100m");
        assert_eq!(q("1e3").to_string(), "1e3");
        assert_eq!(q("100Ki").sub(&q("100Ki")).to_string(), "0");
        assert_eq!(
            ParsedQuantity::from_i64(1000, Format::BinarySI).to_string(),
            "1k"
        );
        assert_eq!(
            ParsedQuantity::from_i64(8_003_444 * 1024, Format::BinarySI).to_string(),
            "8003444Ki"
        );
        assert_eq!(
            ParsedQuantity::from_milli(1900, Format::DecimalSI).to_string(),
            "1900m"
        );
    }

    #[test]
    fn arithmetic_and_comparison_are_exact() {
        assert_eq!(q("1").sub(&q("100m")).milli_value(), 900);
        assert_eq!(q("1Gi").add(&q("1Gi")), q("2Gi"));
        assert!(q("1Mi") > q("1M"));
        assert_eq!(q("1000m"), q("1"));
        assert!(q("1").sub(&q("2")).is_negative());
    }

    #[test]
    fn adding_to_zero_takes_the_other_format() {
        assert_eq!(q("0").add(&q("1Gi")).to_string(), "1Gi");
        assert_eq!(q("1").add(&q("1Gi")).format(), q("1").format());
    }
}
