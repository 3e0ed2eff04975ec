//! Every metric hashrig exports, declared in one place and registered in one
//! Registry, plus the `/metrics` endpoint.
//!
//! Conventions: counters end in `_total`, units are in names (`_seconds`),
//! label values come from small fixed sets (engine kind, device, result) and
//! never from job or connection ids; rates are left to PromQL.

mod catalog;
mod probes;
mod summary;

pub use catalog::Family;
pub use probes::{Probe, Probes, StartGuard};
pub use summary::Summary;

use std::net::SocketAddr;
use std::sync::Arc;
use std::thread::JoinHandle;

use prometheus::{
    Encoder, HistogramOpts, HistogramVec, IntCounterVec, IntGauge, IntGaugeVec, Opts, Registry, TextEncoder,
};

/// The port `/metrics` listens on by default (on 127.0.0.1).
pub const DEFAULT_METRICS_PORT: u16 = 9787;

pub struct Metrics {
    pub registry: Registry,
    /// Nonces hashed, by engine ("cpu", "gpu") and device ("numa0", "gpu0").
    pub hashes: IntCounterVec,
    /// Jobs received from the node adapter, by source ("demo", "stratum", "gbt").
    pub jobs: IntCounterVec,
    /// Shares by result ("accepted", "rejected", "stale").
    pub shares: IntCounterVec,
    /// Blocks submitted by result ("accepted", "rejected").
    pub blocks: IntCounterVec,
    /// Results an engine reported that failed the CPU re-check.
    pub hardware_errors: IntCounterVec,
    /// From a new job being published to a worker starting on it.
    pub job_switch_seconds: HistogramVec,
    /// Hits engines found and did not report, by reason ("chunk_cap": more
    /// than the cap in one chunk; "queue_full": the adapter's queue was full).
    pub hits_dropped: IntCounterVec,
    /// Known-answer self-tests run when a worker starts, by result.
    pub self_tests: IntCounterVec,
    /// One series per worker thread, value 1: where it runs.
    pub worker_info: IntGaugeVec,
    /// Whether the worker could be pinned to its core (1) or runs unpinned (0).
    pub worker_pinned: IntGaugeVec,
    /// Height of the chain the work builds on.
    pub chain_height: IntGauge,
    /// Difficulty of the current share target (what the pool or node asks for).
    pub share_difficulty: prometheus::Gauge,
    pub build_info: IntGaugeVec,

    // ---- signature verification (src/sig, src/node/sigserve) ----
    /// Batch latency, submission to last verdict, by scheme ("ed25519",
    /// "ed25519-strict", "ecdsa", "schnorr", "mixed") and size class ("1",
    /// "2-16", "17-256", "257-4096", "4097+").
    pub sig_batch_seconds: HistogramVec,
    /// Items verified, by scheme and result ("valid", "invalid", "malformed").
    pub sig_verdicts: IntCounterVec,
    /// Batches run, by path ("inline", "coalesced", "split").
    pub sig_batches: IntCounterVec,
    /// Batches answered after their deadline, by scheme.
    pub sig_deadline_missed: IntCounterVec,
    /// Items accepted and not yet answered.
    pub sig_queued_items: IntGauge,
    /// Open sigserve connections.
    pub sigserve_connections: IntGauge,
    /// sigserve frames by kind ("batch", "json") and result ("ok", "error").
    pub sigserve_frames: IntCounterVec,
    /// TLS handshakes that failed or timed out (no or a bad client certificate, a plain client).
    pub sigserve_tls_handshake_failures: prometheus::IntCounter,
    /// Connections the server closed on its own, by cause ("read_timeout",
    /// "idle_timeout", "write_timeout", "limit").
    pub sigserve_closed: IntCounterVec,

