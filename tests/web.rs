//! Issue 14: the installer's page and `/metrics`, against the real daemon replaying the samples,
//! a real Prometheus (Debian's `prometheus`) and a real browser (Debian's `chromium`, headless).
//! A missing tool fails its test with a message that says what to install; nothing is skipped.

mod support;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use support::daemon::{samples, Daemon, RunConfig};
use support::mosquitto::{free_port, Mosquitto};

/// A status code, headers and body, from one request on a fresh connection.
struct Reply {
    status: u16,
    head: String,
    body: Vec<u8>,
}

/// Sends `raw` (a whole HTTP/1.1 request) and reads the reply until the server closes.
fn send(port: u16, raw: &[u8]) -> Reply {
    let mut s = TcpStream::connect(("127.0.0.1", port)).expect("connect to the web port");
    s.set_read_timeout(Some(Duration::from_secs(10)))
        .expect("timeout");
    s.write_all(raw).expect("send");
    let mut out = Vec::new();
    let _ = s.read_to_end(&mut out);
    let split = out
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .unwrap_or(out.len());
    let head = String::from_utf8_lossy(&out[..split]).to_string();
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let body = out.get(split + 4..).unwrap_or_default().to_vec();
    Reply { status, head, body }
}

fn get(port: u16, path: &str, extra: &str) -> Reply {
    send(
        port,
        format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n{extra}\r\n").as_bytes(),
    )
}

/// Waits until `what` holds for a GET of `path`, or panics with the last reply.
fn wait_get(
    port: u16,
    path: &str,
    extra: &str,
    limit: Duration,
    what: impl Fn(&Reply) -> bool,
) -> Reply {
    let start = Instant::now();
    loop {
        if TcpStream::connect(("127.0.0.1", port)).is_ok() {
            let r = get(port, path, extra);
            if what(&r) {
                return r;
            }
            if start.elapsed() > limit {
                panic!(
                    "GET {path}: {} {}",
                    r.head,
                    String::from_utf8_lossy(&r.body)
                );
            }
        } else if start.elapsed() > limit {
            panic!("nothing listens on port {port}");
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// A daemon replaying the samples in a loop with `[web]` on, and a broker to deliver to.
struct Unit {
    _broker: Mosquitto,
    _tmp: tempfile::TempDir,
    daemon: Daemon,
    web: u16,
    plates: Vec<String>,
    dir: PathBuf,
}

impl Unit {
    /// `web` is the body of the `[web]` section, `{port}` replaced by the web port; `camera`
    /// extra `[[camera]]` keys.
    /// A unit on loopback whose page needs `token`, kept 0600 in a file under `dir`.
    fn with_token(dir: &Path, token: &str) -> Unit {
        let token_file = dir.join("web-token");
        std::fs::write(&token_file, token).expect("token");
        std::fs::set_permissions(
            &token_file,
            std::os::unix::fs::PermissionsExt::from_mode(0o600),
        )
        .expect("chmod");
        Unit::start(
            &format!(
                "listen = \"127.0.0.1:{{port}}\"\ntoken_file = \"{}\"",
                token_file.display()
            ),
            "",
        )
    }

    fn start(web: &str, camera: &str) -> Unit {
        let broker = Mosquitto::start();
        let tmp = tempfile::tempdir().expect("tempdir");
        let (samples_dir, truth) = samples();
        let port = free_port();
        let state = tmp.path().join("state");
        let base = RunConfig {
            repeat: true,
            camera,
            ..RunConfig::new(&state, &samples_dir, broker.port)
        }
        .toml();
        let toml = format!(
            "{base}\n[web]\n{}\n",
            web.replace("{port}", &port.to_string())
        );
        let cfg = tmp.path().join("platecam.toml");
        std::fs::write(&cfg, toml).expect("write config");
        let daemon = Daemon::start(&cfg);
        Unit {
            _broker: broker,
            dir: tmp.path().to_path_buf(),
            _tmp: tmp,
            daemon,
            web: port,
            plates: truth.into_iter().map(|(_, plate)| plate).collect(),
        }
    }

    /// Waits for the first accepted read (the page then has one to show).
    fn wait_read(&self) {
        assert!(
            self.daemon.wait_for(
                |l| l.iter().any(|l| l.contains("read accepted")),
                Duration::from_secs(60)
            ),
            "no read accepted: {:#?}",
            self.daemon.lines()
        );
    }
}

impl Drop for Unit {
    fn drop(&mut self) {
        let _ = self.daemon.child.kill();
        let _ = self.daemon.child.wait();
    }
}

fn json(r: &Reply) -> serde_json::Value {
    serde_json::from_slice(&r.body)
        .unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&r.body)))
}

