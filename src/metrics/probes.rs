//! What `/healthz` and `/readyz` on the metrics listener answer, for a load
//! balancer or an orchestrator, and their counters.
//!
//! * live (`/healthz`): the process answers HTTP; always 200 while it does.
//! * ready (`/readyz`): the signature engines are started (every GPU start
//!   that was asked for has finished, built or given up: the CPU answers
//!   either way), sigserve listens (when it is configured), and the process
//!   is not draining. 503 otherwise, with what is missing in the body.
//!
//! A draining process (SIGTERM, or the old process of a live upgrade)
//! answers 503 at once, so that a balancer sends new connections elsewhere
//! while it still answers the ones it has.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;

use prometheus::{IntCounterVec, IntGauge, Registry};
use serde_json::{json, Value};

pub struct Probes {
    /// 1 while `/readyz` answers 200.
    pub ready: IntGauge,
    /// 1 from a stop's drain (or a handover) on.
    pub draining: IntGauge,
    /// Probe requests answered, by probe ("healthz", "readyz") and HTTP code ("200", "503").
    pub requests: IntCounterVec,
    state: Arc<State>,
}

#[derive(Default)]
struct State {
    /// The runtime has started its engines (GPU starts may still run).
    engines_started: AtomicBool,
    /// GPU engine starts under way (kernels building).
    starts_pending: AtomicUsize,
    /// sigserve is configured and so must listen to be ready.
    sigserve_expected: AtomicBool,
    sigserve_listening: AtomicBool,
    draining: AtomicBool,
}

/// An engine start under way: readiness waits until it is dropped
/// (whether the engine came up or not).
pub struct StartGuard {
    state: Arc<State>,
    ready: IntGauge,
}

impl Drop for StartGuard {
    fn drop(&mut self) {
        self.state.starts_pending.fetch_sub(1, Ordering::AcqRel);
        self.ready.set(self.state.ready() as i64);
    }
}

impl State {
    fn ready(&self) -> bool {
        self.missing().is_empty()
    }

    /// What readiness waits for, in words.
    fn missing(&self) -> Vec<&'static str> {
        let mut out = Vec::new();
        if !self.engines_started.load(Ordering::Acquire) {
            out.push("engines not started");
        }
        if self.starts_pending.load(Ordering::Acquire) > 0 {
            out.push("GPU signature kernels building");
        }
        if self.sigserve_expected.load(Ordering::Acquire) && !self.sigserve_listening.load(Ordering::Acquire) {
            out.push("sigserve not listening");
        }
        if self.draining.load(Ordering::Acquire) {
            out.push("draining");
        }
        out
    }
}

impl Probes {
    pub(super) fn register(r: &Registry) -> Probes {
        let gauge = |name: &str, help: &str| {
            let g = IntGauge::new(name, help).expect("static metric definition");
            r.register(Box::new(g.clone())).expect("metric registered once");
            g
        };
        let ready =
            gauge("hashrig_ready", "1 while /readyz answers 200 (engines started, sigserve listening, not draining).");
        let draining = gauge("hashrig_draining", "1 while the process drains before a stop or after a handover.");
        let requests = super::counter(
            r,
            "hashrig_probe_requests_total",
            "Health and readiness probes answered, by probe and HTTP status code.",
            &["probe", "code"],
        );
        Probes { ready, draining, requests, state: Arc::default() }
    }

    fn refresh(&self) {
        self.ready.set(self.state.ready() as i64);
    }

    /// The runtime's engines are up (GPU starts hold a [`StartGuard`]).
    pub fn engines_started(&self) {
        self.state.engines_started.store(true, Ordering::Release);
        self.refresh();
    }

    /// Readiness waits for this start until the guard is dropped.
    pub fn start_pending(&self) -> StartGuard {
        self.state.starts_pending.fetch_add(1, Ordering::AcqRel);
        self.refresh();
        StartGuard { state: self.state.clone(), ready: self.ready.clone() }
    }

    /// sigserve is configured: readiness needs it listening.
    pub fn expect_sigserve(&self) {
        self.state.sigserve_expected.store(true, Ordering::Release);
        self.refresh();
    }

    pub fn set_sigserve_listening(&self, on: bool) {
        self.state.sigserve_listening.store(on, Ordering::Release);
        self.refresh();
    }

    /// From now on `/readyz` answers 503.
    pub fn begin_drain(&self) {
        self.state.draining.store(true, Ordering::Release);
        self.draining.set(1);
        self.refresh();
    }

    pub fn is_ready(&self) -> bool {
        self.state.ready()
    }

    pub fn is_draining(&self) -> bool {
        self.state.draining.load(Ordering::Acquire)
    }

    /// The readiness body (also in `/api/summary`).
    pub fn json(&self) -> Value {
        let missing = self.state.missing();
        let sigserve = match (
            self.state.sigserve_expected.load(Ordering::Acquire),
            self.state.sigserve_listening.load(Ordering::Acquire),
        ) {
            (false, _) => "off",
            (true, true) => "listening",
            (true, false) => "not_listening",
        };
        json!({
            "live": true,
            "ready": missing.is_empty(),
            "draining": self.is_draining(),
            "engines": if self.state.engines_started.load(Ordering::Acquire) { "started" } else { "starting" },
            "gpu_starts_pending": self.state.starts_pending.load(Ordering::Acquire),
            "sigserve": sigserve,
            "waiting_for": missing,
        })
    }

    /// The status code and JSON body of `/healthz` or `/readyz`; counted.
    pub fn answer(&self, probe: Probe) -> (u16, String) {
        let (code, body) = match probe {
            Probe::Live => (200, json!({"live": true})),
            Probe::Ready => {
                let body = self.json();
                (if body["ready"] == true { 200 } else { 503 }, body)
            }
        };
        let name = match probe {
            Probe::Live => "healthz",
            Probe::Ready => "readyz",
        };
        let label = if code == 200 { "200" } else { "503" };
        self.requests.with_label_values(&[name, label]).inc();
        (code, body.to_string())
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Probe {
    /// `/healthz`
    Live,
    /// `/readyz`
    Ready,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ready_only_with_engines_sigserve_and_no_drain() {
        let p = Probes::register(&Registry::new());
        assert_eq!(p.answer(Probe::Live).0, 200, "live from the start");
        assert_eq!(p.answer(Probe::Ready).0, 503, "engines not started yet");
        p.expect_sigserve();
        p.engines_started();
        let (code, body) = p.answer(Probe::Ready);
        assert_eq!(code, 503, "{body}");
        assert!(body.contains("sigserve not listening"), "{body}");
        p.set_sigserve_listening(true);
        let gpu = p.start_pending();
        assert_eq!(p.answer(Probe::Ready).0, 503, "a GPU start under way");
        assert_eq!(p.ready.get(), 0);
        drop(gpu);
        assert_eq!(p.answer(Probe::Ready).0, 200);
        assert_eq!(p.ready.get(), 1);
        p.begin_drain();
        let (code, body) = p.answer(Probe::Ready);
        assert_eq!((code, p.ready.get(), p.draining.get()), (503, 0, 1), "{body}");
        assert!(body.contains("\"draining\":true"), "{body}");
        assert_eq!(p.answer(Probe::Live).0, 200, "still live while draining");
        assert_eq!(p.requests.with_label_values(&["readyz", "503"]).get(), 4);
        assert_eq!(p.requests.with_label_values(&["readyz", "200"]).get(), 1);
        assert_eq!(p.requests.with_label_values(&["healthz", "200"]).get(), 2);
    }
}
