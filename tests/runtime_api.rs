//! The runtime as a library: started from a config value alone (no command
//! line), reloaded through its live part, and a node adapter that does not
//! stop when asked never runs beside its successor.

#[cfg(feature = "gpu")]
mod common;

use std::net::TcpListener;
use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::Mutex;

use hashrig::health::fake::FakeSensor;
use hashrig::health::monitor::GuardConfig;
use hashrig::health::{GpuIdentity, SensorSource};
use hashrig::node::config::Adapter;
use hashrig::node::gbt::{GbtConfig, RpcAuth};
use hashrig::node::stratum::{PoolConfig, StratumConfig, StratumOptions};
#[cfg(feature = "gpu")]
use hashrig::runtime::GpuDevices;
use hashrig::runtime::{
    Changes, CpuSettings, Fixed, Hooks, Inherited, Live, Mining, Runtime, RuntimeConfig, SigserveListen,
};
use hashrig::sched::sig::EngineChoice;
use hashrig::topo::WorkerPriority;

fn sample(body: &str, prefix: &str) -> Option<f64> {
    body.lines().find(|l| l.starts_with(prefix)).and_then(|l| l.rsplit(' ').next()?.parse().ok())
}

fn wait_until(what: &str, within: Duration, mut f: impl FnMut() -> bool) {
    let until = Instant::now() + within;
    while !f() {
        assert!(Instant::now() < until, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn fake_gpu(name: &str, bus: &str) -> FakeSensor {
    FakeSensor::new(vec![GpuIdentity { index: 0, uuid: "GPU-fake".into(), name: name.into(), pci_bus_id: bus.into() }])
}

/// One unpinned CPU worker, no GPU, no demo feed, signatures on the CPU.
fn small(adapter: Adapter) -> RuntimeConfig {
    RuntimeConfig {
        fixed: Fixed {
            mining: Mining::Cpu,
            sig_engines: EngineChoice::Cpu,
            sensor: SensorSource::Fake(fake_gpu("no such GPU", "")),
            ..Fixed::default()
        },
        live: Live {
            cpu: CpuSettings { threads: Some(1), pin: false, priority: WorkerPriority::Low, ..CpuSettings::default() },
            metrics: None,
            status_interval: Duration::from_secs(1),
            sig_demo_rate: 0.0,
            adapter,
            ..Live::default()
        },
    }
}

/// A pool or node that accepts connections and never answers.
fn silent_server() -> (std::net::SocketAddr, Arc<Mutex<Vec<std::net::TcpStream>>>) {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = l.local_addr().unwrap();
    let held = Arc::new(Mutex::new(Vec::new()));
    let h = held.clone();
    std::thread::spawn(move || {
        for s in l.incoming().flatten() {
            h.lock().push(s);
        }
    });
    (addr, held)
}

/// A reload changes every key of `Live` (the literal below names each one:
/// a new live key does not compile until this test covers it), each is
/// reported and applied, and the running config then says what runs.
#[test]
fn a_reload_applies_every_live_key() {
    let filters = Arc::new(Mutex::new(Vec::new()));
    let f = filters.clone();
    let hooks = Hooks {
        set_log_filter: Some(Box::new(move |l| {
            f.lock().push(l.map(str::to_owned));
            Ok(())
        })),
    };
    let mut cfg = small(Adapter::Demo);
    cfg.fixed.sigserve = Some(SigserveListen { addr: "127.0.0.1:0".parse().unwrap(), tls: None });
    cfg.live.metrics = Some("127.0.0.1:0".parse().unwrap());
    let mut rt = Runtime::start(cfg.clone(), hooks, &mut Inherited::default()).unwrap();
    assert!(rt.metrics_addr().is_some());
    assert_eq!(rt.config(), &cfg);

    let (pool, held) = silent_server();
    let Live { cpu, metrics, status_interval, sig_demo_rate, adapter, log_level, sigserve_drain, thermal } =
        rt.config().live.clone();
    let new = Live {
        cpu: CpuSettings { priority: WorkerPriority::Normal, ..cpu.clone() },
        metrics: None,
        status_interval: status_interval + Duration::from_secs(1),
        sig_demo_rate: sig_demo_rate + 50.0,
        adapter: Adapter::Pool(StratumConfig {
            pools: vec![PoolConfig::new(format!("stratum+tcp://{pool}"), "w", "x")],
            options: StratumOptions::default(),
        }),
        log_level: Some("hashrig=debug,info".into()),
        sigserve_drain: sigserve_drain + Duration::from_secs(2),
        thermal: GuardConfig { temp_limit: Some(85.0), hysteresis: thermal.hysteresis + 1.0 },
    };
    assert!(metrics.is_some() && adapter == Adapter::Demo && log_level.is_none() && cpu.priority != new.cpu.priority);
    let changes = rt.reload_live(new.clone());
    let Changes {
        adapter,
        cpu,
        sig_demo_rate,
        log_level,
        metrics,
        status_interval,
        sigserve_drain,
        thermal,
        need_restart,
    } = changes;
    assert!(
        adapter && cpu && sig_demo_rate && log_level && metrics && status_interval && sigserve_drain && thermal,
        "every live key is reported changed"
    );
    assert!(need_restart.is_empty(), "{need_restart:?}");
    assert_eq!(rt.config().live, new, "every live key applied");
    // What each key drives.
    assert_eq!(rt.metrics_addr(), None);
    assert_eq!(rt.drain_period(), new.sigserve_drain);
    assert_eq!(filters.lock().as_slice(), [Some("hashrig=debug,info".to_owned())]);
    wait_until("the new adapter connects to its pool", Duration::from_secs(20), || !held.lock().is_empty());
    assert_eq!(rt.adapter_threads(), (1, 1));
    wait_until("the guard's new limit", Duration::from_secs(10), || {
        sample(&rt.metrics().render(), "hashrig_gpu_temp_limit_celsius") == Some(85.0)
    });
    let body = rt.metrics().render();
    assert_eq!(sample(&body, "hashrig_config_reloads_total{result=\"applied\"}"), Some(1.0), "{body}");

    // A fixed key through a whole config: named, and it keeps running as is.
    let mut moved = RuntimeConfig { fixed: cfg.fixed.clone(), live: new.clone() };
    moved.fixed.sigserve = Some(SigserveListen { addr: "unix:/nonexistent/sig.sock".parse().unwrap(), tls: None });
    let changes = rt.reload(moved);
    assert_eq!(changes.need_restart, ["sigserve.addr"]);
    assert!(!changes.adapter && !changes.cpu);
    assert_eq!(rt.config().fixed, cfg.fixed);
    rt.stop(hashrig::runtime::StopMode::Normal).unwrap();
}

/// A reload under an adapter stuck in a call that ignores its stop flag
/// (a node that never answers, within its RPC timeout): the reload of the
/// adapter fails while the old one still runs, and no second adapter ever
/// starts beside it; once it has ended, the next reload starts the new one.
#[test]
fn a_stuck_adapter_never_runs_beside_its_successor() {
    let (node, held) = silent_server();
    let dir = std::env::temp_dir().join(format!("hashrig-stuck-{}", std::process::id()));
    let gbt = GbtConfig {
        url: format!("http://{node}"),
        auth: RpcAuth::UserPass { user: "u".into(), pass: "p".into() },
        payout: "bcrt1qw508d6qejxtdg4y5r3zarvary0c5xw7kygt080".into(),
        rpc_timeout_secs: 4,
        blocks_dir: dir.clone(),
        ..GbtConfig::default()
    };
    let cfg = small(Adapter::Solo(gbt.clone()));
    let mut rt = Runtime::start(cfg.clone(), Hooks::default(), &mut Inherited::default()).unwrap();
    rt.set_adapter_stop_deadline(Duration::from_millis(300));
    wait_until("the adapter calls the node", Duration::from_secs(10), || !held.lock().is_empty());

    let demo = Live { adapter: Adapter::Demo, ..cfg.live.clone() };
    for _ in 0..2 {
        let changes = rt.reload_live(demo.clone());
        assert!(changes.adapter);
        assert_eq!(rt.config().live.adapter, Adapter::Solo(gbt.clone()), "not applied while the old one runs");
        assert_eq!(rt.adapter_threads(), (1, 1));
    }
    let body = rt.metrics().render();
    assert_eq!(sample(&body, "hashrig_config_reloads_total{result=\"failed\"}"), Some(2.0), "{body}");

    // The call times out; the old adapter ends, and a reload switches.
    wait_until("the old adapter ends", Duration::from_secs(30), || rt.adapter_threads().0 == 0);
    let changes = rt.reload_live(demo.clone());
    assert!(changes.adapter);
    assert_eq!(rt.config().live.adapter, Adapter::Demo);
    assert_eq!(rt.adapter_threads(), (1, 1), "one adapter at a time, always");
    assert!(!rt.finished(), "a replaced adapter's end does not end the run");
    rt.stop(hashrig::runtime::StopMode::Normal).unwrap();
    let _ = std::fs::remove_dir_all(&dir);
}

/// GPU mining and the thermal guard from a config alone, on lavapipe with
/// a fake sensor on the same device: the guard slows the hot GPU, and a
/// reload that raises the limit gives it full speed back.
#[cfg(feature = "gpu")]
#[test]
fn a_runtime_mines_on_a_gpu_under_the_thermal_guard_from_its_config() {
    let ad = common::first_adapter();
    let (index, label) = (ad.summary.index, format!("gpu{}", ad.summary.index));
    let sensor = fake_gpu(&ad.summary.name, &ad.summary.pci_bus_id);
    sensor.set_temperature(0, 90.0);
    let mut cfg = small(Adapter::Demo);
    cfg.fixed.mining = Mining::Gpu(hashrig::runtime::GpuTune::Fixed { workgroup: 64, nonces_per_thread: 16 });
    cfg.fixed.gpus = GpuDevices { allow_software: true, devices: Some(vec![index]) };
    cfg.fixed.sensor = SensorSource::Fake(sensor.clone());
    cfg.live.thermal = GuardConfig { temp_limit: Some(80.0), hysteresis: 5.0 };
    let mut rt = Runtime::start(cfg.clone(), Hooks::default(), &mut Inherited::default()).unwrap();
    assert_eq!(rt.gpu_engines(), 1, "the GPU engine starts from the config");
    let duty =
        |rt: &Runtime| sample(&rt.metrics().render(), &format!("hashrig_gpu_duty_cycle_ratio{{device=\"{label}\"}}"));
    wait_until("the guard slows the hot GPU", Duration::from_secs(30), || duty(&rt).is_some_and(|d| d < 1.0));
    let dispatches = |rt: &Runtime| rt.metrics().gpu.dispatch_seconds.with_label_values(&[&label]).get_sample_count();
    wait_until("the GPU engine hashes", Duration::from_secs(60), || dispatches(&rt) > 0);

    let cooler = Live { thermal: GuardConfig { temp_limit: Some(110.0), hysteresis: 5.0 }, ..cfg.live.clone() };
    let changes = rt.reload_live(cooler);
    assert!(changes.thermal && changes.need_restart.is_empty());
    wait_until("full speed under the new limit", Duration::from_secs(30), || duty(&rt) == Some(1.0));
    assert_eq!(sample(&rt.metrics().render(), "hashrig_gpu_temp_limit_celsius"), Some(110.0));
    let before = dispatches(&rt);
    wait_until("the GPU mines on", Duration::from_secs(60), || dispatches(&rt) > before);
    rt.stop(hashrig::runtime::StopMode::Normal).unwrap();
}