/// 14.1: the page, its state (boxes on the latest frame, the last reads with plate text and
/// crops, health), a downscaled preview, from a loopback listener without a token.
#[test]
fn page_shows_preview_boxes_reads_and_health() {
    let unit = Unit::start("listen = \"127.0.0.1:{port}\"", "");
    unit.wait_read();
    let port = unit.web;
    let page = wait_get(port, "/", "", Duration::from_secs(10), |r| r.status == 200);
    let html = String::from_utf8_lossy(&page.body);
    assert!(html.contains("<script src=\"page.js\">"), "{html}");
    assert!(get(port, "/page.js", "").status == 200);

    let state = wait_get(port, "/api/state", "", Duration::from_secs(20), |r| {
        r.status == 200
            && json(r)["cameras"][0]["boxes"]
                .as_array()
                .is_some_and(|b| !b.is_empty())
    });
    let state = json(&state);
    let cam = &state["cameras"][0];
    assert_eq!(cam["name"], "lane1");
    assert_eq!(
        (cam["width"].as_u64(), cam["height"].as_u64()),
        (Some(1280), Some(720))
    );
    let b = &cam["boxes"][0];
    assert!(
        b["w"].as_f64().unwrap_or(0.0) > 20.0,
        "a plate box in frame pixels: {b}"
    );
    assert!(b["text"].as_str().is_some_and(|t| !t.is_empty()), "{b}");
    assert_eq!(state["best_plate_min_px"], 110);
    let reads = state["reads"].as_array().expect("reads");
    let read = &reads[0];
    let plate = read["plate"].as_str().expect("plate text");
    assert!(
        unit.plates.iter().any(|p| p == plate),
        "{plate} is a sample's plate"
    );
    assert!(
        state["health"]["cameras"][0]["state"] == "streaming",
        "{}",
        state["health"]
    );

    let preview = get(port, "/preview/lane1.jpg", "");
    assert_eq!(preview.status, 200, "{}", preview.head);
    let img = image::load_from_memory(&preview.body).expect("preview is a JPEG");
    assert_eq!(
        (img.width(), img.height()),
        (640, 360),
        "downscaled from 1280x720"
    );
    let id = read["id"].as_str().expect("id");
    let crop = get(port, &format!("/crop/{id}.jpg"), "");
    assert_eq!(crop.status, 200, "{}", crop.head);
    image::load_from_memory(&crop.body).expect("crop is a JPEG");
    assert_eq!(get(port, "/preview/nope.jpg", "").status, 404);

    // HEAD is served (no body), and the page is not cacheable nor frameable.
    let head = send(
        port,
        b"HEAD /api/state HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
    );
    assert_eq!(head.status, 200);
    assert!(head.body.is_empty());
    let h = page.head.to_ascii_lowercase();
    assert!(
        h.contains("cache-control: no-store") && h.contains("x-frame-options: deny"),
        "{h}"
    );
}

