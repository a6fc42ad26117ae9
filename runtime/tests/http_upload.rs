//! File uploads through a real `agentwire serve` process (`FilesAgent`): a 50 MiB multipart
//! upload streamed to disk with the server's memory growth measured, the body limit answered
//! `413` before a body is read whole, malformed forms answered `400`.

#[path = "common/raw.rs"]
mod raw;

use raw::{form, form_type, read_reply, request, Serve, BOUNDARY, WAIT};
use serde_json::Value;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;

const FILE_SIZE: usize = 50 << 20;

/// Byte `i` of the test file: not compressible, not all alike, reproducible.
fn pattern(i: usize) -> u8 {
    let x = (i as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15);
    (x >> 56) as u8
}

fn fnv(h: &mut u64, data: &[u8]) {
    for b in data {
        *h ^= u64::from(*b);
        *h = h.wrapping_mul(0x0100_0000_01b3);
    }
}

#[tokio::test]
async fn fifty_mib_upload_is_streamed_to_disk() {
    let serve = Serve::start("http-upload", &[]);
    let base = "/agents/files-agent/big";

    // warm up: the instance, its directory and the upload path exist before measuring
    let small = form(&[("file", Some("small.txt"), b"hello")]);
    let r = request(
        serve.addr,
        "POST",
        &format!("{base}/upload"),
        &[("content-type", &form_type())],
        &small,
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.body);
    let v: Value = serde_json::from_str(&r.body).unwrap();
    assert_eq!(v, serde_json::json!({"filename": "small.txt", "size": 5}));

    let rss_before = serve.status_bytes("VmRSS");
    let hwm_before = serve.status_bytes("VmHWM");

    // the upload, generated while it is sent (a text field first, then the file)
    let head = format!(
        "--{BOUNDARY}\r\ncontent-disposition: form-data; name=\"note\"\r\n\r\nbig one\r\n\
         --{BOUNDARY}\r\ncontent-disposition: form-data; name=\"file\"; filename=\"big.bin\"\r\n\
         content-type: application/octet-stream\r\n\r\n"
    );
    let tail = format!("\r\n--{BOUNDARY}--\r\n");
    let total = head.len() + FILE_SIZE + tail.len();
    let mut sock = TcpStream::connect(serve.addr).await.unwrap();
    let req_head = format!(
        "POST {base}/upload HTTP/1.1\r\nhost: {}\r\ncontent-type: {}\r\ncontent-length: {total}\r\n\r\n",
        serve.addr,
        form_type()
    );
    sock.write_all(req_head.as_bytes()).await.unwrap();
    sock.write_all(head.as_bytes()).await.unwrap();
    let mut sent_hash: u64 = 0xcbf2_9ce4_8422_2325;
    let mut chunk = vec![0u8; 256 << 10];
    let mut off = 0;
    while off < FILE_SIZE {
        let n = chunk.len().min(FILE_SIZE - off);
        for (j, b) in chunk[..n].iter_mut().enumerate() {
            *b = pattern(off + j);
        }
        fnv(&mut sent_hash, &chunk[..n]);
        tokio::time::timeout(WAIT, sock.write_all(&chunk[..n]))
            .await
            .expect("the server keeps reading")
            .unwrap();
        off += n;
    }
    sock.write_all(tail.as_bytes()).await.unwrap();
    let r = read_reply(&mut sock).await;
    assert_eq!(r.status, 200, "{}", r.body);
    let v: Value = serde_json::from_str(&r.body).unwrap();
    assert_eq!(
        v,
        serde_json::json!({"filename": "big.bin", "size": FILE_SIZE})
    );

    let hwm_after = serve.status_bytes("VmHWM");
    let growth = hwm_after.saturating_sub(rss_before);
    eprintln!(
        "50 MiB upload: server VmRSS before {} KiB, VmHWM before {} KiB, VmHWM after {} KiB, \
         peak growth {} KiB ({:.1}% of the file)",
        rss_before / 1024,
        hwm_before / 1024,
        hwm_after / 1024,
        growth / 1024,
        growth as f64 * 100.0 / FILE_SIZE as f64
    );
    assert!(
        growth < (FILE_SIZE as u64) / 5,
        "server memory grew by {growth} bytes for a {FILE_SIZE}-byte upload"
    );

    // on disk, intact, under the data directory; and listed
    let path = serve
        .dir
        .join("files-agent")
        .join("big.files")
        .join("big.bin");
    let data = std::fs::read(&path).unwrap();
    assert_eq!(data.len(), FILE_SIZE);
    let mut disk_hash: u64 = 0xcbf2_9ce4_8422_2325;
    fnv(&mut disk_hash, &data);
    assert_eq!(
        disk_hash, sent_hash,
        "the stored file differs from the upload"
    );
    let r = request(serve.addr, "GET", &format!("{base}/files"), &[], b"").await;
    assert_eq!(r.status, 200);
    let v: Value = serde_json::from_str(&r.body).unwrap();
    assert_eq!(
        v,
        serde_json::json!([
            {"filename": "big.bin", "size": FILE_SIZE},
            {"filename": "small.txt", "size": 5},
        ])
    );
}

