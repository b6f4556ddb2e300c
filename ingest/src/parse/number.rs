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

/// Up to 8 leading ASCII digits of `s[at..at + 8]`: their value and count
/// (SWAR: one load, no per-byte branch).
#[inline(always)]
fn digits8(s: &[u8], at: usize) -> (u64, usize) {
    let x = u64::from_le_bytes(s[at..at + 8].try_into().expect("8 bytes"));
    // A byte is a digit when its high nibble is 3 and adding 6 keeps it 3.
    // Carries only run toward later bytes, past the first non-digit.
    let a = (x & 0xF0F0_F0F0_F0F0_F0F0) ^ 0x3030_3030_3030_3030;
    let b = (x.wrapping_add(0x0606_0606_0606_0606) & 0xF0F0_F0F0_F0F0_F0F0) ^ 0x3030_3030_3030_3030;
    let non_digit = a | b;
    let n = (non_digit.trailing_zeros() / 8) as usize;
    // The n digits as values in the top bytes; the bytes below are zeros,
    // i.e. leading zeros of an 8-digit number (no digit: zero).
    let v = (x & 0x0F0F_0F0F_0F0F_0F0F)
        .checked_shl(8 * (8 - n) as u32)
        .unwrap_or(0);
    let v = v.wrapping_mul(10).wrapping_add(v >> 8);
    const MASK: u64 = 0x0000_00FF_0000_00FF;
    const MUL1: u64 = 0x000F_4240_0000_0064; // 100 + (1_000_000 << 32)
    const MUL2: u64 = 0x0000_2710_0000_0001; // 1 + (10_000 << 32)
    let v = ((v & MASK)
        .wrapping_mul(MUL1)
        .wrapping_add(((v >> 16) & MASK).wrapping_mul(MUL2)))
        >> 32;
    (v, n)
}

/// Digits from `s[*p..]` into `mantissa`; returns how many. `None` when the
/// mantissa would pass 18 digits (the slow path takes those).
#[inline(always)]
fn digits(s: &[u8], p: &mut usize, mantissa: &mut u64) -> Option<usize> {
    let mut count = 0;
    loop {
        let (v, n) = if *p + 8 <= s.len() {
            digits8(s, *p)
        } else {
            let mut v = 0u64;
            let mut n = 0;
            while *p + n < s.len() && n < 8 && s[*p + n].is_ascii_digit() {
                v = v * 10 + (s[*p + n] - b'0') as u64;
                n += 1;
            }
            (v, n)
        };
        if n == 0 {
            return Some(count);
        }
        if *mantissa >= 10_000_000_000 {
            return None;
        }
        *mantissa = *mantissa * POW10_U64[n] + v;
        *p += n;
        count += n;
        if n < 8 {
            return Some(count);
        }
    }
}

/// An optional `-` or `+` at `s[*p]`: true for `-`; moves past it.
#[inline(always)]
fn sign(s: &[u8], p: &mut usize) -> bool {
    match s.get(*p) {
        Some(b'-') => {
            *p += 1;
            true
        }
        Some(b'+') => {
            *p += 1;
            false
        }
        _ => false,
    }
}

/// A plain decimal at the front of `s[start..]` (`-12.5`, `3e-4`): sign,
/// mantissa, power of ten and where it ends. `None` when there is no digit
/// or more than 18 significant digits.
#[inline(always)]
fn decompose_prefix(s: &[u8], start: usize) -> Option<(bool, u64, i32, usize)> {
    let mut p = start;
    let negative = sign(s, &mut p);
    let mut mantissa: u64 = 0;
    let mut count = digits(s, &mut p, &mut mantissa)?;
    let mut exponent: i32 = 0;
    if s.get(p) == Some(&b'.') {
        p += 1;
        let n = digits(s, &mut p, &mut mantissa)?;
        count += n;
        exponent = -(n as i32);
    }
    if count == 0 {
        return None;
    }
    if let Some(&e) = s.get(p) {
        if e | 0x20 == b'e' {
            let mut q = p + 1;
            let negative_exponent = sign(s, &mut q);
            let first = q;
            let mut e: i32 = 0;
            while q < s.len() && s[q].is_ascii_digit() && q - first < 4 {
                e = e * 10 + (s[q] - b'0') as i32;
                q += 1;
            }
            if q == first || (q < s.len() && s[q].is_ascii_digit()) {
                return None;
            }
            exponent += if negative_exponent { -e } else { e };
            p = q;
        }
    }
    Some((negative, mantissa, exponent, p))
}

/// Powers of ten up to 10^16, exact in u64.
const POW10_U64: [u64; 17] = [
    1,
    10,
    100,
    1_000,
    10_000,
    100_000,
    1_000_000,
    10_000_000,
    100_000_000,
    1_000_000_000,
    10_000_000_000,
    100_000_000_000,
    1_000_000_000_000,
    10_000_000_000_000,
    100_000_000_000_000,
    1_000_000_000_000_000,
    10_000_000_000_000_000,
];

