//! `[web]`: a read-only page for the installer on the ladder (live preview with the plate boxes and
//! reads, plate width, fps, last reads with crops, health) and Prometheus `/metrics`.
//!
//! hyper serves a handful of GET routes. The listener never touches the frame path: recognize
//! threads replace the latest frame in a single-slot channel (`Board`), and a preview is encoded
//! (downscaled, once per frame however many viewers) on the blocking pool only when asked for.
//!
//! Security: GET and HEAD only (405 otherwise), no request body (413), short URIs (414), request
//! heads of at most 8 KiB (431, hyper), a header timeout, a cap on connections and on their
//! lifetime, and beyond loopback a bearer token checked in constant time (401).

mod board;
pub mod metrics;

pub use board::{Board, BoxView, RecentRead, Snapshot};

use std::collections::HashMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use http_body_util::Full;
use hyper::body::{Bytes, Incoming};
use hyper::header::{self, HeaderValue};
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use serde::Serialize;
use tokio_util::sync::CancellationToken;

use crate::config::Config;
use crate::outbox::Outbox;
use crate::privacy::keys::{self, KeyError};
use crate::publish::health::HealthSampler;
use crate::telemetry::Metrics;
use crate::wire::HealthMessage;

const PAGE: &str = include_str!("page.html");
const SCRIPT: &str = include_str!("page.js");

/// Connections served at once; more are closed at accept (the page needs two or three).
const MAX_CONNECTIONS: usize = 16;
/// A client must send its request head within this.
const HEADER_TIMEOUT: Duration = Duration::from_secs(5);
/// No connection lives longer (keep-alive included); a browser simply reconnects.
const CONNECTION_LIFETIME: Duration = Duration::from_secs(60);
/// Largest request head hyper buffers (its minimum); past it: 431.
const MAX_HEAD: usize = 8 * 1024;
const MAX_URI: usize = 1024;
/// The preview's longest side: enough to aim and focus, cheap to encode.
const PREVIEW_WIDTH: u32 = 640;
/// Bytes of the token (32 hex digits on the wire).
const TOKEN_BYTES: usize = 16;

/// Plate widths (frame pixels) our models read best, shown next to each box so the installer can
/// zoom and focus: from about the OCR's own input width (128 px, less its crop margin), below
/// which characters are upscaled and blur, to half the frame, past which a plate is in view for
/// few frames and rarely seen in training.
pub const BEST_PLATE_MIN_PX: u32 = 110;
pub const BEST_PLATE_MAX_FRACTION: f32 = 0.5;

#[derive(Debug, thiserror::Error)]
pub enum WebError {
    #[error("web.listen {addr}: cannot listen: {source}")]
    Bind {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("web token: {0}")]
    Token(#[from] KeyError),
}

/// What the handlers share.
struct Site {
    device: String,
    token: Option<String>,
    board: Arc<Board>,
    metrics: Arc<Metrics>,
    outbox: Arc<Outbox>,
    registry: prometheus_client::registry::Registry,
    health: Mutex<(HealthSampler, Option<(Instant, HealthMessage)>)>,
    /// The last encoded preview per camera, by frame seq: one encode per frame for every viewer.
    previews: Mutex<HashMap<String, (u64, Bytes)>>,
}

/// Binds `cfg.web.listen` (when set) and serves until `stop`. Returns the bound address.
pub async fn start(
    cfg: &Config,
    board: Arc<Board>,
    metrics: Arc<Metrics>,
    outbox: Arc<Outbox>,
    stop: CancellationToken,
) -> Result<Option<SocketAddr>, WebError> {
    let Some(addr) = cfg.web.listen else {
        return Ok(None);
    };
    let token = if cfg.web.needs_token() {
        let (secret, source) = keys::load_or_create(
            "web-token",
            cfg.web.token_file.as_deref(),
            &cfg.storage.dir,
            TOKEN_BYTES,
        )?;
        tracing::info!(source = ?source, "web page needs a token");
        Some(hex::encode(&*secret))
    } else {
        None
    };
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|source| WebError::Bind { addr, source })?;
    let bound = listener.local_addr().unwrap_or(addr);
    let site = Arc::new(Site {
        device: cfg.device_id(),
        token,
        board,
        registry: metrics::registry(metrics.clone(), outbox.clone()),
        health: Mutex::new((HealthSampler::new(&metrics), None)),
        metrics,
        outbox,
        previews: Mutex::default(),
    });
    tracing::info!(%bound, "web page and /metrics listening");
    tokio::spawn(serve(listener, site, stop));
    Ok(Some(bound))
}