    // ── node adapters: Stratum pools and getblocktemplate ────────────────────
    /// 1 while connected and authorised to a pool, by role ("primary", "backup").
    pub pool_connected: IntGaugeVec,
    /// Difficulty the pool last set (applies from the next job).
    pub pool_difficulty: prometheus::Gauge,
    /// mining.set_difficulty below the floor, clamped to it.
    pub pool_difficulty_clamped: prometheus::IntCounter,
    /// Shares re-checked and ready to submit (found by an engine for a pool job).
    pub pool_shares_found: prometheus::IntCounter,
    /// Share outcomes by result ("accepted", "rejected", "stale") and reason,
    /// from the fixed set in `node::stratum::ShareReason`.
    pub pool_shares: IntCounterVec,
    /// The same outcomes by pool protocol ("v1", "v2") and result: a
    /// companion of `pool_shares`, whose series stay as they were.
    pub pool_protocol_shares: IntCounterVec,
    /// Share outcomes by the pool whose job they were for ("primary",
    /// "backup") and result: what each pool credited.
    pub pool_role_shares: IntCounterVec,
    /// Shares that also met their job's network target (block candidates
    /// the pool submits), by pool protocol ("v1", "v2").
    pub pool_block_candidates: IntCounterVec,
    /// Shares that waited for a reconnect (found while disconnected).
    pub pool_shares_queued: prometheus::IntCounter,
    /// stale / (accepted + rejected + stale), over the run.
    pub pool_stale_ratio: prometheus::Gauge,
    /// From sending mining.submit to the pool's answer.
    pub pool_submit_seconds: prometheus::Histogram,
    /// Reconnections, by cause ("dropped", "timeout", "requested", "connect_failed", "protocol").
    pub pool_reconnects: IntCounterVec,
    /// Switches between pools, by direction ("to_backup", "to_primary").
    pub pool_failovers: IntCounterVec,
    /// Block templates fetched from the node, by trigger ("initial", "longpoll", "poll", "block").
    pub gbt_templates: IntCounterVec,
    /// submitblock answers ("accepted" for null, "duplicate", "inconclusive", "rejected", "error").
    pub block_submit_answers: IntCounterVec,
    /// JSON-RPC calls to the node that failed, by method.
    pub rpc_errors: IntCounterVec,

    /// GPU engine metrics.
    pub gpu: GpuMetrics,
    /// Signature checks on GPUs: the split and the trust policy.
    pub sig_gpu: SigGpuMetrics,
    /// GPU health from NVML and the thermal guard (src/health/metrics.rs).
    pub health: crate::health::metrics::HealthMetrics,
    /// Config reloads and live upgrades.
    pub runtime: RuntimeMetrics,
    /// Liveness and readiness (/healthz, /readyz) and draining.
    pub probes: Probes,
}

// ── runtime operations ───────────────────────────────────────────────────────
pub struct RuntimeMetrics {
    /// Config reloads by result ("applied", "unchanged", "invalid", "failed").
    pub config_reloads: IntCounterVec,
    /// Live binary upgrades this process started, by result ("handed_over", "failed").
    pub upgrades: IntCounterVec,
}

impl RuntimeMetrics {
    fn register(r: &Registry) -> RuntimeMetrics {
        RuntimeMetrics {
            config_reloads: counter(
                r,
                "hashrig_config_reloads_total",
                "Config reloads (SIGHUP, or the file changed with --watch), by result.",
                &["result"],
            ),
            upgrades: counter(
                r,
                "hashrig_upgrades_total",
                "Live binary upgrades (SIGUSR2) this process started, by result.",
                &["result"],
            ),
        }
    }
}

// ── GPU engine ───────────────────────────────────────────────────────────────
// Hashes, hardware errors and job switch latency of the GPU engine go in the
// shared series above with engine="gpu"; these are the GPU's own.
pub struct GpuMetrics {
    /// One series per adapter in use, value 1: name, driver, backend, tune.
    pub adapter_info: IntGaugeVec,
    /// Devices lost (driver reset, hang, removal); their work went back to the other engines.
    pub device_lost: IntCounterVec,
    /// Kernel time per dispatch (timestamp queries; submit-to-readback where the adapter has none).
    pub dispatch_seconds: HistogramVec,
    /// Dispatches whose hits overflowed the slot array and were re-scanned on the CPU.
    pub hit_overflows: IntCounterVec,
}

impl GpuMetrics {
    fn register(r: &Registry) -> GpuMetrics {
        let adapter_info = IntGaugeVec::new(
            Opts::new("hashrig_gpu_adapter_info", "GPU adapters in use (value is always 1)."),
            &["device", "name", "driver", "backend", "tune"],
        )
        .expect("static metric definition");
        r.register(Box::new(adapter_info.clone())).expect("metric registered once");
        let device_lost = counter(
            r,
            "hashrig_gpu_device_lost_total",
            "GPU devices lost; their work went back to the other engines.",
            &["device"],
        );
        let dispatch_seconds = HistogramVec::new(
            HistogramOpts::new("hashrig_gpu_dispatch_seconds", "Kernel time of one sha256d dispatch.")
                .buckets(vec![0.001, 0.0025, 0.005, 0.01, 0.02, 0.03, 0.05, 0.075, 0.1, 0.25, 0.5, 1.0]),
            &["device"],
        )
        .expect("static metric definition");
        r.register(Box::new(dispatch_seconds.clone())).expect("metric registered once");
        let hit_overflows = counter(
            r,
            "hashrig_gpu_hit_overflows_total",
            "Dispatches with more hits than slots, re-scanned on the CPU.",
            &["device"],
        );
        GpuMetrics { adapter_info, device_lost, dispatch_seconds, hit_overflows }
    }
}