/// Parses a plain decimal at the front of `s[start..]` as f32, correctly
/// rounded; returns it and where it ends. `None` for anything the exact
/// fast paths do not cover (the caller then finds the field's end and uses
/// [`parse_f32`]).
///
/// The common shape — optional `-`, up to 7 integer digits, optional
/// fraction of up to 15 digits, no exponent — runs with three 8-byte loads
/// and selects instead of branches (per-field branches on digit counts
/// mispredict on real data); anything else takes the general path.
#[inline(always)]
pub fn parse_f32_prefix(s: &[u8], start: usize) -> Option<(f32, usize)> {
    if s.len() < start + 26 {
        return parse_f32_prefix_general(s, start);
    }
    let negative = s[start] == b'-';
    let mut p = start + negative as usize;
    let (int_value, int_digits) = digits8(s, p);
    p += int_digits;
    let has_fraction = s[p] == b'.';
    let q = p + 1;
    let (v1, n1) = digits8(s, q);
    let (v2, n2) = digits8(s, q + 8);
    let second = if n1 == 8 { n2 } else { 0 };
    let frac_digits = if has_fraction { n1 + second } else { 0 };
    let frac_value = v1 * POW10_U64[second] + if n1 == 8 { v2 } else { 0 };
    let frac_value = if has_fraction { frac_value } else { 0 };
    let end = if has_fraction { q + frac_digits } else { p };
    let total = int_digits + frac_digits;
    let follows = s[end] | 0x20;
    if int_digits == 8
        || second == 8
        || total == 0
        || total > 18
        || follows == b'e'
        || follows == b'.'
    {
        return parse_f32_prefix_general(s, start);
    }
    let mantissa = int_value * POW10_U64[frac_digits] + frac_value;
    if mantissa > 1 << 53 {
        return parse_f32_prefix_general(s, start);
    }
    // Exact in f64, one rounding: the decimal's correctly rounded f64.
    let wide = mantissa as f64 / POW10_F64[frac_digits];
    let narrow = narrow_exactly(wide).or(if mantissa == 0 { Some(0.0) } else { None })?;
    Some((if negative { -narrow } else { narrow }, end))
}

#[inline(never)]
fn parse_f32_prefix_general(s: &[u8], start: usize) -> Option<(f32, usize)> {
    let (negative, mantissa, exponent, end) = decompose_prefix(s, start)?;
    let magnitude = if mantissa == 0 {
        0.0
    } else if mantissa <= 1 << 24 && (-10..=10).contains(&exponent) {
        // Both operands exact: one IEEE operation rounds once, correctly.
        let m = mantissa as f32;
        if exponent < 0 {
            m / POW10_F32[(-exponent) as usize]
        } else {
            m * POW10_F32[exponent as usize]
        }
    } else if mantissa <= 1 << 53 && (-22..=22).contains(&exponent) {
        let m = mantissa as f64;
        let wide = if exponent < 0 {
            m / POW10_F64[(-exponent) as usize]
        } else {
            m * POW10_F64[exponent as usize]
        };
        narrow_exactly(wide)?
    } else {
        return None;
    };
    Some((if negative { -magnitude } else { magnitude }, end))
}

/// Parses `s` as f32, correctly rounded; `None` if it is not a number.
/// Accepts what `str::parse::<f32>` accepts (including `inf`, `NaN`),
/// with surrounding ASCII spaces allowed.
#[inline]
pub fn parse_f32(s: &[u8]) -> Option<f32> {
    match parse_f32_prefix(s, 0) {
        Some((v, end)) if end == s.len() => Some(v),
        _ => parse_slow(s),
    }
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

    /// The prefix parser on `text` followed by a delimiter and padding (so
    /// the 8-byte loads run), agrees with std wherever it answers.
    fn same_prefix(text: &str) {
        let padded = format!("{text},12345678");
        if let Some((v, end)) = parse_f32_prefix(padded.as_bytes(), 0) {
            assert_eq!(end, text.len(), "{text:?}");
            let std = text.parse::<f32>().unwrap();
            assert_eq!(v.to_bits(), std.to_bits(), "{text:?}");
        }
        same(text);
    }

    #[test]
    fn swar_digits() {
        for (text, value, count) in [
            ("12345678", 12345678, 8),
            ("1234x", 1234, 4),
            ("0000001.", 1, 7),
            ("a", 0, 0),
            ("9", 9, 1),
        ] {
            let padded = format!("{text}--------");
            assert_eq!(digits8(padded.as_bytes(), 0), (value, count), "{text}");
        }
        for text in [
            "123456789012345678",
            "1234567890123456789",
            "0.1234567890123",
            "12345678.87654321",
            "-0.000000001",
            "1e-5",
            "7e38",
        ] {
            same_prefix(text);
        }
    }

    proptest! {
        #[test]
        fn prefix_agrees_with_std(bits in any::<u32>(), precision in 1usize..12) {
            let v = f32::from_bits(bits);
            same_prefix(&format!("{v}"));
            same_prefix(&format!("{v:.precision$}"));
            same_prefix(&format!("{v:e}"));
        }

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
            let padded = format!("{s}\n--------");
            if let Some((v, end)) = parse_f32_prefix(padded.as_bytes(), 0) {
                let std = s[..end].parse::<f32>();
                prop_assert!(std.is_ok_and(|x| x.to_bits() == v.to_bits()), "{:?}", s);
            }
        }

        #[test]
        fn i64_agrees_with_std(s in "[-+]?[0-9]{0,21}") {
            prop_assert_eq!(parse_i64(s.as_bytes()), s.parse::<i64>().ok());
        }
    }
}
