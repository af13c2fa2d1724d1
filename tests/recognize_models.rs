//! The recognizer on what the repository holds: our models (models/) read the sample photos, and
//! bad model files give errors, not panics. Tests on the reference models and benchmark photos in
//! `../shared` are in `tests/shared_data.rs` (ignored by default: see there).

use std::path::{Path, PathBuf};

use platecam::config::{ModelConfig, ModelFormat, RecognitionConfig};
use platecam::recognize::{RecognizeError, Recognizer};

/// The repository's models manifest; the tests fail (never skip) when it is missing.
fn manifest() -> PathBuf {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("models/manifest.json");
    assert!(
        path.is_file(),
        "{} is missing: the repository's models are part of the checkout",
        path.display()
    );
    path
}

/// Our own models, named explicitly (not found through the default search).
fn own_config() -> RecognitionConfig {
    let model = || {
        Some(ModelConfig {
            format: ModelFormat::Platecam,
            path: manifest(),
            config: None,
            score_threshold: None,
        })
    };
    RecognitionConfig {
        detector: model(),
        ocr: model(),
        plate_formats: Vec::new(),
        ..Default::default()
    }
}

fn normalise(s: &str) -> String {
    s.to_uppercase()
        .chars()
        .filter(char::is_ascii_alphanumeric)
        .collect()
}

/// (photo, plate) of samples/groundtruth.tsv (`file x y w h plate`).
fn samples() -> Vec<(PathBuf, String)> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("samples");
    let text =
        std::fs::read_to_string(dir.join("groundtruth.tsv")).expect("samples/groundtruth.tsv");
    text.lines()
        .filter_map(|l| {
            let f: Vec<&str> = l.split('\t').collect();
            (f.len() >= 6).then(|| (dir.join(f[0]), normalise(f[5])))
        })
        .collect()
}

#[test]
fn own_models_read_the_sample_photos_and_report_their_hashes() {
    let rec = Recognizer::from_config(Some(&own_config())).expect("own models load");
    let (det_hash, ocr_hash) = rec.model_hashes();
    let m: serde_json::Value =
        serde_json::from_slice(&std::fs::read(manifest()).expect("manifest")).expect("json");
    assert_eq!(Some(det_hash.as_str()), m["detector"]["sha256"].as_str());
    assert_eq!(Some(ocr_hash.as_str()), m["ocr"]["sha256"].as_str());
    let truth = samples();
    assert!(truth.len() >= 5, "samples/groundtruth.tsv lists the photos");
    let mut read = 0;
    for (photo, plate) in &truth {
        let img = image::open(photo).expect("photo decodes").to_rgb8();
        let found = rec.recognize(&img).expect("recognize");
        assert!(found.timings.total_ms >= found.timings.detect_ms);
        let dets = found.detections;
        for d in &dets {
            let b = d.bbox;
            assert!(b.x >= 0.0 && b.y >= 0.0, "{b:?}");
            assert!(b.x + b.w <= img.width() as f32 + 0.5, "{b:?}");
            assert!(b.y + b.h <= img.height() as f32 + 0.5, "{b:?}");
        }
        let Some(d) = dets.iter().find(|d| normalise(&d.text.text) == *plate) else {
            eprintln!("{}: truth {plate}, read {dets:?}", photo.display());
            continue;
        };
        read += 1;
        // The stored crop read again on its own gives the same text.
        let again = rec.read_plate(&d.crop).expect("read_plate");
        assert_eq!(normalise(&again.text), *plate);
    }
    assert!(
        read + 1 >= truth.len(),
        "read {read}/{} sample photos",
        truth.len()
    );
}

/// Without a config the checkout's models/ is found (or $PLATECAM_MODELS, or installed ones).
#[test]
fn default_manifest_is_found_from_the_checkout() {
    manifest();
    let rec = Recognizer::from_config(None);
    assert!(rec.is_ok(), "{:?}", rec.err().map(|e| e.to_string()));
}

