//! Fault drill on SQLite with a real process and a real full disk: the
//! built binary serves from a small filesystem of its own (a tmpfs the
//! test mounts, so it needs root; skipped visibly otherwise), takes writes
//! until the disk is nearly full, and is then filled to the last byte.
//! Writes are 503 `unavailable` with Retry-After, never 500; key checks
//! answer from the cache; once space is freed the same process takes
//! writes again by itself; nothing acknowledged is lost, also across a
//! restart. The in-process variant with a simulated fault is in
//! `storage.rs`; the several-node drills in `tests/api_postgres/drills.rs`.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use serde_json::json;

use crate::helpers::{e2e_available, gatehouse, login_at, post_json_at, send, Server};

/// A tmpfs of `size` mounted on a new directory, unmounted on drop.
struct SmallDisk {
    _dir: tempfile::TempDir,
    mount: PathBuf,
}

impl SmallDisk {
    fn mount(size: &str) -> Option<SmallDisk> {
        let dir = tempfile::tempdir().unwrap();
        let mount = dir.path().join("disk");
        std::fs::create_dir(&mount).unwrap();
        let mounted = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(&mount)
            .stderr(std::process::Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        e2e_available(
            mounted,
            "a filesystem of the test's own (mounting a tmpfs needs root)",
        )
        .then_some(SmallDisk { _dir: dir, mount })
    }

    fn free_bytes(&self) -> u64 {
        let path = std::ffi::CString::new(self.mount.to_str().unwrap()).unwrap();
        // SAFETY: statvfs writes into the zeroed struct we pass.
        unsafe {
            let mut st: libc::statvfs = std::mem::zeroed();
            assert_eq!(libc::statvfs(path.as_ptr(), &mut st), 0);
            st.f_bavail as u64 * st.f_frsize as u64
        }
    }
}

impl Drop for SmallDisk {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.mount).status();
    }
}

/// Fills `path` with a file until `leave` bytes are free (or none).
fn fill(disk: &SmallDisk, path: &Path, leave: u64) {
    use std::io::Write;
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .unwrap();
    let chunk = vec![0x5a_u8; 64 * 1024];
    while disk.free_bytes() > leave {
        let n = (disk.free_bytes() - leave).min(chunk.len() as u64) as usize;
        if f.write_all(&chunk[..n.max(1)]).is_err() {
            break;
        }
    }
    let _ = f.sync_all();
}

fn serve(root: &Path, data: &Path) -> Server {
    let mut cmd = gatehouse(root);
    cmd.args(["serve", "--listen", "127.0.0.1:0", "--data-dir"])
        .arg(data)
        .env("GATEHOUSE_USAGE__FLUSH_INTERVAL_SECS", "1");
    Server::start(&mut cmd)
}

#[test]
fn a_sqlite_node_on_a_full_disk_refuses_writes_and_recovers_when_space_is_freed() {
    let Some(disk) = SmallDisk::mount("16m") else {
        return;
    };
    let root = tempfile::tempdir().unwrap();
    let data = disk.mount.join("data");
    let server = serve(root.path(), &data);
    let base = server.base.clone();
    let t = login_at(&base, "disk@acme.test");
    let auth = format!("Bearer {}", t.access);
    let create = |name: &str| {
        crate::helpers::send_body(
            server
                .request("POST", "/api/v1/api-keys")
                .set("Authorization", &auth)
                .set("Content-Type", "application/json"),
            &json!({ "name": name, "metadata": { "note": "x".repeat(2000) } }).to_string(),
        )
    };
    let res = create("cached");
    assert_eq!(res.status, 201, "{}", res.body);
    let cached = res.json()["plaintext_key"].as_str().unwrap().to_string();
    let verify = |key: &str| post_json_at(&base, "/api/v1/keys/verify", &json!({ "key": key }));
    assert_eq!(verify(&cached).json()["valid"], true);

    // Nearly full: 1 MiB left, then writes until the disk refuses them.
    let filler = disk.mount.join("filler");
    fill(&disk, &filler, 1024 * 1024);
    let mut acknowledged = Vec::new();
    let mut refused = None;
    let started = Instant::now();
    for i in 0..5000 {
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "bounded in time"
        );
        let res = create(&format!("under load {i}"));
        match res.status {
            201 => acknowledged.push(res.json()["id"].as_str().unwrap().to_string()),
            503 => {
                refused = Some(res);
                break;
            }
            other => panic!("{other} on a nearly full disk: {}", res.body),
        }
        if i % 20 == 0 {
            assert_eq!(verify(&cached).json()["valid"], true);
        }
    }
    let refused = refused.expect("the full disk refuses a write");
    refused.assert_error(503, "unavailable");
    assert!(refused.header("retry-after").is_some());
    // The last bytes too: everything that writes is refused, nothing 500s.
    fill(&disk, &filler, 0);
    for i in 0..20 {
        let res = create(&format!("on a full disk {i}"));
        match res.status {
            201 => acknowledged.push(res.json()["id"].as_str().unwrap().to_string()),
            503 => {
                res.assert_error(503, "unavailable");
            }
            other => panic!("{other} on a full disk: {}", res.body),
        }
        assert_eq!(verify(&cached).json()["valid"], true, "checks go on");
    }
    eprintln!(
        "{} keys acknowledged before the disk was full",
        acknowledged.len()
    );
    assert!(acknowledged.len() > 10, "{}", acknowledged.len());

    // Space freed: the same process takes writes again by itself.
    std::fs::remove_file(&filler).unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let res = create("after");
        if res.status == 201 {
            acknowledged.push(res.json()["id"].as_str().unwrap().to_string());
            break;
        }
        res.assert_error(503, "unavailable");
        assert!(
            Instant::now() < deadline,
            "writes again once space is freed"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    let get = |server: &Server, id: &str| {
        send(
            server
                .request("GET", &format!("/api/v1/api-keys/{id}"))
                .set("Authorization", &auth),
        )
    };
    for id in &acknowledged {
        assert_eq!(get(&server, id).status, 200, "acknowledged key {id}");
    }
    let (code, _, stderr) = server.terminate();
    assert_eq!(code, Some(0), "{stderr}");

    // Across a restart too, in a database that is whole.
    let server = serve(root.path(), &data);
    for id in &acknowledged {
        assert_eq!(get(&server, id).status, 200, "acknowledged key {id}");
    }
    let conn = rusqlite::Connection::open(data.join("gatehouse.db")).unwrap();
    let check: String = conn
        .query_row("PRAGMA integrity_check", [], |r| r.get(0))
        .unwrap();
    assert_eq!(check, "ok");
    drop(conn);
    let (code, _, stderr) = server.terminate();
    assert_eq!(code, Some(0), "{stderr}");
}
