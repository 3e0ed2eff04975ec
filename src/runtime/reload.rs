//! A reload: the new config's live part applied to the running parts, the
//! fixed part's changes named (they need a restart). Only what changed is
//! touched; what could not be applied keeps its running value, so the
//! running config always says what runs.

use std::net::SocketAddr;
use std::sync::atomic::Ordering;

use super::adapter::Stopped;
use super::config::{Changes, Live, Resolved, RuntimeConfig};
use super::start::{cpu_config, start_cpu, start_feed, start_metrics};
use super::{chain, Runtime, RuntimeError};

impl Runtime {
    /// A reload whose config could not be read or validated: the old one
    /// runs on; logged and counted.
    pub fn reload_rejected(&self, why: &dyn std::error::Error) {
        self.metrics.runtime.config_reloads.with_label_values(&["invalid"]).inc();
        tracing::error!("reload: keeping the running config: {}", chain(why));
    }

    /// Applies `new` live: validated whole first (an invalid config changes
    /// nothing), then its live part as [`Runtime::reload_live`] does. Fixed
    /// keys that changed are named in the log and keep their running values.
    pub fn reload(&mut self, new: RuntimeConfig) -> Changes {
        if let Err(e) = new.validate(&self.topo) {
            self.reload_rejected(&e);
            return Changes::default();
        }
        let restart = self.cfg.fixed.changed_keys(&new.fixed);
        self.apply(new.live, restart)
    }

    /// Applies a new live part; the fixed part runs on as it is. Validated
    /// with the running fixed part first (an invalid one changes nothing).
    pub fn reload_live(&mut self, live: Live) -> Changes {
        self.apply(live, Vec::new())
    }

