//! The JSON-lines wire format (for debugging by hand): one request per
//! line, one answer line per request.

use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::io::{AsyncBufReadExt, AsyncRead, BufReader};
use tokio::sync::OwnedSemaphorePermit;

use super::answer::json_error;
use super::ctx::Ctx;
use super::link::{budget, guarded, send_ctrl, submit, wait_more, Encoding, Halt, Link};
use super::write::Out;
use crate::sig::{jsonl, Reason, SigItem};

/// How reading a JSON line ended.
pub(super) enum LineEnd {
    Line,
    /// Longer than `max_frame`: the connection closes.
    TooLong,
}

/// Reads one line (without its newline; a last line may lack one), taking
/// its bytes from the byte budget as they arrive; once its first byte is
/// in, the line has `read_timeout` to finish.
pub(super) async fn read_line<R: AsyncRead + Unpin>(
    rd: &mut BufReader<R>,
    ctx: &Ctx,
    link: &mut Link,
    line: &mut Vec<u8>,
    permits: &mut Vec<OwnedSemaphorePermit>,
) -> Result<LineEnd, Halt> {
    wait_more(rd, ctx, link).await?;
    let mut left = ctx.cfg.read_timeout;
    loop {
        let t0 = Instant::now();
        let avail = match guarded(link, Some(left), rd.fill_buf()).await? {
            Ok(b) if !b.is_empty() => b,
            // The last line of a stream may lack its newline.
            _ => return if line.is_empty() { Err(Halt::Eof(false)) } else { Ok(LineEnd::Line) },
        };
        let (k, newline) = match avail.iter().position(|&b| b == b'\n') {
            Some(i) => (i, true),
            None => (avail.len(), false),
        };
        if line.len() + k > ctx.cfg.max_frame {
            return Ok(LineEnd::TooLong);
        }
        line.extend_from_slice(&avail[..k]);
        rd.consume(k + newline as usize);
        if k > 0 {
            permits.push(budget(ctx, link, k, t0, &mut left).await?);
        } else {
            left = left.saturating_sub(t0.elapsed());
        }
        if newline {
            return Ok(LineEnd::Line);
        }
    }
}

/// JSON debugging mode: one request per line,
/// `{"id":N,"deadline_ms":M,"items":[ITEM,...]}` → `{"id":N,"verdicts":[...]}`.
pub(super) async fn json_loop<R: AsyncRead + Unpin>(rd: &mut BufReader<R>, ctx: &Arc<Ctx>, link: &mut Link) -> Halt {
    loop {
        let mut permits = Vec::new();
        let mut line = Vec::new();
        match read_line(rd, ctx, link, &mut line, &mut permits).await {
            Ok(LineEnd::Line) => {}
            Ok(LineEnd::TooLong) => {
                let _ = link.tx.send(Out { bytes: json_error(None, "line over the size limit"), _permits: Vec::new() });
                return Halt::Eof(false);
            }
            Err(Halt::Eof(_)) => return Halt::Eof(false),
            Err(h) => return h,
        }
        if line.iter().all(|b| b.is_ascii_whitespace()) {
            continue;
        }
        let req: serde_json::Value = match serde_json::from_slice(&line) {
            Ok(v) => v,
            Err(e) => {
                drop(permits);
                if let Err(h) = send_ctrl(link, json_error(None, &format!("not JSON: {e}"))).await {
                    return h;
                }
                continue;
            }
        };
        let id = req.get("id").and_then(|v| v.as_u64());
        let items = req.get("items").and_then(|v| v.as_array());
        let (Some(id), Some(items)) = (id, items) else {
            drop(permits);
            if let Err(h) = send_ctrl(link, json_error(id, "want {\"id\":N,\"items\":[...]}")).await {
                return h;
            }
            continue;
        };
        if items.len() > ctx.cfg.max_items {
            drop(permits);
            if let Err(h) = send_ctrl(link, json_error(Some(id), "too many items")).await {
                return h;
            }
            continue;
        }
        let parsed: Vec<Result<SigItem, Reason>> = items.iter().map(|v| jsonl::parse_value(v.clone())).collect();
        let deadline = req
            .get("deadline_ms")
            .and_then(|v| v.as_u64())
            .filter(|&ms| ms > 0)
            .map(|ms| Instant::now() + Duration::from_millis(ms.min(86_400_000)));
        drop(line);
        if let Err(h) = submit(ctx, link, id, deadline, parsed, permits, Encoding::Json).await {
            return h;
        }
    }
}
