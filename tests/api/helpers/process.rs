//! `allot` as a child process: commands, and `allot serve` read from its log.

use std::{
    io::{BufRead, BufReader},
    net::SocketAddr,
    process::{Child, Command, Stdio},
    sync::{Arc, Mutex},
    time::Duration,
};

use serde_json::Value;

/// `allot` as a child process, with a clean `ALLOT_*` environment and a
/// working directory of its own.
pub fn allot_command(dir: &std::path::Path) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_allot"));
    for (key, _) in std::env::vars() {
        if key.starts_with("ALLOT_") {
            cmd.env_remove(key);
        }
    }
    cmd.current_dir(dir).env("ALLOT_LOG_FORMAT", "json");
    cmd
}

/// A running `allot serve` (or `allot worker`) whose address and registry
/// id were read from its own log.
pub struct ServeProcess {
    pub child: Child,
    /// Unspecified (`0.0.0.0:0`) for a worker.
    pub addr: SocketAddr,
    /// Its id in the process registry, the target of control commands.
    pub process_id: String,
    pub log: Arc<Mutex<Vec<String>>>,
    reader: Option<std::thread::JoinHandle<()>>,
}

impl ServeProcess {
    pub fn start(dir: &std::path::Path, database_url: &str) -> Self {
        Self::start_with(dir, database_url, &[])
    }

    /// `allot serve` with extra `ALLOT_*` settings.
    pub fn start_with(dir: &std::path::Path, database_url: &str, env: &[(&str, &str)]) -> Self {
        Self::spawn("serve", dir, database_url, env)
    }

    /// `allot worker` with extra `ALLOT_*` settings.
    pub fn worker(dir: &std::path::Path, database_url: &str, env: &[(&str, &str)]) -> Self {
        Self::spawn("worker", dir, database_url, env)
    }

    fn spawn(role: &str, dir: &std::path::Path, database_url: &str, env: &[(&str, &str)]) -> Self {
        let mut child = allot_command(dir)
            .arg(role)
            .envs(env.iter().copied())
            .env("ALLOT_DATABASE_URL", database_url)
            .env("ALLOT_LISTEN", "127.0.0.1:0")
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("spawn allot {role}: {e}"));
        let stderr = child.stderr.take().expect("stderr piped");
        let log = Arc::new(Mutex::new(Vec::new()));
        let (event_tx, event_rx) = std::sync::mpsc::channel::<(String, String)>();
        let log_writer = log.clone();
        let reader = std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if let Ok(event) = serde_json::from_str::<Value>(&line) {
                    let field = |name: &str| event[name].as_str().unwrap_or_default().to_string();
                    match event["message"].as_str() {
                        Some("listening") => drop(event_tx.send(("addr".into(), field("addr")))),
                        Some("answering control commands") => {
                            drop(event_tx.send(("process".into(), field("process"))))
                        }
                        _ => {}
                    }
                }
                log_writer.lock().unwrap().push(line);
            }
        });
        let (mut addr, mut process_id) = ((role != "serve").then(|| "0.0.0.0:0".to_string()), None);
        while addr.is_none() || process_id.is_none() {
            match event_rx.recv_timeout(Duration::from_secs(60)) {
                Ok((name, value)) if name == "addr" => addr = Some(value),
                Ok((_, value)) => process_id = Some(value),
                Err(_) => panic!("allot {role} did not start: {:?}", log.lock().unwrap()),
            }
        }
        Self {
            child,
            addr: addr.unwrap().parse().expect("listening address"),
            process_id: process_id.unwrap(),
            log,
            reader: Some(reader),
        }
    }

    pub fn signal(&self, signal: &str) {
        let status = Command::new("kill")
            .args([&format!("-{signal}"), &self.child.id().to_string()])
            .status()
            .expect("kill");
        assert!(status.success());
    }

    /// Waits until the server has logged a line containing `needle`.
    pub fn wait_for_log(&self, needle: &str) {
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        while !self.log.lock().unwrap().iter().any(|l| l.contains(needle)) {
            assert!(
                std::time::Instant::now() < deadline,
                "no log line with {needle:?}"
            );
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// Waits for the process to exit; its exit code and whole log.
    pub fn wait(mut self) -> (Option<i32>, Vec<String>) {
        let exit = self.child.wait().expect("wait for allot serve");
        // The reader thread ends when the pipe closes, after the last line.
        if let Some(reader) = self.reader.take() {
            let _ = reader.join();
        }
        let log = self.log.lock().unwrap().clone();
        (exit.code(), log)
    }

    /// Sends SIGTERM and waits for the exit code.
    pub fn terminate(self) -> (Option<i32>, Vec<String>) {
        self.signal("TERM");
        self.wait()
    }
}

impl Drop for ServeProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `allot ctl ARGS` against `database_url`: its exit code, stdout parsed as
/// JSON when it is JSON (`Value::Null` otherwise), and stderr.
pub fn ctl(dir: &std::path::Path, database_url: &str, args: &[&str]) -> (i32, Value, String) {
    let output = allot_command(dir)
        .arg("ctl")
        .args(args)
        .env("ALLOT_DATABASE_URL", database_url)
        .output()
        .expect("run allot ctl");
    let stdout = String::from_utf8_lossy(&output.stdout);
    (
        output.status.code().unwrap_or(-1),
        serde_json::from_str(&stdout).unwrap_or(Value::Null),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}
