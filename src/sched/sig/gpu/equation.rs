//! Batch equations inside a GPU dispatch (the policy; the kernels are
//! `gpu::sig::msm`): which families' items of a dispatch are checked as one
//! multi-scalar multiplication instead of one kernel thread each, and how a
//! failed equation is bisected down to its invalid items.
//!
//! **The choice** ([`Chooser`]) is per dispatch and per family, from
//! measured costs: an equation over n items costs `l0 + per_item·n`
//! (measured at start, then learnt from every equation), the per-item
//! kernel `per_item·n` (learnt from every dispatch); the equation's
//! expected cost adds the bisection expected at the invalid rate observed
//! in this family's verdicts (canaries included: an invalid canary fails
//! the equation like any invalid item). Under a flood of invalid items the
//! bisection's expected cost passes the per-item kernel's and the family
//! goes back to the per-item kernel; while an equation is bisected, the
//! work spent is bounded by what the per-item kernel would have cost the
//! whole batch: past it, every open set goes to the per-item kernel. An
//! attacker who floods invalid items therefore costs at most about twice
//! the per-item price for the dispatches before the rate is learnt, and the
//! per-item price after.
//!
//! **Bisection** ([`bisect`]): a failed equation over a set S means S
//! holds an invalid item (exactly: valid items add the identity whatever
//! the weights); a holding one means every item is valid, except with
//! probability 2⁻¹²⁸ (fresh 128-bit weights per equation). S is split in
//! halves and only the left one is tried: when it holds, the right one is
//! known to fail without trying it. Sets of [`LEAF`] items or fewer, or
//! where the per-item kernel is predicted cheaper, go to the per-item
//! kernel. With one invalid item among n, bisection costs between n and
//! 2n more items of equations (1.5 n on average: the right half is tried
//! whenever the left one fails) in about log₂(n/LEAF) rounds.

use std::time::Instant;

use crate::sig::{Family, PerFamily, Verdict};

/// Failing sets this small go to the per-item kernel.
pub const LEAF: usize = 16;
/// In `auto`, a family with fewer items in a dispatch stays per item.
pub const MIN_ITEMS: usize = 64;
/// The environment variable that sets [`EquationMode`].
pub const EQUATION_ENV: &str = "HASHRIG_GPU_EQUATION";

/// When batch equations are used.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EquationMode {
    /// Per dispatch, by predicted cost (real GPUs only: on a CPU Vulkan
    /// driver the kernels are not even built).
    Auto,
    /// Every Ed25519 and BIP340 item of every dispatch, bisected down to
    /// [`LEAF`] whatever it costs (tests, measurements).
    Always,
    /// Never: the per-item kernels only.
    Never,
}

impl EquationMode {
    pub fn parse(s: &str) -> Result<EquationMode, String> {
        match s.trim() {
            "" | "auto" => Ok(EquationMode::Auto),
            "always" => Ok(EquationMode::Always),
            "never" => Ok(EquationMode::Never),
            other => Err(format!("{EQUATION_ENV}={other}: expected auto, always or never")),
        }
    }

    /// From [`EQUATION_ENV`]; `auto` when unset.
    pub fn from_env() -> Result<EquationMode, String> {
        EquationMode::parse(&std::env::var(EQUATION_ENV).unwrap_or_default())
    }
}

/// Families with a batch-equation kernel.
pub fn has_equation(f: Family) -> bool {
    matches!(f, Family::Ed25519 | Family::Schnorr)
}

/// An equation over n items costs `l0 + per_item·n` seconds.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct EquationCost {
    pub l0: f64,
    pub per_item: f64,
}

impl EquationCost {
    pub fn of(&self, n: usize) -> f64 {
        self.l0 + self.per_item * n as f64
    }

    /// From two measured equations, of `n1` < `n2` items.
    pub fn fit(n1: usize, t1: f64, n2: usize, t2: f64) -> EquationCost {
        let per_item = ((t2 - t1) / (n2 as f64 - n1 as f64).max(1.0)).max(t2 / n2.max(1) as f64 * 0.05);
        EquationCost { l0: (t1 - per_item * n1 as f64).max(0.0), per_item }
    }
}

