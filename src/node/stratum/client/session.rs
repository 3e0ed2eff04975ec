//! The event loop of a session, the same for both protocols: messages from
//! the pool, hits from the engines, and a tick (the stop, liveness, ntime
//! rolling, the announced rate, the primary probe); at the stop, the drain.
//! What differs between V1 and V2 is behind the [`Session`] trait.

use std::time::{Duration, Instant};

use tokio::sync::mpsc;

use super::probe::PrimaryProbe;
use super::{Client, End, MAX_BAD_IN_A_ROW, STOP_DRAIN, TICK};
use crate::sched::Hit;

/// What both protocols' connections track for liveness.
pub(super) struct Liveness {
    pub(super) bad_in_a_row: u32,
    pub(super) last_rx: Instant,
}

impl Liveness {
    pub(super) fn new() -> Liveness {
        Liveness { bad_in_a_row: 0, last_rx: Instant::now() }
    }
}

/// One protocol's connection, as the loop drives it.
pub(super) trait Session {
    /// What the connection's reader task delivers.
    type Event;
    fn liveness(&mut self) -> &mut Liveness;
    /// A request unanswered for longer than `limit` whose answer the
    /// session cannot go on without (V1: any but the optional ones; V2: the
    /// setup and the channel's opening, never shares).
    fn overdue(&self, limit: Duration) -> bool;
    /// Shares sent whose fate the pool has not told yet.
    fn awaiting_answers(&self) -> bool;
    /// A message, a bad message or the end of the connection (`None` once
    /// the reader is gone).
    async fn on_event(client: &mut Client, conn: &mut Self, ev: Option<Self::Event>) -> Result<(), End>;
    async fn on_hit(client: &mut Client, conn: &mut Self, hit: Hit) -> Result<(), End>;
    /// The tick's protocol part: ntime rolling, the announced rate.
    async fn on_tick(client: &mut Client, conn: &mut Self) -> Result<(), End>;
}

impl Client {
    /// Runs a connected session until it ends.
    pub(super) async fn drive<S: Session>(
        &mut self,
        conn: &mut S,
        rx: &mut mpsc::Receiver<S::Event>,
        hrx: &mut mpsc::Receiver<Hit>,
        on_backup_since: Option<Instant>,
    ) -> End {
        let mut tick = tokio::time::interval(TICK);
        let mut probe = PrimaryProbe::new();
        loop {
            let r = tokio::select! {
                ev = rx.recv() => self.event(conn, ev).await,
                Some(h) = hrx.recv() => S::on_hit(self, conn, h).await,
                _ = tick.tick() => {
                    if self.stopped() {
                        return self.finish(conn, rx, hrx).await;
                    }
                    self.tick(conn, &mut probe, on_backup_since).await
                }
            };
            if let Err(end) = r {
                return end;
            }
        }
    }

    async fn event<S: Session>(&mut self, conn: &mut S, ev: Option<S::Event>) -> Result<(), End> {
        S::on_event(self, conn, ev).await?;
        if conn.liveness().bad_in_a_row > MAX_BAD_IN_A_ROW {
            tracing::error!("stratum: {MAX_BAD_IN_A_ROW} bad messages in a row; reconnecting");
            return Err(End::Protocol);
        }
        Ok(())
    }

    async fn tick<S: Session>(
        &mut self,
        conn: &mut S,
        probe: &mut PrimaryProbe,
        on_backup_since: Option<Instant>,
    ) -> Result<(), End> {
        let limit = Duration::from_secs(self.opts.response_timeout_secs.max(1));
        if conn.overdue(limit) {
            tracing::warn!("stratum: no answer from the pool within {limit:?}");
            return Err(End::Timeout);
        }
        if conn.liveness().last_rx.elapsed() > Duration::from_secs(self.opts.idle_timeout_secs.max(1)) {
            tracing::warn!("stratum: nothing from the pool for {}s", self.opts.idle_timeout_secs);
            return Err(End::Timeout);
        }
        S::on_tick(self, conn).await?;
        if let Some(since) = on_backup_since {
            if probe.primary_back(since, &self.opts, &self.pools[0].host, self.pools[0].port).await {
                return Err(End::PrimaryBack);
            }
        }
        Ok(())
    }

    /// The stop, connected: submit the hits the engines left (the bridge
    /// closes the channel once they are all through) and wait for the
    /// pool's answers, for at most [`STOP_DRAIN`].
    async fn finish<S: Session>(
        &mut self,
        conn: &mut S,
        rx: &mut mpsc::Receiver<S::Event>,
        hrx: &mut mpsc::Receiver<Hit>,
    ) -> End {
        let deadline = tokio::time::Instant::now() + STOP_DRAIN;
        let mut hits_open = true;
        while hits_open || conn.awaiting_answers() {
            tokio::select! {
                h = hrx.recv(), if hits_open => match h {
                    Some(h) => {
                        if S::on_hit(self, conn, h).await.is_err() {
                            break;
                        }
                    }
                    None => hits_open = false,
                },
                ev = rx.recv() => {
                    if S::on_event(self, conn, ev).await.is_err() {
                        break;
                    }
                }
                _ = tokio::time::sleep_until(deadline) => {
                    tracing::warn!("stratum: stopping with shares unanswered after {STOP_DRAIN:?}");
                    break;
                }
            }
        }
        End::Stopped
    }
}