// ── Signature checks on GPUs (src/sched/sig/gpu/) ─────────────────────────
pub struct SigGpuMetrics {
    /// Items verified, by engine ("cpu", or "gpu0", "gpu1", … by adapter index).
    pub engine_items: IntCounterVec,
    /// One GPU signature dispatch, submit to verdicts readable (canaries included).
    pub batch_seconds: HistogramVec,
    /// Measured ÷ predicted time of a GPU dispatch: the split's model, checked.
    pub prediction_ratio: HistogramVec,
    /// GPU verdicts re-verified on the CPU, by why ("invalid", "sampled", "canary").
    pub rechecks: IntCounterVec,
    /// Disagreements between a GPU and the CPU; each takes the adapter off signature work.
    pub mismatches: IntCounterVec,
    /// 1 while the adapter verifies signatures, 0 once taken off (mismatch, device loss).
    pub active: IntGaugeVec,
    /// The adapter's measured fixed latency L0 and time per item, in seconds.
    pub l0_seconds: prometheus::GaugeVec,
    pub item_seconds: prometheus::GaugeVec,
}

impl SigGpuMetrics {
    fn register(r: &Registry) -> SigGpuMetrics {
        let engine_items =
            counter(r, "hashrig_sig_engine_items_total", "Signature items verified, by engine.", &["engine"]);
        let batch_seconds = HistogramVec::new(
            HistogramOpts::new("hashrig_sig_gpu_batch_seconds", "GPU signature dispatch, submit to verdicts readable.")
                .buckets(vec![0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0, 5.0]),
            &["device"],
        )
        .expect("static metric definition");
        r.register(Box::new(batch_seconds.clone())).expect("metric registered once");
        let prediction_ratio = HistogramVec::new(
            HistogramOpts::new(
                "hashrig_sig_gpu_prediction_ratio",
                "Measured over predicted time of a GPU signature dispatch.",
            )
            .buckets(vec![0.25, 0.5, 0.8, 0.9, 1.0, 1.1, 1.25, 1.5, 2.0, 4.0]),
            &["device"],
        )
        .expect("static metric definition");
        r.register(Box::new(prediction_ratio.clone())).expect("metric registered once");
        let rechecks = counter(
            r,
            "hashrig_sig_gpu_rechecks_total",
            "GPU signature verdicts re-verified on the CPU, by why.",
            &["device", "why"],
        );
        let mismatches = counter(
            r,
            "hashrig_sig_gpu_mismatches_total",
            "GPU signature verdicts the CPU disagreed with; the adapter is taken off signature work.",
            &["device"],
        );
        let active = IntGaugeVec::new(
            Opts::new("hashrig_sig_gpu_active", "1 while the adapter verifies signatures, 0 once taken off."),
            &["device", "name"],
        )
        .expect("static metric definition");
        r.register(Box::new(active.clone())).expect("metric registered once");
        let gauge = |name: &str, help: &str, labels: &[&str]| {
            let g = prometheus::GaugeVec::new(Opts::new(name, help), labels).expect("static metric definition");
            r.register(Box::new(g.clone())).expect("metric registered once");
            g
        };
        let l0_seconds =
            gauge("hashrig_sig_gpu_l0_seconds", "Measured fixed latency of a GPU signature dispatch.", &["device"]);
        let item_seconds = gauge(
            "hashrig_sig_gpu_item_seconds",
            "Measured GPU time per signature item, by kernel family.",
            &["device", "scheme"],
        );
        SigGpuMetrics {
            engine_items,
            batch_seconds,
            prediction_ratio,
            rechecks,
            mismatches,
            active,
            l0_seconds,
            item_seconds,
        }
    }
}

