//! One connection's writer: answers in the order they are ready, each write
//! bounded by `write_timeout`.

use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncWrite, AsyncWriteExt, BufWriter};
use tokio::sync::{mpsc, watch, OwnedSemaphorePermit};

use super::ctx::{closed, CloseCause, Ctx};

/// One frame on its way out, holding what bounds it until written: a
/// batch's budgets and in-flight slot, or a control-frame slot.
pub(super) struct Out {
    pub(super) bytes: Vec<u8>,
    pub(super) _permits: Vec<OwnedSemaphorePermit>,
}

pub(super) type Tx = mpsc::UnboundedSender<Out>;

/// Writes answers in order. Every write has `timeout` to finish: a client
/// that stops reading gets its connection closed (`dead` is raised, so the
/// reader stops too) instead of holding the server, at run time or at
/// shutdown. After a failed write the queue is still drained, so budgets
/// come back.
pub(super) async fn write_loop<W: AsyncWrite + Unpin>(
    w: W,
    mut rx: mpsc::UnboundedReceiver<Out>,
    timeout: Duration,
    dead: watch::Sender<bool>,
    ctx: Arc<Ctx>,
) {
    let mut w = BufWriter::with_capacity(64 << 10, w);
    let mut ok = true;
    let mut timed_out = false;
    while let Some(o) = rx.recv().await {
        put(&mut w, &o.bytes, timeout, &mut ok, &mut timed_out).await;
        drop(o);
        while let Ok(o) = rx.try_recv() {
            put(&mut w, &o.bytes, timeout, &mut ok, &mut timed_out).await;
        }
        if ok {
            match tokio::time::timeout(timeout, w.flush()).await {
                Ok(Ok(())) => {}
                Ok(Err(_)) => ok = false,
                Err(_) => (ok, timed_out) = (false, true),
            }
        }
        if !ok && !*dead.borrow() {
            let _ = dead.send(true);
            if timed_out {
                closed(&ctx, CloseCause::WriteTimeout);
                tracing::warn!("sigserve: a client did not read its answers within {timeout:?}; closing it");
            }
        }
    }
    if ok {
        let _ = tokio::time::timeout(timeout, w.shutdown()).await;
    }
}

async fn put<W: AsyncWrite + Unpin>(w: &mut W, bytes: &[u8], timeout: Duration, ok: &mut bool, timed_out: &mut bool) {
    if !*ok {
        return;
    }
    match tokio::time::timeout(timeout, w.write_all(bytes)).await {
        Ok(Ok(())) => {}
        Ok(Err(_)) => *ok = false,
        Err(_) => (*ok, *timed_out) = (false, true),
    }
}
