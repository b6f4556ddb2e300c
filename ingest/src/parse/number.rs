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

/// A 16-byte load at `INSIDE[len..]` gives 0xFF in
/// the last `len` of 16 bytes (a field right-aligned in a 16-byte load).
#[cfg(target_arch = "x86_64")]
static INSIDE: [u8; 32] = {
    let mut t = [0u8; 32];
    let mut i = 16;
    while i < 32 {
        t[i] = 0xFF;
        i += 1;
    }
    t
};

/// Shuffles that close the gap a decimal point leaves: for a point at byte
/// `k`, bytes below it move up one (byte 0 becomes zero) and bytes above
/// stay; entry 16 (no point) keeps every byte.
#[cfg(target_arch = "x86_64")]
static CLOSE_POINT: [[u8; 16]; 17] = {
    let mut t = [[0u8; 16]; 17];
    let mut k = 0;
    while k <= 16 {
        let mut i = 0;
        while i < 16 {
            t[k][i] = if k == 16 || i > k {
                i as u8
            } else if i == 0 {
                0x80
            } else {
                (i - 1) as u8
            };
            i += 1;
        }
        k += 1;
    }
    t
};

/// Parses the field `s[start..end]` as f32 when it is a plain decimal
/// (`-`, digits, at most one `.`, at least one digit, 16 bytes at most),
/// correctly rounded, with no loop and no branch on the digits: one 16-byte
/// load ending at the field's end, the point closed up by one shuffle, the
/// digits combined by multiply-adds (two 8-digit halves), one f64
/// multiplication (a division near f32 midpoints).
/// `None` means "not this shape, or not exact here" (not "not a number"):
/// the caller takes [`parse_f32_prefix`] / [`parse_f32`], which agree with it
/// wherever it answers.
///
/// # Safety
/// The CPU must have SSSE3 and SSE4.1 ([`field_simd_available`]); the
/// function must be inlined into code compiled with them enabled.
#[cfg(target_arch = "x86_64")]
#[inline(always)]
pub unsafe fn parse_f32_field_sse41(s: &[u8], start: usize, end: usize) -> Option<f32> {
    use std::arch::x86_64::*;
    let len = end.wrapping_sub(start);
    if len.wrapping_sub(1) >= 16 || end < 16 || end > s.len() {
        return None;
    }
    // SAFETY: end - 16 >= 0 and end <= s.len(): the load stays in `s`;
    // `len` in 1..=16 keeps the table load in bounds.
    let v = _mm_loadu_si128(s.as_ptr().add(end - 16) as *const __m128i);
    let inside_v = _mm_loadu_si128(INSIDE.as_ptr().add(len) as *const __m128i);
    decimal_right_aligned(v, inside_v, len)
}

/// Parses a plain decimal at the front of `s[start..]` (as
/// [`parse_f32_field_sse41`], its end found in the same 16-byte load: the
/// first byte that is not a digit, the point or a leading `-`); returns it
/// and where it ends. `None` where the decimal may run past 16 bytes, or in
/// the cases that function refuses; the caller checks what follows.
///
/// # Safety
/// As for [`parse_f32_field_sse41`].
#[cfg(target_arch = "x86_64")]
#[inline(always)]
pub unsafe fn parse_f32_prefix_sse41(s: &[u8], start: usize) -> Option<(f32, usize)> {
    use std::arch::x86_64::*;
    if start + 16 > s.len() {
        return None;
    }
    // SAFETY: start + 16 <= s.len(); table loads at `len` in 1..=16.
    let v = _mm_loadu_si128(s.as_ptr().add(start) as *const __m128i);
    let t = _mm_sub_epi8(v, _mm_set1_epi8(b'0' as i8));
    let digit = _mm_cmpeq_epi8(_mm_min_epu8(t, _mm_set1_epi8(9)), t);
    let point = _mm_cmpeq_epi8(v, _mm_set1_epi8(b'.' as i8));
    let part = _mm_movemask_epi8(_mm_or_si128(digit, point)) as u32
        | (*s.get_unchecked(start) == b'-') as u32;
    let len = (!part).trailing_zeros() as usize;
    if len.wrapping_sub(1) >= 15 {
        return None;
    }
    // Right-align the decimal: byte i takes byte i - (16 - len).
    let v = _mm_shuffle_epi8(
        v,
        _mm_loadu_si128(ALIGN_RIGHT.as_ptr().add(len) as *const __m128i),
    );
    let inside_v = _mm_loadu_si128(INSIDE.as_ptr().add(len) as *const __m128i);
    Some((decimal_right_aligned(v, inside_v, len)?, start + len))
}

