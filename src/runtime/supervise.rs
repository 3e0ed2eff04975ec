//! The process loop of `hashrig run` around a [`Runtime`]: signals (stop,
//! reload, upgrade), the config file watch, the run's duration, the pid
//! file and readiness notes.

use std::path::PathBuf;
use std::time::{Duration, Instant, SystemTime};

use super::upgrade::{self, SelfExec};
use super::{signals, BoxError, Runtime, RuntimeConfig, RuntimeError, StopMode};

type Load = Box<dyn Fn() -> Result<RuntimeConfig, BoxError>>;

pub struct Supervisor {
    /// Reads the config file again and merges it with the command line.
    pub load: Load,
    /// The config file to watch for changes (`--watch`).
    pub watch: Option<PathBuf>,
    /// Stop after this long (`--duration`).
    pub run_for: Option<Duration>,
    /// Written with this process's pid once it serves (`--pid-file`).
    pub pid_file: Option<PathBuf>,
    /// The binary and arguments a live upgrade starts.
    pub exec: Option<SelfExec>,
    /// The predecessor's readiness pipe, when this process is a successor.
    pub ready_pipe: Option<std::fs::File>,
}

/// How often the loop looks at signals and the clock, and the file.
const TICK: Duration = Duration::from_millis(50);
const WATCH_EVERY: Duration = Duration::from_millis(500);

/// What identifies a version of the watched file.
type Stamp = Option<(SystemTime, u64, u64)>;

fn stamp(p: &std::path::Path) -> Stamp {
    use std::os::unix::fs::MetadataExt;
    let md = std::fs::metadata(p).ok()?;
    Some((md.modified().ok()?, md.len(), md.ino()))
}

/// Runs until a stop signal, the duration, the adapter giving up, or a
/// completed live upgrade; then stops the runtime in order.
pub fn run(mut rt: Runtime, sup: Supervisor) -> Result<(), RuntimeError> {
    if let Some(p) = &sup.pid_file {
        if let Err(e) = upgrade::write_pid_file(p) {
            tracing::warn!("cannot write the pid file {}: {e}", p.display());
        }
    }
    upgrade::notify_ready(sup.ready_pipe);
    let started = Instant::now();
    let mut applied = sup.watch.as_deref().map(stamp);
    let mut seen = applied;
    let mut last_watch = Instant::now();
    let mut mode = StopMode::Normal;
    // Set by the first SIGTERM: the stop waits until then, unready.
    let mut drain_until: Option<Instant> = None;
    loop {
        if rt.finished() {
            break;
        }
        if sup.run_for.is_some_and(|d| started.elapsed() >= d) {
            break;
        }
        let sig = signals::take();
        if sig.stop || (sig.terminate && drain_until.is_some()) {
            tracing::info!("stopping (signal): engines, then the node adapter, then sigserve");
            break;
        }
        if sig.terminate {
            let d = rt.drain_period();
            if d.is_zero() {
                tracing::info!("stopping (signal): engines, then the node adapter, then sigserve");
                break;
            }
            rt.begin_drain();
            tracing::info!(
                "SIGTERM: draining for {:.1} s: /readyz answers 503, sigserve serves on (SIGTERM again: stop now)",
                d.as_secs_f64()
            );
            drain_until = Some(Instant::now() + d);
        }
        if drain_until.is_some_and(|t| Instant::now() >= t) {
            tracing::info!("stopping (signal): drained; engines, then the node adapter, then sigserve");
            break;
        }
        let mut reload = false;
        if sig.hangup {
            tracing::info!("SIGHUP: reloading the config");
            reload = true;
        }
        if let (Some(p), true) = (&sup.watch, last_watch.elapsed() >= WATCH_EVERY) {
            last_watch = Instant::now();
            let now = stamp(p);
            // Reload once a change has stood still for one look, so that a
            // file being written is not read half way.
            if now != applied.flatten() && now == seen.flatten() && now.is_some() {
                tracing::info!("{} changed: reloading the config", p.display());
                reload = true;
            }
            seen = Some(now);
        }
        if reload {
            applied = sup.watch.as_deref().map(stamp);
            match (sup.load)() {
                Ok(cfg) => {
                    rt.reload(cfg);
                }
                Err(e) => rt.reload_rejected(e.as_ref()),
            }
        }
        if sig.upgrade && drain_until.is_some() {
            tracing::warn!("SIGUSR2 while draining for a stop: no upgrade");
        } else if sig.upgrade && upgrade_now(&rt, sup.exec.as_ref()) {
            // Unready first; the successor answers /readyz on the same
            // socket from now on, and the listeners never close, so a
            // balancer has nothing to wait for: no drain period.
            rt.begin_drain();
            mode = StopMode::Handover;
            break;
        }
        std::thread::sleep(TICK);
    }
    let r = rt.stop(mode);
    if let Some(p) = &sup.pid_file {
        upgrade::remove_pid_file(p);
    }
    r
}

/// Starts the successor and waits for it; true once it serves (this
/// process then stops), false if it failed (this one runs on).
fn upgrade_now(rt: &Runtime, exec: Option<&SelfExec>) -> bool {
    let counter = &rt.metrics().runtime.upgrades;
    let Some(exec) = exec else {
        tracing::error!("SIGUSR2: live upgrade unavailable: this process does not know its own binary path");
        counter.with_label_values(&["failed"]).inc();
        return false;
    };
    tracing::info!("SIGUSR2: starting {} to take over", exec.exe.display());
    let fds = match rt.handover_fds() {
        Ok(f) => f,
        Err(e) => {
            tracing::error!("upgrade failed, running on: cannot duplicate the listening sockets: {e}");
            counter.with_label_values(&["failed"]).inc();
            return false;
        }
    };
    match upgrade::spawn_successor(exec, fds, upgrade::READY_TIMEOUT) {
        Ok(pid) => {
            tracing::info!(
                "upgrade: pid {pid} serves now; this process stops accepting, answers and hands on what it holds"
            );
            counter.with_label_values(&["handed_over"]).inc();
            true
        }
        Err(e) => {
            tracing::error!("upgrade failed, running on: {e}");
            counter.with_label_values(&["failed"]).inc();
            false
        }
    }
}
