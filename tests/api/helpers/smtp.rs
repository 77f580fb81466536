//! A real SMTP server process for the delivery tests.

use std::{
    io::{BufRead, BufReader},
    process::{Child, Command, Stdio},
};

use super::read_eml_files;

/// A port nobody listens on right now.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// The test SMTP server (`tests/support/smtp_server.py`, aiosmtpd) as a
/// child process; see that file for its behaviours.
pub struct SmtpServer {
    pub port: u16,
    pub dir: tempfile::TempDir,
    child: Child,
}

impl SmtpServer {
    /// `None` (with a notice) when aiosmtpd is not installed, except under
    /// `CI=true`, where that is a failure.
    pub fn start(port: u16) -> Option<Self> {
        let dir = tempfile::tempdir().unwrap();
        let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/support/smtp_server.py");
        let has_aiosmtpd = Command::new("python3")
            .args(["-c", "import aiosmtpd"])
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        if !has_aiosmtpd {
            if std::env::var("CI").is_ok_and(|v| v == "true") {
                panic!("CI=true but python3 cannot import aiosmtpd (pip install aiosmtpd)");
            }
            eprintln!("notice: aiosmtpd not installed, skipping this SMTP test");
            return None;
        }
        let mut child = Command::new("python3")
            .args([script, &port.to_string(), dir.path().to_str().unwrap()])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .expect("start the SMTP server");
        let mut ready = String::new();
        BufReader::new(child.stdout.as_mut().unwrap())
            .read_line(&mut ready)
            .unwrap();
        assert_eq!(ready.trim(), "ready", "SMTP server did not start");
        Some(Self { port, dir, child })
    }

    pub fn url(&self) -> String {
        format!("smtp://127.0.0.1:{}", self.port)
    }

    pub fn messages(&self) -> Vec<String> {
        read_eml_files(self.dir.path())
    }
}

impl Drop for SmtpServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
