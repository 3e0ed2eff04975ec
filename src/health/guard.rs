//! The thermal guard (`--gpu-temp-limit`): at or above the limit a GPU's
//! duty cycle is lowered step by step; once it has cooled below the limit
//! minus a hysteresis it is raised step by step back to full speed. The gap
//! keeps it from flapping around the limit, and the steps let the fans and
//! the board's own clock management catch up between two readings.

/// Factor applied to the duty cycle at each reading at or above the limit.
pub const LOWER_FACTOR: f64 = 0.7;
/// Added to the duty cycle at each reading below the limit − hysteresis.
pub const RAISE_STEP: f64 = 0.1;
/// Default gap between the limit and where restoring starts, °C.
pub const DEFAULT_HYSTERESIS: f64 = 5.0;

#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Action {
    Lowered,
    Raised,
}

impl Action {
    /// Label value of `hashrig_gpu_thermal_guard_total{action}`.
    pub fn label(self) -> &'static str {
        match self {
            Action::Lowered => "lowered",
            Action::Raised => "raised",
        }
    }
}

/// A duty cycle change the guard made.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Change {
    pub action: Action,
    pub from: f64,
    pub to: f64,
}

/// One GPU's guard.
#[derive(Clone, Debug)]
pub struct ThermalGuard {
    limit: f64,
    hysteresis: f64,
    duty: f64,
}

impl ThermalGuard {
    pub fn new(limit_celsius: f64, hysteresis: f64) -> ThermalGuard {
        ThermalGuard { limit: limit_celsius, hysteresis: hysteresis.max(0.0), duty: 1.0 }
    }

    /// A new limit and gap (a reload), from the duty cycle it holds now:
    /// the next readings move it from there.
    pub fn retarget(&mut self, limit_celsius: f64, hysteresis: f64) {
        self.limit = limit_celsius;
        self.hysteresis = hysteresis.max(0.0);
    }

    /// The duty cycle it wants now.
    pub fn duty(&self) -> f64 {
        self.duty
    }

    /// A new temperature reading; the change it makes, if any. A missing
    /// reading changes nothing (a sensor that failed once is no reason to
    /// heat up or slow down).
    pub fn observe(&mut self, celsius: Option<f64>) -> Option<Change> {
        let t = celsius.filter(|t| t.is_finite())?;
        let from = self.duty;
        let (action, to) = if t >= self.limit {
            (Action::Lowered, (from * LOWER_FACTOR).max(crate::gpu::share::MIN_DUTY))
        } else if t < self.limit - self.hysteresis {
            (Action::Raised, (from + RAISE_STEP).min(1.0))
        } else {
            return None;
        };
        // In the per-mille steps the adapter share keeps.
        let to = (to * 1000.0).round() / 1000.0;
        if to == from {
            return None;
        }
        self.duty = to;
        Some(Change { action, from, to })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lowers_above_the_limit_and_restores_below_the_gap() {
        let mut g = ThermalGuard::new(80.0, 5.0);
        assert_eq!(g.observe(Some(70.0)), None, "cool and at full speed: nothing to do");
        let c = g.observe(Some(80.0)).unwrap();
        assert_eq!((c.action, c.from, c.to), (Action::Lowered, 1.0, 0.7));
        assert_eq!(g.observe(Some(83.0)).unwrap().to, 0.49);
        // Inside the gap: held.
        assert_eq!(g.observe(Some(77.0)), None);
        assert_eq!(g.observe(None), None);
        assert_eq!(g.observe(Some(f64::NAN)), None);
        // Hot for long: down to the floor, then no more changes.
        for _ in 0..20 {
            g.observe(Some(90.0));
        }
        assert_eq!(g.duty(), crate::gpu::share::MIN_DUTY);
        assert_eq!(g.observe(Some(90.0)), None);
        // Cooled: back up in steps, and no further once at full speed.
        let mut steps = 0;
        while let Some(c) = g.observe(Some(60.0)) {
            assert_eq!(c.action, Action::Raised);
            steps += 1;
        }
        assert_eq!((steps, g.duty()), (9, 1.0));
    }
}
