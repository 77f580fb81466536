//! Parts of the outside world a fault test breaks on purpose, so that it
//! never breaks the shared ones: a small disk of its own ([`SmallDisk`]) and
//! a PostgreSQL server of its own ([`PrivatePostgres`]). Both need the
//! machine's tools (root for `mount`, PostgreSQL's server binaries); without
//! them a test skips with a notice, except under `CI=true`.

use std::{
    path::{Path, PathBuf},
    process::Command,
};

use super::free_port;

/// `None`, with a notice; under `CI=true` a failure instead.
fn skip<T>(what: &str) -> Option<T> {
    if std::env::var("CI").is_ok_and(|v| v == "true") {
        panic!("CI=true but {what}");
    }
    eprintln!("notice: {what}; skipping this fault test");
    None
}

fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|o| o.stdout.starts_with(b"0\n"))
}

fn run(command: &mut Command) -> Result<(), String> {
    let output = command.output().map_err(|e| format!("{command:?}: {e}"))?;
    if output.status.success() {
        Ok(())
    } else {
        Err(format!(
            "{command:?}: {}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        ))
    }
}

/// A tmpfs of a few MiB mounted for one test, to fill up.
pub struct SmallDisk {
    dir: tempfile::TempDir,
}

impl SmallDisk {
    pub fn mount(mib: u32) -> Option<Self> {
        let dir = tempfile::tempdir().unwrap();
        let mounted = run(Command::new("mount").args([
            "-t",
            "tmpfs",
            "-o",
            &format!("size={mib}m"),
            "tmpfs",
            dir.path().to_str().unwrap(),
        ]));
        if let Err(error) = mounted {
            return skip(&format!("cannot mount a tmpfs ({error})"));
        }
        Some(Self { dir })
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    /// Writes a file until the disk is full.
    pub fn fill(&self) {
        use std::io::Write;
        let mut filler = std::fs::File::create(self.filler()).unwrap();
        let chunk = vec![0u8; 4096];
        while filler
            .write_all(&chunk)
            .and_then(|()| filler.flush())
            .is_ok()
        {}
    }

    /// Remounts the disk read-only (no file on it may be open for writing).
    pub fn make_read_only(&self) {
        run(Command::new("mount").args(["-o", "remount,ro", self.dir.path().to_str().unwrap()]))
            .unwrap();
    }

    pub fn free(&self) {
        std::fs::remove_file(self.filler()).unwrap();
    }

    fn filler(&self) -> PathBuf {
        self.dir.path().join("filler")
    }
}

impl Drop for SmallDisk {
    fn drop(&mut self) {
        // Lazy: a process killed with the test may still hold a file.
        let _ = run(Command::new("umount").args(["-l", self.dir.path().to_str().unwrap()]));
    }
}

/// A PostgreSQL server of the test's own, on a free port, to stop and
/// start at will (as a failover or a restart would).
pub struct PrivatePostgres {
    pub port: u16,
    bin: PathBuf,
    data: PathBuf,
    dir: tempfile::TempDir,
}

impl PrivatePostgres {
    pub fn start() -> Option<Self> {
        let Some(bin) = std::fs::read_dir("/usr/lib/postgresql")
            .ok()
            .and_then(|versions| versions.filter_map(Result::ok).map(|v| v.path()).max())
            .map(|version| version.join("bin"))
            .filter(|bin| bin.join("initdb").exists())
        else {
            return skip("PostgreSQL's server binaries are not in /usr/lib/postgresql");
        };
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path().join("data");
        // The server refuses to run as root: it runs as `postgres`, which
        // must be able to reach its directory.
        if is_root() {
            run(Command::new("chown").args(["postgres", dir.path().to_str().unwrap()])).unwrap();
        }
        let server = Self {
            port: free_port(),
            bin,
            data,
            dir,
        };
        let initialised = server.pg("initdb", |cmd| {
            cmd.args([
                "-A",
                "trust",
                "-U",
                "postgres",
                "-E",
                "UTF8",
                "--no-sync",
                "-D",
            ])
            .arg(&server.data);
        });
        if let Err(error) = initialised {
            return skip(&format!("initdb failed ({error})"));
        }
        server.start_again();
        Some(server)
    }

    pub fn url(&self) -> String {
        format!("postgres://postgres@127.0.0.1:{}/postgres", self.port)
    }

    /// Stops the way a managed failover does: open connections are ended
    /// ("terminating connection due to administrator command").
    pub fn stop_fast(&self) {
        self.pg_ctl(&["-m", "fast", "stop"]).unwrap();
    }

    pub fn start_again(&self) {
        let options = format!(
            "-p {} -k {} -c listen_addresses=127.0.0.1 -c ssl=off",
            self.port,
            self.dir.path().display()
        );
        let log = self.dir.path().join("server.log");
        let log = log.to_str().unwrap();
        self.pg_ctl(&["-o", &options, "-l", log, "start"])
            .unwrap_or_else(|e| panic!("private PostgreSQL did not start: {e}"));
    }

    fn pg_ctl(&self, args: &[&str]) -> Result<(), String> {
        self.pg("pg_ctl", |cmd| {
            cmd.arg("-D").arg(&self.data).arg("-w").args(args);
        })
    }

    /// Runs one of the server's programs, as `postgres` when we are root.
    fn pg(&self, program: &str, args: impl FnOnce(&mut Command)) -> Result<(), String> {
        let path = self.bin.join(program);
        let mut cmd = if is_root() {
            let mut cmd = Command::new("runuser");
            cmd.args(["-u", "postgres", "--"]).arg(path);
            cmd
        } else {
            Command::new(path)
        };
        args(&mut cmd);
        run(&mut cmd)
    }
}

impl Drop for PrivatePostgres {
    fn drop(&mut self) {
        let _ = self.pg_ctl(&["-m", "immediate", "stop"]);
    }
}