fn counter(r: &Registry, name: &str, help: &str, labels: &[&str]) -> IntCounterVec {
    let c = IntCounterVec::new(Opts::new(name, help), labels).expect("static metric definition");
    r.register(Box::new(c.clone())).expect("metric registered once");
    c
}

impl Metrics {
    pub fn new() -> Arc<Metrics> {
        let r = Registry::new();
        let hashes =
            counter(&r, "hashrig_hashes_total", "Nonces hashed (sha256d of one header).", &["engine", "device"]);
        let jobs = counter(&r, "hashrig_jobs_total", "Mining jobs received from the node adapter.", &["source"]);
        let shares = counter(&r, "hashrig_shares_total", "Shares submitted, by result.", &["result"]);
        let blocks = counter(&r, "hashrig_blocks_total", "Blocks submitted, by result.", &["result"]);
        let hardware_errors = counter(
            &r,
            "hashrig_hardware_errors_total",
            "Engine results that failed the CPU re-check.",
            &["engine", "device"],
        );
        let self_tests = counter(
            &r,
            "hashrig_self_tests_total",
            "Known-answer self-tests run at worker start, by result.",
            &["engine", "result"],
        );
        let job_switch_seconds = HistogramVec::new(
            HistogramOpts::new(
                "hashrig_job_switch_seconds",
                "Time from a new job being published to a worker starting on it.",
            )
            .buckets(vec![0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0]),
            &["engine"],
        )
        .expect("static metric definition");
        r.register(Box::new(job_switch_seconds.clone())).expect("metric registered once");
        let worker_info = IntGaugeVec::new(
            Opts::new("hashrig_worker_info", "Worker threads and where they run (value is always 1)."),
            &["engine", "device", "worker", "numa_node", "core", "pu"],
        )
        .expect("static metric definition");
        r.register(Box::new(worker_info.clone())).expect("metric registered once");
        let worker_pinned = IntGaugeVec::new(
            Opts::new("hashrig_worker_pinned", "1 when the worker thread is bound to its core, 0 when unpinned."),
            &["engine", "worker"],
        )
        .expect("static metric definition");
        r.register(Box::new(worker_pinned.clone())).expect("metric registered once");
        let chain_height = IntGauge::new("hashrig_chain_height", "Height of the block the current job builds.")
            .expect("static metric definition");
        r.register(Box::new(chain_height.clone())).expect("metric registered once");
        let share_difficulty =
            prometheus::Gauge::new("hashrig_share_difficulty", "Difficulty of the current share target.")
                .expect("static metric definition");
        r.register(Box::new(share_difficulty.clone())).expect("metric registered once");
        let build_info = IntGaugeVec::new(
            Opts::new("hashrig_build_info", "Build and CPU path in use (value is always 1)."),
            &["version", "pow_backend"],
        )
        .expect("static metric definition");
        r.register(Box::new(build_info.clone())).expect("metric registered once");
        // ---- signature verification ----
        let sig_batch_seconds = HistogramVec::new(
            HistogramOpts::new("hashrig_sig_batch_seconds", "Signature batch latency, submission to last verdict.")
                .buckets(vec![
                    0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
                ]),
            &["scheme", "size_class"],
        )
        .expect("static metric definition");
        r.register(Box::new(sig_batch_seconds.clone())).expect("metric registered once");
        let sig_verdicts = counter(
            &r,
            "hashrig_sig_verdicts_total",
            "Signatures verified, by scheme and result.",
            &["scheme", "result"],
        );
        let sig_batches =
            counter(&r, "hashrig_sig_batches_total", "Signature batches run, by path (inline, split).", &["path"]);
        let sig_deadline_missed = counter(
            &r,
            "hashrig_sig_deadline_missed_total",
            "Signature batches answered after their deadline.",
            &["scheme"],
        );
        let sig_queued_items =
            IntGauge::new("hashrig_sig_queued_items", "Signature items accepted and not yet answered.")
                .expect("static metric definition");
        r.register(Box::new(sig_queued_items.clone())).expect("metric registered once");
        let sigserve_connections = IntGauge::new("hashrig_sigserve_connections", "Open sigserve connections.")
            .expect("static metric definition");
        r.register(Box::new(sigserve_connections.clone())).expect("metric registered once");
        let sigserve_frames =
            counter(&r, "hashrig_sigserve_frames_total", "sigserve requests, by kind and result.", &["kind", "result"]);
        let sigserve_tls_handshake_failures = prometheus::IntCounter::new(
            "hashrig_sigserve_tls_handshake_failures_total",
            "sigserve TLS handshakes that failed or timed out.",
        )
        .expect("static metric definition");
        r.register(Box::new(sigserve_tls_handshake_failures.clone())).expect("metric registered once");
        let sigserve_closed = counter(
            &r,
            "hashrig_sigserve_closed_total",
            "sigserve connections closed by the server, by cause.",
            &["cause"],
        );
        let pool_connected = IntGaugeVec::new(
            Opts::new("hashrig_pool_connected", "1 while connected and authorised to the pool in this role."),
            &["role"],
        )
        .expect("static metric definition");
        r.register(Box::new(pool_connected.clone())).expect("metric registered once");
        let pool_difficulty = prometheus::Gauge::new("hashrig_pool_difficulty", "Difficulty the pool last set.")
            .expect("static metric definition");
        r.register(Box::new(pool_difficulty.clone())).expect("metric registered once");
        let pool_difficulty_clamped = prometheus::IntCounter::new(
            "hashrig_pool_difficulty_clamped_total",
            "Share difficulties a pool set below the floor (min_difficulty), clamped to it.",
        )
        .expect("static metric definition");
        r.register(Box::new(pool_difficulty_clamped.clone())).expect("metric registered once");
        let pool_shares_found = prometheus::IntCounter::new(
            "hashrig_pool_shares_found_total",
            "Shares found for pool jobs and re-checked on the CPU.",
        )
        .expect("static metric definition");
        r.register(Box::new(pool_shares_found.clone())).expect("metric registered once");
        let pool_shares = counter(
            &r,
            "hashrig_pool_shares_total",
            "Pool share outcomes, by result and reason.",
            &["result", "reason"],
        );
        let pool_protocol_shares = counter(
            &r,
            "hashrig_pool_protocol_shares_total",
            "Pool share outcomes, by pool protocol (Stratum v1 or v2) and result.",
            &["protocol", "result"],
        );
        let pool_role_shares = counter(
            &r,
            "hashrig_pool_role_shares_total",
            "Pool share outcomes, by the pool whose job they were for and result.",
            &["role", "result"],
        );
        let pool_block_candidates = counter(
            &r,
            "hashrig_pool_block_candidates_total",
            "Shares that met their job's network target (blocks the pool submits), by pool protocol.",
            &["protocol"],
        );
        let pool_shares_queued = prometheus::IntCounter::new(
            "hashrig_pool_shares_queued_total",
            "Shares found while disconnected and kept for the reconnect.",
        )
        .expect("static metric definition");
        r.register(Box::new(pool_shares_queued.clone())).expect("metric registered once");
        let pool_stale_ratio =
            prometheus::Gauge::new("hashrig_pool_stale_ratio", "Stale shares over all share outcomes.")
                .expect("static metric definition");
        r.register(Box::new(pool_stale_ratio.clone())).expect("metric registered once");
        let pool_submit_seconds = prometheus::Histogram::with_opts(
            HistogramOpts::new("hashrig_pool_submit_seconds", "Round trip of mining.submit to the pool's answer.")
                .buckets(vec![0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0]),
        )
        .expect("static metric definition");
        r.register(Box::new(pool_submit_seconds.clone())).expect("metric registered once");
        let pool_reconnects = counter(&r, "hashrig_pool_reconnects_total", "Pool reconnections, by cause.", &["cause"]);
        let pool_failovers =
            counter(&r, "hashrig_pool_failovers_total", "Switches between pools, by direction.", &["direction"]);
        let gbt_templates =
            counter(&r, "hashrig_gbt_templates_total", "Block templates fetched, by trigger.", &["trigger"]);
        let block_submit_answers =
            counter(&r, "hashrig_block_submit_answers_total", "The node's answers to submitblock.", &["answer"]);
        let rpc_errors =
            counter(&r, "hashrig_rpc_errors_total", "Failed JSON-RPC calls to the node, by method.", &["method"]);
        let hits_dropped = counter(
            &r,
            "hashrig_hits_dropped_total",
            "Hits found and not reported (share target far too easy), by reason.",
            &["reason"],
        );
        let gpu = GpuMetrics::register(&r);
        let sig_gpu = SigGpuMetrics::register(&r);
        let runtime = RuntimeMetrics::register(&r);
        let health = crate::health::metrics::HealthMetrics::register(&r);
        let probes = Probes::register(&r);
        Arc::new(Metrics {
            probes,
            gpu,
            sig_gpu,
            runtime,
            health,
            registry: r,
            pool_connected,
            pool_difficulty,
            pool_difficulty_clamped,
            pool_shares_found,
            pool_shares,
            pool_protocol_shares,
            pool_role_shares,
            pool_block_candidates,
            pool_shares_queued,
            pool_stale_ratio,
            pool_submit_seconds,
            pool_reconnects,
            pool_failovers,
            gbt_templates,
            block_submit_answers,
            rpc_errors,
            hashes,
            jobs,
            shares,
            blocks,
            hardware_errors,
            hits_dropped,
            job_switch_seconds,
            self_tests,
            worker_info,
            worker_pinned,
            chain_height,
            share_difficulty,
            build_info,
            sig_batch_seconds,
            sig_verdicts,
            sig_batches,
            sig_deadline_missed,
            sig_queued_items,
            sigserve_connections,
            sigserve_frames,
            sigserve_tls_handshake_failures,
            sigserve_closed,
        })
    }

