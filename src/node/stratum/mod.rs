//! Stratum client: mines for a pool, with failover between pools that speak
//! Stratum V1 (JSON lines, optionally in TLS) or Stratum V2 (binary frames in
//! a Noise channel authenticated by the pool's authority key).
//!
//! - `proto`: the V1 messages, parsed into consensus types (pure, unit-tested).
//! - `jobs`: the job book of one session: difficulty / extranonce / version
//!   mask per job, clean-job rules, the re-check and de-duplication of shares.
//! - `client`: the connection loop: negotiation, keepalive, submits, reconnects
//!   with backoff, failover to backup pools and back to the primary.
//! - `tls`: trust settings of `stratum+ssl://` pools; `transport` opens the
//!   connection (TCP, then TLS).
//! - `v2`: Stratum V2 (`stratum2+tcp://` pools): the Noise connection, the
//!   messages and the job book of a standard channel; the session itself runs
//!   in `client` beside V1's, so one failover list mixes both.
//!
//! docs/stratum.md describes what is negotiated, failover and what is logged.

pub mod client;
pub mod jobs;
pub mod proto;
pub mod tls;
mod transport;
pub mod v2;

use std::sync::atomic::AtomicBool;
use std::sync::Arc;

use crossbeam_channel::Receiver;
use serde::Deserialize;

use crate::metrics::Metrics;
use crate::sched::{Hit, PowScheduler, Stats};

/// One pool: `stratum+tcp://host:port` or `stratum+ssl://host:port`, worker
/// name and password, and for TLS pools whom to trust (see [`tls`]).
#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct PoolConfig {
    pub url: String,
    pub user: String,
    #[serde(default = "default_pass")]
    pub pass: String,
    /// PEM file of the CA certificates to trust instead of Mozilla's roots.
    #[serde(default)]
    pub tls_ca: Option<std::path::PathBuf>,
    /// SHA-256 of the pool's certificate (hex): trust exactly that one.
    #[serde(default)]
    pub tls_fingerprint: Option<String>,
}

impl PoolConfig {
    /// A pool with the default trust settings.
    pub fn new(url: impl Into<String>, user: impl Into<String>, pass: impl Into<String>) -> PoolConfig {
        PoolConfig { url: url.into(), user: user.into(), pass: pass.into(), tls_ca: None, tls_fingerprint: None }
    }
}

fn default_pass() -> String {
    "x".into()
}

/// How the client behaves; every field has a default (the `[stratum]` table
/// of the config file).
#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct StratumOptions {
    /// Ask for BIP310 version rolling with mining.configure.
    pub version_rolling: bool,
    /// The version mask asked for, as hex ("1fffe000").
    pub version_mask: String,
    /// Send mining.extranonce.subscribe (NiceHash-style extranonce changes).
    pub extranonce_subscribe: bool,
    /// Follow client.reconnect to another host (by default only the same host).
    pub allow_foreign_reconnect: bool,
    /// Failed connection attempts on a pool before failing over to the next.
    pub retries_before_failover: u32,
    /// First reconnect delay, doubled per failure up to `backoff_max_secs`.
    pub backoff_min_ms: u64,
    pub backoff_max_secs: u64,
    /// Time on a backup pool before trying the primary again.
    pub hold_down_secs: u64,
    /// Seconds between probes of the primary after the hold-down.
    pub probe_interval_secs: u64,
    /// No message from the pool for this long: the connection is dead.
    pub idle_timeout_secs: u64,
    /// No answer to a request for this long: the connection is dead.
    pub response_timeout_secs: u64,
    /// Longest one write to the pool may take (a pool that stops reading):
    /// then the connection counts as dead (reconnect cause `timeout`).
    pub write_timeout_secs: u64,
    /// Republish the current job with ntime advanced to real time this often
    /// (0: never roll ntime).
    pub ntime_roll_secs: u64,
    /// Shares kept while disconnected, oldest dropped first.
    pub max_queued_shares: usize,
    /// Lowest share difficulty taken from a pool: a lower
    /// mining.set_difficulty (a broken pool, or a man in the middle on
    /// stratum+tcp) is logged, counted and clamped to this, so the engines
    /// are not flooded with "shares" of every nonce. Shares found at the
    /// floor are shares at the pool's lower difficulty too.
    pub min_difficulty: f64,
    /// Stratum V1: after authorising, send mining.suggest_difficulty for
    /// one share per this many seconds at the measured hashrate (again when
    /// the rate moves by more than 2x); 0: never. Off by default: V1 has no
    /// way for a pool to say it takes the method, and some close the
    /// connection on a method they do not know.
    pub suggest_difficulty_secs: u64,
    /// Stratum V2: open an extended channel (coinbase and merkle root built
    /// here, extranonce rolled) even where the pool offers standard ones.
    pub v2_extended_channel: bool,
}

