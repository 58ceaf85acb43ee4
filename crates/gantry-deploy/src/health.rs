//! HTTP health probes: a URL is healthy once it answers 2xx. Probing retries until a deadline
//! because a fresh revision needs a moment before it listens.

use std::time::{Duration, Instant};

use crate::{DeployError, Log};

/// Probes `url` every `interval` until it answers 2xx or `timeout` has passed.
/// The error carries the last status or connection error seen.
pub async fn wait_http_healthy(
    url: &str,
    timeout: Duration,
    interval: Duration,
    log: &Log,
) -> Result<(), DeployError> {
    let deadline = Instant::now() + timeout;
    let mut attempts = 0u32;
    loop {
        attempts += 1;
        let probe_url = url.to_string();
        let per_request = timeout
            .min(Duration::from_secs(5))
            .max(Duration::from_millis(200));
        let outcome = tokio::task::spawn_blocking(move || probe_once(&probe_url, per_request))
            .await
            .unwrap_or_else(|e| Err(format!("probe task failed: {e}")));
        match outcome {
            Ok(status) => {
                log.line(format!(
                    "health: {url} answered {status} (attempt {attempts})"
                ));
                return Ok(());
            }
            Err(last) => {
                if Instant::now() + interval >= deadline {
                    return Err(DeployError::Health(format!(
                        "health check failed: {url} did not answer 2xx within {}s ({attempts} attempts; last: {last})",
                        timeout.as_secs()
                    )));
                }
            }
        }
        tokio::time::sleep(interval).await;
    }
}

/// One GET; `Ok(status)` only for 2xx.
pub fn probe_once(url: &str, timeout: Duration) -> Result<u16, String> {
    let agent = ureq::AgentBuilder::new()
        .timeout(timeout)
        .redirects(3)
        .build();
    match agent.get(url).call() {
        Ok(resp) if (200..300).contains(&resp.status()) => Ok(resp.status()),
        Ok(resp) => Err(format!("HTTP {}", resp.status())),
        Err(ureq::Error::Status(code, _)) => Err(format!("HTTP {code}")),
        Err(ureq::Error::Transport(t)) => Err(t.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Read, Write};

    /// A one-purpose HTTP server: answers `status` to every request.
    fn serve(status: u16) -> String {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let addr = listener.local_addr().expect("addr");
        std::thread::spawn(move || {
            for mut stream in listener.incoming().flatten() {
                let mut buf = [0u8; 1024];
                let _ = stream.read(&mut buf);
                let _ = write!(
                    stream,
                    "HTTP/1.1 {status} X\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok"
                );
            }
        });
        format!("http://{addr}/keepalive")
    }

    #[tokio::test]
    async fn healthy_on_2xx_and_failing_on_5xx_or_closed_port() {
        let log = Log::silent();
        let ok = serve(200);
        wait_http_healthy(&ok, Duration::from_secs(3), Duration::from_millis(50), &log)
            .await
            .expect("healthy");
        let bad = serve(503);
        let err = wait_http_healthy(
            &bad,
            Duration::from_millis(400),
            Duration::from_millis(50),
            &log,
        )
        .await
        .expect_err("503 is unhealthy");
        assert!(err.to_string().contains("HTTP 503"), "{err}");
        let closed = {
            let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
            let a = l.local_addr().expect("addr");
            drop(l);
            format!("http://{a}/")
        };
        assert!(
            wait_http_healthy(
                &closed,
                Duration::from_millis(300),
                Duration::from_millis(50),
                &log
            )
            .await
            .is_err()
        );
    }
}