#[test]
fn corrupt_model_file_is_an_error() {
    let dir = tempfile::tempdir().expect("tempdir");
    let bad = dir.path().join("garbage.onnx");
    std::fs::write(&bad, b"this is not an onnx protobuf \x00\x01\x02\xff").expect("write");
    let cfg = RecognitionConfig {
        detector: Some(ModelConfig {
            format: ModelFormat::YoloEnd2end,
            path: bad.clone(),
            config: None,
            score_threshold: None,
        }),
        ..own_config()
    };
    let err = Recognizer::from_config(Some(&cfg)).expect_err("garbage must not load");
    assert!(matches!(err, RecognizeError::Model { .. }), "{err}");
    assert!(err.to_string().contains("garbage.onnx"), "{err}");

    let yaml = dir.path().join("plate_config.yaml");
    std::fs::write(
        &yaml,
        "max_plate_slots: 9\nalphabet: '0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ_'\npad_char: '_'\n\
         img_height: 64\nimg_width: 128\n",
    )
    .expect("write");
    let cfg = RecognitionConfig {
        ocr: Some(ModelConfig {
            format: ModelFormat::FastPlateOcr,
            path: dir.path().join("missing.onnx"),
            config: Some(yaml),
            score_threshold: None,
        }),
        ..own_config()
    };
    let err = Recognizer::from_config(Some(&cfg)).expect_err("missing file");
    assert!(err.to_string().contains("missing.onnx"), "{err}");
}

#[test]
fn wrong_checksum_in_manifest_is_an_error() {
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::write(dir.path().join("d.onnx"), b"x").expect("write");
    std::fs::write(dir.path().join("o.onnx"), b"y").expect("write");
    let manifest = r#"{"version": "t",
      "detector": {"file": "d.onnx", "sha256": "00", "input": {"channels": 1, "height": 64, "width": 64},
                   "pad": 0.0, "stride": 8, "score_threshold": 0.5, "nms_iou": 0.5},
      "ocr": {"file": "o.onnx", "sha256": "00", "input": {"channels": 1, "height": 32, "width": 96},
              "alphabet": "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ_", "pad_char": "_", "slots": 9,
              "crop_margin": 0.1},
      "provenance": {"note": "test"}}"#;
    let path = dir.path().join("manifest.json");
    std::fs::write(&path, manifest).expect("write");
    let cfg = RecognitionConfig {
        detector: Some(ModelConfig {
            format: ModelFormat::Platecam,
            path,
            config: None,
            score_threshold: None,
        }),
        ..own_config()
    };
    let err = Recognizer::from_config(Some(&cfg)).expect_err("checksum mismatch");
    assert!(matches!(err, RecognizeError::Checksum { .. }), "{err}");
    assert!(err.to_string().contains("detector.sha256"), "{err}");
}
#[test]
fn missing_manifest_names_the_paths() {
    let dir = tempfile::tempdir().expect("tempdir");
    let cfg = RecognitionConfig {
        detector: Some(ModelConfig {
            format: ModelFormat::Platecam,
            path: dir.path().join("nope/manifest.json"),
            config: None,
            score_threshold: None,
        }),
        ..own_config()
    };
    let err = Recognizer::from_config(Some(&cfg)).expect_err("missing manifest");
    assert!(err.to_string().contains("nope/manifest.json"), "{err}");

    // The default search lists every place it looked (when no installed manifest exists).
    if let Err(err) = platecam::recognize::default_manifest_path() {
        let msg = err.to_string();
        for p in platecam::recognize::manifest_search_paths() {
            assert!(msg.contains(&p.display().to_string()), "{msg}");
        }
    }
}
#[test]
fn recognizer_can_be_shared_across_threads() {
    fn shared<T: Send + Sync>() {}
    shared::<Recognizer>();
}

/// Copies the repository's manifest into `dir`, with `edit` applied to its JSON.
fn manifest_copy(dir: &Path, edit: impl FnOnce(&mut serde_json::Value)) -> PathBuf {
    let mut m: serde_json::Value =
        serde_json::from_slice(&std::fs::read(manifest()).expect("manifest")).expect("json");
    edit(&mut m);
    let path = dir.join("manifest.json");
    std::fs::write(&path, serde_json::to_vec(&m).expect("json")).expect("write");
    path
}

fn platecam_models(manifest: PathBuf) -> RecognitionConfig {
    let model = ModelConfig {
        format: ModelFormat::Platecam,
        path: manifest,
        config: None,
        score_threshold: None,
    };
    RecognitionConfig {
        detector: Some(model.clone()),
        ocr: Some(model),
        plate_formats: Vec::new(),
        ..Default::default()
    }
}