#[tokio::test]
async fn bodies_over_the_limit_are_refused_before_they_are_read() {
    let serve = Serve::start("http-limit", &[]);

    // Content-Length over the upload route's limit (256 MiB): 413 after the head alone
    let mut sock = TcpStream::connect(serve.addr).await.unwrap();
    let head = format!(
        "POST /agents/files-agent/x/upload HTTP/1.1\r\nhost: {}\r\ncontent-type: {}\r\n\
         content-length: {}\r\n\r\n",
        serve.addr,
        form_type(),
        300u64 << 20
    );
    sock.write_all(head.as_bytes()).await.unwrap();
    sock.write_all(&vec![b'x'; 4096]).await.unwrap();
    let r = read_reply(&mut sock).await;
    assert_eq!(r.status, 413, "{}", r.body);

    // over the default 1 MiB of other routes (TaskRunner's JSON body)
    let mut sock = TcpStream::connect(serve.addr).await.unwrap();
    let head = format!(
        "POST /agents/task-runner/x/tasks HTTP/1.1\r\nhost: {}\r\ncontent-type: application/json\r\n\
         content-length: {}\r\n\r\n",
        serve.addr,
        2u64 << 20
    );
    sock.write_all(head.as_bytes()).await.unwrap();
    let r = read_reply(&mut sock).await;
    assert_eq!(r.status, 413, "{}", r.body);

    // chunked, no length announced: refused once past the limit, the body still unfinished
    let mut sock = TcpStream::connect(serve.addr).await.unwrap();
    let head = format!(
        "POST /agents/task-runner/x/tasks HTTP/1.1\r\nhost: {}\r\ncontent-type: application/json\r\n\
         transfer-encoding: chunked\r\n\r\n",
        serve.addr
    );
    sock.write_all(head.as_bytes()).await.unwrap();
    let (mut rd, mut wr) = sock.into_split();
    let writer = tokio::spawn(async move {
        // 1.5 MiB in 64 KiB chunks and never the last chunk
        let chunk = vec![b' '; 64 << 10];
        for _ in 0..24 {
            let frame = [format!("{:x}\r\n", chunk.len()).as_bytes(), &chunk, b"\r\n"].concat();
            if wr.write_all(&frame).await.is_err() {
                break; // the server stopped reading
            }
        }
        wr // kept open: the body never ends
    });
    let r = {
        let mut buf = Vec::new();
        let mut tmp = [0u8; 4096];
        loop {
            use tokio::io::AsyncReadExt;
            let n = tokio::time::timeout(WAIT, rd.read(&mut tmp))
                .await
                .expect("reply in time")
                .unwrap();
            assert!(n > 0, "closed without a reply");
            buf.extend_from_slice(&tmp[..n]);
            if buf.windows(4).any(|w| w == b"\r\n\r\n") {
                break String::from_utf8_lossy(&buf).into_owned();
            }
        }
    };
    assert!(r.starts_with("HTTP/1.1 413"), "{r}");
    drop(writer);

    // within the limit: accepted
    let r = request(
        serve.addr,
        "POST",
        "/agents/task-runner/x/tasks",
        &[("content-type", "application/json")],
        br#"{"prompt":"hi"}"#,
    )
    .await;
    assert_eq!(r.status, 201, "{}", r.body);
}

#[tokio::test]
async fn bad_forms_get_clear_client_errors() {
    let serve = Serve::start("http-badform", &[]);
    let up = "/agents/files-agent/x/upload";
    let ct = form_type();

    // truncated: no closing boundary
    let mut body = form(&[("file", Some("a.txt"), b"some content")]);
    body.truncate(body.len() - BOUNDARY.len() - 10);
    let r = request(serve.addr, "POST", up, &[("content-type", &ct)], &body).await;
    assert_eq!(r.status, 400, "{}", r.body);
    assert!(r.body.contains("multipart"), "{}", r.body);

    // garbage where the parts should be
    let r = request(
        serve.addr,
        "POST",
        up,
        &[("content-type", &ct)],
        b"this is not a form",
    )
    .await;
    assert_eq!(r.status, 400, "{}", r.body);

    // a part whose headers never end: refused once 64 KiB of them are buffered, while the
    // announced 10 MiB body is still being sent (not at its end)
    let mut sock = TcpStream::connect(serve.addr).await.unwrap();
    let head = format!(
        "POST {up} HTTP/1.1\r\nhost: {}\r\ncontent-type: {ct}\r\ncontent-length: {}\r\n\r\n\
         --{BOUNDARY}\r\ncontent-disposition: form-data; name=\"file\"\r\nx-pad: ",
        serve.addr,
        10 << 20
    );
    sock.write_all(head.as_bytes()).await.unwrap();
    sock.write_all(&vec![b'a'; 200 << 10]).await.unwrap();
    let r = read_reply(&mut sock).await;
    assert_eq!(r.status, 400, "{}", r.body);
    assert!(r.body.contains("part headers longer than"), "{}", r.body);

    // no field `file`
    let body = form(&[("other", None, b"1")]);
    let r = request(serve.addr, "POST", up, &[("content-type", &ct)], &body).await;
    assert_eq!(r.status, 400, "{}", r.body);
    assert!(r.body.contains("\"file\""), "{}", r.body);

    // not a form at all
    let r = request(
        serve.addr,
        "POST",
        up,
        &[("content-type", "application/json")],
        b"{}",
    )
    .await;
    assert_eq!(r.status, 415, "{}", r.body);

    // a text field over its 64 KiB limit
    let big = vec![b'n'; 70 << 10];
    let body = form(&[("note", None, &big), ("file", Some("a.txt"), b"x")]);
    let r = request(serve.addr, "POST", up, &[("content-type", &ct)], &body).await;
    assert_eq!(r.status, 200, "skipped fields are not limited: {}", r.body);

    // nothing was stored by the failed uploads (only a.txt from the last one)
    let r = request(serve.addr, "GET", "/agents/files-agent/x/files", &[], b"").await;
    let v: Value = serde_json::from_str(&r.body).unwrap();
    assert_eq!(v, serde_json::json!([{"filename": "a.txt", "size": 1}]));
}
