//! The command line: clap arguments, parsed into validated configs, then a
//! library call per subcommand. `anyhow` lives here, at the edge; the library
//! below uses typed errors.

mod args;
mod bench;
mod devices;
mod gpu;
mod health;
mod run;
mod scan;
mod sigbench;
mod size;
mod status;
mod verify;

use std::net::SocketAddr;
use std::process::ExitCode;

use clap::{Args, CommandFactory, FromArgMatches, Parser, Subcommand};

use crate::pow::Backend;
use crate::topo::{PlanOptions, WorkerPriority};

#[derive(Parser, Debug)]
#[command(
    name = "hashrig",
    version,
    about = "Proof-of-work hashing and batch signature checks on NUMA-pinned CPU cores and GPUs"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Run the runtime (on the embedded demo node when no node is configured).
    Run(Box<run::RunArgs>),
    /// Show CPU features (compiled in and detected), topology and the pinning plan.
    Devices(devices::DevicesArgs),
    /// Measure throughput.
    #[command(subcommand)]
    Bench(bench::BenchCommand),
    /// Scan a range of nonces of one header and print every hit as a JSON line.
    Scan(scan::ScanArgs),
    /// Verify signatures given as JSON lines; print one verdict line per item.
    Verify(verify::VerifyArgs),
    /// Machines of each measured profile (hw-profiles/) a workload needs.
    Size(size::SizeArgs),
    /// Summary of a running hashrig (its /api/summary), for a person.
    Status(status::StatusArgs),
}

/// Which CPUs to use; shared by `run` and `bench`.
#[derive(Args, Debug, Clone)]
pub struct CpuArgs {
    /// Worker threads in all (default: one per physical core).
    #[arg(long, short = 't')]
    pub threads: Option<usize>,
    /// Also use SMT siblings (hyper-threads).
    #[arg(long)]
    pub smt: bool,
    /// Only these NUMA nodes (comma-separated OS indices).
    #[arg(long, value_delimiter = ',')]
    pub numa_nodes: Option<Vec<u32>>,
    /// Do not bind worker threads to cores.
    #[arg(long)]
    pub no_pin: bool,
    /// SHA-256d code path: scalar, midstate, sha-ni, avx2, avx512 (default: the fastest here, timed at start-up).
    #[arg(long)]
    pub backend: Option<Backend>,
    /// Scheduling priority of the PoW workers: idle (SCHED_IDLE: signature
    /// checks, the pool connection and GPU feeders preempt them at once),
    /// low (nice 19) or normal.
    #[arg(long, value_enum, default_value_t = WorkerPriority::Idle)]
    pub cpu_priority: WorkerPriority,
}

/// TLS toward a sigserve started with --sigserve-tls-*; shared by `verify
/// --connect` and `bench sig --sigserve`.
#[derive(Args, Debug, Clone, Default)]
pub struct SigTlsArgs {
    /// Connect with TLS, trusting the CA certificates in this PEM file.
    #[arg(long, value_name = "FILE")]
    pub tls_ca: Option<std::path::PathBuf>,
    /// Client certificate (PEM) for a server that requires one (with --tls-key).
    #[arg(long, value_name = "FILE", requires = "tls_key")]
    pub tls_cert: Option<std::path::PathBuf>,
    /// Key of --tls-cert (PEM).
    #[arg(long, value_name = "FILE", requires = "tls_cert")]
    pub tls_key: Option<std::path::PathBuf>,
    /// Name the server's certificate must carry (default: the address's IP).
    #[arg(long, value_name = "NAME")]
    pub tls_server_name: Option<String>,
}

impl SigTlsArgs {
    /// The client TLS settings, when any TLS flag was given.
    pub fn client(&self) -> Option<crate::node::sigserve::ClientTls> {
        let any = self.tls_ca.is_some() || self.tls_cert.is_some() || self.tls_server_name.is_some();
        any.then(|| crate::node::sigserve::ClientTls {
            ca: self.tls_ca.clone(),
            cert: self.tls_cert.clone(),
            key: self.tls_key.clone(),
            server_name: self.tls_server_name.clone(),
        })
    }
}

impl CpuArgs {
    /// The CPU engine's settings for `plan`.
    pub fn engine_config(&self, plan: crate::topo::PinPlan, backend: Backend) -> crate::sched::CpuConfig {
        crate::sched::CpuConfig {
            plan,
            backend,
            chunk_time: crate::sched::cpu::DEFAULT_CHUNK_TIME,
            pin: !self.no_pin,
            priority: self.cpu_priority,
        }
    }

    pub fn plan_options(&self) -> PlanOptions {
        PlanOptions { threads: self.threads, smt: self.smt, nodes: self.numa_nodes.clone() }
    }

    /// The backend asked for, checked against what this CPU can run.
    pub fn backend(&self) -> anyhow::Result<Backend> {
        match self.backend {
            None => Ok(crate::pow::detect()),
            Some(b) if crate::pow::available().contains(&b) => Ok(b),
            Some(b) => {
                anyhow::bail!("backend {} is not available on this CPU (available: {})", b.name(), backend_list())
            }
        }
    }
}

pub fn backend_list() -> String {
    crate::pow::available().iter().map(|b| b.name()).collect::<Vec<_>>().join(", ")
}

/// `--version` text: the build plus the CPU paths compiled in and detected,
/// so a bug report says which code ran.
fn long_version() -> String {
    format!("{}\n{}", env!("CARGO_PKG_VERSION"), devices::feature_report().trim_end())
}

