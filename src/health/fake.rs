//! A sensor whose GPUs and readings the caller sets: the thermal guard and
//! the health metrics are tested with it, without a GPU.

use std::sync::Arc;

use parking_lot::Mutex;

use super::{GpuIdentity, GpuSensor, Reading, SensorError};

/// Cloned handles share the readings: a test keeps one and gives the other
/// to the monitor.
#[derive(Clone)]
pub struct FakeSensor {
    gpus: Vec<GpuIdentity>,
    readings: Arc<Mutex<Vec<Result<Reading, String>>>>,
}

impl FakeSensor {
    /// GPUs with these identities, each reading `Reading::default()` (nothing known).
    pub fn new(gpus: Vec<GpuIdentity>) -> FakeSensor {
        let readings = Arc::new(Mutex::new(vec![Ok(Reading::default()); gpus.len()]));
        FakeSensor { gpus, readings }
    }

    /// Both handles share their readings (one is a clone of the other).
    pub fn same(&self, other: &FakeSensor) -> bool {
        Arc::ptr_eq(&self.readings, &other.readings)
    }

    /// What GPU `i` reports from now on.
    pub fn set(&self, i: usize, r: Reading) {
        self.readings.lock()[i] = Ok(r);
    }

    /// GPU `i` fails to read from now on (as NVML does for a GPU fallen off the bus).
    pub fn fail(&self, i: usize, why: &str) {
        self.readings.lock()[i] = Err(why.to_string());
    }

    /// Sets GPU `i`'s temperature, keeping its other figures.
    pub fn set_temperature(&self, i: usize, celsius: f64) {
        let mut r = self.readings.lock();
        let mut cur = r[i].clone().unwrap_or_default();
        cur.temperature_celsius = Some(celsius);
        r[i] = Ok(cur);
    }
}

impl GpuSensor for FakeSensor {
    fn gpus(&self) -> &[GpuIdentity] {
        &self.gpus
    }

    fn read(&mut self, i: usize) -> Result<Reading, SensorError> {
        let index = self.gpus.get(i).map_or(u32::MAX, |g| g.index);
        match self.readings.lock().get(i) {
            Some(Ok(r)) => Ok(r.clone()),
            Some(Err(why)) => Err(SensorError::Read { index, reason: why.clone() }),
            None => Err(SensorError::Read { index, reason: "no such GPU".into() }),
        }
    }
}