impl Default for StratumOptions {
    fn default() -> Self {
        StratumOptions {
            version_rolling: true,
            version_mask: format!("{:08x}", proto::DEFAULT_VERSION_MASK),
            extranonce_subscribe: true,
            allow_foreign_reconnect: false,
            retries_before_failover: 3,
            backoff_min_ms: 500,
            backoff_max_secs: 30,
            hold_down_secs: 300,
            probe_interval_secs: 30,
            idle_timeout_secs: 300,
            response_timeout_secs: 30,
            write_timeout_secs: 10,
            ntime_roll_secs: 30,
            max_queued_shares: 1024,
            min_difficulty: DEFAULT_MIN_DIFFICULTY,
            suggest_difficulty_secs: 0,
            v2_extended_channel: false,
        }
    }
}

/// Default floor on the share difficulty a pool may set: about one share
/// per 430 000 hashes (2^32 × 1e-4), 115 shares/s at 50 MH/s.
pub const DEFAULT_MIN_DIFFICULTY: f64 = 1e-4;

/// Upper bound of every time setting of `[stratum]` (a week): larger values
/// would overflow the timers' arithmetic and mean nothing anyway.
pub const MAX_OPTION_SECS: u64 = 7 * 86_400;

#[derive(Clone, Debug, Default, PartialEq)]
pub struct StratumConfig {
    /// The first is the primary; the rest are backups, in order.
    pub pools: Vec<PoolConfig>,
    pub options: StratumOptions,
}

#[derive(Debug, thiserror::Error)]
pub enum StratumError {
    #[error("no pool configured")]
    NoPools,
    #[error("pool URL {0:?}: {1}")]
    Url(String, &'static str),
    #[error("version_mask {0:?} is not 8 hex digits")]
    Mask(String),
    #[error("cannot start the network runtime: {0}")]
    Runtime(std::io::Error),
    #[error("pool {0}: {1}")]
    Tls(String, tls::TlsConfigError),
    #[error("pool {0}: tls_ca / tls_fingerprint need a stratum+ssl:// URL")]
    TlsOnPlain(String),
    #[error("[stratum] {0} must be {1}")]
    Option(&'static str, String),
}

/// Where a pool is, whether the connection is TLS, and for a Stratum V2 pool
/// the authority key its certificate must be signed with.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PoolUrl {
    pub host: String,
    pub port: u16,
    pub tls: bool,
    /// Set for `stratum2+tcp://` pools: the pool's authority public key
    /// (x-only, 32 bytes). There is no V2 without it: an unauthenticated
    /// Noise channel would only hide the hashrate thief, not stop him.
    pub authority: Option<[u8; 32]>,
}

/// `stratum+tcp://host:port` (also `tcp://host:port` and `host:port`),
/// `stratum+ssl://host:port` (also `stratum+tls://`, `ssl://`, `tls://`), or
/// `stratum2+tcp://host:port/AUTHORITY_PUBKEY` (the key in base58check, as
/// the Stratum V2 spec and pools write it).
pub fn parse_url(url: &str) -> Result<PoolUrl, StratumError> {
    let err = |why| StratumError::Url(url.to_owned(), why);
    let (rest, tls, v2) = if let Some((scheme, rest)) = url.split_once("://") {
        match scheme {
            "stratum+tcp" | "tcp" | "stratum" => (rest, false, false),
            "stratum+ssl" | "stratum+tls" | "ssl" | "tls" => (rest, true, false),
            "stratum2+tcp" => (rest, false, true),
            _ => return Err(err("scheme must be stratum+tcp://, stratum+ssl:// or stratum2+tcp://")),
        }
    } else {
        (url, false, false)
    };
    let (rest, authority) = if v2 {
        let (addr, key) = rest.split_once('/').ok_or(err("stratum2+tcp:// needs the pool's authority key: /KEY"))?;
        let key = v2::parse_authority_key(key.trim_end_matches('/'))
            .map_err(|_| err("the authority key is not a base58check Stratum V2 public key"))?;
        (addr, Some(key))
    } else {
        (rest.trim_end_matches('/'), None)
    };
    let (host, port) = rest.rsplit_once(':').ok_or(err("no :port"))?;
    let host = host.trim_start_matches('[').trim_end_matches(']');
    if host.is_empty() || host.contains('/') {
        return Err(err("no host"));
    }
    let port: u16 = port.parse().map_err(|_| err("bad port"))?;
    if port == 0 {
        return Err(err("port 0"));
    }
    Ok(PoolUrl { host: host.to_owned(), port, tls, authority })
}

impl StratumConfig {
    /// Checks every URL and the mask; what [`run`] would refuse, refused early.
    pub fn validate(&self) -> Result<(), StratumError> {
        if self.pools.is_empty() {
            return Err(StratumError::NoPools);
        }
        for p in &self.pools {
            let url = parse_url(&p.url)?;
            if url.tls {
                tls::client_config(p).map_err(|e| StratumError::Tls(p.url.clone(), e))?;
            } else if p.tls_ca.is_some() || p.tls_fingerprint.is_some() {
                // Also for V2: its trust is the authority key, never a CA.
                return Err(StratumError::TlsOnPlain(p.url.clone()));
            }
        }
        self.mask()?;
        self.options.validate()
    }