    /// The exposition text a scrape returns.
    pub fn render(&self) -> String {
        let mut buf = Vec::new();
        // Encoding our own registry into a Vec cannot fail.
        TextEncoder::new().encode(&self.registry.gather(), &mut buf).expect("text encoding");
        String::from_utf8(buf).expect("exposition format is UTF-8")
    }
}

/// Connections `/metrics` serves at once (a thread each); more are closed.
pub const MAX_METRICS_CONNECTIONS: usize = 8;
/// Time a client has to send its request and to take the answer.
const METRICS_IO_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(2);

/// A running `/metrics` endpoint: plain HTTP/1.1, one request per
/// connection, at most [`MAX_METRICS_CONNECTIONS`] at once, each with
/// 2 s to send its request and take the answer.
pub struct MetricsServer {
    pub addr: SocketAddr,
    stop: Arc<std::sync::atomic::AtomicBool>,
    thread: Option<JoinHandle<()>>,
    /// A second descriptor of the listening socket, for a live upgrade.
    listener_dup: std::net::TcpListener,
}

impl MetricsServer {
    /// Binds `addr` and serves `GET /metrics` from a thread of its own.
    /// Also serves `GET /api/summary` (JSON, [`Summary`]), sampling the
    /// registry once a second for its windows.
    pub fn start(addr: SocketAddr, metrics: Arc<Metrics>) -> std::io::Result<MetricsServer> {
        Self::serve(std::net::TcpListener::bind(addr)?, metrics)
    }

