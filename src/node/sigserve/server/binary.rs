//! The binary wire format's read loop: length-prefixed frames (see
//! docs/sigserve-protocol.md), BATCH and PING from a client.

use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::io::{AsyncRead, AsyncReadExt, BufReader};

use super::ctx::Ctx;
use super::link::{
    count_error, guarded, read_budgeted, send_ctrl, send_fatal, submit, wait_more, Encoding, Halt, Link,
};
use crate::node::sigserve::frame::{self, ErrorCode, Frame, FrameError, HEADER_LEN};

pub(super) async fn binary_loop<R: AsyncRead + Unpin>(rd: &mut BufReader<R>, ctx: &Arc<Ctx>, link: &mut Link) -> Halt {
    loop {
        if let Err(h) = wait_more(rd, ctx, link).await {
            return h;
        }
        let mut left = ctx.cfg.read_timeout;
        let mut hdr = [0u8; HEADER_LEN];
        let t0 = Instant::now();
        match guarded(link, Some(left), rd.read_exact(&mut hdr)).await {
            Ok(Ok(_)) => {}
            Ok(Err(_)) => return Halt::Eof(true),
            Err(h) => return h,
        }
        left = left.saturating_sub(t0.elapsed());
        let (body_len, kind) = match frame::parse_header(&hdr, ctx.cfg.max_frame) {
            Ok(h) => h,
            Err(e) => {
                send_fatal(ctx, link, e.code(), &e.to_string());
                return Halt::Eof(false);
            }
        };
        let mut permits = Vec::new();
        let mut body = Vec::new();
        if let Err(h) = read_budgeted(rd, ctx, link, &mut body, body_len, &mut permits, &mut left).await {
            return h;
        }
        match frame::parse_body(kind, &body, ctx.cfg.max_items) {
            Ok(Frame::Batch(b)) => {
                drop(body);
                let deadline =
                    (b.deadline_us > 0).then(|| Instant::now() + Duration::from_micros(b.deadline_us.into()));
                if let Err(h) = submit(ctx, link, b.id, deadline, b.items, permits, Encoding::Binary).await {
                    return h;
                }
            }
            Ok(Frame::Ping { id }) => {
                drop(permits);
                if let Err(h) = send_ctrl(link, frame::encode_pong(id)).await {
                    return h;
                }
            }
            Ok(_) => {
                send_fatal(ctx, link, ErrorCode::BadFrame, "a client may only send BATCH and PING");
                return Halt::Eof(false);
            }
            Err(FrameError::TooManyItems { id, count, max }) => {
                drop(permits);
                count_error(ctx, Encoding::Binary);
                let e = frame::encode_error(id, ErrorCode::TooManyItems, &format!("{count} items, limit {max}"));
                if let Err(h) = send_ctrl(link, e).await {
                    return h;
                }
            }
            Err(e) => {
                send_fatal(ctx, link, e.code(), &e.to_string());
                return Halt::Eof(false);
            }
        }
    }
}