/// Shuffles that move the first `len` bytes of 16 to the end: a load at
/// `ALIGN_RIGHT[len..]` (zeros before them).
#[cfg(target_arch = "x86_64")]
static ALIGN_RIGHT: [u8; 32] = {
    let mut t = [0x80u8; 32];
    let mut i = 16;
    while i < 32 {
        t[i] = (i - 16) as u8;
        i += 1;
    }
    t
};

/// The decimal in the last `len` bytes of `v` (`inside_v` 0xFF there).
#[cfg(target_arch = "x86_64")]
#[inline(always)]
unsafe fn decimal_right_aligned(
    v: std::arch::x86_64::__m128i,
    inside_v: std::arch::x86_64::__m128i,
    len: usize,
) -> Option<f32> {
    use std::arch::x86_64::*;
    let inside = 0xFFFFu32 << (16 - len) & 0xFFFF;
    let t = _mm_sub_epi8(v, _mm_set1_epi8(b'0' as i8));
    let is_digit = _mm_and_si128(
        _mm_cmpeq_epi8(_mm_min_epu8(t, _mm_set1_epi8(9)), t),
        inside_v,
    );
    let digits = _mm_movemask_epi8(is_digit) as u32;
    let point = _mm_movemask_epi8(_mm_cmpeq_epi8(v, _mm_set1_epi8(b'.' as i8))) as u32 & inside;
    let minus = _mm_movemask_epi8(_mm_cmpeq_epi8(v, _mm_set1_epi8(b'-' as i8))) as u32;
    let negative = minus >> (16 - len) & 1 == 1;
    let sign = (negative as u32) << (16 - len);
    if digits | point | sign != inside || digits == 0 || point & point.wrapping_sub(1) != 0 {
        return None;
    }
    let k = (point | 1 << 16).trailing_zeros() as usize;
    let d = _mm_and_si128(t, is_digit);
    let d = _mm_shuffle_epi8(
        d,
        _mm_loadu_si128(CLOSE_POINT.as_ptr().add(k) as *const __m128i),
    );
    // Byte 0 is the most significant digit.
    let pairs = _mm_maddubs_epi16(d, _mm_set1_epi16(0x010A)); // 10 * hi + lo
    let quads = _mm_madd_epi16(pairs, _mm_set1_epi32(0x0001_0064)); // 100 * hi + lo
    let quads = _mm_packus_epi32(quads, quads);
    let eights = _mm_madd_epi16(quads, _mm_set1_epi32(0x0001_2710)); // 10000 * hi + lo
    let high = _mm_cvtsi128_si32(eights) as u32 as u64;
    let low = _mm_extract_epi32::<1>(eights) as u32 as u64;
    let mantissa = high * 100_000_000 + low;
    let fraction = if k == 16 { 0 } else { 15 - k };
    if mantissa > 1 << 53 {
        return None;
    }
    // A multiplication by 10^-fraction (itself rounded) is within 2 f64
    // ulps of the decimal, so its f32 rounding is the decimal's unless it
    // lies within 4 ulps of an f32 midpoint or below f32's normal range;
    // there one exact division (the decimal's correctly rounded f64)
    // decides, as in `parse_f32_prefix`. Zero passes the test as itself.
    let near = mantissa as f64 * POW10_NEG_F64[fraction];
    let low = near.to_bits() & ((1 << 29) - 1);
    let narrow = if (near < 2.0 * f32::MIN_POSITIVE as f64 && mantissa != 0)
        || low.wrapping_sub((1 << 28) - 4) <= 8
    {
        narrow_exactly(mantissa as f64 / POW10_F64[fraction])?
    } else {
        near as f32
    };
    Some(if negative { -narrow } else { narrow })
}