    /// A second descriptor of the listening socket, to hand to a successor.
    pub fn listener_dup(&self) -> std::io::Result<std::net::TcpListener> {
        self.listener_dup.try_clone()
    }

    /// Serves on a socket already listening (inherited, or bound by `start`).
    pub fn serve(listener: std::net::TcpListener, metrics: Arc<Metrics>) -> std::io::Result<MetricsServer> {
        use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
        let listener_dup = listener.try_clone()?;
        let summary = Arc::new(Summary::new(metrics.clone()));
        let addr = listener.local_addr()?;
        listener.set_nonblocking(true)?;
        let stop = Arc::new(AtomicBool::new(false));
        let s = stop.clone();
        let busy = Arc::new(AtomicUsize::new(0));
        let thread = std::thread::Builder::new().name("metrics-http".into()).spawn(move || {
            while !s.load(Ordering::Relaxed) {
                summary.tick();
                let conn = match listener.accept() {
                    Ok((c, _)) => c,
                    Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                        std::thread::sleep(std::time::Duration::from_millis(20));
                        continue;
                    }
                    Err(_) => {
                        std::thread::sleep(std::time::Duration::from_millis(20));
                        continue;
                    }
                };
                if busy.fetch_add(1, Ordering::AcqRel) >= MAX_METRICS_CONNECTIONS {
                    busy.fetch_sub(1, Ordering::AcqRel);
                    drop(conn);
                    continue;
                }
                let (metrics, summary, busy2) = (metrics.clone(), summary.clone(), busy.clone());
                let spawned = std::thread::Builder::new().name("metrics-conn".into()).spawn(move || {
                    serve_metrics_conn(conn, &metrics, &summary);
                    busy2.fetch_sub(1, Ordering::AcqRel);
                });
                if spawned.is_err() {
                    busy.fetch_sub(1, Ordering::AcqRel);
                }
            }
        })?;
        Ok(MetricsServer { addr, stop, thread: Some(thread), listener_dup })
    }
}

