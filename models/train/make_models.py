"""Regenerate every platecam model file from nothing.

  python3 models/train/make_models.py --out models --samples samples            # CPU, 2 cores, < 60 min

Steps: train the OCR and the detector in two parallel processes (each for --minutes of wall time,
on synthetic data rendered on the fly), export both to ONNX (opset 13, fp32, fixed shapes), check
onnxruntime against torch, write manifest.json, render samples/ and check the models read them.

On a GPU machine the same recipe runs bigger: `--device cuda` with several rendering workers per
model and `--train-only --work DIR`; later phases continue from earlier weights on fresh samples
(`--init DIR`, optionally `--tasks ocr` and a lower `--lr`); `--skip-train --work DIR` exports.
Every phase is recorded in the checkpoints and the manifest (`provenance.training`).
"""
import argparse
import datetime
import hashlib
import json
import os
import shutil
import subprocess
import sys
import time

import numpy as np
import torch

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import synth  # noqa: E402
from nets import ALPHABET, OCR, SLOTS, CTCSlots, Detector, greedy_ctc  # noqa: E402

DET_H, DET_W = 384, 640
OCR_W = 128
DET_CFG = {"pad": 0.5, "stride": 4, "score_threshold": 0.3, "nms_iou": 0.3}
CROP_MARGIN = 0.08


class Export(torch.nn.Module):
    def __init__(self, m):
        super().__init__()
        self.m = m

    def forward(self, x):
        return self.m(x)


def export(model, shape, path):
    import onnx
    import onnxruntime as ort
    model.eval()
    wrapper = Export(model).eval()
    x = torch.rand(*shape)
    torch.onnx.export(wrapper, (x,), path, dynamo=False, opset_version=13,
                      input_names=["input"], output_names=["output"], do_constant_folding=True)
    m = onnx.load(path)
    onnx.checker.check_model(m)
    ops = sorted({n.op_type for n in m.graph.node})
    sess = ort.InferenceSession(path, providers=["CPUExecutionProvider"])
    diffs = []
    for k in range(3):
        x = torch.rand(*shape) if k else torch.full(shape, 0.5)
        with torch.no_grad():
            ref = model(x).numpy()
        got = sess.run(None, {"input": x.numpy()})[0]
        diffs.append(float((np.abs(ref - got) / (1.0 + np.abs(ref))).max()))
    size = os.path.getsize(path)
    print("exported %s: %.2f MB, ops %s, max rel |torch-ort| %.2e" % (path, size / 1e6, ops, max(diffs)), flush=True)
    assert max(diffs) < 1e-3, "onnxruntime does not match torch"
    assert size <= 5 * 1024 * 1024
    return ops, max(diffs)


def synthetic_val(model, seed, n=400):
    """Exact-read rate on synthetic crops the training never saw (another seed)."""
    xs, labels = [], []
    for i in range(n):
        a, label = synth.ocr_sample(synth.sample_rng(seed + 999, i), OCR_W, model.height)
        xs.append(a[None])
        labels.append(label)
    with torch.no_grad():
        got = greedy_ctc(model(torch.from_numpy(np.stack(xs))))
    return float(np.mean([g == t for g, t in zip(got, labels)])), n


def sha256(path):
    with open(path, "rb") as f:
        return hashlib.sha256(f.read()).hexdigest()


def make_samples(model_dir, out_dir, seed, n=6):
    from PIL import Image
    from pipeline import Pipeline, iou
    os.makedirs(out_dir, exist_ok=True)
    for old in os.listdir(out_dir):
        if old.startswith("plate") and old.endswith(".jpg"):
            os.remove(os.path.join(out_dir, old))
    p = Pipeline(model_dir)
    rows, skipped = [], []
    styles = ["us", "eu", "us", "eu", "us", "br"]
    idx = 0
    while len(rows) < n and idx < 60:
        style = styles[len(rows) % len(styles)]
        rng = synth.sample_rng(seed + 77, idx)
        img, box, label = synth.demo_scene(rng, 1280, 720, style)
        idx += 1
        # judge the JPEG that ships, as the daemon will see it
        name = "plate%d_%s.jpg" % (len(rows) + 1, style)
        img.save(os.path.join(out_dir, name), "JPEG", quality=85)
        res = p.recognize(Image.open(os.path.join(out_dir, name)))
        ok = any(t == label and iou(b, box) >= 0.3 for b, _, t, _ in res)
        # a sample holds one read: nothing else the daemon's plausibility filters would let through,
        # looked for below the detector threshold (Rust's resize differs slightly from PIL's)
        res = p.recognize(Image.open(os.path.join(out_dir, name)), score_threshold=0.1)
        others = [t for b, _, t, _ in res if iou(b, box) < 0.3 and len(t) >= 4
                  and any(ch.isdigit() for ch in t)]
        if not ok or others:
            os.remove(os.path.join(out_dir, name))
            skipped.append((idx - 1, label, [t for _, _, t, _ in res]))
            continue
        x, y, w, h = [int(round(v)) for v in box]
        rows.append("%s\t%d\t%d\t%d\t%d\t%s" % (name, x, y, w, h, label))
    with open(os.path.join(out_dir, "groundtruth.tsv"), "w") as f:
        f.write("\n".join(rows) + "\n")
    print("samples: %d written, %d candidates skipped (not read): %s" % (len(rows), len(skipped), skipped[:10]),
          flush=True)
    return len(rows), len(skipped)


