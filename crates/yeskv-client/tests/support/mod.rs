//! A scripted HTTP/1.1 server on loopback, shared by the integration tests: it records every
//! request and answers each with what the test's responder returns.

// Each test binary uses a different part of this module.
#![allow(dead_code)]

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::{JoinHandle, JoinSet};

/// One request as the mock server received it.
#[derive(Clone, Debug)]
pub struct Recorded {
    pub method: String,
    pub target: String,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Recorded {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(key, _)| key == name)
            .map(|(_, value)| value.as_str())
    }
}

type Responder = dyn Fn(&Recorded) -> Option<String> + Send + Sync;

pub struct Mock {
    pub url: String,
    requests: Arc<Mutex<Vec<Recorded>>>,
    pub connections: Arc<AtomicUsize>,
    /// The accept loop; it owns the connection tasks (a `JoinSet`), so ending it ends them.
    server: Mutex<Option<JoinHandle<()>>>,
}

impl Mock {
    pub fn requests(&self) -> Vec<Recorded> {
        self.requests.lock().expect("not poisoned").clone()
    }

    /// Takes the server down: closes the listener and every open connection. Returns once they
    /// are closed, so that a connection attempt after it is refused.
    pub async fn stop(&self) {
        let server = self.server.lock().expect("not poisoned").take();
        if let Some(server) = server {
            server.abort();
            // The task's future (listener, connections) is dropped before the handle resolves.
            let _ = server.await;
        }
    }
}

/// A response with the given status line, extra headers and body.
pub fn response(status: &str, headers: &[(&str, &str)], body: &str) -> Option<String> {
    let mut text = format!("HTTP/1.1 {status}\r\ncontent-length: {}\r\n", body.len());
    for (name, value) in headers {
        text.push_str(&format!("{name}: {value}\r\n"));
    }
    text.push_str("\r\n");
    text.push_str(body);
    Some(text)
}

/// Serves keep-alive connections, answering each request with `respond` (`None`: never answer).
pub async fn mock(respond: impl Fn(&Recorded) -> Option<String> + Send + Sync + 'static) -> Mock {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let url = format!("http://{}", listener.local_addr().expect("address"));
    let requests = Arc::new(Mutex::new(Vec::new()));
    let connections = Arc::new(AtomicUsize::new(0));
    let respond: Arc<Responder> = Arc::new(respond);
    let server = {
        let requests = requests.clone();
        let connections = connections.clone();
        tokio::spawn(async move {
            let mut open = JoinSet::new();
            while let Ok((stream, _)) = listener.accept().await {
                connections.fetch_add(1, Ordering::SeqCst);
                while open.try_join_next().is_some() {}
                open.spawn(serve_connection(stream, requests.clone(), respond.clone()));
            }
        })
    };
    Mock {
        url,
        requests,
        connections,
        server: Mutex::new(Some(server)),
    }
}

async fn serve_connection(
    mut stream: TcpStream,
    requests: Arc<Mutex<Vec<Recorded>>>,
    respond: Arc<Responder>,
) {
    let mut buffer = Vec::new();
    loop {
        let head_end = loop {
            if let Some(position) = buffer.windows(4).position(|window| window == b"\r\n\r\n") {
                break position;
            }
            let mut chunk = [0u8; 4096];
            match stream.read(&mut chunk).await {
                Ok(0) | Err(_) => return,
                Ok(count) => buffer.extend_from_slice(&chunk[..count]),
            }
        };
        let head = String::from_utf8_lossy(&buffer[..head_end]).to_string();
        let mut lines = head.split("\r\n");
        let request_line = lines.next().unwrap_or_default();
        let mut parts = request_line.split(' ');
        let method = parts.next().unwrap_or_default().to_string();
        let target = parts.next().unwrap_or_default().to_string();
        let headers: Vec<(String, String)> = lines
            .filter_map(|line| line.split_once(':'))
            .map(|(name, value)| (name.trim().to_ascii_lowercase(), value.trim().to_string()))
            .collect();
        let length: usize = headers
            .iter()
            .find(|(name, _)| name == "content-length")
            .and_then(|(_, value)| value.parse().ok())
            .unwrap_or(0);
        let body_start = head_end + 4;
        while buffer.len() < body_start + length {
            let mut chunk = [0u8; 4096];
            match stream.read(&mut chunk).await {
                Ok(0) | Err(_) => return,
                Ok(count) => buffer.extend_from_slice(&chunk[..count]),
            }
        }
        let recorded = Recorded {
            method,
            target,
            headers,
            body: buffer[body_start..body_start + length].to_vec(),
        };
        buffer.drain(..body_start + length);
        requests
            .lock()
            .expect("not poisoned")
            .push(recorded.clone());
        match respond(&recorded) {
            Some(text) => {
                if stream.write_all(text.as_bytes()).await.is_err() {
                    return;
                }
            }
            None => {
                tokio::time::sleep(Duration::from_secs(3600)).await;
                return;
            }
        }
    }
}
