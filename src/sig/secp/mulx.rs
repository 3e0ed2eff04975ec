//! The field product of [`super::field`] with BMI2's MULX and ADX's two
//! carry chains (ADCX on the carry flag, ADOX on the overflow flag), for
//! x86-64 CPUs that have both (Intel since Broadwell, AMD since Zen).
//!
//! Why: the multi-scalar multiplication of a BIP340 batch is almost nothing
//! but field products, and rustc's code for the portable product (from
//! `u128` arithmetic) has one carry chain, moves every product through
//! RAX:RDX and spills. Here each row of the schoolbook product adds its low
//! halves on one chain and its high halves on the other. Same contract as
//! the portable product: inputs any value below 2^256, output below 2^256
//! and congruent mod p (lazily reduced). The tests compare the two on
//! random and edge values; `docs/cpu-paths.md` has the measurements.

use std::arch::asm;
use std::sync::OnceLock;

/// One row of the product after the first: t_j..t_{j+4} += a·b_j, where
/// `$off` is 8j and `$t0..$t4` name t_j..t_{j+4} (t_{j+4} is new). Low
/// halves go on the carry flag (ADCX), high halves on the overflow flag
/// (ADOX); `xor` clears both, `mov` leaves them alone.
// One instruction a line: rustfmt would split the concatenations.
#[rustfmt::skip]
macro_rules! ROW {
    ($off:literal, $t0:literal, $t1:literal, $t2:literal, $t3:literal, $t4:literal) => {
        concat!(
            "mov rdx, [{b} + ", $off, "]\n",
            "mov {", $t4, "}, 0\n",
            "xor {lo:e}, {lo:e}\n",
            "mulx {hi}, {lo}, [{a}]\n",
            "adcx {", $t0, "}, {lo}\n",
            "adox {", $t1, "}, {hi}\n",
            "mulx {hi}, {lo}, [{a} + 8]\n",
            "adcx {", $t1, "}, {lo}\n",
            "adox {", $t2, "}, {hi}\n",
            "mulx {hi}, {lo}, [{a} + 16]\n",
            "adcx {", $t2, "}, {lo}\n",
            "adox {", $t3, "}, {hi}\n",
            "mulx {hi}, {lo}, [{a} + 24]\n",
            "adcx {", $t3, "}, {lo}\n",
            "adox {", $t4, "}, {hi}\n",
            "mov {lo}, 0\n",
            "adcx {", $t4, "}, {lo}\n",
        )
    };
}

/// The reduction both products end with: the 512-bit t0..t7 brought below
/// 2^256 with 2^256 ≡ C = 2^32 + 977 (RDX is free).
macro_rules! REDUCE {
    () => {
        concat!(
            // 2^256 ≡ C = 2^32 + 977: t0..t3 += t4..t7 · C, the top word
            // (below 2^34) left in t4.
            "mov rdx, 0x1000003D1\n",
            "xor {lo:e}, {lo:e}\n",
            "mulx {hi}, {lo}, {t4}\n",
            "adcx {t0}, {lo}\n",
            "adox {t1}, {hi}\n",
            "mulx {hi}, {lo}, {t5}\n",
            "adcx {t1}, {lo}\n",
            "adox {t2}, {hi}\n",
            "mulx {hi}, {lo}, {t6}\n",
            "adcx {t2}, {lo}\n",
            "adox {t3}, {hi}\n",
            "mulx {t4}, {lo}, {t7}\n",
            "adcx {t3}, {lo}\n",
            "mov {lo}, 0\n",
            "adox {t4}, {lo}\n",
            "adcx {t4}, {lo}\n",
            // The top word once more: t += t4 · C. A carry out of t3 leaves
            // t1 small and t2 = t3 = 0, so one more C lands in t0..t1.
            "mulx {hi}, {lo}, {t4}\n",
            "add {t0}, {lo}\n",
            "adc {t1}, {hi}\n",
            "adc {t2}, 0\n",
            "adc {t3}, 0\n",
            "mov {lo}, 0\n",
            "cmovc {lo}, rdx\n",
            "add {t0}, {lo}\n",
            "adc {t1}, 0\n",
        )
    };
}

/// Whether this CPU has MULX and ADCX/ADOX (checked once per process).
#[inline(always)]
pub fn available() -> bool {
    static OK: OnceLock<bool> = OnceLock::new();
    *OK.get_or_init(|| std::arch::is_x86_feature_detected!("bmi2") && std::arch::is_x86_feature_detected!("adx"))
}

