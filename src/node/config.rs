//! Which node adapter `hashrig run` uses, from the command line and an
//! optional TOML file (`--config FILE`). Flags given on the command line win
//! over the file. See the README's "Mining on a pool or your own node".
//!
//! ```toml
//! [[pool]]
//! url = "stratum+tcp://pool.example.com:3333"
//! user = "bc1q….rig1"
//! pass = "x"
//!
//! [[pool]]             # a backup, Stratum V2: the key is the pool's authority key
//! url = "stratum2+tcp://pool.example.com:34254/9auqWEzQDVyd2oe1JVGFLMLHZtCo2FFqZwtKA5gd9xbuEu7PH72"
//! user = "bc1q….rig1"
//!
//! [stratum]            # optional, every key has a default
//! hold_down_secs = 300
//!
//! [node]               # solo mining instead of a pool
//! url = "http://127.0.0.1:8332"
//! rpc_cookie = "/home/me/.bitcoin/.cookie"
//! payout = "bc1q…"
//! ```
//!
//! A V2 pool gets a standard channel (header-only work), or an extended one
//! when it requires one; docs/stratum.md has the details.

use std::path::{Path, PathBuf};

use clap::Args;
use serde::Deserialize;

use crate::node::gbt::{GbtConfig, RpcAuth};
use crate::node::stratum::{PoolConfig, StratumConfig, StratumOptions};