#[cfg(all(test, unix))]
mod tests {
    #[test]
    fn a_runtime_dir_open_to_others_is_refused() {
        use std::os::unix::fs::PermissionsExt;
        let dir = std::env::temp_dir().join(format!("hashrig-private-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o700)).unwrap();
        assert!(super::private_dir(&dir));
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o777)).unwrap();
        assert!(!super::private_dir(&dir));
        let link = dir.with_extension("link");
        let _ = std::fs::remove_file(&link);
        std::os::unix::fs::symlink(&dir, &link).unwrap();
        assert!(!super::private_dir(&link), "a symlink is not ours to use");
        std::fs::remove_file(&link).unwrap();
        std::fs::remove_dir(&dir).unwrap();
    }
}

pub fn default_metrics_addr() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], crate::metrics::DEFAULT_METRICS_PORT))
}

/// Changes the log filter of a running process (set for stdout logging).
type FilterSetter = Box<dyn Fn(Option<&str>) -> Result<(), crate::runtime::BoxError> + Send + Sync>;
static SET_FILTER: std::sync::OnceLock<FilterSetter> = std::sync::OnceLock::new();

/// The start-up filter: `HASHRIG_LOG`, else "info".
fn default_filter() -> tracing_subscriber::EnvFilter {
    tracing_subscriber::EnvFilter::try_from_env("HASHRIG_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"))
}

/// `stderr`: for commands whose standard output is data (`verify` prints
/// one JSON verdict per line; `bench`, `devices`, `size`, `status` and `scan`
/// print tables or `--json` objects), logs go to standard error, so
/// `hashrig bench sig --json | jq` reads JSON only. `run` logs to stdout,
/// the console miners pipe.
fn init_logging(stderr: bool) {
    let b = tracing_subscriber::fmt().with_env_filter(default_filter()).with_target(false);
    if stderr {
        let _ =
            b.with_writer(std::io::stderr).with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr())).try_init();
        return;
    }
    // One console stream, as miners print it; stdout so it can be piped.
    let b = b
        .with_writer(std::io::stdout)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stdout()))
        .with_filter_reloading();
    let handle = b.reload_handle();
    if b.try_init().is_ok() {
        let _ = SET_FILTER.set(Box::new(move |level| {
            let f = match level {
                Some(l) => tracing_subscriber::EnvFilter::try_new(l)?,
                None => default_filter(),
            };
            Ok(handle.reload(f)?)
        }));
    }
}

/// A hook for the runtime to change the log filter (config `log_level`).
fn log_filter_setter() -> Option<crate::runtime::SetLogFilter> {
    SET_FILTER.get()?;
    Some(Box::new(|level| SET_FILTER.get().map_or(Err("no log filter to change".into()), |set| set(level))))
}

/// Mesa's Vulkan drivers (lavapipe), probed when GPUs are enumerated, print
/// "error: XDG_RUNTIME_DIR is invalid or not set" on headless servers. That
/// line is noise, not an error of ours: give Mesa a private runtime directory
/// when the session has none. Runs first in `main`, before any thread exists,
/// so changing the environment is safe.
fn quiet_mesa_on_headless() {
    if !cfg!(feature = "gpu") || std::env::var_os("XDG_RUNTIME_DIR").is_some() {
        return;
    }
    // Named by uid (not $USER, which anyone can set), and used only if it
    // is ours: someone else may have created the predictable name first.
    #[cfg(unix)]
    let dir = std::env::temp_dir().join(format!("hashrig-runtime-{}", unsafe { libc::geteuid() }));
    #[cfg(unix)]
    let made = {
        use std::os::unix::fs::DirBuilderExt;
        let _ = std::fs::DirBuilder::new().mode(0o700).create(&dir);
        private_dir(&dir)
    };
    #[cfg(not(unix))]
    let (dir, made) = (std::path::PathBuf::new(), false);
    if made {
        std::env::set_var("XDG_RUNTIME_DIR", &dir);
    }
}

/// `dir` is a real directory (not a symlink) owned by this user, with no
/// access for group or others.
#[cfg(unix)]
fn private_dir(dir: &std::path::Path) -> bool {
    use std::os::unix::fs::MetadataExt;
    match std::fs::symlink_metadata(dir) {
        // SAFETY: geteuid has no preconditions.
        Ok(md) => md.is_dir() && md.uid() == unsafe { libc::geteuid() } && md.mode() & 0o077 == 0,
        Err(_) => false,
    }
}

/// Exit codes: 0 success, 1 runtime failure, 2 bad input (as clap uses).
pub fn main() -> ExitCode {
    quiet_mesa_on_headless();
    let matches = Cli::command().long_version(long_version()).get_matches();
    let mut cli = match Cli::from_arg_matches(&matches) {
        Ok(c) => c,
        Err(e) => e.exit(),
    };
    // Sockets and the readiness pipe a predecessor (or systemd) handed
    // over: taken while no other thread exists (it edits the environment).
    let (inherited, inherit_warnings) = crate::runtime::Inherited::from_env();
    let ready_pipe = crate::runtime::upgrade::take_ready_pipe();
    if let Command::Run(a) = &mut cli.command {
        let given =
            |m: &clap::ArgMatches| m.value_source("cpu_priority") == Some(clap::parser::ValueSource::CommandLine);
        a.priority_given = matches.subcommand_matches("run").is_some_and(given);
    }
    init_logging(!matches!(cli.command, Command::Run(_)));
    for w in inherit_warnings {
        tracing::warn!("{w}");
    }
    let result = match cli.command {
        Command::Run(a) => run::main(*a, inherited, ready_pipe),
        Command::Devices(a) => devices::main(a),
        Command::Bench(b) => bench::main(b),
        Command::Scan(a) => scan::main(a),
        Command::Verify(a) => verify::main(a),
        Command::Size(a) => size::main(a),
        Command::Status(a) => status::main(a),
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::from(1)
        }
    }
}
