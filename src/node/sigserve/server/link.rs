//! What a connection's reader shares with its answers ([`Link`]), and what
//! both wire formats' read loops build on: reads guarded by the stop, the
//! writer and a time limit; the byte, item and slot budgets a frame takes
//! as it arrives; control frames; and the submission of a parsed batch to
//! the engine with its answer arranged.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::io::{AsyncBufReadExt, AsyncRead, BufReader};
use tokio::sync::{watch, OwnedSemaphorePermit, Semaphore};

pub(super) use super::answer::Encoding;
use super::ctx::Ctx;
use super::write::{Out, Tx};
use crate::node::sigserve::frame::{self, ErrorCode};
use crate::sig::{Reason, SigItem, Verdict};

/// Why a connection stops being read.
#[derive(Debug)]
pub(super) enum Halt {
    /// The server is stopping.
    Stop,
    /// The writer gave up on this client.
    Dead,
    /// A begun frame (or line) did not arrive in time.
    ReadTimeout,
    /// Nothing in flight and nothing sent for the idle timeout.
    Idle,
    /// End of stream or a read error (`true`: inside a frame).
    Eof(bool),
}

/// What a connection's reader shares with its answers.
pub(super) struct Link {
    pub(super) tx: Tx,
    /// Batches in flight on this connection.
    pub(super) per_conn: Arc<Semaphore>,
    /// Control frames (PONG, ERROR 5, JSON error lines) queued and not yet
    /// written: while none is free the connection is not read.
    pub(super) ctrl: Arc<Semaphore>,
    /// Frame bytes this connection may hold without the global budget
    /// ([`CONN_ALLOWANCE`](super::ctx::CONN_ALLOWANCE)), so a small batch
    /// is read even while others' large frames hold the whole budget.
    pub(super) own: Arc<Semaphore>,
    pub(super) stop: watch::Receiver<bool>,
    pub(super) dead: watch::Receiver<bool>,
}

pub(super) async fn raised(rx: &mut watch::Receiver<bool>) {
    // A dropped sender counts as raised.
    let _ = rx.wait_for(|v| *v).await;
}

/// Runs `f` unless the server stops, the writer gives up, or `limit` passes.
pub(super) async fn guarded<F: std::future::Future>(
    link: &mut Link,
    limit: Option<Duration>,
    f: F,
) -> Result<F::Output, Halt> {
    let sleep = async {
        match limit {
            Some(d) => tokio::time::sleep(d).await,
            None => std::future::pending().await,
        }
    };
    tokio::select! {
        biased;
        _ = raised(&mut link.stop) => Err(Halt::Stop),
        _ = raised(&mut link.dead) => Err(Halt::Dead),
        r = f => Ok(r),
        _ = sleep => Err(Halt::ReadTimeout),
    }
}

/// An ERROR after which the connection closes: queued without a slot (one
/// per connection).
pub(super) fn send_fatal(ctx: &Ctx, link: &Link, code: ErrorCode, msg: &str) {
    count_error(ctx, Encoding::Binary);
    let _ = link.tx.send(Out { bytes: frame::encode_error(0, code, msg), _permits: Vec::new() });
}

/// An ERROR frame (or JSON error line) sent for a request in `enc`.
pub(super) fn count_error(ctx: &Ctx, enc: Encoding) {
    ctx.stats.errors_sent.fetch_add(1, Ordering::Relaxed);
    if let Some(m) = &ctx.metrics {
        m.sigserve_frames.with_label_values(&[enc.label(), "error"]).inc();
    }
}

/// A frame the connection survives (PONG, ERROR 5, a JSON error line):
/// waits for a control slot, so a client that never reads stops being read.
pub(super) async fn send_ctrl(link: &mut Link, bytes: Vec<u8>) -> Result<(), Halt> {
    let sem = link.ctrl.clone();
    let permit = guarded(link, None, sem.acquire_owned()).await?.map_err(|_| Halt::Stop)?;
    let _ = link.tx.send(Out { bytes, _permits: vec![permit] });
    Ok(())
}

/// Take `n` permits, unless the server stops or the writer gives up first.
pub(super) async fn take(sem: &Arc<Semaphore>, n: usize, link: &mut Link) -> Option<OwnedSemaphorePermit> {
    let n = u32::try_from(n).ok()?;
    guarded(link, None, sem.clone().acquire_many_owned(n)).await.ok()?.ok()
}

/// Waits for the next byte of a new frame or line. Only a connection with
/// nothing in flight can be idle.
pub(super) async fn wait_more<R: AsyncRead + Unpin>(
    rd: &mut BufReader<R>,
    ctx: &Ctx,
    link: &mut Link,
) -> Result<(), Halt> {
    loop {
        match guarded(link, Some(ctx.cfg.idle_timeout), rd.fill_buf()).await {
            Ok(Ok(b)) if !b.is_empty() => return Ok(()),
            Ok(_) => return Err(Halt::Eof(false)),
            Err(Halt::ReadTimeout) => {
                if link.per_conn.available_permits() == ctx.cfg.max_inflight_per_conn {
                    return Err(Halt::Idle);
                }
            }
            Err(h) => return Err(h),
        }
    }
}

