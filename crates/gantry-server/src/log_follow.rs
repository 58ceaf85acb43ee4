//! Following a job's log live over Server-Sent Events, one implementation
//! for the API (`…/jobs/:id/trace/stream`) and the dashboard. `log` events
//! carry the new text as a JSON string, with the byte offset after it as
//! the event id: a client that reconnects with `Last-Event-ID` (or
//! `?offset=`) resumes there. The stream ends with an `end` event carrying
//! the job's final status.

use crate::app::Shared;
use axum::http::HeaderMap;
use axum::response::sse::{Event, KeepAlive, Sse};
use futures_util::Stream;
use std::convert::Infallible;
use std::time::Duration;

/// Where a follower starts: `Last-Event-ID` on a reconnect, else `?offset=`,
/// else the beginning.
pub fn start_offset(headers: &HeaderMap, offset: Option<u64>) -> u64 {
    headers
        .get("last-event-id")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok())
        .or(offset)
        .unwrap_or(0)
}

/// The SSE response following job `job` from byte `start`.
pub fn follow(
    app: Shared,
    job: i64,
    start: u64,
) -> Sse<impl Stream<Item = Result<Event, Infallible>>> {
    // Subscribe before the first read: a chunk that lands between the two
    // still wakes the follower.
    let rx = app.logs.subscribe(job);
    let stream = futures_util::stream::unfold(
        (app, start, rx, false),
        move |(app, offset, mut rx, done)| async move {
            if done {
                return None;
            }
            loop {
                let data = match app.logs.read(job, offset).await {
                    Ok(d) => d,
                    Err(e) => {
                        let ev = Event::default().event("error").data(e.to_string());
                        return Some((Ok(ev), (app, offset, rx, true)));
                    }
                };
                if !data.is_empty() {
                    let next = offset + data.len() as u64;
                    return Some((Ok(log_event(&data, next)), (app, next, rx, false)));
                }
                let status = app.store.job(job).await.ok().flatten().map(|j| j.status);
                let finished = status
                    .as_deref()
                    .is_none_or(|s| crate::store::is_finished(s) || s == "manual");
                if finished {
                    // The runner's last chunks are stored before its final
                    // state: read once more after seeing it, or `end` could
                    // overtake them.
                    if let Ok(tail) = app.logs.read(job, offset).await
                        && !tail.is_empty()
                    {
                        let next = offset + tail.len() as u64;
                        return Some((Ok(log_event(&tail, next)), (app, next, rx, false)));
                    }
                    let ev = Event::default()
                        .event("end")
                        .id(offset.to_string())
                        .data(status.unwrap_or_default());
                    return Some((Ok(ev), (app, offset, rx, true)));
                }
                // Another server may hold the runner's connection: poll too.
                let _ = tokio::time::timeout(Duration::from_secs(1), rx.recv()).await;
            }
        },
    );
    Sse::new(stream).keep_alive(KeepAlive::default())
}

fn log_event(data: &[u8], next: u64) -> Event {
    let text = String::from_utf8_lossy(data);
    Event::default()
        .event("log")
        .id(next.to_string())
        .data(serde_json::to_string(&text).unwrap_or_default())
}
