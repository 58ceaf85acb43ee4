//! Finding the container engine: one order for every command (`gantry run`,
//! `gantry deploy docker`, `gantry clean`).
//!
//! 1. `DOCKER_HOST`, when set and not empty (`unix:///path`, `tcp://host:port`
//!    or a socket path): used alone, it must answer.
//! 2. `/var/run/docker.sock` (Docker, or Podman's docker-compatible link).
//! 3. `/run/podman/podman.sock` (Podman's root service).
//! 4. `$XDG_RUNTIME_DIR/podman/podman.sock` (Podman's rootless service).
//!
//! The first socket that answers `GET /_ping` wins. The check is a blocking
//! HTTP request with a 3 s limit, so callers without an async runtime can
//! use it too.

use bollard::Docker;
use std::io::{Read, Write};
use std::time::Duration;

/// How long one candidate may take to answer.
const PING_LIMIT: Duration = Duration::from_secs(3);

/// No engine answers.
#[derive(Debug, thiserror::Error)]
pub enum DiscoveryError {
    #[error(
        "the container engine at DOCKER_HOST={host} does not answer: {reason}. Start it, or unset DOCKER_HOST to look for a local socket"
    )]
    DockerHost { host: String, reason: String },
    #[error(
        "no container engine answers. DOCKER_HOST is not set; tried {tried}. Start Podman's API with scripts/setup-podman.sh, or set DOCKER_HOST"
    )]
    NoneAnswers { tried: String },
    #[error("container engine address `{0}`: unsupported (use unix:///path or tcp://host:port)")]
    Address(String),
}

/// The candidates in order, without `DOCKER_HOST`; an unusable candidate is
/// described instead (e.g. XDG_RUNTIME_DIR unset).
pub fn candidate_sockets() -> Vec<Result<String, String>> {
    let mut candidates = vec![
        Ok("/var/run/docker.sock".to_string()),
        Ok("/run/podman/podman.sock".to_string()),
    ];
    match std::env::var("XDG_RUNTIME_DIR") {
        Ok(dir) if !dir.is_empty() => candidates.push(Ok(format!("{dir}/podman/podman.sock"))),
        _ => candidates.push(Err(
            "$XDG_RUNTIME_DIR/podman/podman.sock (XDG_RUNTIME_DIR unset)".into(),
        )),
    }
    candidates
}

/// The address of the engine to use, in the documented order.
pub fn discover_engine() -> Result<String, DiscoveryError> {
    if let Ok(host) = std::env::var("DOCKER_HOST")
        && !host.trim().is_empty()
    {
        let host = normalize(host.trim());
        return match ping(&host) {
            Ok(()) => Ok(host),
            Err(reason) => Err(DiscoveryError::DockerHost { host, reason }),
        };
    }
    let mut tried = Vec::new();
    for candidate in candidate_sockets() {
        let path = match candidate {
            Ok(path) => path,
            Err(described) => {
                tried.push(described);
                continue;
            }
        };
        if !std::path::Path::new(&path).exists() {
            tried.push(format!("{path} (no such socket)"));
            continue;
        }
        let host = format!("unix://{path}");
        match ping(&host) {
            Ok(()) => return Ok(host),
            Err(e) => tried.push(format!("{path} ({e})")),
        }
    }
    Err(DiscoveryError::NoneAnswers {
        tried: tried.join(", "),
    })
}

/// A bare socket path becomes a `unix://` address.
fn normalize(host: &str) -> String {
    if host.starts_with('/') {
        format!("unix://{host}")
    } else {
        host.to_string()
    }
}

/// A client for an address (no request is made).
pub fn client_for(host: &str) -> Result<Docker, DiscoveryError> {
    let host = normalize(host);
    let client = if let Some(path) = host.strip_prefix("unix://") {
        Docker::connect_with_unix(path, 120, bollard::API_DEFAULT_VERSION)
    } else if let Some(rest) = host.strip_prefix("tcp://") {
        Docker::connect_with_http(&format!("http://{rest}"), 120, bollard::API_DEFAULT_VERSION)
    } else if host.starts_with("http://") {
        Docker::connect_with_http(&host, 120, bollard::API_DEFAULT_VERSION)
    } else {
        return Err(DiscoveryError::Address(host));
    };
    client.map_err(|_| DiscoveryError::Address(host))
}

/// `GET /_ping` over a blocking connection: Ok when the answer is `200`.
pub fn ping(host: &str) -> Result<(), String> {
    let request = b"GET /_ping HTTP/1.0\r\nHost: engine\r\n\r\n";
    let mut answer = Vec::new();
    if let Some(path) = host.strip_prefix("unix://") {
        let mut stream =
            std::os::unix::net::UnixStream::connect(path).map_err(|e| e.to_string())?;
        stream
            .set_read_timeout(Some(PING_LIMIT))
            .and_then(|()| stream.set_write_timeout(Some(PING_LIMIT)))
            .map_err(|e| e.to_string())?;
        stream.write_all(request).map_err(|e| e.to_string())?;
        read_status(&mut stream, &mut answer)?;
    } else if let Some(rest) = host
        .strip_prefix("tcp://")
        .or_else(|| host.strip_prefix("http://"))
    {
        use std::net::ToSocketAddrs;
        let addr = rest
            .trim_end_matches('/')
            .to_socket_addrs()
            .map_err(|e| e.to_string())?
            .next()
            .ok_or_else(|| format!("{rest} does not resolve"))?;
        let mut stream =
            std::net::TcpStream::connect_timeout(&addr, PING_LIMIT).map_err(|e| e.to_string())?;
        stream
            .set_read_timeout(Some(PING_LIMIT))
            .and_then(|()| stream.set_write_timeout(Some(PING_LIMIT)))
            .map_err(|e| e.to_string())?;
        stream.write_all(request).map_err(|e| e.to_string())?;
        read_status(&mut stream, &mut answer)?;
    } else {
        return Err("unsupported address (use unix:// or tcp://)".into());
    }
    let status_line = String::from_utf8_lossy(&answer);
    let status_line = status_line.lines().next().unwrap_or("");
    if status_line.split_whitespace().nth(1) == Some("200") {
        Ok(())
    } else if status_line.is_empty() {
        Err("no answer within 3 s".into())
    } else {
        Err(format!("answered `{status_line}`"))
    }
}

/// Reads until the status line is complete (or the peer closes).
fn read_status(stream: &mut impl Read, answer: &mut Vec<u8>) -> Result<(), String> {
    let mut buf = [0u8; 512];
    while !answer.contains(&b'\n') && answer.len() < 4096 {
        match stream.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => answer.extend_from_slice(&buf[..n]),
            Err(e) if answer.is_empty() => return Err(e.to_string()),
            Err(_) => break,
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_socket_that_does_not_speak_http_is_refused() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("mute.sock");
        let listener = std::os::unix::net::UnixListener::bind(&path).expect("bind");
        let server = std::thread::spawn(move || {
            if let Ok((mut s, _)) = listener.accept() {
                let _ = s.write_all(b"HTTP/1.0 404 Not Found\r\n\r\n");
            }
        });
        let err = ping(&format!("unix://{}", path.display())).expect_err("404");
        assert!(err.contains("404"), "{err}");
        server.join().expect("server");
        assert!(ping("unix:///nonexistent/gantry.sock").is_err());
    }
}