/// 14.4: read-only, token checked, bounded requests, slow clients cut off.
#[test]
fn listener_is_read_only_needs_its_token_and_bounds_requests() {
    let token = "0123456789abcdef0123456789abcdef";
    let tmp = tempfile::tempdir().expect("tempdir");
    let unit = Unit::with_token(tmp.path(), &format!("{token}\n"));
    let port = unit.web;
    let bearer = format!("Authorization: Bearer {token}\r\n");
    wait_get(port, "/metrics", &bearer, Duration::from_secs(30), |r| {
        r.status == 200
    });

    for method in ["POST", "PUT", "DELETE", "PATCH", "OPTIONS"] {
        let r = send(port, format!("{method} /api/state HTTP/1.1\r\nHost: x\r\nConnection: close\r\n{bearer}Content-Length: 0\r\n\r\n").as_bytes());
        assert_eq!(r.status, 405, "{method}: {}", r.head);
        assert!(
            r.head.to_ascii_lowercase().contains("allow: get, head"),
            "{}",
            r.head
        );
    }
    for path in ["/", "/api/state", "/metrics", "/preview/lane1.jpg", "/nope"] {
        assert_eq!(get(port, path, "").status, 401, "{path} without a token");
        assert_eq!(
            get(port, path, "Authorization: Bearer 0123\r\n").status,
            401,
            "{path} bad token"
        );
        let wrong = format!("Authorization: Bearer {}\r\n", token.replace('0', "1"));
        assert_eq!(get(port, path, &wrong).status, 401, "{path} wrong token");
    }
    assert_eq!(get(port, "/api/state", &bearer).status, 200);
    assert_eq!(
        get(port, &format!("/api/state?token={token}"), "").status,
        200
    );
    assert_eq!(get(port, "/api/state?token=nope", "").status, 401);

    // A body on a GET, a long URI, an oversized head.
    let r = send(port, format!("GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n{bearer}Content-Length: 5\r\n\r\nhello").as_bytes());
    assert_eq!(r.status, 413, "{}", r.head);
    let long = format!("/api/state?x={}", "a".repeat(2000));
    assert_eq!(get(port, &long, &bearer).status, 414);
    let big = format!("X-Filler: {}\r\n", "b".repeat(16 * 1024));
    assert_eq!(get(port, "/", &big).status, 431);

    // A client that never finishes its request head is dropped within the header timeout.
    let mut slow = TcpStream::connect(("127.0.0.1", port)).expect("connect");
    slow.set_read_timeout(Some(Duration::from_secs(15)))
        .expect("timeout");
    slow.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n")
        .expect("partial head");
    let started = Instant::now();
    let mut buf = Vec::new();
    let _ = slow.read_to_end(&mut buf);
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "connection held for {:?}",
        started.elapsed()
    );
    let _ = tmp;
}

fn need(tool: &str, package: &str) -> PathBuf {
    let found = std::env::var_os("PATH")
        .map(|p| {
            std::env::split_paths(&p)
                .map(|d| d.join(tool))
                .find(|p| p.is_file())
        })
        .unwrap_or_default();
    found.unwrap_or_else(|| {
        panic!("`{tool}` is not installed: apt-get install {package} (.ci/run installs it)")
    })
}

struct Killed(Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// 14.2: a real Prometheus scrapes `/metrics` (with the bearer token from a file, as a site
/// would configure it), and its HTTP API answers queries on our counters and histograms.
#[test]
fn prometheus_scrapes_the_daemon() {
    let prometheus = need("prometheus", "prometheus");
    let token = "00112233445566778899aabbccddeeff";
    let tmp = tempfile::tempdir().expect("tempdir");
    let unit = Unit::with_token(tmp.path(), token);
    unit.wait_read();
    let prom_port = free_port();
    let prom_cfg = tmp.path().join("prometheus.yml");
    std::fs::write(
        &prom_cfg,
        format!(
            "global:\n  scrape_interval: 1s\n  scrape_timeout: 1s\nscrape_configs:\n  - job_name: platecam\n    authorization:\n      credentials_file: {}\n    static_configs:\n      - targets: ['127.0.0.1:{}']\n",
            tmp.path().join("web-token").display(),
            unit.web
        ),
    )
    .expect("prometheus.yml");
    let log = std::fs::File::create(tmp.path().join("prometheus.log")).expect("log");
    let _prom = Killed(
        Command::new(&prometheus)
            .arg(format!("--config.file={}", prom_cfg.display()))
            .arg(format!(
                "--storage.tsdb.path={}",
                tmp.path().join("tsdb").display()
            ))
            .arg(format!("--web.listen-address=127.0.0.1:{prom_port}"))
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("start prometheus"),
    );
    let query = |q: &str| -> serde_json::Value {
        let path = format!("/api/v1/query?query={q}");
        let r = get(prom_port, &path, "");
        serde_json::from_slice(&r.body).unwrap_or(serde_json::Value::Null)
    };
    let value = |v: &serde_json::Value| -> Option<f64> {
        v["data"]["result"][0]["value"][1].as_str()?.parse().ok()
    };
    let start = Instant::now();
    let mut last = serde_json::Value::Null;
    while start.elapsed() < Duration::from_secs(40) {
        if TcpStream::connect(("127.0.0.1", prom_port)).is_ok() {
            last = query("platecam_reads_total");
            if value(&last).is_some_and(|v| v >= 1.0) {
                break;
            }
        }
        std::thread::sleep(Duration::from_millis(500));
    }
    let log = std::fs::read_to_string(tmp.path().join("prometheus.log")).unwrap_or_default();
    assert!(
        value(&last).is_some_and(|v| v >= 1.0),
        "platecam_reads_total through Prometheus: {last}\nprometheus log tail:\n{}",
        log.lines().rev().take(15).collect::<Vec<_>>().join("\n")
    );
    println!("platecam_reads_total: {last}");
    let up = query("up%7Bjob%3D%22platecam%22%7D");
    assert_eq!(value(&up), Some(1.0), "scrape target up: {up}");
    let hist = query("platecam_stage_duration_seconds_count%7Bstage%3D%22frame%22%7D");
    assert!(
        value(&hist).is_some_and(|v| v >= 1.0),
        "frame timing histogram: {hist}"
    );
    println!("platecam_stage_duration_seconds_count{{stage=\"frame\"}}: {hist}");
    let frames = query("platecam_frames_total%7Bcamera%3D%22lane1%22%7D");
    assert!(value(&frames).is_some_and(|v| v >= 1.0), "{frames}");
    let not_plates = query("platecam_boxes_not_plates_total");
    assert!(value(&not_plates).is_some(), "{not_plates}");
}

/// Where test artifacts are kept (the screenshot): `target/web-test/`.
fn artifacts() -> PathBuf {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("target")
        .join("web-test");
    std::fs::create_dir_all(&dir).expect("target/web-test");
    dir
}

fn chromium(profile: &Path, args: &[&str], url: &str) -> std::process::Output {
    let bin = need("chromium", "chromium");
    Command::new(bin)
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--hide-scrollbars",
            "--window-size=1280,1000",
            // The page's own timers (poll, preview reload) run for this long of virtual time.
            "--virtual-time-budget=6000",
        ])
        .arg(format!("--user-data-dir={}", profile.display()))
        .args(args)
        .arg(url)
        .output()
        .expect("run chromium")
}