/// Node adapter flags of `hashrig run`.
#[derive(Args, Debug, Clone, Default)]
pub struct AdapterArgs {
    /// TOML file with [[pool]], [stratum] and/or [node] sections.
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Mine on a Stratum V1 pool (stratum+tcp://HOST:PORT, or stratum+ssl://
    /// trusting Mozilla's roots; other trust in the config file) or a Stratum
    /// V2 pool (stratum2+tcp://HOST:PORT/AUTHORITY_PUBKEY); repeat for
    /// failover, the first is the primary.
    #[arg(long, value_name = "URL")]
    pub pool: Vec<String>,
    /// Pool worker name; once for all pools or once per --pool.
    #[arg(long, value_name = "USER")]
    pub user: Vec<String>,
    /// Pool password; once for all pools or once per --pool (default "x").
    /// Visible to every local user (/proc/PID/cmdline): for a real secret
    /// use --pass-file or the HASHRIG_POOL_PASS environment variable.
    #[arg(long, value_name = "PASS", conflicts_with = "pass_file")]
    pub pass: Vec<String>,
    /// File whose first line is the pool password (for every --pool).
    #[arg(long, value_name = "FILE")]
    pub pass_file: Option<PathBuf>,
    /// Solo mine on a node's RPC (http://HOST:PORT) with getblocktemplate.
    #[arg(long, value_name = "URL", conflicts_with = "pool")]
    pub node: Option<String>,
    /// The node's RPC user (with --rpc-pass; or use --rpc-cookie).
    #[arg(long, value_name = "USER", conflicts_with = "rpc_cookie")]
    pub rpc_user: Option<String>,
    /// The node's RPC password. Visible to every local user: prefer
    /// --rpc-cookie, --rpc-pass-file or HASHRIG_RPC_PASS.
    #[arg(long, value_name = "PASS", requires = "rpc_user", conflicts_with = "rpc_pass_file")]
    pub rpc_pass: Option<String>,
    /// File whose first line is the node's RPC password (with --rpc-user).
    #[arg(long, value_name = "FILE", requires = "rpc_user")]
    pub rpc_pass_file: Option<PathBuf>,
    /// The node's .cookie file (instead of --rpc-user/--rpc-pass).
    #[arg(long, value_name = "FILE")]
    pub rpc_cookie: Option<PathBuf>,
    /// Address the block reward is paid to (any type valid on the node's chain).
    #[arg(long, value_name = "ADDRESS")]
    pub payout: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileConfig {
    #[serde(default)]
    pool: Vec<PoolConfig>,
    stratum: Option<StratumOptions>,
    node: Option<NodeSection>,
    // The runtime's own keys, read by `runtime::file`.
    #[allow(dead_code)]
    log_level: Option<toml::Value>,
    #[allow(dead_code)]
    cpu: Option<toml::Value>,
    #[allow(dead_code)]
    sig: Option<toml::Value>,
    #[allow(dead_code)]
    metrics: Option<toml::Value>,
    #[allow(dead_code)]
    sigserve: Option<toml::Value>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct NodeSection {
    url: String,
    rpc_user: Option<String>,
    rpc_pass: Option<String>,
    rpc_cookie: Option<PathBuf>,
    payout: Option<String>,
    coinbase_tag: Option<String>,
    poll_secs: Option<u64>,
    longpoll: Option<bool>,
    blocks_dir: Option<PathBuf>,
    rpc_timeout_secs: Option<u64>,
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read {0}: {1}")]
    Read(PathBuf, std::io::Error),
    #[error("{0}: {1}")]
    Toml(PathBuf, String),
    #[error("{0}")]
    Invalid(String),
}

/// The node adapter to run.
#[derive(Debug, Clone, PartialEq)]
pub enum Adapter {
    Demo,
    Pool(StratumConfig),
    Solo(GbtConfig),
}

fn per_pool(values: &[String], n: usize, what: &str) -> Result<Vec<Option<String>>, ConfigError> {
    match values.len() {
        0 => Ok(vec![None; n]),
        1 => Ok(vec![Some(values[0].clone()); n]),
        k if k == n => Ok(values.iter().cloned().map(Some).collect()),
        k => Err(ConfigError::Invalid(format!("{k} {what} values for {n} pools: give one for all or one per --pool"))),
    }
}

/// Reads the config file. One that other users may read and that holds a
/// password gets a warning (it should be 0600 or 0640).
pub fn load_file(path: &Path) -> Result<String, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|e| ConfigError::Read(path.to_owned(), e))?;
    #[cfg(unix)]
    if let Ok(md) = std::fs::metadata(path) {
        use std::os::unix::fs::PermissionsExt;
        let mode = md.permissions().mode();
        let secret = text.lines().any(|l| {
            let k = l.trim_start();
            k.starts_with("pass") || k.starts_with("rpc_pass")
        });
        if secret && mode & 0o004 != 0 {
            tracing::warn!(
                "{} holds a password and every local user may read it (mode {:o}); chmod 600 (or 640 for a group)",
                path.display(),
                mode & 0o777
            );
        }
    }
    Ok(text)
}

/// The first line of a password file, without its line end.
fn read_secret(path: &Path, what: &str) -> Result<String, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|e| ConfigError::Read(path.to_owned(), e))?;
    let line = text.lines().next().unwrap_or("").trim_end_matches('\r').to_owned();
    if line.is_empty() {
        return Err(ConfigError::Invalid(format!("{what} file {} is empty", path.display())));
    }
    Ok(line)
}

/// A TOML error without the text around it: the line at fault may hold a
/// password, and error output ends up in logs.
fn toml_error(text: &str, e: &toml::de::Error) -> String {
    match e.span() {
        Some(span) => {
            let before = &text[..span.start.min(text.len())];
            let line = before.matches('\n').count() + 1;
            let col = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
            format!("line {line}, column {col}: {}", e.message())
        }
        None => e.message().to_owned(),
    }
}

/// Warnings for secrets given where other local users can read them.
pub fn secret_warnings(a: &AdapterArgs) -> Vec<String> {
    let mut w = Vec::new();
    if a.pass.iter().any(|p| p != "x") {
        w.push(
            "--pass is visible to every local user (ps, /proc); use --pass-file FILE or HASHRIG_POOL_PASS".to_owned(),
        );
    }
    if a.rpc_pass.is_some() {
        w.push(
            "--rpc-pass is visible to every local user (ps, /proc); use --rpc-cookie, --rpc-pass-file FILE or HASHRIG_RPC_PASS"
                .to_owned(),
        );
    }
    w
}

