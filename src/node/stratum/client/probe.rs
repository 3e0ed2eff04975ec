//! The way back to the primary pool while mining on a backup.

use std::time::{Duration, Instant};

use tokio::net::TcpStream;

use crate::node::stratum::StratumOptions;

/// While mining on a backup pool: a TCP connect to the primary every
/// `probe_interval_secs` once `hold_down_secs` have passed since the
/// failover (at most one probe in flight), for both protocols' sessions.
pub(super) struct PrimaryProbe {
    task: Option<tokio::task::JoinHandle<bool>>,
    last: Instant,
}

impl PrimaryProbe {
    pub(super) fn new() -> PrimaryProbe {
        PrimaryProbe { task: None, last: Instant::now() }
    }

    /// True once a probe reached the primary; starts the next when due.
    pub(super) async fn primary_back(&mut self, since: Instant, opts: &StratumOptions, host: &str, port: u16) -> bool {
        if let Some(p) = self.task.take_if(|p| p.is_finished()) {
            if p.await.unwrap_or(false) {
                return true;
            }
        }
        let hold = Duration::from_secs(opts.hold_down_secs);
        let every = Duration::from_secs(opts.probe_interval_secs.max(1));
        if self.task.is_none()
            && since.elapsed() >= hold
            && self.last.elapsed() >= every.min(hold.max(Duration::from_secs(1)))
        {
            self.last = Instant::now();
            let host = host.to_string();
            self.task = Some(tokio::spawn(async move {
                let connect = TcpStream::connect((host.as_str(), port));
                matches!(tokio::time::timeout(Duration::from_secs(5), connect).await, Ok(Ok(_)))
            }));
        }
        false
    }
}
