//! Number parsing for the one-pass parsers: correctly rounded, no allocation.
//!
//! Most fields in event data are short decimals (`123.45`, `-0.5`, `7`), so
//! `parse_f32` has exact fast paths for them and falls back to the standard
//! library (Eisel-Lemire, correctly rounded) for everything else: long
//! mantissas, large exponents, `inf`, `NaN`. Either way the result equals
//! `str::parse::<f32>` on the same text (a property test checks this).

/// Powers of ten exactly representable in f32 (up to 10^10).
const POW10_F32: [f32; 11] = [1e0, 1e1, 1e2, 1e3, 1e4, 1e5, 1e6, 1e7, 1e8, 1e9, 1e10];
/// Powers of ten exactly representable in f64 (up to 10^22).
const POW10_F64: [f64; 23] = [
    1e0, 1e1, 1e2, 1e3, 1e4, 1e5, 1e6, 1e7, 1e8, 1e9, 1e10, 1e11, 1e12, 1e13, 1e14, 1e15, 1e16,
    1e17, 1e18, 1e19, 1e20, 1e21, 1e22,
];

/// A decimal split into sign, mantissa and power of ten; `None` when the
/// text is not a plain decimal or the mantissa has more than 19 digits.
#[inline(always)]
fn decompose(s: &[u8]) -> Option<(bool, u64, i32)> {
    let mut i = 0;
    let negative = match s.first() {
        Some(b'-') => {
            i = 1;
            true
        }
        Some(b'+') => {
            i = 1;
            false
        }
        _ => false,
    };
    let mut mantissa: u64 = 0;
    let mut digits = 0usize;
    let mut exponent: i32 = 0;
    while i < s.len() {
        let d = s[i].wrapping_sub(b'0');
        if d > 9 {
            break;
        }
        if mantissa >= 1_000_000_000_000_000_000 / 10 {
            return None;
        }
        mantissa = mantissa * 10 + d as u64;
        digits += 1;
        i += 1;
    }
    if i < s.len() && s[i] == b'.' {
        i += 1;
        while i < s.len() {
            let d = s[i].wrapping_sub(b'0');
            if d > 9 {
                break;
            }
            if mantissa >= 1_000_000_000_000_000_000 / 10 {
                return None;
            }
            mantissa = mantissa * 10 + d as u64;
            digits += 1;
            exponent -= 1;
            i += 1;
        }
    }
    if digits == 0 {
        return None;
    }
    if i < s.len() && (s[i] | 0x20) == b'e' {
        i += 1;
        let negative_exponent = match s.get(i) {
            Some(b'-') => {
                i += 1;
                true
            }
            Some(b'+') => {
                i += 1;
                false
            }
            _ => false,
        };
        let start = i;
        let mut e: i32 = 0;
        while i < s.len() && s[i].is_ascii_digit() && i - start < 4 {
            e = e * 10 + (s[i] - b'0') as i32;
            i += 1;
        }
        if i == start {
            return None;
        }
        exponent += if negative_exponent { -e } else { e };
    }
    if i != s.len() {
        return None;
    }
    Some((negative, mantissa, exponent))
}

/// Parses `s` as f32, correctly rounded; `None` if it is not a number.
/// Accepts what `str::parse::<f32>` accepts (including `inf`, `NaN`),
/// with surrounding ASCII spaces allowed.
#[inline]
pub fn parse_f32(s: &[u8]) -> Option<f32> {
    if let Some((negative, mantissa, exponent)) = decompose(s) {
        let magnitude = if mantissa == 0 {
            Some(0.0)
        } else if mantissa <= 1 << 24 && (-10..=10).contains(&exponent) {
            // Both operands exact: one IEEE operation rounds once, correctly.
            let m = mantissa as f32;
            Some(if exponent < 0 {
                m / POW10_F32[(-exponent) as usize]
            } else {
                m * POW10_F32[exponent as usize]
            })
        } else if mantissa <= 1 << 53 && (-22..=22).contains(&exponent) {
            let m = mantissa as f64;
            let wide = if exponent < 0 {
                m / POW10_F64[(-exponent) as usize]
            } else {
                m * POW10_F64[exponent as usize]
            };
            narrow_exactly(wide)
        } else {
            None
        };
        if let Some(v) = magnitude {
            return Some(if negative { -v } else { v });
        }
    }
    parse_slow(s)
}

/// `wide` is the correctly rounded f64 of a decimal; its f32 rounding equals
/// the decimal's unless `wide` sits exactly on a midpoint between two f32s
/// (then the decimal may lie on either side) or in f32's subnormal range.
#[inline(always)]
fn narrow_exactly(wide: f64) -> Option<f32> {
    if wide < 2.0 * f32::MIN_POSITIVE as f64 {
        return None;
    }
    let low_bits = wide.to_bits() & ((1u64 << 29) - 1);
    if low_bits == 1 << 28 {
        return None;
    }
    Some(wide as f32)
}