#[test]
fn a_manifest_file_cannot_leave_its_folder() {
    let dir = tempfile::tempdir().expect("tempdir");
    let models = Path::new(env!("CARGO_MANIFEST_DIR")).join("models");
    let inner = dir.path().join("m");
    std::fs::create_dir_all(&inner).expect("mkdir");
    // The real model beside the folder, so only the path rule can refuse it.
    std::fs::copy(
        models.join("detector.onnx"),
        dir.path().join("detector.onnx"),
    )
    .expect("copy");
    let absolute = models.join("detector.onnx").display().to_string();
    for file in [
        "../detector.onnx",
        absolute.as_str(),
        "",
        "sub/../../detector.onnx",
    ] {
        let path = manifest_copy(&inner, |m| m["detector"]["file"] = file.into());
        let err = Recognizer::from_config(Some(&platecam_models(path)))
            .expect_err("a file outside the manifest's folder");
        assert!(
            matches!(err, RecognizeError::Manifest { .. }),
            "{file}: {err}"
        );
        assert!(err.to_string().contains("detector.file"), "{file}: {err}");
    }
}

/// The bytes hashed are the bytes loaded: a model that can be read only once (a FIFO) loads, and
/// its reported hash is the manifest's. Reading the file twice (hash, then load) would block here.
#[test]
fn the_model_is_read_once_and_the_hash_is_of_those_bytes() {
    let dir = tempfile::tempdir().expect("tempdir");
    let models = Path::new(env!("CARGO_MANIFEST_DIR")).join("models");
    std::fs::copy(
        models.join("detector.onnx"),
        dir.path().join("detector.onnx"),
    )
    .expect("copy");
    let fifo = dir.path().join("ocr.onnx");
    nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::S_IRWXU).expect("mkfifo");
    let bytes = std::fs::read(models.join("ocr.onnx")).expect("ocr.onnx");
    let writer_path = fifo.clone();
    std::thread::spawn(move || {
        use std::io::Write;
        let mut w = std::fs::OpenOptions::new()
            .write(true)
            .open(&writer_path)
            .expect("open fifo");
        let _ = w.write_all(&bytes);
    });
    let path = manifest_copy(dir.path(), |_| {});
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx
            .send(Recognizer::from_config(Some(&platecam_models(path))).map(|r| r.model_hashes()));
    });
    let loaded = rx
        .recv_timeout(std::time::Duration::from_secs(60))
        .expect("loading returns (a second read of the model file would wait for ever)");
    let (_, ocr_hash) = loaded.expect("models load from a file read once");
    let m: serde_json::Value =
        serde_json::from_slice(&std::fs::read(manifest()).expect("manifest")).expect("json");
    assert_eq!(Some(ocr_hash.as_str()), m["ocr"]["sha256"].as_str());
}

/// Tiny ONNX graphs in the community formats, built here so that their loading and decoding is
/// tested without `../shared`: each returns a fixed answer, made to depend on the input (plus 0 x
/// its mean) so the input is fed through and its declared shape and type must match ours.
mod tiny_onnx {
    use prost::Message;
    use tract_onnx::pb::{
        attribute_proto::AttributeType, tensor_proto::DataType, tensor_shape_proto, type_proto,
        AttributeProto, GraphProto, ModelProto, NodeProto, OperatorSetIdProto, TensorProto,
        TensorShapeProto, TypeProto, ValueInfoProto,
    };