/// 14.3: in a real browser the page loads, the preview shows (a JPEG decoded by the browser),
/// and a read appears with its plate text; a screenshot is kept in target/web-test/.
#[test]
fn browser_shows_the_preview_and_a_read() {
    // Photos shown long (20 frames), short gaps: most frames have a plate in the preview.
    let unit = Unit::start(
        "listen = \"127.0.0.1:{port}\"",
        "hold_frames = 20\ngap_frames = 2",
    );
    unit.wait_read();
    let url = format!("http://127.0.0.1:{}/", unit.web);
    let profile = unit.dir.join("chromium-dom");
    let out = chromium(&profile, &["--dump-dom"], &url);
    let dom = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "chromium: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        dom.contains("data-polled="),
        "the page polled the unit:\n{dom}"
    );
    assert!(
        dom.contains("data-loaded=\"1\""),
        "the preview image loaded:\n{dom}"
    );
    let row = dom
        .split("<tr class=\"read\">")
        .nth(1)
        .unwrap_or_else(|| panic!("a read row:\n{dom}"));
    assert!(
        unit.plates.iter().any(|p| row.contains(&format!(">{p}<"))),
        "the read shows a sample's plate text: {row}"
    );
    assert!(dom.contains("streaming"), "camera state shown:\n{dom}");

    let shot = artifacts().join("page.png");
    let _ = std::fs::remove_file(&shot);
    let profile = unit.dir.join("chromium-shot");
    let out = chromium(
        &profile,
        &[&format!("--screenshot={}", shot.display())],
        &url,
    );
    assert!(
        out.status.success(),
        "chromium: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let png = image::open(&shot).expect("screenshot written");
    assert_eq!((png.width(), png.height()), (1280, 1000));
    println!("screenshot: {}", shot.display());
}

/// 14.1/14.4: listening beyond loopback without a configured token, the daemon makes one on
/// first start (0600, in the storage directory) and requires it.
#[test]
fn a_listener_beyond_loopback_makes_and_requires_a_token() {
    // Bound on every address, but only ever reached over loopback here.
    let unit = Unit::start("listen = \"0.0.0.0:{port}\"", "");
    let port = unit.web;
    wait_get(port, "/api/state", "", Duration::from_secs(30), |r| {
        r.status == 401
    });
    let key = unit.dir.join("state").join("web-token.key");
    let mode = std::os::unix::fs::PermissionsExt::mode(
        &std::fs::metadata(&key).expect("token made").permissions(),
    );
    assert_eq!(mode & 0o777, 0o600, "{}", key.display());
    let token: String = std::fs::read(&key)
        .expect("read token")
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    assert_eq!(token.len(), 32);
    let ok = get(
        port,
        "/api/state",
        &format!("Authorization: Bearer {token}\r\n"),
    );
    assert_eq!(ok.status, 200, "{}", ok.head);
}