    fn apply(&mut self, mut new: Live, mut restart: Vec<&'static str>) -> Changes {
        let whole = RuntimeConfig { fixed: self.cfg.fixed.clone(), live: new.clone() };
        let resolved = match whole.validate(&self.topo) {
            Ok(r) => r,
            Err(e) => {
                self.reload_rejected(&e);
                return Changes::default();
            }
        };
        let mut changes = self.cfg.live.changes(&new, self.sigserve.is_some());
        restart.append(&mut changes.need_restart);
        changes.need_restart = restart;
        if !changes.need_restart.is_empty() {
            tracing::warn!(
                "reload: changed, but needs a restart (or a live upgrade, SIGUSR2) to take effect: {}",
                changes.need_restart.join(", ")
            );
        }
        let old = self.cfg.live.clone();
        let mut failed: Vec<(&'static str, RuntimeError)> = Vec::new();
        let mut applied = Vec::new();
        if changes.log_level {
            match self.apply_log_level(new.log_level.as_deref()) {
                Ok(()) => applied.push("log_level"),
                Err(e) => {
                    failed.push(("log_level", e));
                    new.log_level = old.log_level.clone();
                }
            }
        }
        if changes.metrics {
            match self.apply_metrics(new.metrics) {
                Ok(()) => applied.push("metrics"),
                Err(e) => {
                    failed.push(("metrics", e));
                    new.metrics = old.metrics;
                }
            }
        }
        if changes.sigserve_drain {
            applied.push("sigserve.drain_secs");
        }
        if changes.status_interval {
            self.status_every.store(new.status_interval.as_secs().max(1), Ordering::Relaxed);
            applied.push("status_interval");
        }
        if changes.thermal {
            match &self.health {
                Some(h) => {
                    h.set_guard(&new.thermal);
                    applied.push("gpu_temp_limit");
                }
                None if new.thermal.temp_limit.is_some() => {
                    tracing::warn!("reload: no GPU health sensor (NVML) here; the thermal guard has no effect")
                }
                None => {}
            }
        }
        if changes.cpu {
            match self.apply_cpu(&new, &resolved) {
                Ok(true) => applied.push("cpu"),
                Ok(false) => {}
                Err(e) => {
                    failed.push(("cpu", e));
                    new.cpu = old.cpu.clone();
                }
            }
        }
        if changes.adapter && self.cfg.fixed.mining.on() {
            match self.apply_adapter(&new) {
                Ok(()) => applied.push("adapter"),
                Err(e) => {
                    failed.push(("adapter", e));
                    new.adapter = old.adapter.clone();
                }
            }
        }
        if (changes.sig_demo_rate || new.adapter != old.adapter) && self.restart_feed(&new, &mut failed) {
            if changes.sig_demo_rate {
                applied.push("sig.demo_rate");
            }
        } else if changes.sig_demo_rate {
            new.sig_demo_rate = old.sig_demo_rate;
        }
        self.cfg.live = new;
        let result = if !failed.is_empty() {
            let why: Vec<String> = failed.iter().map(|(k, e)| format!("{k}: {}", chain(e))).collect();
            tracing::error!("reload: could not apply: {}", why.join("; "));
            "failed"
        } else if applied.is_empty() {
            "unchanged"
        } else {
            "applied"
        };
        if result != "failed" {
            let what = if applied.is_empty() { "nothing live changed".to_owned() } else { applied.join(", ") };
            tracing::info!("reload: applied ({what})");
        }
        self.metrics.runtime.config_reloads.with_label_values(&[result]).inc();
        changes
    }

    fn apply_log_level(&self, level: Option<&str>) -> Result<(), RuntimeError> {
        let set = self.set_log_filter.as_ref().ok_or(RuntimeError::NoLogFilter)?;
        set(level).map_err(RuntimeError::LogFilter)
    }

    fn apply_metrics(&mut self, addr: Option<SocketAddr>) -> Result<(), RuntimeError> {
        match addr {
            None => {
                self.metrics_server = None;
                tracing::info!("metrics: no longer served");
            }
            Some(a) => {
                // Bind the new address before letting the old one go.
                self.metrics_server = Some(start_metrics(a, None, &self.metrics)?);
            }
        }
        Ok(())
    }

    /// Restarts the PoW workers if their plan, path or priority changed.
    fn apply_cpu(&mut self, new: &Live, resolved: &Resolved) -> Result<bool, RuntimeError> {
        let Some(old) = &self.cpu else { return Ok(false) };
        let want = cpu_config(new, resolved);
        let same = old.cfg.plan.groups == want.plan.groups
            && old.cfg.backend == want.backend
            && old.cfg.pin == want.pin
            && old.cfg.priority == want.priority;
        if same {
            tracing::info!("reload: the PoW workers' plan is unchanged; they keep running");
            return Ok(false);
        }
        tracing::info!(
            "reload: restarting the PoW workers: {} → {} workers, path {}, priority {}",
            old.cfg.plan.worker_count(),
            want.plan.worker_count(),
            want.backend.name(),
            want.priority
        );
        if let Some(old) = self.cpu.take() {
            old.stop();
        }
        self.cpu = Some(start_cpu(want, &self.sched, &self.stats, &self.metrics)?);
        Ok(true)
    }

    /// Replaces the node adapter: the old one is stopped with its work
    /// withdrawn, so the shares found for its jobs still reach it (and its
    /// pool), and only then does the new one start. An old adapter still
    /// running past its deadline is kept (owned, not left behind) and the
    /// reload of the adapter fails: a later reload starts the new one once
    /// the old has ended. Two adapters never publish at once.
    fn apply_adapter(&mut self, new: &Live) -> Result<(), RuntimeError> {
        if let Some(late) = self.stopping_adapter.take() {
            if !late.is_finished() {
                self.stopping_adapter = Some(late);
                return Err(RuntimeError::AdapterStopping(self.adapter_deadline));
            }
            if let Stopped::Ended(Err(e)) = late.stop(None, self.adapter_deadline) {
                tracing::warn!("the old node adapter ended with: {}", chain(&e));
            }
        }
        tracing::info!("reload: node adapter changed; handing on the old one's shares, then switching");
        if let Some(old) = self.adapter.take() {
            match old.stop(Some(&self.sched), self.adapter_deadline) {
                Stopped::Ended(Ok(())) => {}
                Stopped::Ended(Err(e)) => tracing::warn!("the old node adapter ended with: {}", chain(&e)),
                Stopped::Late(late) => {
                    self.stopping_adapter = Some(late);
                    return Err(RuntimeError::AdapterStopping(self.adapter_deadline));
                }
            }
        }
        let a = self.adapter_ports().start(&new.adapter, &self.cfg.fixed.demo, &self.adapters, None)?;
        self.adapter = Some(a);
        Ok(())
    }

    /// The demo feed for `new`'s adapter and rate; false if it could not start.
    fn restart_feed(&mut self, new: &Live, failed: &mut Vec<(&'static str, RuntimeError)>) -> bool {
        if let Some(f) = self.feed.take() {
            let _ = f.stop();
        }
        match start_feed(&new.adapter, new.sig_demo_rate, &self.sig_engine) {
            Ok(f) => {
                self.feed = f;
                true
            }
            Err(e) => {
                failed.push(("sig.demo_rate", e));
                false
            }
        }
    }
}