    pub fn mask(&self) -> Result<u32, StratumError> {
        let m = &self.options.version_mask;
        if m.len() != 8 {
            return Err(StratumError::Mask(m.clone()));
        }
        u32::from_str_radix(m, 16).map_err(|_| StratumError::Mask(m.clone()))
    }
}

impl StratumOptions {
    /// Every number within what the client's timers and queues can hold.
    pub fn validate(&self) -> Result<(), StratumError> {
        let o = self;
        let secs = [
            ("backoff_max_secs", o.backoff_max_secs),
            ("hold_down_secs", o.hold_down_secs),
            ("probe_interval_secs", o.probe_interval_secs),
            ("idle_timeout_secs", o.idle_timeout_secs),
            ("response_timeout_secs", o.response_timeout_secs),
            ("write_timeout_secs", o.write_timeout_secs),
            ("ntime_roll_secs", o.ntime_roll_secs),
            ("suggest_difficulty_secs", o.suggest_difficulty_secs),
        ];
        for (name, v) in secs {
            if v > MAX_OPTION_SECS {
                return Err(StratumError::Option(name, format!("at most {MAX_OPTION_SECS} (a week), got {v}")));
            }
        }
        if o.backoff_min_ms > MAX_OPTION_SECS * 1000 {
            return Err(StratumError::Option(
                "backoff_min_ms",
                format!("at most {} (a week), got {}", MAX_OPTION_SECS * 1000, o.backoff_min_ms),
            ));
        }
        if o.retries_before_failover > 1_000_000 {
            return Err(StratumError::Option("retries_before_failover", "at most 1000000".into()));
        }
        if o.max_queued_shares > 1_000_000 {
            return Err(StratumError::Option("max_queued_shares", "at most 1000000".into()));
        }
        if !(o.min_difficulty.is_finite() && o.min_difficulty > 0.0) {
            return Err(StratumError::Option("min_difficulty", format!("a positive number, got {}", o.min_difficulty)));
        }
        Ok(())
    }
}

/// Why a share ended as it did: the `reason` label of
/// `hashrig_pool_shares_total`, a fixed set.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ShareReason {
    /// Accepted.
    None,
    /// The pool: already submitted.
    Duplicate,
    /// The pool: above the target / low difficulty.
    LowDifficulty,
    /// The pool: stale, job not found, block changed.
    StaleJob,
    /// The pool: not authorised / not subscribed.
    Unauthorized,
    /// The pool: ntime or version outside what it allows.
    BadTimeOrVersion,
    /// The pool: anything else.
    Other,
    /// Not sent: its job was cleared before it could go out.
    JobGone,
    /// Not sent: the session changed (failover, new extranonce1).
    SessionChanged,
    /// Sent but never answered before the connection went.
    NoAnswer,
    /// Not sent: found while disconnected (or left over) when hashrig stopped.
    Shutdown,
}