/// 10^-k rounded to f64, for k up to 15.
#[cfg(target_arch = "x86_64")]
const POW10_NEG_F64: [f64; 16] = [
    1e0, 1e-1, 1e-2, 1e-3, 1e-4, 1e-5, 1e-6, 1e-7, 1e-8, 1e-9, 1e-10, 1e-11, 1e-12, 1e-13, 1e-14,
    1e-15,
];

/// Whether this CPU runs [`parse_f32_field_sse41`] (std caches the answer).
pub fn field_simd_available() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        std::arch::is_x86_feature_detected!("ssse3")
            && std::arch::is_x86_feature_detected!("sse4.1")
    }
    #[cfg(not(target_arch = "x86_64"))]
    false
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
    if let Some(v) = parse_i64_short(s) {
        return Some(v);
    }
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

/// The common integer — an optional `-` and 1 to 16 digits, nothing else
/// — in two SWAR steps on a zero-padded copy (ids and microsecond
/// timestamps are 16 digits: a loop over them is a chain of 16
/// multiply-adds). `None` for anything else; [`parse_i64`] then takes the
/// general path. 16 digits stay below 10^16, so nothing overflows.
#[inline]
fn parse_i64_short(s: &[u8]) -> Option<i64> {
    let (negative, digits) = match s.first()? {
        b'-' => (true, &s[1..]),
        _ => (false, s),
    };
    let n = digits.len();
    if n == 0 || n > 16 {
        return None;
    }
    let mut padded = [0u8; 16];
    padded[..n].copy_from_slice(digits);
    let (high, a) = digits8(&padded, 0);
    let v = if n <= 8 {
        if a != n {
            return None;
        }
        high
    } else {
        let (low, b) = digits8(&padded, 8);
        if a != 8 || b != n - 8 {
            return None;
        }
        high * POW10_U64[n - 8] + low
    };
    let v = v as i64;
    Some(if negative { -v } else { v })
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

    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "ssse3,sse4.1")]
    unsafe fn field_sse41(s: &[u8], start: usize, end: usize) -> Option<f32> {
        parse_f32_field_sse41(s, start, end)
    }

    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "ssse3,sse4.1")]
    unsafe fn prefix_sse41(s: &[u8], start: usize) -> Option<(f32, usize)> {
        parse_f32_prefix_sse41(s, start)
    }

    #[cfg(not(target_arch = "x86_64"))]
    unsafe fn prefix_sse41(_: &[u8], _: usize) -> Option<(f32, usize)> {
        None
    }

    #[cfg(not(target_arch = "x86_64"))]
    unsafe fn field_sse41(_: &[u8], _: usize, _: usize) -> Option<f32> {
        None
    }

    /// The field parser on `text` inside a row agrees with std wherever it
    /// answers; true when it answered.
    fn same_field(text: &str) -> bool {
        let row = format!("1234567890123456,{text},-0.5\n");
        let start = 17;
        // SAFETY: callers check `field_simd_available`.
        let v = unsafe { field_sse41(row.as_bytes(), start, start + text.len()) };
        if let Some(v) = v {
            let std = text
                .parse::<f32>()
                .expect("std parses what the field parser does");
            assert_eq!(v.to_bits(), std.to_bits(), "{text:?}");
        }
        v.is_some()
    }

    #[test]
    fn field_parser_takes_plain_decimals() {
        if !field_simd_available() {
            return;
        }
        for text in [
            "0",
            "-0",
            "7",
            "-7",
            "0.5",
            ".5",
            "5.",
            "-.5",
            "123.456",
            "-1234.5677",
            "0.12345678",
            "999999999999999",
            "1000000000000000",
            "0.0000001",
            "1.00000005960464",
            "16777216",
            "3.4028235",
            "0.00000000000001",
        ] {
            assert!(same_field(text), "{text:?} not taken");
        }
        // Not this shape, or an f32 midpoint (its tie needs the exact
        // decimal): refused, left to the general parser.
        for text in [
            "16777217",
            "",
            "-",
            ".",
            "-.",
            "+1",
            "1e5",
            "1.2.3",
            "1-2",
            "12345678901234567",
            "--1",
            "1 ",
            "9999999999999999",
            "1.000000000000000",
        ] {
            assert!(!same_field(text), "{text:?} taken");
        }
        // Shortest f32 texts in the normal range: nearly all taken.
        let mut taken = 0;
        let mut state = 0x2545_f491_4f6c_dd1du64;
        for _ in 0..10_000 {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            let v = (state >> 40) as f32 / 1000.0 - 8000.0;
            taken += same_field(&format!("{v}")) as usize;
        }
        assert!(taken > 9_900, "{taken} of 10000 taken");
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

        /// The field parser, on any text placed at every alignment after
        /// digits (which must not leak into the field) and before a
        /// delimiter, agrees with std wherever it answers.
        #[test]
        fn field_agrees_with_std(s in "[-+0-9.eE]{0,18}", before in 16usize..40) {
            if field_simd_available() {
                let text = format!("{}{s},9", "7".repeat(before));
                let start = before;
                let end = before + s.len();
                // SAFETY: the CPU has SSSE3 and SSE4.1 (checked above).
                if let Some(v) = unsafe { field_sse41(text.as_bytes(), start, end) } {
                    let std = s.parse::<f32>();
                    prop_assert!(std.is_ok_and(|x| x.to_bits() == v.to_bits()), "{:?}", s);
                }
            }
        }

        /// The prefix parser finds the decimal's end itself: wherever it
        /// answers, std reads the same value from the bytes it took.
        #[test]
        fn prefix_sse41_agrees_with_std(s in "[-+0-9.eE]{0,18}", after in "[,}\\]\n e0-9.-]{0,4}") {
            if field_simd_available() {
                let text = format!("{s}{after}................");
                // SAFETY: the CPU has SSSE3 and SSE4.1 (checked above).
                if let Some((v, end)) = unsafe { prefix_sse41(text.as_bytes(), 0) } {
                    prop_assert!(end <= 15);
                    let std = text[..end].parse::<f32>();
                    prop_assert!(std.is_ok_and(|x| x.to_bits() == v.to_bits()), "{:?}", text);
                    prop_assert!(!matches!(text.as_bytes()[end], b'0'..=b'9' | b'.'), "{:?}", text);
                }
            }
        }

        #[test]
        fn field_agrees_with_std_on_floats(bits in any::<u32>(), precision in 0usize..12) {
            if field_simd_available() {
                let v = f32::from_bits(bits);
                for text in [format!("{v}"), format!("{v:.precision$}"), format!("{:.precision$}", v as f64 * 1.0000001)] {
                    same_field(&text);
                }
            }
        }

        /// Decimals a hair either side of an f32 midpoint (where the
        /// multiplication alone could round the wrong way): the field
        /// parser agrees with std on each.
        #[test]
        fn field_agrees_with_std_near_midpoints(bits in 0x3000_0000u32..0x4C00_0000, nudge in -3i64..=3) {
            if field_simd_available() {
                let v = f32::from_bits(bits) as f64;
                let next = f32::from_bits(bits + 1) as f64;
                let midpoint = (v + next) / 2.0;
                let digits = 14 - (midpoint.log10().floor() as i64).max(0) as usize;
                let text = format!("{midpoint:.digits$}");
                let scaled: i64 = text.replace('.', "").parse().unwrap();
                let nudged = format!("{:0width$}", (scaled + nudge).max(0), width = digits + 1);
                let split = nudged.len() - digits;
                let text = format!("{}.{}", &nudged[..split], &nudged[split..]);
                prop_assert!(text.len() <= 16, "{}", text);
                same_field(&text);
            }
        }

        #[test]
        fn i64_agrees_with_std(s in "[-+]?[0-9]{0,21}") {
            prop_assert_eq!(parse_i64(s.as_bytes()), s.parse::<i64>().ok());
        }

        #[test]
        fn i64_short_path_agrees_with_the_loop(s in "[-+ ]?[0-9a/: -]{0,18}") {
            // The SWAR path against the digit loop it stands in front of:
            // the same value where it answers, and it leaves the rest.
            if let Some(v) = parse_i64_short(s.as_bytes()) {
                prop_assert_eq!(Some(v), s.trim_matches(' ').parse::<i64>().ok(), "{:?}", s);
            }
            let expected = s.trim_matches(' ').parse::<i64>().ok();
            prop_assert_eq!(parse_i64(s.as_bytes()), expected, "{:?}", s);
        }
    }
}
