//! Mail through a real SMTP server on loopback (aiosmtpd, writing a
//! maildir), including delivery after the server comes up late and after a
//! Gatehouse restart. Skips when aiosmtpd is missing, unless
//! GATEHOUSE_REQUIRE_E2E is set (as in CI).

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use gatehouse::config::{Mode, SmtpTls};

use crate::helpers::{code_in, e2e_available, free_port, spawn_app_at, TestApp};

pub struct SmtpServer {
    child: Child,
    maildir: PathBuf,
}

impl Drop for SmtpServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub fn aiosmtpd_available() -> bool {
    let ok = Command::new("python3")
        .args(["-c", "import aiosmtpd"])
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    e2e_available(ok, "python3 -m aiosmtpd (pip install aiosmtpd)")
}

impl SmtpServer {
    pub fn start(port: u16, maildir: &Path) -> SmtpServer {
        let child = crate::helpers::dies_with_the_test(&mut Command::new("python3"))
            .args(["-m", "aiosmtpd", "-n", "-l"])
            .arg(format!("127.0.0.1:{port}"))
            .args(["-c", "aiosmtpd.handlers.Mailbox"])
            .arg(maildir)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("aiosmtpd starts");
        let deadline = Instant::now() + Duration::from_secs(10);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(
                Instant::now() < deadline,
                "aiosmtpd did not start listening"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        SmtpServer {
            child,
            maildir: maildir.to_path_buf(),
        }
    }

    /// Waits for a message to `to` and returns its whole text.
    pub fn wait_for(&self, to: &str, timeout: Duration) -> String {
        let deadline = Instant::now() + timeout;
        loop {
            if let Ok(entries) = std::fs::read_dir(self.maildir.join("new")) {
                for entry in entries.flatten() {
                    let text = std::fs::read_to_string(entry.path()).unwrap_or_default();
                    if text.contains(&format!("X-RcptTo: {to}")) {
                        return text;
                    }
                }
            }
            assert!(
                Instant::now() < deadline,
                "no mail to {to} within {timeout:?}"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

/// A header of a received message (continuation lines unfolded).
fn header(message: &str, name: &str) -> Option<String> {
    let head = message.split("\n\n").next().unwrap_or_default();
    let mut unfolded: Vec<String> = Vec::new();
    for line in head.lines() {
        let line = line.trim_end_matches('\r');
        match unfolded.last_mut() {
            Some(last) if line.starts_with([' ', '\t']) => {
                last.push(' ');
                last.push_str(line.trim());
            }
            _ => unfolded.push(line.to_string()),
        }
    }
    unfolded.iter().find_map(|l| {
        let (key, value) = l.split_once(':')?;
        key.eq_ignore_ascii_case(name)
            .then(|| value.trim().to_string())
    })
}

fn smtp_app(root: &Path, port: u16) -> TestApp {
    spawn_app_at(root, |c| {
        c.mode = Mode::Production;
        c.public_url = Some("https://keys.acme.test".parse().unwrap());
        c.smtp.host = Some("127.0.0.1".into());
        c.smtp.port = port;
        c.smtp.tls = SmtpTls::None;
        c.smtp.from = "Gatehouse <keys@acme.test>".into();
        c.smtp.retry_base_secs = 1;
        c.smtp.retry_max_secs = 2;
        c.smtp.timeout_secs = 2;
        c.ui.product_name = "Acme API".into();
        c.ui.accent_color = "#0b6e4f".into();
    })
}

#[test]
fn login_codes_arrive_over_smtp() {
    if !aiosmtpd_available() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let smtp = SmtpServer::start(port, &dir.path().join("maildir"));
    let app = smtp_app(dir.path(), port);

    assert_eq!(app.send_code("smtp@acme.test").status, 202);
    let mail = smtp.wait_for("smtp@acme.test", Duration::from_secs(20));
    // Under the team's own name (ui.product_name).
    assert!(mail.contains("Subject: Your Acme API login code"), "{mail}");
    assert!(
        mail.contains("keys@acme.test"),
        "From is taken from smtp.from:\n{mail}"
    );
    // A standards-complete message, as providers expect before they trust it.
    let id = header(&mail, "Message-ID").expect("a Message-ID");
    assert!(
        id.starts_with('<') && id.ends_with("@keys.acme.test>"),
        "on the public_url's domain: {id}"
    );
    assert_eq!(header(&mail, "MIME-Version").as_deref(), Some("1.0"));
    let date = header(&mail, "Date").expect("a Date");
    let sent = time::OffsetDateTime::parse(&date, &time::format_description::well_known::Rfc2822)
        .unwrap_or_else(|e| panic!("Date {date:?} is not RFC 5322: {e}"));
    let age = (time::OffsetDateTime::now_utc() - sent).abs();
    assert!(age < time::Duration::minutes(5), "Date {date:?} is now");
    // A plain-text part and, as its alternative, HTML in the team's colour.
    let content_type = header(&mail, "Content-Type").unwrap();
    assert!(
        content_type.starts_with("multipart/alternative;"),
        "{content_type}"
    );
    let plain = mail.find("Content-Type: text/plain").expect("a text part");
    let html = mail.find("Content-Type: text/html").expect("an HTML part");
    assert!(plain < html, "the text part comes first:\n{mail}");
    let unfolded = mail.replace("=\r\n", "").replace("=\n", "");
    assert!(unfolded.contains("#0b6e4f"), "the accent colour:\n{mail}");
    assert!(
        unfolded.contains("Acme API at https://keys.acme.test"),
        "{mail}"
    );
    let code = code_in(&mail).expect("the code is in the message");
    let res = app.verify("smtp@acme.test", &code);
    assert_eq!(res.status, 200, "{}", res.body);
    // Delivered messages keep no body (it held the code).
    let deadline = Instant::now() + Duration::from_secs(5);
    while app.query_i64("SELECT count(*) FROM mail_outbox WHERE sent_at IS NOT NULL AND body = ''")
        != 1
    {
        assert!(
            Instant::now() < deadline,
            "the delivered message is marked sent and erased"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn mail_waits_for_a_late_smtp_server_and_survives_a_restart() {
    if !aiosmtpd_available() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();

    // Nothing listens yet: the message is queued and retried.
    let app = smtp_app(dir.path(), port);
    assert_eq!(app.send_code("late@acme.test").status, 202);
    let deadline = Instant::now() + Duration::from_secs(10);
    while app.query_i64("SELECT attempts FROM mail_outbox WHERE recipient = 'late@acme.test'") < 1 {
        assert!(Instant::now() < deadline, "a delivery attempt was made");
        std::thread::sleep(Duration::from_millis(100));
    }
    assert_eq!(
        app.query_i64(
            "SELECT count(*) FROM mail_outbox WHERE sent_at IS NULL AND failed_at IS NULL"
        ),
        1
    );

    // Gatehouse restarts while the message is still pending...
    drop(app);
    let app = smtp_app(dir.path(), port);
    // ...and the SMTP server comes up afterwards: the message arrives.
    let smtp = SmtpServer::start(port, &dir.path().join("maildir"));
    let mail = smtp.wait_for("late@acme.test", Duration::from_secs(30));
    let code = code_in(&mail).unwrap();
    assert_eq!(app.verify("late@acme.test", &code).status, 200);
}
