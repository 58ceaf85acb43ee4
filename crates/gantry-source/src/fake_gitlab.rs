//! A stand-in GitLab instance for tests of `include:template`,
//! `include:component` and child pipelines: an HTTP server on 127.0.0.1
//! (std::net, one thread) that serves fixed paths and records each request
//! with its headers, so a test can check paths, versions and tokens.

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

/// Each request: its path (with the query) and header lines.
pub type RequestLog = Arc<Mutex<Vec<(String, Vec<String>)>>>;

/// Serves `routes` (path with query → body; anything else is a 404) until
/// dropped.
pub struct FakeGitlab {
    /// `http://127.0.0.1:PORT`, no trailing slash.
    pub url: String,
    /// Every request served so far.
    pub requests: RequestLog,
    stop: Arc<AtomicBool>,
    addr: SocketAddr,
}

impl FakeGitlab {
    /// Starts serving on a free port.
    pub fn start(routes: HashMap<String, String>) -> std::io::Result<FakeGitlab> {
        let listener = TcpListener::bind("127.0.0.1:0")?;
        let addr = listener.local_addr()?;
        let requests: RequestLog = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let (log, halt) = (requests.clone(), stop.clone());
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                if halt.load(Ordering::SeqCst) {
                    break;
                }
                if let Ok(stream) = stream {
                    serve_one(stream, &routes, &log);
                }
            }
        });
        Ok(FakeGitlab {
            url: format!("http://{addr}"),
            requests,
            stop,
            addr,
        })
    }

    /// `127.0.0.1:PORT`, what a component address starts with.
    pub fn host(&self) -> String {
        self.addr.to_string()
    }
}

fn serve_one(mut stream: TcpStream, routes: &HashMap<String, String>, log: &RequestLog) {
    let Ok(read_half) = stream.try_clone() else {
        return;
    };
    let mut reader = BufReader::new(read_half);
    let mut line = String::new();
    let _ = reader.read_line(&mut line);
    let path = line.split(' ').nth(1).unwrap_or("").to_string();
    let mut headers = Vec::new();
    loop {
        let mut h = String::new();
        if reader.read_line(&mut h).unwrap_or(0) == 0 || h.trim().is_empty() {
            break;
        }
        headers.push(h.trim().to_string());
    }
    if let Ok(mut requests) = log.lock() {
        requests.push((path.clone(), headers));
    }
    let (status, body) = match routes.get(&path) {
        Some(b) => ("200 OK", b.clone()),
        None => ("404 Not Found", "{\"message\":\"404 Not Found\"}".into()),
    };
    let _ = write!(
        stream,
        "HTTP/1.1 {status}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
}

impl Drop for FakeGitlab {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        // Wakes the accept loop so it sees the flag.
        let _ = TcpStream::connect(self.addr);
    }
}