impl ShareReason {
    pub fn label(self) -> &'static str {
        match self {
            ShareReason::None => "none",
            ShareReason::Duplicate => "duplicate",
            ShareReason::LowDifficulty => "low_difficulty",
            ShareReason::StaleJob => "stale_job",
            ShareReason::Unauthorized => "unauthorized",
            ShareReason::BadTimeOrVersion => "bad_time_or_version",
            ShareReason::Other => "other",
            ShareReason::JobGone => "job_gone",
            ShareReason::SessionChanged => "session_changed",
            ShareReason::NoAnswer => "no_answer",
            ShareReason::Shutdown => "shutdown",
        }
    }

    /// Classifies a pool's error (code and message as pools send them:
    /// 21 job not found / stale, 22 duplicate, 23 low difficulty, 24/25
    /// unauthorised / not subscribed).
    pub fn from_pool_error(text: &str) -> ShareReason {
        let t = text.to_ascii_lowercase();
        let code = t.split_whitespace().next().and_then(|c| c.parse::<i64>().ok());
        if t.contains("duplicate") || code == Some(22) {
            ShareReason::Duplicate
        } else if t.contains("stale") || t.contains("job not found") || t.contains("unknown job") || code == Some(21) {
            ShareReason::StaleJob
        } else if t.contains("low diff") || t.contains("above target") || t.contains("high-hash") || code == Some(23) {
            ShareReason::LowDifficulty
        } else if t.contains("unauthori") || t.contains("not subscribed") || code == Some(24) || code == Some(25) {
            ShareReason::Unauthorized
        } else if t.contains("time") || t.contains("version") {
            ShareReason::BadTimeOrVersion
        } else {
            ShareReason::Other
        }
    }

    /// A pool's rejection that means the share was stale rather than bad.
    pub fn is_stale(self) -> bool {
        matches!(
            self,
            ShareReason::StaleJob | ShareReason::JobGone | ShareReason::SessionChanged | ShareReason::Shutdown
        )
    }
}

/// The engines' measured hashrate (H/s), `None` until there is one: what
/// the client announces to pools. The adapter knows nothing of devices; the
/// runtime hands it this.
pub type RateSource = Arc<dyn Fn() -> Option<f64> + Send + Sync>;

/// What the Stratum client needs from the runtime besides its config.
pub struct ClientEnv {
    pub sched: Arc<PowScheduler>,
    pub stats: Arc<Stats>,
    pub metrics: Arc<Metrics>,
    pub rate: RateSource,
    pub stop: Arc<AtomicBool>,
}