/// Appends exactly `n` bytes to `buf`, taking them from the byte budget as
/// they arrive (never from a length the peer announced): first from the
/// connection's own allowance, then from the global budget. Reading and
/// waiting for budget both come out of what is `left` of the frame's read
/// time, so frames that together wait on a spent budget time out and give
/// it back instead of waiting on each other for ever.
pub(super) async fn read_budgeted<R: AsyncRead + Unpin>(
    rd: &mut BufReader<R>,
    ctx: &Ctx,
    link: &mut Link,
    buf: &mut Vec<u8>,
    n: usize,
    permits: &mut Vec<OwnedSemaphorePermit>,
    left: &mut Duration,
) -> Result<(), Halt> {
    let end = buf.len() + n;
    while buf.len() < end {
        let t0 = Instant::now();
        let avail = match guarded(link, Some(*left), rd.fill_buf()).await? {
            Ok(b) if !b.is_empty() => b,
            _ => return Err(Halt::Eof(true)),
        };
        let k = avail.len().min(end - buf.len());
        buf.extend_from_slice(&avail[..k]);
        rd.consume(k);
        permits.push(budget(ctx, link, k, t0, left).await?);
    }
    Ok(())
}

/// `k` bytes of budget (k ≤ 64 KiB, the read buffer), within `left`.
pub(super) async fn budget(
    ctx: &Ctx,
    link: &mut Link,
    k: usize,
    t0: Instant,
    left: &mut Duration,
) -> Result<OwnedSemaphorePermit, Halt> {
    let k = u32::try_from(k).map_err(|_| Halt::Eof(true))?;
    let p = match link.own.clone().try_acquire_many_owned(k) {
        Ok(p) => p,
        Err(_) => {
            let remaining = left.saturating_sub(t0.elapsed());
            guarded(link, Some(remaining), ctx.bytes.clone().acquire_many_owned(k)).await?.map_err(|_| Halt::Stop)?
        }
    };
    *left = left.saturating_sub(t0.elapsed());
    Ok(p)
}

/// Accept one parsed batch: take its budgets, queue it, and arrange its
/// answer. An error means the connection should stop reading (the server is
/// stopping: the batch is answered with ShuttingDown).
pub(super) async fn submit(
    ctx: &Arc<Ctx>,
    link: &mut Link,
    id: u64,
    deadline: Option<Instant>,
    parsed: Vec<Result<SigItem, Reason>>,
    mut permits: Vec<OwnedSemaphorePermit>,
    enc: Encoding,
) -> Result<(), Halt> {
    let shutting = |ctx: &Ctx, link: &Link| {
        count_error(ctx, enc);
        let bytes = enc.error(id, ErrorCode::ShuttingDown, "server is shutting down");
        let _ = link.tx.send(Out { bytes, _permits: Vec::new() });
    };
    let per_conn = link.per_conn.clone();
    let Some(conn_permit) = take(&per_conn, 1, link).await else {
        shutting(ctx, link);
        return Err(Halt::Stop);
    };
    let Some(items_permit) = take(&ctx.items, parsed.len().max(1), link).await else {
        shutting(ctx, link);
        return Err(Halt::Stop);
    };
    permits.push(conn_permit);
    permits.push(items_permit);
    ctx.stats.batches_accepted.fetch_add(1, Ordering::Relaxed);
    let mut verdicts: Vec<Verdict> = Vec::with_capacity(parsed.len());
    let mut items = Vec::with_capacity(parsed.len());
    let mut at = Vec::with_capacity(parsed.len());
    for (i, p) in parsed.into_iter().enumerate() {
        match p {
            Ok(it) => {
                verdicts.push(Verdict::Valid);
                items.push(it);
                at.push(i);
            }
            Err(r) => verdicts.push(Verdict::Invalid(r)),
        }
    }
    let tx = link.tx.clone();
    let c = ctx.clone();
    let answer = move |verdicts: Vec<Verdict>| {
        let bytes = enc.verdicts(id, &verdicts);
        c.stats.batches_answered.fetch_add(1, Ordering::Relaxed);
        c.stats.items_answered.fetch_add(verdicts.len() as u64, Ordering::Relaxed);
        if let Some(m) = &c.metrics {
            m.sigserve_frames.with_label_values(&[enc.label(), "ok"]).inc();
        }
        let _ = tx.send(Out { bytes, _permits: permits });
    };
    if items.is_empty() {
        answer(verdicts);
    } else {
        ctx.engine.submit(items, deadline, move |rep| {
            let mut verdicts = verdicts;
            for (&i, v) in at.iter().zip(rep.verdicts) {
                verdicts[i] = v;
            }
            answer(verdicts);
        });
    }
    Ok(())
}
