//! Stopping the built binary with signals: SIGINT (Ctrl-C) is as graceful
//! as SIGTERM (a request still uploading its body finishes and gets its
//! answer, then the process exits 0); a second signal stops at once; and a
//! signal sent the moment the server says it listens is already caught.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::process::{Child, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use crate::helpers::gatehouse;

/// The binary serving the zero-config demo, with its output (both
/// streams) read line by line.
struct Served {
    child: Child,
    addr: String,
    lines: mpsc::Receiver<String>,
    seen: Vec<String>,
}

impl Served {
    fn start(dir: &std::path::Path) -> Served {
        let mut child = gatehouse(dir)
            .args(["--listen", "127.0.0.1:0"])
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("gatehouse starts");
        let (tx, lines) = mpsc::channel();
        let out = child.stdout.take().unwrap();
        let err = child.stderr.take().unwrap();
        let tx2 = tx.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(out).lines().map_while(Result::ok) {
                let _ = tx.send(line);
            }
        });
        std::thread::spawn(move || {
            for line in BufReader::new(err).lines().map_while(Result::ok) {
                let _ = tx2.send(line);
            }
        });
        let mut served = Served {
            child,
            addr: String::new(),
            lines,
            seen: Vec::new(),
        };
        let line = served.wait_for("Listening on ");
        served.addr = line.trim_start_matches("Listening on ").trim().to_string();
        served
    }

    /// Waits (up to 30 s) for a line containing `needle`; returns it.
    fn wait_for(&mut self, needle: &str) -> String {
        let deadline = Instant::now() + Duration::from_secs(30);
        while Instant::now() < deadline {
            if let Ok(line) = self.lines.recv_timeout(Duration::from_millis(50)) {
                self.seen.push(line.clone());
                if line.contains(needle) {
                    return line;
                }
            }
        }
        panic!("no line with {needle:?} in:\n{}", self.seen.join("\n"));
    }

    /// Every line the process wrote, once it has ended: the readers stop
    /// at end of output, and the channel closes with them (a process that
    /// just exited may still have lines in transit).
    fn all_lines(&mut self) -> Vec<String> {
        let deadline = Instant::now() + Duration::from_secs(30);
        while Instant::now() < deadline {
            match self.lines.recv_timeout(Duration::from_millis(50)) {
                Ok(line) => self.seen.push(line),
                Err(mpsc::RecvTimeoutError::Timeout) => {}
                Err(mpsc::RecvTimeoutError::Disconnected) => break,
            }
        }
        self.seen.clone()
    }

    fn signal(&self, signal: i32) {
        // SAFETY: kill(2) on the child this test started.
        let done = unsafe { libc::kill(self.child.id() as i32, signal) };
        assert_eq!(done, 0, "the signal was sent");
    }

    /// Waits (up to 30 s) for the process to end.
    fn exit_status(&mut self) -> std::process::ExitStatus {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status;
            }
            assert!(
                Instant::now() < deadline,
                "gatehouse did not stop within 30 s:\n{}",
                self.seen.join("\n")
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Served {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

const BODY: &str = r#"{"key": "gh_this_key_does_not_exist"}"#;

/// A key check whose request head the server has read (it answered
/// `100 Continue`) and whose body is only half sent.
fn begin_upload(addr: &str) -> TcpStream {
    let mut stream = TcpStream::connect(addr).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    write!(
        stream,
        "POST /api/v1/keys/verify HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/json\r\n\
         Content-Length: {}\r\nExpect: 100-continue\r\nConnection: close\r\n\r\n",
        BODY.len()
    )
    .unwrap();
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        assert_eq!(stream.read(&mut byte).unwrap(), 1, "the server answers");
        head.push(byte[0]);
    }
    let head = String::from_utf8_lossy(&head);
    assert!(head.starts_with("HTTP/1.1 100 Continue"), "{head}");
    stream
        .write_all(&BODY.as_bytes()[..BODY.len() / 2])
        .unwrap();
    stream
}

fn finish_upload(mut stream: TcpStream) -> String {
    // The rest of the body may meet a closed connection: that is what the
    // forced stop is about, and what the answer (or its absence) shows.
    let _ = stream.write_all(&BODY.as_bytes()[BODY.len() / 2..]);
    let mut answer = Vec::new();
    let _ = stream.read_to_end(&mut answer);
    String::from_utf8_lossy(&answer).into_owned()
}

#[test]
fn sigint_lets_a_request_in_flight_finish_and_exits_0() {
    let dir = tempfile::tempdir().unwrap();
    let mut server = Served::start(dir.path());
    let upload = begin_upload(&server.addr);
    server.signal(libc::SIGINT);
    server.wait_for("SIGINT received; stopping gracefully");
    let answer = finish_upload(upload);
    assert!(answer.starts_with("HTTP/1.1 200 OK"), "{answer}");
    assert!(answer.contains("\"valid\":false"), "{answer}");
    let status = server.exit_status();
    assert_eq!(status.code(), Some(0), "{status}");
    server.wait_for("usage written; stopped");
}

#[test]
fn a_second_sigint_stops_at_once() {
    let dir = tempfile::tempdir().unwrap();
    let mut server = Served::start(dir.path());
    let upload = begin_upload(&server.addr);
    server.signal(libc::SIGINT);
    server.wait_for("SIGINT received; stopping gracefully");
    server.signal(libc::SIGINT);
    let status = server.exit_status();
    assert_eq!(status.code(), Some(130), "{status}");
    let answer = finish_upload(upload);
    assert!(!answer.contains("HTTP/1.1 200"), "cut off: {answer}");
    let lines = server.all_lines();
    assert!(
        lines
            .iter()
            .any(|l| l.contains("SIGINT received again; stopping at once")),
        "{}",
        lines.join("\n")
    );
}

#[test]
fn a_sigterm_as_soon_as_it_listens_is_a_graceful_stop() {
    let dir = tempfile::tempdir().unwrap();
    let mut server = Served::start(dir.path());
    server.signal(libc::SIGTERM);
    let status = server.exit_status();
    assert_eq!(status.code(), Some(0), "not ended by the signal: {status}");
}