/// The per-dispatch choice and what it learns.
#[derive(Clone, Debug)]
pub struct Chooser {
    pub mode: EquationMode,
    /// Per family with an equation kernel: its measured cost.
    pub equation: PerFamily<Option<EquationCost>>,
    /// Seconds per item of the per-item kernel.
    pub per_item: PerFamily<f64>,
    /// Fraction of invalid verdicts, a moving average over dispatches.
    pub invalid_rate: PerFamily<f64>,
}

impl Chooser {
    pub fn new(mode: EquationMode, equation: PerFamily<Option<EquationCost>>, per_item: PerFamily<f64>) -> Chooser {
        Chooser { mode, equation, per_item, invalid_rate: PerFamily::default() }
    }

    /// Whether `n` items of family `f` in one dispatch go to the equation.
    pub fn use_equation(&self, f: Family, n: usize) -> bool {
        if n == 0 || !has_equation(f) || self.equation[f].is_none() {
            return false;
        }
        match self.mode {
            EquationMode::Never => false,
            EquationMode::Always => true,
            EquationMode::Auto => n >= MIN_ITEMS && self.expected(f, n) < self.per_item[f] * n as f64,
        }
    }

    /// Expected seconds of the equation path for `n` items of `f`: the
    /// first equation, and with the probability that it fails (some item
    /// invalid at the observed rate) the bisection after it.
    pub fn expected(&self, f: Family, n: usize) -> f64 {
        let Some(c) = self.equation[f] else { return f64::INFINITY };
        let m = self.invalid_rate[f] * n as f64;
        let p_fail = 1.0 - (-m).exp();
        c.of(n) + p_fail * failing(c, self.per_item[f], n, m.max(1.0))
    }

    /// Whether a failing set of `s` items is cheaper on the per-item
    /// kernel than bisected further. Only in `auto`: `always` bisects down
    /// to [`LEAF`].
    pub fn per_item_here(&self, f: Family, s: usize) -> bool {
        if self.mode != EquationMode::Auto {
            return false;
        }
        let Some(c) = self.equation[f] else { return true };
        let m = (self.invalid_rate[f] * s as f64).max(1.0);
        self.per_item[f] * s as f64 <= failing(c, self.per_item[f], s, m)
    }

    /// Seconds a bisection of `n` items of `f` may spend before its open
    /// sets go to the per-item kernel: what that kernel costs the batch.
    pub fn budget(&self, f: Family, n: usize) -> Option<f64> {
        (self.mode == EquationMode::Auto).then(|| self.per_item[f] * n as f64)
    }

    /// Learns from an equation over `n` items that took `secs`.
    pub fn learn_equation(&mut self, f: Family, n: usize, secs: f64) {
        if let Some(c) = &mut self.equation[f] {
            if n >= 256 && secs > c.l0 {
                let seen = (secs - c.l0) / n as f64;
                c.per_item = 0.8 * c.per_item + 0.2 * seen;
            }
        }
    }

    /// Learns the per-item kernel's time per item from a dispatch of `n`
    /// items of `f` that took `secs` (large dispatches only: L0 is in it).
    pub fn learn_per_item(&mut self, f: Family, n: usize, secs: f64) {
        if n >= 1024 && secs > 0.0 {
            self.per_item[f] = 0.8 * self.per_item[f] + 0.2 * secs / n as f64;
        }
    }

    /// Learns the invalid rate from `invalid` of `n` verdicts of `f`.
    pub fn learn_outcome(&mut self, f: Family, n: usize, invalid: usize) {
        if n > 0 {
            let seen = invalid as f64 / n as f64;
            self.invalid_rate[f] = 0.8 * self.invalid_rate[f] + 0.2 * seen;
        }
    }
}

/// Expected seconds to resolve a failing set of `s` items holding about
/// `m` (≥ 1) invalid ones, by bisection or the per-item kernel, whichever
/// is cheaper at each level.
fn failing(c: EquationCost, per_item: f64, s: usize, m: f64) -> f64 {
    let direct = per_item * s as f64;
    if s <= LEAF || m >= s as f64 / 2.0 {
        return direct;
    }
    let half = s / 2;
    let split = if m <= 1.0 {
        // One invalid item: the left half is tried; half the time it fails
        // and the right one must be tried too.
        1.5 * c.of(half) + failing(c, per_item, s - half, 1.0)
    } else {
        2.0 * c.of(half) + 2.0 * failing(c, per_item, s - half, m / 2.0)
    };
    split.min(direct)
}

