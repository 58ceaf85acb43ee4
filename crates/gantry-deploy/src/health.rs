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

/// Checks a URL given on the command line: http(s), a host, no spaces. `flag` names it in the
/// error.
pub fn validate_url(url: &str, flag: &str) -> Result<(), DeployError> {
    let bad = |why: &str| {
        DeployError::Usage(format!(
            "{flag} {:?}: {why} (expected http://HOST[:PORT]/PATH)",
            url_host(url)
        ))
    };
    let Some((scheme, rest)) = url.split_once("://") else {
        return Err(bad("not a URL"));
    };
    if scheme != "http" && scheme != "https" {
        return Err(bad("only http and https are supported"));
    }
    let authority = rest.split(['/', '?', '#']).next().unwrap_or("");
    let host_port = authority.rsplit('@').next().unwrap_or("");
    let host = match host_port.rsplit_once(':') {
        Some((h, p)) if !h.ends_with(']') || host_port.starts_with('[') => {
            if !p.is_empty() && p.parse::<u16>().is_err() {
                return Err(bad("the port is not a number from 1 to 65535"));
            }
            if p.parse::<u16>() == Ok(0) {
                return Err(bad("port 0"));
            }
            h
        }
        _ => host_port,
    };
    if host.is_empty() {
        return Err(bad("no host"));
    }
    if url.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(bad("contains spaces or control characters"));
    }
    Ok(())
}

/// The scheme and host of a URL, without credentials, path or query (which may hold tokens).
pub fn url_host(url: &str) -> String {
    match url.split_once("://") {
        Some((scheme, rest)) => {
            let authority = rest.split(['/', '?', '#']).next().unwrap_or("");
            let host = authority.rsplit('@').next().unwrap_or("");
            format!("{scheme}://{host}")
        }
        None => "<not a URL>".into(),
    }
}

#[cfg(test)]
mod url_tests {
    use super::*;

    #[test]
    fn urls_are_checked() {
        assert!(validate_url("http://127.0.0.1:8080/keepalive", "--health-url").is_ok());
        assert!(validate_url("https://example.com", "--health-url").is_ok());
        for bad in ["", "localhost:80", "ftp://x/", "http://", "http://h:99999/", "http://h:x/", "http://a b/"] {
            assert!(validate_url(bad, "--health-url").is_err(), "{bad}");
        }
        assert_eq!(url_host("https://user:tok@hooks.example/T/B?x=1"), "https://hooks.example");
    }
}