/// Mines for the configured pools until `env.stop` is set.
pub fn run(cfg: StratumConfig, hits: Receiver<Hit>, env: ClientEnv) -> Result<(), StratumError> {
    cfg.validate()?;
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().map_err(StratumError::Runtime)?;
    rt.block_on(client::Client::new(cfg, env).run(hits));
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls() {
        let u = |host: &str, port, tls| PoolUrl { host: host.into(), port, tls, authority: None };
        assert_eq!(parse_url("stratum+tcp://pool.example.com:3333").unwrap(), u("pool.example.com", 3333, false));
        assert_eq!(parse_url("127.0.0.1:1").unwrap(), u("127.0.0.1", 1, false));
        assert_eq!(parse_url("stratum+tcp://[::1]:3333/").unwrap(), u("::1", 3333, false));
        assert_eq!(parse_url("stratum+ssl://pool.example.com:443").unwrap(), u("pool.example.com", 443, true));
        assert_eq!(parse_url("tls://[::1]:4433").unwrap(), u("::1", 4433, true));
        for bad in ["https://h:1", "http://h:1", "stratum+tcp://h", "stratum+ssl://:1", "h:0", "h:x"] {
            assert!(parse_url(bad).is_err(), "{bad}");
        }
    }

    /// The key of the reference implementation's example pool configs
    /// (pool-config-example.toml: authority_public_key).
    const SRI_EXAMPLE_KEY: &str = "9auqWEzQDVyd2oe1JVGFLMLHZtCo2FFqZwtKA5gd9xbuEu7PH72";

    #[test]
    fn v2_urls_carry_the_authority_key() {
        let u = parse_url(&format!("stratum2+tcp://pool.example.com:34254/{SRI_EXAMPLE_KEY}")).unwrap();
        assert_eq!((u.host.as_str(), u.port, u.tls), ("pool.example.com", 34254, false));
        assert_eq!(u.authority, Some(v2::parse_authority_key(SRI_EXAMPLE_KEY).unwrap()));
        // No key, a broken checksum, a V1 URL's path: refused, never plain V1.
        let mut broken = SRI_EXAMPLE_KEY.to_owned();
        broken.replace_range(5..6, if &broken[5..6] == "A" { "B" } else { "A" });
        for bad in [
            "stratum2+tcp://h:1".to_owned(),
            "stratum2+tcp://h:1/".to_owned(),
            format!("stratum2+tcp://h:1/{broken}"),
            format!("stratum2+tcp://h/{SRI_EXAMPLE_KEY}"),
        ] {
            assert!(parse_url(&bad).is_err(), "{bad}");
        }
        assert_eq!(parse_url("stratum+tcp://h:1").unwrap().authority, None);
    }

    #[test]
    fn tls_settings_are_checked_before_mining() {
        let cfg = |url: &str, fp: Option<&str>| StratumConfig {
            pools: vec![PoolConfig { tls_fingerprint: fp.map(Into::into), ..PoolConfig::new(url, "w", "x") }],
            options: StratumOptions::default(),
        };
        assert!(cfg("stratum+ssl://h:1", None).validate().is_ok());
        assert!(matches!(cfg("stratum+ssl://h:1", Some("nothex")).validate(), Err(StratumError::Tls(..))));
        assert!(matches!(
            cfg("stratum+tcp://h:1", Some(&"00".repeat(32))).validate(),
            Err(StratumError::TlsOnPlain(_))
        ));
    }

    #[test]
    fn options_out_of_range_are_errors_not_panics() {
        let cfg = |f: &dyn Fn(&mut StratumOptions)| {
            let mut options = StratumOptions::default();
            f(&mut options);
            StratumConfig { pools: vec![PoolConfig::new("stratum+tcp://h:1", "w", "x")], options }
        };
        assert!(cfg(&|_| {}).validate().is_ok());
        for f in [
            &(|o: &mut StratumOptions| o.backoff_max_secs = u64::MAX) as &dyn Fn(&mut StratumOptions),
            &|o| o.backoff_min_ms = u64::MAX,
            &|o| o.hold_down_secs = u64::MAX - 1,
            &|o| o.idle_timeout_secs = u64::MAX,
            &|o| o.response_timeout_secs = u64::MAX,
            &|o| o.probe_interval_secs = u64::MAX,
            &|o| o.ntime_roll_secs = u64::MAX,
            &|o| o.min_difficulty = 0.0,
            &|o| o.min_difficulty = f64::NAN,
        ] {
            assert!(matches!(cfg(f).validate(), Err(StratumError::Option(..))));
        }
    }

    #[test]
    fn reasons_are_a_fixed_set() {
        assert_eq!(ShareReason::from_pool_error("23 Low difficulty share"), ShareReason::LowDifficulty);
        assert_eq!(ShareReason::from_pool_error("21 Job not found"), ShareReason::StaleJob);
        assert_eq!(ShareReason::from_pool_error("22 Duplicate share"), ShareReason::Duplicate);
        assert_eq!(ShareReason::from_pool_error("-1 Stale"), ShareReason::StaleJob);
        assert_eq!(ShareReason::from_pool_error("20 ntime out of range"), ShareReason::BadTimeOrVersion);
        assert_eq!(ShareReason::from_pool_error("whatever"), ShareReason::Other);
    }
}
