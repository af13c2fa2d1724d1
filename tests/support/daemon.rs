//! Runs the real `platecam` binary as a child process and watches its log.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

pub fn bin() -> &'static str {
    env!("CARGO_BIN_EXE_platecam")
}

/// The repo's sample photos and their ground truth (`file x y w h PLATE`).
pub fn samples() -> (PathBuf, Vec<(String, String)>) {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("samples");
    let truth = std::fs::read_to_string(dir.join("groundtruth.tsv")).unwrap_or_default();
    let rows = truth
        .lines()
        .filter_map(|l| {
            let f: Vec<&str> = l.split('\t').collect();
            (f.len() >= 6).then(|| (f[0].to_string(), f[5].to_string()))
        })
        .collect();
    (dir, rows)
}

/// What a test run's config varies.
pub struct RunConfig<'a> {
    pub state: &'a Path,
    pub replay: &'a Path,
    /// A camera source URI other than `replay://<replay>`.
    pub source: Option<String>,
    /// Extra `[[camera]]` keys.
    pub camera: &'a str,
    pub port: u16,
    pub repeat: bool,
    pub drain_timeout: &'a str,
    /// Extra `[storage]` keys.
    pub storage: &'a str,
    /// `[logging]` keys.
    pub logging: &'a str,
}

impl<'a> RunConfig<'a> {
    /// A one-pass replay with a 10 s drain and default storage and logging.
    pub fn new(state: &'a Path, replay: &'a Path, port: u16) -> RunConfig<'a> {
        RunConfig {
            state,
            replay,
            source: None,
            camera: "",
            port,
            repeat: false,
            drain_timeout: "10s",
            storage: "",
            logging: "",
        }
    }

    pub fn toml(&self) -> String {
        format!(
            r#"
[device]
id = "test-{port}"

[[camera]]
name = "lane1"
source = "{source}"
loop = {repeat}
{camera}
# The replay timing (fps, hold_frames, gap_frames) and [tracking] are left at their defaults on
# purpose: the tests must pass with what a unit runs.

[mqtt]
url = "mqtt://127.0.0.1:{port}"
health_interval = "1s"
reconnect_max = "1s"
drain_timeout = "{drain}"

[storage]
dir = "{state}"
{storage}

[logging]
{logging}
"#,
            port = self.port,
            source = self
                .source
                .clone()
                .unwrap_or_else(|| format!("replay://{}", self.replay.display())),
            repeat = self.repeat,
            camera = self.camera,
            drain = self.drain_timeout,
            state = self.state.display(),
            storage = self.storage,
            logging = self.logging,
        )
    }

    /// Writes the config next to the state folder and returns its path.
    pub fn write(&self) -> PathBuf {
        let path = self.state.with_extension("toml");
        std::fs::write(&path, self.toml()).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        path
    }
}

/// A running platecam (the daemon, or a watcher) whose output lines are collected.
pub struct Daemon {
    pub child: Child,
    lines: Arc<Mutex<Vec<String>>>,
}

impl Daemon {
    pub fn start(config_path: &Path) -> Daemon {
        Daemon::start_logging(config_path, "info")
    }

    /// `platecam run` with `filter` as its log filter (`PLATECAM_LOG`).
    pub fn start_logging(config_path: &Path, filter: &str) -> Daemon {
        let mut cmd = Command::new(bin());
        cmd.args(["run", "--config"])
            .arg(config_path)
            .env("PLATECAM_LOG", filter)
            .env_remove("JOURNAL_STREAM");
        Daemon::spawn(cmd, Output::Stderr)
    }

    /// `platecam run` with extra environment variables (a faked clock).
    pub fn start_env(config_path: &Path, env: &[(&str, &str)]) -> Daemon {
        let mut cmd = Command::new(bin());
        cmd.args(["run", "--config"])
            .arg(config_path)
            .env("PLATECAM_LOG", "info")
            .env_remove("JOURNAL_STREAM")
            .envs(env.iter().copied());
        Daemon::spawn(cmd, Output::Stderr)
    }