/// Resolves the flags and the file text (when `--config` is given) into one adapter.
pub fn resolve(a: &AdapterArgs, file_text: Option<&str>) -> Result<Adapter, ConfigError> {
    let path = a.config.clone().unwrap_or_default();
    let file: FileConfig = match file_text {
        Some(t) => toml::from_str(t).map_err(|e| ConfigError::Toml(path, toml_error(t, &e)))?,
        None => FileConfig::default(),
    };
    let options = file.stratum.unwrap_or_default();
    if !a.pool.is_empty() {
        let users = per_pool(&a.user, a.pool.len(), "--user")?;
        let pass_from = match (&a.pass_file, std::env::var("HASHRIG_POOL_PASS")) {
            (Some(f), _) => vec![read_secret(f, "--pass-file")?],
            (None, Ok(p)) if a.pass.is_empty() && !p.is_empty() => vec![p],
            _ => a.pass.clone(),
        };
        let passes = per_pool(&pass_from, a.pool.len(), "--pass")?;
        let mut pools = Vec::new();
        for (i, url) in a.pool.iter().enumerate() {
            let user = users[i].clone().ok_or_else(|| ConfigError::Invalid("--pool needs --user".into()))?;
            pools.push(PoolConfig::new(url.clone(), user, passes[i].clone().unwrap_or_else(|| "x".into())));
        }
        let cfg = StratumConfig { pools, options };
        cfg.validate().map_err(|e| ConfigError::Invalid(e.to_string()))?;
        return Ok(Adapter::Pool(cfg));
    }
    let node_url = a.node.clone().or(file.node.as_ref().map(|n| n.url.clone()));
    if let Some(url) = node_url {
        if !file.pool.is_empty() && a.node.is_none() {
            return Err(ConfigError::Invalid("the config file has both [[pool]] and [node]; keep one".into()));
        }
        let n = file.node.as_ref();
        let user = a.rpc_user.clone().or(n.and_then(|n| n.rpc_user.clone()));
        let pass = match &a.rpc_pass_file {
            Some(f) => Some(read_secret(f, "--rpc-pass-file")?),
            None => a.rpc_pass.clone(),
        };
        let env_pass = std::env::var("HASHRIG_RPC_PASS").ok().filter(|p| !p.is_empty());
        let pass = pass.or(env_pass.filter(|_| user.is_some())).or(n.and_then(|n| n.rpc_pass.clone()));
        let cookie = a.rpc_cookie.clone().or(n.and_then(|n| n.rpc_cookie.clone()));
        let auth = match (user, pass, cookie) {
            (Some(user), Some(pass), None) => RpcAuth::UserPass { user, pass },
            (None, None, Some(c)) => RpcAuth::Cookie(c),
            (None, None, None) => {
                return Err(ConfigError::Invalid("--node needs --rpc-user and --rpc-pass, or --rpc-cookie".into()))
            }
            _ => return Err(ConfigError::Invalid("give either --rpc-user with --rpc-pass, or --rpc-cookie".into())),
        };
        let payout = a
            .payout
            .clone()
            .or(n.and_then(|n| n.payout.clone()))
            .ok_or_else(|| ConfigError::Invalid("--node needs --payout ADDRESS".into()))?;
        if !(url.starts_with("http://")) {
            return Err(ConfigError::Invalid(format!("node URL {url:?} must start with http://")));
        }
        let d = GbtConfig::default();
        let rpc_timeout_secs = n.and_then(|n| n.rpc_timeout_secs).unwrap_or(d.rpc_timeout_secs);
        if !(1..=crate::node::stratum::MAX_OPTION_SECS).contains(&rpc_timeout_secs) {
            return Err(ConfigError::Invalid(format!(
                "[node] rpc_timeout_secs: from 1 to {} (a week), got {rpc_timeout_secs}",
                crate::node::stratum::MAX_OPTION_SECS
            )));
        }
        return Ok(Adapter::Solo(GbtConfig {
            url,
            auth,
            payout,
            coinbase_tag: n.and_then(|n| n.coinbase_tag.clone()).unwrap_or(d.coinbase_tag),
            poll_secs: n.and_then(|n| n.poll_secs).unwrap_or(d.poll_secs),
            longpoll: n.and_then(|n| n.longpoll).unwrap_or(d.longpoll),
            blocks_dir: n.and_then(|n| n.blocks_dir.clone()).unwrap_or(d.blocks_dir),
            rpc_timeout_secs,
        }));
    }
    if !file.pool.is_empty() {
        let cfg = StratumConfig { pools: file.pool, options };
        cfg.validate().map_err(|e| ConfigError::Invalid(e.to_string()))?;
        return Ok(Adapter::Pool(cfg));
    }
    if !a.user.is_empty() || !a.pass.is_empty() {
        return Err(ConfigError::Invalid("--user/--pass without --pool".into()));
    }
    if a.payout.is_some() || a.rpc_user.is_some() || a.rpc_cookie.is_some() {
        return Err(ConfigError::Invalid("--payout/--rpc-* without --node".into()));
    }
    Ok(Adapter::Demo)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flags_and_files() {
        assert_eq!(resolve(&AdapterArgs::default(), None).unwrap(), Adapter::Demo);
        let a = AdapterArgs {
            pool: vec!["stratum+tcp://a:1".into(), "stratum+tcp://b:2".into()],
            user: vec!["u".into()],
            ..Default::default()
        };
        let Adapter::Pool(c) = resolve(&a, None).unwrap() else { panic!() };
        assert_eq!(c.pools[1].user, "u");
        assert_eq!(c.pools[1].pass, "x");
        let a = AdapterArgs { user: vec!["u".into(), "v".into(), "w".into()], ..a };
        assert!(resolve(&a, None).is_err());
        let file = "[[pool]]\nurl = \"stratum+tcp://p:3333\"\nuser = \"w\"\n[stratum]\nhold_down_secs = 5\n";
        let Adapter::Pool(c) = resolve(&AdapterArgs::default(), Some(file)).unwrap() else { panic!() };
        assert_eq!((c.pools.len(), c.options.hold_down_secs, c.options.version_rolling), (1, 5, true));
        assert!(resolve(&AdapterArgs::default(), Some("[[pool]]\nurl = 5\n")).is_err());
        assert!(resolve(&AdapterArgs::default(), Some("bogus = 1\n")).is_err());
        let file = "[node]\nurl = \"http://127.0.0.1:18443\"\nrpc_cookie = \"/c\"\npayout = \"bcrt1q\"\n";
        let Adapter::Solo(g) = resolve(&AdapterArgs::default(), Some(file)).unwrap() else { panic!() };
        assert_eq!(g.auth, RpcAuth::Cookie("/c".into()));
        let a = AdapterArgs { node: Some("http://h:1".into()), ..Default::default() };
        assert!(resolve(&a, None).is_err(), "no auth, no payout");
    }

    #[test]
    fn v1_and_v2_pools_mix_in_one_list() {
        let key = "9auqWEzQDVyd2oe1JVGFLMLHZtCo2FFqZwtKA5gd9xbuEu7PH72";
        let file = format!(
            "[[pool]]\nurl = \"stratum2+tcp://v2.example:34254/{key}\"\nuser = \"w\"\n\
             [[pool]]\nurl = \"stratum+tcp://v1.example:3333\"\nuser = \"w\"\n"
        );
        let Adapter::Pool(c) = resolve(&AdapterArgs::default(), Some(&file)).unwrap() else { panic!() };
        assert_eq!(c.pools.len(), 2);
        c.validate().unwrap();
        assert!(crate::node::stratum::parse_url(&c.pools[0].url).unwrap().authority.is_some());
        // A key with a typo is refused before mining, never mined without.
        let typo = file.replace("9auq", "9auQ");
        assert!(resolve(&AdapterArgs::default(), Some(&typo)).is_err());
    }

    #[test]
    fn write_and_rpc_timeouts_are_read_and_range_checked() {
        let pool = "[[pool]]\nurl = \"stratum+tcp://p:3333\"\nuser = \"w\"\n[stratum]\n";
        let Adapter::Pool(c) = resolve(&AdapterArgs::default(), Some(pool)).unwrap() else { panic!() };
        assert_eq!(c.options.write_timeout_secs, 10);
        let file = format!("{pool}write_timeout_secs = 2\n");
        let Adapter::Pool(c) = resolve(&AdapterArgs::default(), Some(&file)).unwrap() else { panic!() };
        assert_eq!(c.options.write_timeout_secs, 2);
        assert!(
            resolve(&AdapterArgs::default(), Some(&format!("{pool}write_timeout_secs = {}\n", u64::MAX / 2))).is_err()
        );
        let node = "[node]\nurl = \"http://127.0.0.1:18443\"\nrpc_cookie = \"/c\"\npayout = \"bcrt1q\"\n";
        let Adapter::Solo(g) = resolve(&AdapterArgs::default(), Some(node)).unwrap() else { panic!() };
        assert_eq!(g.rpc_timeout_secs, 60);
        let Adapter::Solo(g) =
            resolve(&AdapterArgs::default(), Some(&format!("{node}rpc_timeout_secs = 1\n"))).unwrap()
        else {
            panic!()
        };
        assert_eq!(g.rpc_timeout_secs, 1);
        for bad in [0, u64::MAX / 2] {
            assert!(resolve(&AdapterArgs::default(), Some(&format!("{node}rpc_timeout_secs = {bad}\n"))).is_err());
        }
    }

    #[test]
    fn toml_errors_do_not_quote_the_file() {
        let file = "[[pool]]\nurl = \"stratum+tcp://p:3333\"\nuser = \"w\"\npass = \"hunter2\" oops\n";
        let e = resolve(&AdapterArgs::default(), Some(file)).unwrap_err().to_string();
        assert!(!e.contains("hunter2"), "{e}");
        assert!(e.contains("line 4"), "{e}");
    }

    #[test]
    fn passwords_from_a_file() {
        let dir = std::env::temp_dir().join(format!("hashrig-pass-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let f = dir.join("pass");
        std::fs::write(&f, "s3cret\n").unwrap();
        let a = AdapterArgs {
            pool: vec!["stratum+tcp://a:1".into()],
            user: vec!["u".into()],
            pass_file: Some(f.clone()),
            ..Default::default()
        };
        let Adapter::Pool(c) = resolve(&a, None).unwrap() else { panic!() };
        assert_eq!(c.pools[0].pass, "s3cret");
        let a = AdapterArgs {
            node: Some("http://h:1".into()),
            rpc_user: Some("alice".into()),
            rpc_pass_file: Some(f),
            payout: Some("bcrt1q".into()),
            ..Default::default()
        };
        let Adapter::Solo(g) = resolve(&a, None).unwrap() else { panic!() };
        assert_eq!(g.auth, RpcAuth::UserPass { user: "alice".into(), pass: "s3cret".into() });
        std::fs::remove_dir_all(&dir).unwrap();
        let warn = secret_warnings(&AdapterArgs { pass: vec!["s3cret".into()], ..Default::default() });
        assert_eq!(warn.len(), 1);
        assert!(secret_warnings(&AdapterArgs { pass: vec!["x".into()], ..Default::default() }).is_empty());
    }
}