    fn value(name: &str, elem: DataType, dims: &[i64]) -> ValueInfoProto {
        let dim = dims
            .iter()
            .map(|&d| tensor_shape_proto::Dimension {
                value: Some(tensor_shape_proto::dimension::Value::DimValue(d)),
                ..Default::default()
            })
            .collect();
        ValueInfoProto {
            name: name.into(),
            r#type: Some(TypeProto {
                value: Some(type_proto::Value::TensorType(type_proto::Tensor {
                    elem_type: elem as i32,
                    shape: Some(TensorShapeProto { dim }),
                })),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    fn node(op: &str, inputs: &[&str], output: &str, attribute: Vec<AttributeProto>) -> NodeProto {
        NodeProto {
            op_type: op.into(),
            name: output.into(),
            input: inputs.iter().map(|s| s.to_string()).collect(),
            output: vec![output.into()],
            attribute,
            ..Default::default()
        }
    }

    fn int_attr(name: &str, i: i64) -> AttributeProto {
        AttributeProto {
            name: name.into(),
            r#type: AttributeType::Int as i32,
            i,
            ..Default::default()
        }
    }

    /// A model with input `x` (`elem`, `in_dims`) whose output `out` is always `answer`.
    pub fn constant(elem: DataType, in_dims: &[i64], out_dims: &[i64], answer: &[f32]) -> Vec<u8> {
        let tensor = |name: &str, dims: &[i64], data: &[f32]| TensorProto {
            name: name.into(),
            dims: dims.to_vec(),
            data_type: DataType::Float as i32,
            float_data: data.to_vec(),
            ..Default::default()
        };
        let graph = GraphProto {
            name: "tiny".into(),
            node: vec![
                node(
                    "Cast",
                    &["x"],
                    "xf",
                    vec![int_attr("to", DataType::Float as i64)],
                ),
                node("ReduceMean", &["xf"], "mean", vec![int_attr("keepdims", 0)]),
                node("Mul", &["mean", "zero"], "nothing", vec![]),
                node("Add", &["answer", "nothing"], "out", vec![]),
            ],
            initializer: vec![
                tensor("answer", out_dims, answer),
                tensor("zero", &[], &[0.0]),
            ],
            input: vec![value("x", elem, in_dims)],
            output: vec![value("out", DataType::Float, out_dims)],
            ..Default::default()
        };
        ModelProto {
            ir_version: 8,
            opset_import: vec![OperatorSetIdProto {
                domain: String::new(),
                version: 13,
            }],
            producer_name: "platecam tests".into(),
            graph: Some(graph),
            ..Default::default()
        }
        .encode_to_vec()
    }
}

/// yolo-end2end and fast-plate-ocr models load, get our input layout (416x416 NCHW f32, and the
/// plate config's size as NHWC u8), and their outputs are decoded: boxes back to frame pixels
/// through the centred letterbox, slots to text.
#[test]
fn community_formats_load_and_decode_on_tiny_models() {
    use tract_onnx::pb::tensor_proto::DataType;
    let dir = tempfile::tempdir().expect("tempdir");
    // One plate at (100, 150)-(200, 175) in the 416x416 input, score 0.9; a second under the
    // default threshold (0.4).
    let rows = [
        0.0, 100.0, 150.0, 200.0, 175.0, 0.0, 0.9, //
        0.0, 10.0, 10.0, 50.0, 20.0, 0.0, 0.2,
    ];
    let det = dir.path().join("yolo-end2end.onnx");
    let det_bytes = tiny_onnx::constant(DataType::Float, &[1, 3, 416, 416], &[2, 7], &rows);
    std::fs::write(&det, &det_bytes).expect("write");

    let alphabet = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ_";
    let symbols: Vec<char> = alphabet.chars().collect();
    let mut probs = Vec::new();
    for c in "AB123CD__".chars() {
        probs.extend(
            symbols
                .iter()
                .map(|&s| if s == c { 0.9 } else { 0.1 / 36.0 }),
        );
    }
    let ocr = dir.path().join("ocr.onnx");
    std::fs::write(
        &ocr,
        tiny_onnx::constant(DataType::Uint8, &[1, 64, 128, 3], &[1, 9, 37], &probs),
    )
    .expect("write");
    let yaml = dir.path().join("ocr_plate_config.yaml");
    std::fs::write(
        &yaml,
        format!(
            "max_plate_slots: 9\nalphabet: '{alphabet}'\npad_char: '_'\nimg_height: 64\n\
             img_width: 128\nimage_color_mode: rgb\n"
        ),
    )
    .expect("write");
    let cfg = RecognitionConfig {
        detector: Some(ModelConfig {
            format: ModelFormat::YoloEnd2end,
            path: det,
            config: None,
            score_threshold: None,
        }),
        ocr: Some(ModelConfig {
            format: ModelFormat::FastPlateOcr,
            path: ocr,
            config: Some(yaml),
            score_threshold: None,
        }),
        plate_formats: Vec::new(),
        ..Default::default()
    };
    let rec = Recognizer::from_config(Some(&cfg)).expect("tiny community models load");
    let (det_hash, _) = rec.model_hashes();
    use sha2::Digest;
    assert_eq!(det_hash, hex::encode(sha2::Sha256::digest(&det_bytes)));
    // An 832x832 frame: the letterbox halves it, with no padding.
    let frame = image::RgbImage::from_pixel(832, 832, image::Rgb([120, 120, 120]));
    let dets = rec.recognize(&frame).expect("recognize").detections;
    assert_eq!(dets.len(), 1, "{dets:?}");
    let b = dets[0].bbox;
    for (got, want) in [(b.x, 200.0), (b.y, 300.0), (b.w, 200.0), (b.h, 50.0)] {
        assert!((got - want).abs() <= 1.0, "{b:?}");
    }
    assert_eq!(dets[0].text.text, "AB123CD");
    assert!((dets[0].text.confidence - 0.9).abs() < 1e-3);
}

/// The manifest's OCR confidence floor (`ocr.min_confidence`, issue 9): a detector box whose
/// read is under it is no plate and is not returned; a floor outside 0..1 is refused.
#[test]
fn reads_under_the_manifests_ocr_floor_are_not_plates() {
    let (photo, plate) = samples().into_iter().next().expect("a sample photo");
    let img = image::open(&photo).expect("photo decodes").to_rgb8();
    let dir = tempfile::tempdir().expect("tempdir");
    let models = manifest().parent().expect("models/").to_path_buf();
    for f in ["detector.onnx", "ocr.onnx"] {
        std::fs::copy(models.join(f), dir.path().join(f)).expect("copy a model");
    }
    let with_floor = |floor: f64| {
        let m = manifest_copy(dir.path(), |m| m["ocr"]["min_confidence"] = floor.into());
        Recognizer::from_config(Some(&platecam_models(m)))
    };
    let read = |floor: f64| {
        let rec = with_floor(floor).expect("models load");
        rec.recognize(&img).expect("recognize")
    };
    let all = read(0.0).detections;
    let c = all
        .iter()
        .find(|d| normalise(&d.text.text) == plate)
        .map(|d| d.text.confidence)
        .unwrap_or_else(|| panic!("{}: {plate} not read: {all:?}", photo.display()));
    assert!(c < 0.999, "confidence {c}: no room for a floor above it");
    let floor = f64::from(c) + 1e-4;
    let found = read(floor);
    assert_eq!(
        found.detections.len() + found.not_plates as usize,
        all.len(),
        "every box under the floor is counted: {found:?}"
    );
    assert!(found.not_plates >= 1, "{found:?}");
    let kept = found.detections;
    assert!(
        kept.iter()
            .all(|d| f64::from(d.text.confidence) >= floor - 1e-6),
        "{kept:?}"
    );
    assert!(
        !kept.iter().any(|d| normalise(&d.text.text) == plate),
        "the read under the floor is still returned: {kept:?}"
    );
    match with_floor(1.5) {
        Err(RecognizeError::Manifest { key, .. }) => assert_eq!(key, "ocr.min_confidence"),
        other => panic!("a floor of 1.5 loaded: {other:?}"),
    }
}

/// `platecam recognize --json` on the samples, with the given config (or none): image -> plates.
fn recognize_cli(config: Option<&Path>) -> Vec<(String, Vec<serde_json::Value>)> {
    let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_platecam"));
    cmd.args(["recognize", "--json"]);
    if let Some(c) = config {
        cmd.arg("--config").arg(c);
    }
    let out = cmd
        .args(samples().iter().map(|(p, _)| p))
        .output()
        .expect("run platecam recognize");
    assert!(
        out.status.success(),
        "recognize failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| {
            let v: serde_json::Value = serde_json::from_str(l).expect("one JSON object a line");
            let plates = v["plates"].as_array().expect("plates").clone();
            (v["image"].as_str().expect("image").to_string(), plates)
        })
        .collect()
}

/// `recognize` says of each read what the daemon's pass rule says of a one-frame pass: the
/// sample plates are kept with the defaults, and a config's [tracking] changes the verdict.
#[test]
fn recognize_says_which_reads_the_pass_rule_keeps() {
    let truth = samples();
    let by_default = recognize_cli(None);
    assert_eq!(by_default.len(), truth.len());
    for ((image, plates), (_, plate)) in by_default.iter().zip(&truth) {
        let read = plates
            .iter()
            .find(|p| normalise(p["text"].as_str().unwrap_or_default()) == *plate)
            .unwrap_or_else(|| panic!("{image}: {plate} not read: {plates:?}"));
        assert_eq!(read["kept"], true, "{image}: {read}");
        assert!(read.get("dropped").is_none(), "{image}: {read}");
    }

    let dir = tempfile::tempdir().expect("tempdir");
    let config = dir.path().join("strict.toml");
    std::fs::write(&config, "[tracking]\nmin_chars = 9\n").expect("write config");
    for (image, plates) in recognize_cli(Some(&config)) {
        assert!(!plates.is_empty(), "{image}: no read");
        for p in plates {
            assert_eq!(p["kept"], false, "{image}: {p}");
            assert_eq!(
                p["dropped"], "not plate-like: too few characters or no digit",
                "{image}: {p}"
            );
        }
    }
}