#[cold]
fn parse_slow(s: &[u8]) -> Option<f32> {
    let text = std::str::from_utf8(s).ok()?.trim_matches(' ');
    if text.is_empty() {
        return None;
    }
    text.parse::<f32>().ok()
}

/// Parses `s` as f64 (standard library, correctly rounded, spaces allowed).
pub fn parse_f64(s: &[u8]) -> Option<f64> {
    let text = std::str::from_utf8(s).ok()?.trim_matches(' ');
    if text.is_empty() {
        return None;
    }
    text.parse::<f64>().ok()
}

/// Parses `s` as a decimal i64; `None` on anything else or on overflow.
#[inline]
pub fn parse_i64(s: &[u8]) -> Option<i64> {
    let s = trim_spaces(s);
    let (negative, digits) = match s.first()? {
        b'-' => (true, &s[1..]),
        b'+' => (false, &s[1..]),
        _ => (false, s),
    };
    if digits.is_empty() {
        return None;
    }
    let mut v: i64 = 0;
    for &c in digits {
        let d = c.wrapping_sub(b'0');
        if d > 9 {
            return None;
        }
        v = v.checked_mul(10)?;
        v = if negative {
            v.checked_sub(d as i64)?
        } else {
            v.checked_add(d as i64)?
        };
    }
    Some(v)
}

/// `true`/`false` in any case.
pub fn parse_bool(s: &[u8]) -> Option<bool> {
    let s = trim_spaces(s);
    if s.eq_ignore_ascii_case(b"true") {
        Some(true)
    } else if s.eq_ignore_ascii_case(b"false") {
        Some(false)
    } else {
        None
    }
}

fn trim_spaces(mut s: &[u8]) -> &[u8] {
    while let [b' ', rest @ ..] = s {
        s = rest;
    }
    while let [rest @ .., b' '] = s {
        s = rest;
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn same(text: &str) {
        let ours = parse_f32(text.as_bytes());
        let std = text.trim_matches(' ').parse::<f32>().ok();
        match (ours, std) {
            (Some(a), Some(b)) => assert!(
                a.to_bits() == b.to_bits() || (a.is_nan() && b.is_nan()),
                "{text:?}: roo {a:e} std {b:e}"
            ),
            (a, b) => assert_eq!(a.is_some(), b.is_some(), "{text:?}: roo {a:?} std {b:?}"),
        }
    }

    #[test]
    fn agrees_with_std_on_edges() {
        for text in [
            "0",
            "-0",
            "+0",
            "0.0",
            "1",
            "-1",
            "1.5",
            ".5",
            "5.",
            "-.5",
            "1e5",
            "1E-5",
            "1e+5",
            "123.456",
            "3.4028235e38",
            "3.4028236e38",
            "1e39",
            "1e-38",
            "1e-45",
            "1e-46",
            "16777216",
            "16777217",
            "16777219",
            "9007199254740993",
            "0.1",
            "0.2",
            "0.3",
            "123456789012345678901234",
            "inf",
            "-inf",
            "NaN",
            "nan",
            "infinity",
            " 1.25 ",
            "",
            "-",
            "+",
            ".",
            "e5",
            "1e",
            "1e+",
            "1.2.3",
            "1,2",
            "abc",
            "0x10",
            "1_000",
            "00000000000000000000000001",
            "0.000000000000000000000000001",
            // f32 midpoint 1 + 2^-24 and its neighbours
            "1.000000059604644775390625",
            "1.0000000596046448",
            "1.0000000596046447",
            "1.00000005960464477539062500001",
        ] {
            same(text);
        }
    }

    proptest! {
        #[test]
        fn agrees_with_std_on_decimals(m in any::<u64>(), scale in 0u32..25, negative in any::<bool>()) {
            let digits = m.to_string();
            let text = if scale as usize >= digits.len() {
                format!("0.{}{}", "0".repeat(scale as usize - digits.len()), digits)
            } else {
                let (a, b) = digits.split_at(digits.len() - scale as usize);
                if b.is_empty() { a.to_string() } else { format!("{a}.{b}") }
            };
            same(&if negative { format!("-{text}") } else { text });
        }

        #[test]
        fn agrees_with_std_on_floats(bits in any::<u32>(), precision in 1usize..12) {
            let v = f32::from_bits(bits);
            same(&format!("{v}"));
            same(&format!("{v:.precision$}"));
            same(&format!("{v:e}"));
            same(&format!("{:.precision$}", v as f64 * 1.0000001));
        }

        #[test]
        fn agrees_with_std_on_any_text(s in "[-+0-9.eE ]{0,24}") {
            same(&s);
        }

        #[test]
        fn i64_agrees_with_std(s in "[-+]?[0-9]{0,21}") {
            prop_assert_eq!(parse_i64(s.as_bytes()), s.parse::<i64>().ok());
        }
    }
}