/// a · b mod p, lazily reduced (below 2^256).
///
/// # Safety
/// The CPU must support BMI2 and ADX ([`available`]).
#[inline(always)]
pub unsafe fn mul(a: &[u64; 4], b: &[u64; 4]) -> [u64; 4] {
    let (r0, r1, r2, r3): (u64, u64, u64, u64);
    // SAFETY: the caller checked BMI2 and ADX; the asm reads the 32 bytes
    // of `a` and `b` and writes only its declared registers.
    unsafe {
        asm!(
            // Row 0: t0..t4 = a·b0 (one carry chain suffices).
            "mov rdx, [{b}]",
            "mulx {t1}, {t0}, [{a}]",
            "mulx {t2}, {lo}, [{a} + 8]",
            "add {t1}, {lo}",
            "mulx {t3}, {lo}, [{a} + 16]",
            "adc {t2}, {lo}",
            "mulx {t4}, {lo}, [{a} + 24]",
            "adc {t3}, {lo}",
            "adc {t4}, 0",
            // Rows 1..3: t += a·bj·2^(64j).
            ROW!("8", "t1", "t2", "t3", "t4", "t5"),
            ROW!("16", "t2", "t3", "t4", "t5", "t6"),
            ROW!("24", "t3", "t4", "t5", "t6", "t7"),
            REDUCE!(),
            a = in(reg) a.as_ptr(),
            b = in(reg) b.as_ptr(),
            t0 = out(reg) r0, t1 = out(reg) r1, t2 = out(reg) r2, t3 = out(reg) r3,
            t4 = out(reg) _, t5 = out(reg) _, t6 = out(reg) _, t7 = out(reg) _,
            lo = out(reg) _, hi = out(reg) _,
            out("rdx") _,
            options(pure, readonly, nostack),
        );
    }
    [r0, r1, r2, r3]
}

/// a² mod p, lazily reduced (below 2^256): the six cross products once,
/// doubled, then the four squares (10 products against the 16 of [`mul`]).
///
/// # Safety
/// The CPU must support BMI2 and ADX ([`available`]).
#[inline(always)]
pub unsafe fn square(a: &[u64; 4]) -> [u64; 4] {
    let (r0, r1, r2, r3): (u64, u64, u64, u64);
    // SAFETY: the caller checked BMI2 and ADX; the asm reads the 32 bytes
    // of `a` and writes only its declared registers.
    unsafe {
        asm!(
            // Cross products a_i·a_j (i < j) into t1..t6.
            "mov rdx, [{a}]",
            "mulx {t2}, {t1}, [{a} + 8]",
            "mulx {t3}, {lo}, [{a} + 16]",
            "add {t2}, {lo}",
            "mulx {t4}, {lo}, [{a} + 24]",
            "adc {t3}, {lo}",
            "adc {t4}, 0",
            "mov rdx, [{a} + 8]",
            "mov {t5}, 0",
            "xor {lo:e}, {lo:e}",
            "mulx {hi}, {lo}, [{a} + 16]",
            "adcx {t3}, {lo}",
            "adox {t4}, {hi}",
            "mulx {hi}, {lo}, [{a} + 24]",
            "adcx {t4}, {lo}",
            "adox {t5}, {hi}",
            "mov {lo}, 0",
            "adcx {t5}, {lo}",
            "mov rdx, [{a} + 16]",
            "mulx {t6}, {lo}, [{a} + 24]",
            "add {t5}, {lo}",
            "adc {t6}, 0",
            // Doubled, into t1..t7.
            "xor {t7:e}, {t7:e}",
            "add {t1}, {t1}",
            "adc {t2}, {t2}",
            "adc {t3}, {t3}",
            "adc {t4}, {t4}",
            "adc {t5}, {t5}",
            "adc {t6}, {t6}",
            "adc {t7}, 0",
            // Plus the squares a_i² at 2^(128i), one carry chain (MULX and
            // MOV leave the flags alone).
            "mov rdx, [{a}]",
            "mulx {hi}, {t0}, rdx",
            "add {t1}, {hi}",
            "mov rdx, [{a} + 8]",
            "mulx {hi}, {lo}, rdx",
            "adc {t2}, {lo}",
            "adc {t3}, {hi}",
            "mov rdx, [{a} + 16]",
            "mulx {hi}, {lo}, rdx",
            "adc {t4}, {lo}",
            "adc {t5}, {hi}",
            "mov rdx, [{a} + 24]",
            "mulx {hi}, {lo}, rdx",
            "adc {t6}, {lo}",
            "adc {t7}, {hi}",
            REDUCE!(),
            a = in(reg) a.as_ptr(),
            t0 = out(reg) r0, t1 = out(reg) r1, t2 = out(reg) r2, t3 = out(reg) r3,
            t4 = out(reg) _, t5 = out(reg) _, t6 = out(reg) _, t7 = out(reg) _,
            lo = out(reg) _, hi = out(reg) _,
            out("rdx") _,
            options(pure, readonly, nostack),
        );
    }
    [r0, r1, r2, r3]
}