def committed_provenance(model_dir, key):
    """provenance.training.<key> (or provenance.<key>) of the manifest in model_dir."""
    with open(os.path.join(model_dir, "manifest.json")) as f:
        prov = json.load(f)["provenance"]
    return prov["training"][key] if key in prov["training"] else prov[key]


def write_manifest(out, manifest):
    with open(os.path.join(out, "manifest.json"), "w") as f:
        json.dump(manifest, f, indent=2)
        f.write("\n")


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default="models")
    ap.add_argument("--samples", default="samples")
    ap.add_argument("--minutes", type=float, default=55.0, help="wall-clock training time (both models in parallel)")
    ap.add_argument("--ocr-minutes", type=float, default=0, help="override --minutes for the OCR")
    ap.add_argument("--det-minutes", type=float, default=0, help="override --minutes for the detector")
    ap.add_argument("--seed", type=int, default=1234)
    ap.add_argument("--device", default="cpu", help="cpu, or cuda to train on a GPU")
    ap.add_argument("--ocr-workers", type=int, default=1, help="processes rendering OCR crops")
    ap.add_argument("--det-workers", type=int, default=1, help="processes rendering detector scenes")
    ap.add_argument("--precision", choices=["fp32", "bf16"], default="fp32", help="train.py --precision (bf16: "
                    "about 1.9x faster on CPUs with AVX512-BF16 or AMX)")
    ap.add_argument("--init", default="", help="continue from the checkpoints in this folder, on fresh data")
    ap.add_argument("--init-onnx", default="", help="continue from the ONNX models (and manifest) in this "
                    "folder, e.g. the committed models/ (onnx_init.py)")
    ap.add_argument("--lr", type=float, default=0, help="peak learning rate (default: train.py's)")
    ap.add_argument("--tasks", default="det,ocr", help="which models to train (others keep --init's weights)")
    ap.add_argument("--ocr-negative", type=float, default=None, help="share of OCR crops without a plate "
                    "(train.py --negative)")
    ap.add_argument("--ocr-height", type=int, choices=[32, 64], default=0, help="OCR input rows (train.py "
                    "--ocr-height; default: the starting reader's, else 32)")
    ap.add_argument("--ocr-deep", action="store_true", help="the reader with residual blocks (train.py --ocr-deep)")
    ap.add_argument("--work", default="/tmp/platecam-train", help="where the checkpoints go")
    ap.add_argument("--train-only", action="store_true", help="stop after training (export elsewhere)")
    ap.add_argument("--skip-train", action="store_true", help="export from existing checkpoints in --work")
    ap.add_argument("--version", default=None)
    ap.add_argument("--calibrate", type=int, default=1000, help="synthetic scenes to choose the OCR floor "
                    "on at the detector threshold 0.3 (calibrate.py --threshold; about 2 CPU minutes for 1000); "
                    "0 ships no floor (models/README.md, Precision)")
    args = ap.parse_args()

    os.makedirs(args.work, exist_ok=True)
    ocr_ck, det_ck = os.path.join(args.work, "ocr.pt"), os.path.join(args.work, "det.pt")
    om = args.ocr_minutes or args.minutes
    dm = args.det_minutes or args.minutes
    t0 = time.time()
    if not args.skip_train:
        print("training %s on %s (OCR %.1f min, detector %.1f min)" % (args.tasks, args.device, om, dm), flush=True)
        tr = [sys.executable, os.path.join(HERE, "train.py"), "--seed", str(args.seed), "--device", args.device,
              "--precision", args.precision]
        if args.lr:
            tr += ["--lr", str(args.lr)]

        procs = []
        for task, minutes, ckpt, workers in (("det", dm, det_ck, args.det_workers),
                                              ("ocr", om, ocr_ck, args.ocr_workers)):
            init = os.path.join(args.init, task + ".pt") if args.init else ""
            init_onnx = os.path.join(args.init_onnx, "ocr.onnx" if task == "ocr" else "detector.onnx") \
                if args.init_onnx else ""
            if task not in args.tasks.split(","):
                if init:  # not trained in this phase: keep the earlier weights
                    shutil.copy(init, ckpt)
                elif init_onnx:
                    import onnx_init
                    torch.save(onnx_init.checkpoint(init_onnx, task), ckpt)
                continue
            # a later phase starts from the earlier weights, on samples no earlier phase drew
            start = ["--init", init] if init else ["--init-onnx", init_onnx] if init_onnx else []
            extra = ["--negative", str(args.ocr_negative)] if task == "ocr" and args.ocr_negative is not None else []
            if task == "ocr" and args.ocr_height:
                extra += ["--ocr-height", str(args.ocr_height)]
            if task == "ocr" and args.ocr_deep:
                extra += ["--ocr-deep"]
            procs.append(subprocess.Popen(tr + ["--task", task, "--minutes", str(minutes), "--ckpt", ckpt,
                                                "--workers", str(workers)] + start + extra))
        rc = [p.wait() for p in procs]
        if any(rc):
            sys.exit("training failed: %s" % rc)
        if args.train_only:
            print("trained in %.1f min; checkpoints in %s" % ((time.time() - t0) / 60, args.work), flush=True)
            return
    os.makedirs(args.out, exist_ok=True)
    torch.manual_seed(args.seed)
    ock, dck = torch.load(ocr_ck, map_location="cpu"), torch.load(det_ck, map_location="cpu")
    ocr, det = OCR(height=OCR.height_of(ock["model"]), deep=OCR.deep_of(ock["model"])), Detector()
    ocr.load_state_dict(ock["model"])
    det.load_state_dict(dck["model"])
    det_path, ocr_path = os.path.join(args.out, "detector.onnx"), os.path.join(args.out, "ocr.onnx")
    if args.init_onnx and dck["phases"] == committed_provenance(args.init_onnx, "detector"):
        # not trained since that export: keep its file (a re-export differs only by rounding)
        shutil.copy(os.path.join(args.init_onnx, "detector.onnx"), det_path)
        det_ops = committed_provenance(args.init_onnx, "detector_ops")
        print("detector: not trained in this phase, %s kept" % det_path, flush=True)
    else:
        det_ops, _ = export(det, (1, 1, DET_H, DET_W), det_path)
    ocr.eval()
    val_exact, val_n = synthetic_val(ocr, args.seed)
    print("synthetic validation exact: %.3f of %d" % (val_exact, val_n), flush=True)
    ocr_ops, ocr_diff = export(CTCSlots(ocr).eval(), (1, 1, ocr.height, OCR_W), ocr_path)
    det_params = sum(p.numel() for p in det.parameters())
    ocr_params = sum(p.numel() for p in ocr.parameters())
    version = args.version or datetime.date.today().strftime("%Y.%m.%d") + "-1"
    manifest = {
        "version": version,
        "normalisation": "grey = 0.299 R + 0.587 G + 0.114 B; value = grey / 255; resized bilinearly, "
                         "antialiased when shrinking (PIL's BILINEAR); detector: letterboxed top-left, "
                         "pad value detector.pad; OCR: the box plus ocr.crop_margin, stretched",
        "detector": {"file": "detector.onnx", "sha256": sha256(det_path),
                     "input": {"channels": 1, "height": DET_H, "width": DET_W}, **DET_CFG},
        "ocr": {"file": "ocr.onnx", "sha256": sha256(ocr_path),
                "input": {"channels": 1, "height": ocr.height, "width": OCR_W},
                "alphabet": ALPHABET, "pad_char": "_", "slots": SLOTS, "crop_margin": CROP_MARGIN},
        "provenance": {
            "seed": args.seed, "torch_export": torch.__version__,
            "export_command": " ".join(["make_models.py"] + sys.argv[1:]),
            "training": {"ocr": ock["phases"], "detector": dck["phases"]},
            "detector_params": det_params, "ocr_params": ocr_params,
            "detector_ops": det_ops, "ocr_ops": ocr_ops,
            "ocr_head": "CTC over 32 columns, greedy-decoded into slots inside the graph",
            "synthetic_val_exact": {"ocr": round(val_exact, 4), "n": val_n},
            "data": "synthetic only (models/train/synth.py); no real photos used for training",
            "license": "Apache-2.0",
        },
    }
    write_manifest(args.out, manifest)
    if args.calibrate:
        # precision: the OCR floor that maximises exact - false on synthetic validation scenes (a
        # false plate costs as much as a miss), never real photos; the detector threshold is held,
        # as synthetic scenes overrate the detector on small real plates
        from calibrate import calibrate
        cal = calibrate(args.out, args.calibrate, threshold=manifest["detector"]["score_threshold"])
        manifest["ocr"]["min_confidence"] = cal["ocr_min_confidence"]
        manifest["provenance"]["calibration"] = cal
        write_manifest(args.out, manifest)
    print(json.dumps(manifest, indent=2), flush=True)
    make_samples(args.out, args.samples, args.seed)
    print("all done in %.1f min" % ((time.time() - t0) / 60), flush=True)


if __name__ == "__main__":
    main()
