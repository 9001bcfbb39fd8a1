//! Skipping an end-to-end test visibly: one SKIPPED line at once (past the
//! harness's output capture) and a summary when the test binary exits, for
//! every test binary and every missing peer (a proxy, a browser, Redis,
//! PostgreSQL). With GATEHOUSE_REQUIRE_E2E set (as in CI) a missing peer is
//! a failure instead.

/// Whether an end-to-end test may run: when `available` is false it is
/// skipped, unless GATEHOUSE_REQUIRE_E2E is set (as in CI), which fails it.
///
/// A skip must never pass for a pass: it is announced on stderr at once
/// (past the test harness's output capture, naming the test, what is
/// missing and how to enable it) and again in a summary when the test
/// binary exits.
pub fn e2e_available(available: bool, what: &str) -> bool {
    if !available {
        if std::env::var_os("GATEHOUSE_REQUIRE_E2E").is_some() {
            panic!("GATEHOUSE_REQUIRE_E2E is set but {what} is not available");
        }
        skipped::record(what);
    }
    available
}

mod skipped {
    use std::io::Write;
    use std::sync::{Mutex, Once};

    static SKIPPED: Mutex<Vec<String>> = Mutex::new(Vec::new());
    static SUMMARY: Once = Once::new();

    const HOW: &str = "install the peers and run everything as CI does with \
        `.ci/run`; set GATEHOUSE_REQUIRE_E2E=1 to make a missing peer fail the test";

    pub fn record(what: &str) {
        let test = std::thread::current()
            .name()
            .unwrap_or("an end-to-end test")
            .to_string();
        let line = format!("{test}: {what} is not available");
        // Straight to the file descriptor: the harness captures eprintln!.
        let _ = writeln!(std::io::stderr(), "\nSKIPPED {line}\n        ({HOW})");
        SKIPPED.lock().unwrap_or_else(|e| e.into_inner()).push(line);
        SUMMARY.call_once(|| {
            // SAFETY: registers a plain `extern "C" fn` without arguments,
            // as atexit requires; it runs once, when the test binary exits.
            unsafe {
                libc::atexit(summary);
            }
        });
    }

    extern "C" fn summary() {
        let skipped = SKIPPED.lock().unwrap_or_else(|e| e.into_inner());
        let mut err = std::io::stderr();
        let _ = writeln!(
            err,
            "\n{} end-to-end test{} SKIPPED (they tested nothing):",
            skipped.len(),
            if skipped.len() == 1 { "" } else { "s" }
        );
        for line in skipped.iter() {
            let _ = writeln!(err, "  - {line}");
        }
        let _ = writeln!(err, "To run them: {HOW}.");
    }
}
