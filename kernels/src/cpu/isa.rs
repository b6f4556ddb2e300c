//! Run-time choice of instruction set.

/// An instruction-set level a kernel can be compiled for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Isa {
    /// AVX-512 F/BW/DQ/VL (x86-64).
    Avx512,
    /// AVX2 with FMA (x86-64).
    Avx2Fma,
    /// Whatever the target's baseline is (SSE2 on x86-64, NEON on aarch64).
    Baseline,
}

impl Isa {
    /// The best level this CPU supports.
    pub fn detect() -> Self {
        Self::all()
            .into_iter()
            .find(|i| i.available())
            .unwrap_or(Self::Baseline)
    }

    /// Every level, best first.
    pub fn all() -> [Self; 3] {
        [Self::Avx512, Self::Avx2Fma, Self::Baseline]
    }

    pub fn available(self) -> bool {
        match self {
            Self::Baseline => true,
            #[cfg(target_arch = "x86_64")]
            Self::Avx512 => {
                std::arch::is_x86_feature_detected!("avx512f")
                    && std::arch::is_x86_feature_detected!("avx512bw")
                    && std::arch::is_x86_feature_detected!("avx512dq")
                    && std::arch::is_x86_feature_detected!("avx512vl")
            }
            #[cfg(target_arch = "x86_64")]
            Self::Avx2Fma => {
                std::arch::is_x86_feature_detected!("avx2")
                    && std::arch::is_x86_feature_detected!("fma")
            }
            #[cfg(not(target_arch = "x86_64"))]
            _ => false,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Self::Avx512 => "avx512",
            Self::Avx2Fma => "avx2+fma",
            Self::Baseline => "baseline",
        }
    }
}

/// Defines `$name(isa, args…)` that runs `$body` compiled for each ISA level.
///
/// The body is an `#[inline(always)]` function generic over `const FMA: bool`; each wrapper carries a
/// `target_feature` attribute, so the compiler vectorises the same portable
/// code with AVX-512, AVX2+FMA or the baseline instructions.
macro_rules! multiversion {
    (fn $name:ident($($arg:ident: $ty:ty),*) => $body:ident) => {
        pub(crate) fn $name(isa: $crate::cpu::Isa, $($arg: $ty),*) {
            #[cfg(target_arch = "x86_64")]
            {
                #[target_feature(enable = "avx512f,avx512bw,avx512dq,avx512vl,avx2,fma")]
                unsafe fn avx512($($arg: $ty),*) { $body::<true>($($arg),*) }
                #[target_feature(enable = "avx2,fma")]
                unsafe fn avx2($($arg: $ty),*) { $body::<true>($($arg),*) }
                match isa {
                    // SAFETY: `Isa::available` was checked when the scorer was
                    // built (`CpuScorer::with_isa` asserts it), so the CPU has
                    // every feature the wrapper enables.
                    $crate::cpu::Isa::Avx512 => return unsafe { avx512($($arg),*) },
                    // SAFETY: as above.
                    $crate::cpu::Isa::Avx2Fma => return unsafe { avx2($($arg),*) },
                    $crate::cpu::Isa::Baseline => {}
                }
            }
            let _ = isa;
            $body::<false>($($arg),*)
        }
    };
}
pub(crate) use multiversion;
