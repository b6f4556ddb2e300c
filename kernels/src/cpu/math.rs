//! Branch-free f32 math that vectorises (std's `exp` does not).

/// `e^x` for f32, within 2 ulp over the range where the result is a normal
/// f32; saturates to 0 and +inf outside it; NaN in, NaN out.
#[inline(always)]
pub(crate) fn exp_f32<const FMA: bool>(x: f32) -> f32 {
    const LOG2E: f32 = std::f32::consts::LOG2_E;
    // ln 2 split in two so that n * ln2 is exact in the high part.
    const LN2_HI: f32 = 0.693_145_75;
    const LN2_LO: f32 = 1.428_606_8e-6;
    let x = x.clamp(-87.3, 88.0);
    // Ties-to-even rounds in one instruction; `round` (ties away) is a libm call.
    let n = (x * LOG2E).round_ties_even();
    let r = x - n * LN2_HI - n * LN2_LO;
    // Minimax polynomial for e^r on [-ln2/2, ln2/2].
    let p = 1.987_569_1e-4f32;
    let p = madd::<FMA>(p, r, 1.398_199_9e-3);
    let p = madd::<FMA>(p, r, 8.333_452e-3);
    let p = madd::<FMA>(p, r, 4.166_579_6e-2);
    let p = madd::<FMA>(p, r, 0.166_666_66);
    let p = madd::<FMA>(p, r, 0.5);
    let p = madd::<FMA>(p, r * r, r) + 1.0;
    // Scale by 2^n through the exponent bits, without a float-to-int cast
    // (Rust's saturating `as i32` does not vectorise): adding 1.5 * 2^23 puts
    // the integer n + 127, within [1, 254], in the low mantissa bits.
    let biased = n + (127.0 + 12_582_912.0);
    let scale = f32::from_bits(biased.to_bits() << 23);
    let y = p * scale;
    // clamp() passed NaN through; keep it NaN.
    if x.is_nan() {
        f32::NAN
    } else {
        y
    }
}

/// `1 / (1 + e^(-scale * m))`.
#[inline(always)]
pub(crate) fn sigmoid_f32<const FMA: bool>(m: f32, scale: f32) -> f32 {
    1.0 / (1.0 + exp_f32::<FMA>(-scale * m))
}

/// `a * b + c`, fused where the instruction set has FMA (without it,
/// `mul_add` is a slow library call, so it is not used).
#[inline(always)]
pub(crate) fn madd<const FMA: bool>(a: f32, b: f32, c: f32) -> f32 {
    if FMA {
        a.mul_add(b, c)
    } else {
        a * b + c
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check<const FMA: bool>() {
        let mut worst = 0f64;
        let mut x = -87.0f32;
        while x < 88.0 {
            let want = (x as f64).exp();
            let got = exp_f32::<FMA>(x) as f64;
            worst = worst.max(((got - want) / want).abs());
            x += 0.0137;
        }
        assert!(
            worst < 3.0 * f32::EPSILON as f64,
            "worst relative error {worst:e}"
        );
        assert!(exp_f32::<FMA>(-200.0) < 1e-37);
        assert!(exp_f32::<FMA>(100.0) > 1e38);
        assert!(exp_f32::<FMA>(f32::NAN).is_nan());
        assert_eq!(sigmoid_f32::<FMA>(0.0, 1.0), 0.5);
    }

    #[test]
    fn exp_is_within_a_few_ulp_of_std() {
        check::<true>();
        check::<false>();
    }
}