async fn serve(listener: tokio::net::TcpListener, site: Arc<Site>, stop: CancellationToken) {
    let slots = Arc::new(tokio::sync::Semaphore::new(MAX_CONNECTIONS));
    loop {
        let stream = tokio::select! {
            _ = stop.cancelled() => return,
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => stream,
                Err(e) => {
                    // Out of file descriptors and the like: pass, without spinning.
                    tracing::warn!(error = %e, "web: accept failed");
                    tokio::time::sleep(Duration::from_millis(200)).await;
                    continue;
                }
            },
        };
        let Ok(slot) = slots.clone().try_acquire_owned() else {
            continue; // dropped: closed at once
        };
        let site = site.clone();
        let stop = stop.clone();
        tokio::spawn(async move {
            let service = hyper::service::service_fn(move |req| {
                let site = site.clone();
                async move { Ok::<_, Infallible>(site.respond(req).await) }
            });
            let conn = hyper::server::conn::http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(HEADER_TIMEOUT)
                .max_buf_size(MAX_HEAD)
                .serve_connection(TokioIo::new(stream), service);
            tokio::select! {
                _ = tokio::time::timeout(CONNECTION_LIFETIME, conn) => {}
                _ = stop.cancelled() => {}
            }
            drop(slot);
        });
    }
}

fn reply(
    status: StatusCode,
    content_type: &'static str,
    body: impl Into<Bytes>,
) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(body.into()));
    *r.status_mut() = status;
    let h = r.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    h.insert(
        "x-content-type-options",
        HeaderValue::from_static("nosniff"),
    );
    h.insert("x-frame-options", HeaderValue::from_static("DENY"));
    // The token may be in the page's URL: never hand it on.
    h.insert("referrer-policy", HeaderValue::from_static("no-referrer"));
    h.insert(
        "content-security-policy",
        HeaderValue::from_static("default-src 'self'; style-src 'self' 'unsafe-inline'; img-src 'self'; frame-ancestors 'none'"),
    );
    r
}

fn text(status: StatusCode, body: &'static str) -> Response<Full<Bytes>> {
    reply(status, "text/plain; charset=utf-8", body)
}

/// Constant-time equality, so the token cannot be guessed byte by byte from response times.
fn same(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// The token a request carries: `Authorization: Bearer <hex>` (Prometheus, scripts) or
/// `?token=<hex>` (a browser: the page passes it on to what it loads).
fn presented<B>(req: &Request<B>) -> Option<&str> {
    if let Some(v) = req.headers().get(header::AUTHORIZATION) {
        return v.to_str().ok()?.strip_prefix("Bearer ").map(str::trim);
    }
    req.uri()
        .query()?
        .split('&')
        .find_map(|kv| kv.strip_prefix("token="))
}

/// What the page polls: everything but the images.
#[derive(Serialize)]
struct State<'a> {
    device: &'a str,
    version: &'static str,
    best_plate_min_px: u32,
    best_plate_max_fraction: f32,
    cameras: Vec<CameraState>,
    reads: Vec<RecentRead>,
    health: Option<HealthMessage>,
}

#[derive(Serialize)]
struct CameraState {
    name: String,
    /// The frame the boxes belong to; `None` until the first frame was recognised.
    seq: Option<u64>,
    width: u32,
    height: u32,
    boxes: Vec<BoxView>,
}

impl Site {
    async fn respond(self: Arc<Self>, req: Request<Incoming>) -> Response<Full<Bytes>> {
        if req.method() != Method::GET && req.method() != Method::HEAD {
            let mut r = text(
                StatusCode::METHOD_NOT_ALLOWED,
                "read-only: GET and HEAD only\n",
            );
            r.headers_mut()
                .insert(header::ALLOW, HeaderValue::from_static("GET, HEAD"));
            return r;
        }
        let has_body = req.headers().contains_key(header::TRANSFER_ENCODING)
            || req
                .headers()
                .get(header::CONTENT_LENGTH)
                .is_some_and(|v| v.as_bytes() != b"0");
        if has_body {
            return text(
                StatusCode::PAYLOAD_TOO_LARGE,
                "no request body is accepted\n",
            );
        }
        if req.uri().to_string().len() > MAX_URI {
            return text(StatusCode::URI_TOO_LONG, "URI too long\n");
        }
        if let Some(token) = &self.token {
            if !presented(&req).is_some_and(|t| same(t.as_bytes(), token.as_bytes())) {
                let mut r = text(StatusCode::UNAUTHORIZED, "a valid token is required\n");
                r.headers_mut()
                    .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
                return r;
            }
        }
        let path = req.uri().path();
        match path {
            "/" | "/index.html" => reply(StatusCode::OK, "text/html; charset=utf-8", PAGE),
            "/page.js" => reply(StatusCode::OK, "text/javascript; charset=utf-8", SCRIPT),
            "/metrics" => match metrics::render(&self.registry) {
                Ok(body) => reply(StatusCode::OK, metrics::CONTENT_TYPE, body),
                Err(_) => text(StatusCode::INTERNAL_SERVER_ERROR, "cannot encode metrics\n"),
            },
            "/api/state" => {
                let body = serde_json::to_vec(&self.state()).unwrap_or_default();
                reply(StatusCode::OK, "application/json", body)
            }
            _ => {
                if let Some(camera) = path
                    .strip_prefix("/preview/")
                    .and_then(|p| p.strip_suffix(".jpg"))
                {
                    let camera = camera.to_string();
                    return self.preview(camera).await;
                }
                if let Some(id) = path
                    .strip_prefix("/crop/")
                    .and_then(|p| p.strip_suffix(".jpg"))
                {
                    return match self.board.crop(id) {
                        Some(jpeg) => {
                            reply(StatusCode::OK, "image/jpeg", Bytes::from((*jpeg).clone()))
                        }
                        None => text(StatusCode::NOT_FOUND, "no such crop\n"),
                    };
                }
                text(StatusCode::NOT_FOUND, "not found\n")
            }
        }
    }