/// Reads one request head (at most 8 KiB) and answers it.
fn serve_metrics_conn(mut conn: std::net::TcpStream, metrics: &Metrics, summary: &Summary) {
    use std::io::{Read, Write};
    if conn.set_nonblocking(false).is_err()
        || conn.set_read_timeout(Some(METRICS_IO_TIMEOUT)).is_err()
        || conn.set_write_timeout(Some(METRICS_IO_TIMEOUT)).is_err()
    {
        return;
    }
    let started = std::time::Instant::now();
    let mut head = Vec::with_capacity(1024);
    let mut buf = [0u8; 1024];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") && !head.windows(2).any(|w| w == b"\n\n") {
        if head.len() > 8 << 10 || started.elapsed() > METRICS_IO_TIMEOUT {
            return;
        }
        match conn.read(&mut buf) {
            Ok(0) | Err(_) => return,
            Ok(n) => head.extend_from_slice(&buf[..n]),
        }
    }
    let line = head.split(|&b| b == b'\n').next().unwrap_or_default();
    let line = String::from_utf8_lossy(line);
    let mut parts = line.split_whitespace();
    let (method, target) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""));
    let path = target.split('?').next().unwrap_or("");
    let (status, ctype, body) = match (method, path) {
        ("GET", "/metrics") => ("200 OK", "text/plain; version=0.0.4; charset=utf-8", metrics.render()),
        ("GET", "/api/summary") => ("200 OK", "application/json", summary.json().to_string()),
        ("GET", "/healthz") => probe(metrics, Probe::Live),
        ("GET", "/readyz") => probe(metrics, Probe::Ready),
        ("GET", "/") => (
            "200 OK",
            "text/plain; charset=utf-8",
            "hashrig: metrics at /metrics, a summary at /api/summary, probes at /healthz and /readyz\n".to_owned(),
        ),
        _ => ("404 Not Found", "text/plain; charset=utf-8", "not found\n".to_owned()),
    };
    let resp = format!(
        "HTTP/1.1 {status}\r\nContent-Type: {ctype}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    // A client that hung up is not our problem.
    let _ = conn.write_all(resp.as_bytes());
    let _ = conn.flush();
}

fn probe(metrics: &Metrics, which: Probe) -> (&'static str, &'static str, String) {
    let (code, body) = metrics.probes.answer(which);
    (if code == 200 { "200 OK" } else { "503 Service Unavailable" }, "application/json", body)
}

impl Drop for MetricsServer {
    fn drop(&mut self) {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Connection threads of metrics servers in this process (other tests
    /// run beside this one, with threads of their own).
    fn threads() -> usize {
        std::fs::read_dir("/proc/self/task").map_or(0, |d| {
            d.filter_map(|t| std::fs::read_to_string(t.ok()?.path().join("comm")).ok())
                .filter(|name| name.trim() == "metrics-conn")
                .count()
        })
    }

    fn get(addr: SocketAddr) -> String {
        use std::io::{Read, Write};
        let mut s = std::net::TcpStream::connect(addr).unwrap();
        s.set_read_timeout(Some(std::time::Duration::from_secs(5))).unwrap();
        s.write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
        let mut out = String::new();
        let _ = s.read_to_string(&mut out);
        out
    }

    /// Idle connections take at most MAX_METRICS_CONNECTIONS threads, are
    /// closed after the I/O timeout, and scrapes work again after that.
    #[test]
    fn idle_connections_do_not_take_a_thread_each() {
        let srv = MetricsServer::start("127.0.0.1:0".parse().unwrap(), Metrics::new()).unwrap();
        assert!(get(srv.addr).starts_with("HTTP/1.1 200 OK"));
        let before = threads();
        let idle: Vec<_> = (0..64).map(|_| std::net::TcpStream::connect(srv.addr).unwrap()).collect();
        std::thread::sleep(std::time::Duration::from_millis(300));
        let during = threads();
        assert!(
            during <= before + MAX_METRICS_CONNECTIONS,
            "{before} connection threads before, {during} with 64 idle clients"
        );
        std::thread::sleep(METRICS_IO_TIMEOUT + std::time::Duration::from_millis(500));
        let r = get(srv.addr);
        assert!(r.starts_with("HTTP/1.1 200 OK") && r.contains("hashrig_chain_height"), "{r}");
        drop(idle);
    }
}
