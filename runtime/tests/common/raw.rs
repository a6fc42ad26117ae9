//! HTTP over a raw loopback socket (full control over what is sent and when), and a spawned
//! `agentwire serve` process.

#![allow(dead_code, unreachable_pub, missing_docs)]

use std::collections::HashMap;
use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Longest wait for anything in these tests.
pub const WAIT: Duration = Duration::from_secs(60);

/// A response: status, headers (lower-case names; repeated ones joined with `, `), body.
#[derive(Debug)]
pub struct Reply {
    pub status: u16,
    pub headers: HashMap<String, String>,
    pub body: String,
}

impl Reply {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).map(String::as_str)
    }
}

/// Reads one response from `sock` (its body by `Content-Length`, chunked, or to EOF).
pub async fn read_reply(sock: &mut TcpStream) -> Reply {
    let mut buf = Vec::new();
    let mut tmp = [0u8; 16 << 10];
    let (status, headers, head_len) = loop {
        let n = tokio::time::timeout(WAIT, sock.read(&mut tmp))
            .await
            .expect("response in time")
            .expect("read");
        assert!(
            n > 0,
            "connection closed before a response head: {:?}",
            String::from_utf8_lossy(&buf)
        );
        buf.extend_from_slice(&tmp[..n]);
        let mut hs = [httparse::EMPTY_HEADER; 64];
        let mut res = httparse::Response::new(&mut hs);
        if let httparse::Status::Complete(len) = res.parse(&buf).unwrap() {
            if res.code == Some(100) {
                buf.drain(..len);
                continue;
            }
            let mut headers: HashMap<String, String> = HashMap::new();
            for h in res.headers.iter() {
                let v = String::from_utf8_lossy(h.value).into_owned();
                headers
                    .entry(h.name.to_ascii_lowercase())
                    .and_modify(|e| {
                        e.push_str(", ");
                        e.push_str(&v);
                    })
                    .or_insert(v);
            }
            break (res.code.unwrap(), headers, len);
        }
    };
    let mut body = buf.split_off(head_len);
    let no_body = status == 101 || status == 204 || status == 304;
    if no_body {
        body.clear();
    } else if let Some(len) = headers.get("content-length") {
        let len: usize = len.parse().unwrap();
        while body.len() < len {
            let n = tokio::time::timeout(WAIT, sock.read(&mut tmp))
                .await
                .expect("body in time")
                .expect("read");
            assert!(n > 0, "connection closed in the body");
            body.extend_from_slice(&tmp[..n]);
        }
        body.truncate(len);
    } else if headers
        .get("transfer-encoding")
        .is_some_and(|t| t.contains("chunked"))
    {
        // enough for the small chunked replies of these tests: read to the last chunk
        while !body.ends_with(b"0\r\n\r\n") {
            let n = tokio::time::timeout(WAIT, sock.read(&mut tmp))
                .await
                .expect("body in time")
                .expect("read");
            assert!(n > 0, "connection closed in the body");
            body.extend_from_slice(&tmp[..n]);
        }
        body = dechunk(&body);
    }
    Reply {
        status,
        headers,
        body: String::from_utf8_lossy(&body).into_owned(),
    }
}

fn dechunk(mut b: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    loop {
        let i = b.windows(2).position(|w| w == b"\r\n").unwrap();
        let n = usize::from_str_radix(std::str::from_utf8(&b[..i]).unwrap().trim(), 16).unwrap();
        if n == 0 {
            return out;
        }
        out.extend_from_slice(&b[i + 2..i + 2 + n]);
        b = &b[i + 2 + n + 2..];
    }
}

/// Sends one request with a complete body on a new connection; reads the reply.
pub async fn request(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> Reply {
    let mut sock = TcpStream::connect(addr).await.unwrap();
    let mut head = format!(
        "{method} {path} HTTP/1.1\r\nhost: {addr}\r\ncontent-length: {}\r\n",
        body.len()
    );
    if !headers
        .iter()
        .any(|(k, _)| k.eq_ignore_ascii_case("connection"))
    {
        head.push_str("connection: close\r\n");
    }
    for (k, v) in headers {
        head.push_str(&format!("{k}: {v}\r\n"));
    }
    head.push_str("\r\n");
    sock.write_all(head.as_bytes()).await.unwrap();
    sock.write_all(body).await.unwrap();
    read_reply(&mut sock).await
}

/// A `multipart/form-data` body with boundary [`BOUNDARY`]: `(name, filename, content)` parts.
pub fn form(parts: &[(&str, Option<&str>, &[u8])]) -> Vec<u8> {
    let mut out = Vec::new();
    for (name, filename, content) in parts {
        out.extend_from_slice(format!("--{BOUNDARY}\r\n").as_bytes());
        match filename {
            Some(f) => out.extend_from_slice(
                format!(
                    "content-disposition: form-data; name=\"{name}\"; filename=\"{f}\"\r\n\
                     content-type: application/octet-stream\r\n\r\n"
                )
                .as_bytes(),
            ),
            None => out.extend_from_slice(
                format!("content-disposition: form-data; name=\"{name}\"\r\n\r\n").as_bytes(),
            ),
        }
        out.extend_from_slice(content);
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(format!("--{BOUNDARY}--\r\n").as_bytes());
    out
}

/// The boundary of [`form`].
pub const BOUNDARY: &str = "agentwire-test-boundary-7MA4YWxkTrZu0gW";

/// The content type of [`form`].
pub fn form_type() -> String {
    format!("multipart/form-data; boundary={BOUNDARY}")
}

/// An `agentwire serve` process on a free loopback port with its own data directory; killed
/// (and the directory removed) on drop.
pub struct Serve {
    child: Child,
    pub addr: SocketAddr,
    pub dir: PathBuf,
}

impl Serve {
    /// Starts `agentwire serve --addr 127.0.0.1:0 --data DIR` plus `args`.
    pub fn start(tag: &str, args: &[&str]) -> Serve {
        let dir = std::env::temp_dir().join(format!("agentwire-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let mut child = Command::new(env!("CARGO_BIN_EXE_agentwire"))
            .args(["serve", "--addr", "127.0.0.1:0", "--data"])
            .arg(&dir)
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("agentwire serve starts");
        let mut err = BufReader::new(child.stderr.take().unwrap());
        let mut line = String::new();
        err.read_line(&mut line).unwrap();
        // "agentwire: demo at http://127.0.0.1:PORT/ (data in …)" (https:// with TLS)
        let addr = line
            .split("://")
            .nth(1)
            .and_then(|s| s.split('/').next())
            .unwrap_or_else(|| panic!("unexpected first line from agentwire serve: {line:?}"))
            .parse()
            .unwrap();
        // keep draining its stderr so that it never blocks on a full pipe
        std::thread::spawn(move || {
            let mut sink = String::new();
            while err.read_line(&mut sink).is_ok_and(|n| n > 0) {
                sink.clear();
            }
        });
        Serve { child, addr, dir }
    }

    /// A `kB` figure of `/proc/PID/status` (`VmRSS`, `VmHWM`, …), in bytes.
    pub fn status_bytes(&self, key: &str) -> u64 {
        let s = std::fs::read_to_string(format!("/proc/{}/status", self.child.id())).unwrap();
        let line = s
            .lines()
            .find(|l| l.starts_with(&format!("{key}:")))
            .unwrap_or_else(|| panic!("no {key} in /proc/PID/status"));
        let kb: u64 = line.split_whitespace().nth(1).unwrap().parse().unwrap();
        kb * 1024
    }
}

impl Drop for Serve {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