/// What [`bisect`] found: a verdict per item where an equation (or its
/// decoding) decided it, `None` for the per-item kernel.
#[derive(Clone, Debug, Default)]
pub struct Bisected {
    pub verdicts: Vec<Option<Verdict>>,
    /// Equations run.
    pub equations: u32,
    /// Items left to the per-item kernel.
    pub to_per_item: usize,
}

/// One equation over the items at the given indices, per item: `Some`
/// where decided, `None` where it failed.
pub type EquationRun<'a, E> = dyn FnMut(&[usize]) -> Result<Vec<Option<Verdict>>, E> + 'a;

/// Resolves `n` items by equations: `run(set)` runs one over the items at
/// those indices and answers per item (`Some` where decided: valid because
/// it held, or rejected before the sum; `None` where it failed).
/// `per_item_here(len)` says a failing set of that size goes to the
/// per-item kernel; past `until` every open set does.
pub fn bisect<E>(
    n: usize,
    run: &mut EquationRun<'_, E>,
    per_item_here: &dyn Fn(usize) -> bool,
    until: Option<Instant>,
) -> Result<Bisected, E> {
    let mut out = Bisected { verdicts: vec![None; n], equations: 0, to_per_item: 0 };
    if n == 0 {
        return Ok(out);
    }
    let mut try_set = |set: &[usize], out: &mut Bisected| -> Result<Vec<usize>, E> {
        let got = run(set)?;
        out.equations += 1;
        let mut open = Vec::new();
        for (&i, v) in set.iter().zip(got.into_iter().chain(std::iter::repeat(None))) {
            match v {
                Some(v) => out.verdicts[i] = Some(v),
                None => open.push(i),
            }
        }
        Ok(open)
    };
    let all: Vec<usize> = (0..n).collect();
    let first = try_set(&all, &mut out)?;
    // (set, known to fail): a set not known to fail is tried first.
    let mut stack: Vec<(Vec<usize>, bool)> = Vec::new();
    if !first.is_empty() {
        stack.push((first, true));
    }
    let mut leaves = Vec::new();
    while let Some((set, known)) = stack.pop() {
        let late = until.is_some_and(|t| Instant::now() >= t);
        let set = if known || late { set } else { try_set(&set, &mut out)? };
        if set.is_empty() {
            continue;
        }
        if set.len() <= LEAF || late || per_item_here(set.len()) {
            leaves.extend(set);
            continue;
        }
        let (left, right) = set.split_at(set.len() / 2);
        let left_open = try_set(left, &mut out)?;
        if left_open.is_empty() {
            stack.push((right.to_vec(), true));
        } else {
            stack.push((right.to_vec(), false));
            stack.push((left_open, true));
        }
    }
    out.to_per_item = leaves.len();
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sig::Reason;

    /// A CPU stand-in for an equation: holds iff every item is valid.
    fn runner<'a>(
        valid: &'a [bool],
        tries: &'a mut Vec<usize>,
    ) -> impl FnMut(&[usize]) -> Result<Vec<Option<Verdict>>, ()> + 'a {
        move |set: &[usize]| {
            tries.push(set.len());
            let holds = set.iter().all(|&i| valid[i]);
            Ok(set.iter().map(|_| holds.then_some(Verdict::Valid)).collect())
        }
    }

    fn run(valid: &[bool]) -> (Bisected, Vec<usize>) {
        let mut tries = Vec::new();
        let b = bisect(valid.len(), &mut runner(valid, &mut tries), &|_| false, None).unwrap();
        (b, tries)
    }

    #[test]
    fn bisection_leaves_exactly_the_sets_holding_invalid_items() {
        for n in [1usize, 2, 15, 16, 17, 100, 1000, 4096] {
            for bad in [vec![], vec![0], vec![n - 1], vec![n / 3, n / 2, n - 1], (0..n).collect::<Vec<_>>()] {
                let mut valid = vec![true; n];
                for &b in &bad {
                    valid[b] = false;
                }
                let (b, _) = run(&valid);
                for (i, v) in b.verdicts.iter().enumerate() {
                    match *v {
                        Some(v) => assert!(valid[i] && v.is_valid(), "n {n}: item {i} decided {v:?}"),
                        None => assert!(n > 0),
                    }
                }
                // Every invalid item is left to the per-item kernel, and
                // only leaves around them: at most LEAF per invalid item.
                for &x in &bad {
                    assert_eq!(b.verdicts[x], None);
                }
                assert!(b.to_per_item <= bad.len() * LEAF, "n {n}, {} bad: {} left", bad.len(), b.to_per_item);
                assert_eq!(b.to_per_item, b.verdicts.iter().filter(|v| v.is_none()).count());
            }
        }
    }

    #[test]
    fn one_invalid_item_costs_at_most_two_more_batches_of_equations() {
        let n = 4096;
        for bad in [0, 1, 2047, 2048, 4095] {
            let mut valid = vec![true; n];
            valid[bad] = false;
            let (b, tries) = run(&valid);
            let items: usize = tries.iter().sum();
            assert!(items <= 3 * n, "bad {bad}: {items} items in {} equations", b.equations);
            assert!(b.equations as usize <= 1 + 2 * 8, "bad {bad}: {} equations", b.equations);
        }
    }

    #[test]
    fn reasons_from_the_equation_are_kept() {
        let mut seen = 0;
        let b = bisect(
            4,
            &mut |set: &[usize]| -> Result<_, ()> {
                seen += 1;
                Ok(set.iter().map(|&i| (i == 2).then_some(Verdict::Invalid(Reason::PubkeyEncoding))).collect())
            },
            &|_| false,
            None,
        )
        .unwrap();
        assert_eq!(b.verdicts[2], Some(Verdict::Invalid(Reason::PubkeyEncoding)));
        assert_eq!(b.to_per_item, 3);
        assert_eq!(seen, 1);
    }

    #[test]
    fn past_the_budget_every_open_set_goes_per_item() {
        let n = 1000;
        let valid: Vec<bool> = (0..n).map(|i| i % 50 != 0).collect();
        let mut tries = Vec::new();
        let past = Instant::now();
        let b = bisect(n, &mut runner(&valid, &mut tries), &|_| false, Some(past)).unwrap();
        assert_eq!(b.equations, 1);
        assert_eq!(b.to_per_item, n);
    }

    fn chooser(mode: EquationMode) -> Chooser {
        // An equation 4x cheaper per item than the per-item kernel, 1 ms fixed.
        let eq = PerFamily { ed25519: Some(EquationCost { l0: 1e-3, per_item: 0.25e-6 }), ecdsa: None, schnorr: None };
        Chooser::new(mode, eq, PerFamily { ed25519: 1e-6, ecdsa: 1e-6, schnorr: 1e-6 })
    }

    #[test]
    fn auto_takes_the_equation_for_big_clean_batches_only() {
        let mut c = chooser(EquationMode::Auto);
        assert!(!c.use_equation(Family::Ed25519, 16), "L0 dominates small batches");
        assert!(c.use_equation(Family::Ed25519, 65536));
        assert!(!c.use_equation(Family::Schnorr, 65536), "no measured equation");
        assert!(!c.use_equation(Family::Ecdsa, 65536), "no equation kernel");
        // A flood: a third of the items invalid.
        for _ in 0..30 {
            c.learn_outcome(Family::Ed25519, 1000, 333);
        }
        assert!(!c.use_equation(Family::Ed25519, 65536), "expected {}", c.expected(Family::Ed25519, 65536));
        // It comes back once the flood stops.
        for _ in 0..60 {
            c.learn_outcome(Family::Ed25519, 65536, 0);
        }
        assert!(c.use_equation(Family::Ed25519, 65536));
        assert!(c.budget(Family::Ed25519, 1000).is_some());
    }

    #[test]
    fn always_and_never_ignore_the_costs() {
        let c = chooser(EquationMode::Always);
        assert!(c.use_equation(Family::Ed25519, 1));
        assert!(!c.per_item_here(Family::Ed25519, 1000));
        assert_eq!(c.budget(Family::Ed25519, 10), None);
        assert!(!chooser(EquationMode::Never).use_equation(Family::Ed25519, 65536));
        assert_eq!(EquationMode::parse("always"), Ok(EquationMode::Always));
        assert_eq!(EquationMode::parse(""), Ok(EquationMode::Auto));
        assert!(EquationMode::parse("sometimes").is_err());
    }

    #[test]
    fn fit_recovers_a_line() {
        let c = EquationCost::fit(64, 1e-3 + 64e-6, 4096, 1e-3 + 4096e-6);
        assert!((c.l0 - 1e-3).abs() < 1e-9 && (c.per_item - 1e-6).abs() < 1e-12, "{c:?}");
    }
}
