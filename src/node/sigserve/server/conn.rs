//! One connection: a writer task for its answers, and a reader whose
//! first bytes pick the wire format (binary frames or JSON lines).

use std::sync::Arc;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, BufReader};
use tokio::sync::{mpsc, watch, Semaphore};

use super::binary::binary_loop;
use super::ctx::{closed, CloseCause, Ctx, CONN_ALLOWANCE};
use super::json::json_loop;
use super::link::{guarded, send_fatal, Halt, Link};
use super::write::write_loop;
use crate::node::sigserve::frame::ErrorCode;

pub(super) async fn serve_conn<S: AsyncRead + AsyncWrite + Send + 'static>(
    s: S,
    ctx: &Arc<Ctx>,
    stop: watch::Receiver<bool>,
) {
    let (rd, wr) = tokio::io::split(s);
    let (tx, rx) = mpsc::unbounded_channel();
    let (dead_tx, dead) = watch::channel(false);
    let writer = tokio::spawn(write_loop(wr, rx, ctx.cfg.write_timeout, dead_tx, ctx.clone()));
    let mut link = Link {
        tx,
        per_conn: Arc::new(Semaphore::new(ctx.cfg.max_inflight_per_conn)),
        ctrl: Arc::new(Semaphore::new(ctx.cfg.max_queued_control)),
        own: Arc::new(Semaphore::new(CONN_ALLOWANCE)),
        stop,
        dead,
    };
    let halt = read_conn(rd, ctx, &mut link).await;
    match halt {
        Halt::ReadTimeout => {
            closed(ctx, CloseCause::ReadTimeout);
            send_fatal(ctx, &link, ErrorCode::BadFrame, "frame not received in time");
        }
        Halt::Idle => closed(ctx, CloseCause::IdleTimeout),
        Halt::Eof(true) => send_fatal(ctx, &link, ErrorCode::BadFrame, "truncated frame"),
        _ => {}
    }
    drop(link);
    // Returns once every in-flight batch has been answered (their closures
    // hold the other senders).
    let _ = writer.await;
}

pub(super) async fn read_conn<R: AsyncRead + Unpin>(mut rd: R, ctx: &Arc<Ctx>, link: &mut Link) -> Halt {
    // The first four bytes pick the mode: JSON lines when they start with
    // `{` and the fourth is not 0 (a binary frame's length is below 2^24,
    // so its fourth byte is always 0).
    let mut first = [0u8; 4];
    match guarded(link, Some(ctx.cfg.idle_timeout), rd.read(&mut first)).await {
        Ok(Ok(0)) | Ok(Err(_)) => return Halt::Eof(false),
        Ok(Ok(n)) => {
            if n < 4 {
                match guarded(link, Some(ctx.cfg.read_timeout), rd.read_exact(&mut first[n..])).await {
                    Ok(Ok(_)) => {}
                    Ok(Err(_)) => return Halt::Eof(true),
                    Err(h) => return h,
                }
            }
        }
        Err(Halt::ReadTimeout) => return Halt::Idle,
        Err(h) => return h,
    }
    let mut rd = BufReader::with_capacity(64 << 10, std::io::Cursor::new(first).chain(rd));
    if first[0] == b'{' && first[3] != 0 {
        json_loop(&mut rd, ctx, link).await
    } else {
        binary_loop(&mut rd, ctx, link).await
    }
}