    fn state(&self) -> State<'_> {
        let cameras = self
            .board
            .cameras()
            .map(|name| {
                let snap = self.board.latest(name);
                CameraState {
                    name: name.to_string(),
                    seq: snap.as_ref().map(|s| s.seq),
                    width: snap.as_ref().map_or(0, |s| s.image.width()),
                    height: snap.as_ref().map_or(0, |s| s.image.height()),
                    boxes: snap.map(|s| s.boxes.clone()).unwrap_or_default(),
                }
            })
            .collect();
        State {
            device: &self.device,
            version: env!("CARGO_PKG_VERSION"),
            best_plate_min_px: BEST_PLATE_MIN_PX,
            best_plate_max_fraction: BEST_PLATE_MAX_FRACTION,
            cameras,
            reads: self.board.recent(),
            health: self.health(),
        }
    }

    /// The health the unit publishes, with rates over at least the last second (several viewers
    /// polling must not shrink the interval to nothing).
    fn health(&self) -> Option<HealthMessage> {
        let mut guard = self.health.lock().ok()?;
        let (sampler, last) = &mut *guard;
        if let Some((at, msg)) = last {
            if at.elapsed() < Duration::from_secs(1) {
                return Some(msg.clone());
            }
        }
        let msg = sampler.sample(
            &self.metrics,
            &self.outbox.stats(),
            crate::outbox::disk_free(self.outbox.dir()),
        );
        *last = Some((Instant::now(), msg.clone()));
        Some(msg)
    }

    async fn preview(&self, camera: String) -> Response<Full<Bytes>> {
        let Some(snap) = self.board.latest(&camera) else {
            return text(StatusCode::NOT_FOUND, "no frame yet\n");
        };
        let cached = self.previews.lock().ok().and_then(|p| {
            p.get(&camera)
                .filter(|(seq, _)| *seq == snap.seq)
                .map(|(_, j)| j.clone())
        });
        let jpeg = match cached {
            Some(jpeg) => jpeg,
            None => {
                let seq = snap.seq;
                let encoded =
                    tokio::task::spawn_blocking(move || encode_preview(&snap.image)).await;
                let Ok(Ok(jpeg)) = encoded else {
                    return text(
                        StatusCode::INTERNAL_SERVER_ERROR,
                        "cannot encode the preview\n",
                    );
                };
                let jpeg = Bytes::from(jpeg);
                if let Ok(mut p) = self.previews.lock() {
                    p.insert(camera, (seq, jpeg.clone()));
                }
                jpeg
            }
        };
        reply(StatusCode::OK, "image/jpeg", jpeg)
    }
}

/// The frame shrunk to `PREVIEW_WIDTH` (never enlarged), as JPEG.
fn encode_preview(image: &image::RgbImage) -> Result<Vec<u8>, image::ImageError> {
    let (w, h) = image.dimensions();
    let small;
    let shown = if w > PREVIEW_WIDTH {
        let nh = ((h as u64 * PREVIEW_WIDTH as u64) / w as u64).max(1) as u32;
        small = image::imageops::thumbnail(image, PREVIEW_WIDTH, nh);
        &small
    } else {
        image
    };
    let mut out = Vec::new();
    image::codecs::jpeg::JpegEncoder::new_with_quality(&mut out, 75).encode_image(shown)?;
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn token_is_compared_whole() {
        assert!(same(b"abcd", b"abcd"));
        assert!(!same(b"abcd", b"abce"));
        assert!(!same(b"abc", b"abcd"));
        assert!(!same(b"", b"a"));
    }

    #[test]
    fn token_comes_from_the_header_or_the_query() {
        let r = Request::get("/metrics")
            .header("authorization", "Bearer abc")
            .body(())
            .expect("req");
        assert_eq!(presented(&r), Some("abc"));
        let r = Request::get("/api/state?x=1&token=def")
            .body(())
            .expect("req");
        assert_eq!(presented(&r), Some("def"));
        let r = Request::get("/").body(()).expect("req");
        assert_eq!(presented(&r), None);
    }

    #[test]
    fn preview_is_downscaled_not_enlarged() {
        let big = image::RgbImage::new(1280, 720);
        let jpeg = encode_preview(&big).expect("jpeg");
        let img = image::load_from_memory(&jpeg).expect("decode");
        assert_eq!((img.width(), img.height()), (640, 360));
        let small = image::RgbImage::new(320, 240);
        let img = image::load_from_memory(&encode_preview(&small).expect("jpeg")).expect("decode");
        assert_eq!((img.width(), img.height()), (320, 240));
    }
}