    /// Any platecam command, collecting its stdout (`platecam logs --follow`).
    pub fn watch(args: &[&str]) -> Daemon {
        let mut cmd = Command::new(bin());
        cmd.args(args);
        Daemon::spawn(cmd, Output::Stdout)
    }

    fn spawn(mut cmd: Command, collect: Output) -> Daemon {
        let (out, err) = match collect {
            Output::Stdout => (Stdio::piped(), Stdio::inherit()),
            Output::Stderr => (Stdio::null(), Stdio::piped()),
        };
        let mut child = cmd
            .stdout(out)
            .stderr(err)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {}: {e}", bin()));
        let lines = Arc::new(Mutex::new(Vec::new()));
        let stream: Option<Box<dyn std::io::Read + Send>> = match collect {
            Output::Stdout => child.stdout.take().map(|s| Box::new(s) as _),
            Output::Stderr => child.stderr.take().map(|s| Box::new(s) as _),
        };
        if let Some(stream) = stream {
            let sink = lines.clone();
            std::thread::spawn(move || {
                for line in BufReader::new(stream).lines().map_while(Result::ok) {
                    sink.lock().unwrap().push(line);
                }
            });
        }
        Daemon { child, lines }
    }

    pub fn lines(&self) -> Vec<String> {
        self.lines.lock().unwrap().clone()
    }

    /// Ids of the reads the daemon logged as accepted (synced to the outbox).
    pub fn accepted_ids(&self) -> Vec<String> {
        self.lines()
            .iter()
            .filter(|l| l.contains("read accepted"))
            .filter_map(|l| field(l, "id"))
            .collect()
    }

    pub fn wait_for(&self, what: impl Fn(&[String]) -> bool, limit: Duration) -> bool {
        let start = Instant::now();
        while start.elapsed() < limit {
            if what(&self.lines()) {
                return true;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        false
    }

    pub fn wait_exit(&mut self, limit: Duration) -> Option<ExitStatus> {
        let start = Instant::now();
        while start.elapsed() < limit {
            if let Ok(Some(status)) = self.child.try_wait() {
                // Let the reader thread take the last lines.
                std::thread::sleep(Duration::from_millis(100));
                return Some(status);
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        None
    }

    /// Waits up to `limit` for the daemon to exit, and asserts it exited 0 (its log otherwise).
    pub fn assert_exits_0(&mut self, limit: Duration) {
        let status = self.wait_exit(limit);
        assert_eq!(
            status.and_then(|s| s.code()),
            Some(0),
            "{:#?}",
            self.lines()
        );
    }

    pub fn signal(&self, sig: nix::sys::signal::Signal) {
        let pid = nix::unistd::Pid::from_raw(self.child.id() as i32);
        nix::sys::signal::kill(pid, sig).unwrap_or_else(|e| panic!("signal {sig}: {e}"));
    }

    pub fn kill9(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        std::thread::sleep(Duration::from_millis(100));
    }
}

enum Output {
    Stdout,
    Stderr,
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `key=value` from a tracing fmt line (values may be quoted).
pub fn field(line: &str, key: &str) -> Option<String> {
    let start = line.find(&format!(" {key}="))? + key.len() + 2;
    let rest = &line[start..];
    let value = if let Some(stripped) = rest.strip_prefix('"') {
        stripped.split('"').next()?
    } else {
        rest.split_whitespace().next()?
    };
    Some(value.to_string())
}

/// Runs a platecam command to completion, `path` appended to `args`: (exit code, stdout, stderr).
pub fn platecam(args: &[&str], path: Option<&Path>) -> (i32, String, String) {
    let mut cmd = Command::new(bin());
    cmd.args(args).env_remove("JOURNAL_STREAM");
    if let Some(path) = path {
        cmd.arg(path);
    }
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("cannot run {}: {e}", bin()));
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}
