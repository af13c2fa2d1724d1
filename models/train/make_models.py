"""Regenerate every platecam model file from nothing.

  /opt/train-venv/bin/python3 models/train/make_models.py --out models --samples samples --minutes 40

Steps: train the OCR and the detector in two parallel processes (each for --minutes of wall time,
on synthetic data rendered on the fly), export both to ONNX (opset 13, fp32, fixed shapes), check
onnxruntime against torch, write manifest.json, render samples/ and check the models read them.
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
from nets import ALPHABET, OCR, SLOTS, CTCSlots, Detector  # noqa: E402

DET_H, DET_W = 384, 640
OCR_H, OCR_W = 32, 128
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


def synthetic_val(seed, n=400):
    xs, labels = [], []
    for i in range(n):
        a, label = synth.ocr_sample(synth.sample_rng(seed + 999, i), OCR_W, OCR_H)
        xs.append(a[None])
        labels.append(label)
    return torch.from_numpy(np.stack(xs)), labels


def val_acc(model, val):
    x, labels = val
    with torch.no_grad():
        o = model(x)
    got = ["".join(ALPHABET[k] for k in r if k != len(ALPHABET) - 1) for r in o.argmax(-1).tolist()]
    return float(np.mean([g == t for g, t in zip(got, labels)]))


def sha256(path):
    with open(path, "rb") as f:
        return hashlib.sha256(f.read()).hexdigest()


def make_samples(model_dir, out_dir, seed, n=6):
    from pipeline import Pipeline, iou
    os.makedirs(out_dir, exist_ok=True)
    p = Pipeline(model_dir)
    rows, skipped = [], []
    styles = ["us", "eu", "us", "eu", "us", "br"]
    idx = 0
    while len(rows) < n and idx < 60:
        style = styles[len(rows) % len(styles)]
        rng = synth.sample_rng(seed + 77, idx)
        img, box, label = synth.demo_scene(rng, 1280, 720, style)
        idx += 1
        res = p.recognize(img)
        ok = any(t == label and iou(b, box) >= 0.3 for b, _, t, _ in res)
        if not ok:
            skipped.append((idx - 1, label, [t for _, _, t, _ in res]))
            continue
        name = "plate%d_%s.jpg" % (len(rows) + 1, style)
        img.save(os.path.join(out_dir, name), "JPEG", quality=85)
        # the read must survive the JPEG round trip too
        from PIL import Image
        res2 = p.recognize(Image.open(os.path.join(out_dir, name)))
        if not any(t == label for _, _, t, _ in res2):
            os.remove(os.path.join(out_dir, name))
            skipped.append((idx - 1, label, "jpeg"))
            continue
        x, y, w, h = [int(round(v)) for v in box]
        rows.append("%s\t%d\t%d\t%d\t%d\t%s" % (name, x, y, w, h, label))
    with open(os.path.join(out_dir, "groundtruth.tsv"), "w") as f:
        f.write("\n".join(rows) + "\n")
    print("samples: %d written, %d candidates skipped (not read): %s" % (len(rows), len(skipped), skipped[:10]),
          flush=True)
    return len(rows), len(skipped)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default="models")
    ap.add_argument("--samples", default="samples")
    ap.add_argument("--minutes", type=float, default=55.0, help="wall-clock training time (both models in parallel)")
    ap.add_argument("--ocr-minutes", type=float, default=40.0, help="OCR training minutes (0: use --minutes)")
    ap.add_argument("--ocr-finetune-minutes", type=float, default=0.0,
                    help="OCR phase 2 (fine-tune on fresh hard crops, lower LR) after phase 1")
    ap.add_argument("--det-minutes", type=float, default=0, help="override --minutes for the detector")
    ap.add_argument("--seed", type=int, default=1234)
    ap.add_argument("--work", default="/tmp/platecam-train")
    ap.add_argument("--skip-train", action="store_true", help="export from existing checkpoints in --work")
    ap.add_argument("--version", default=None)
    args = ap.parse_args()

    os.makedirs(args.out, exist_ok=True)
    os.makedirs(args.work, exist_ok=True)
    ocr_ck, det_ck = os.path.join(args.work, "ocr.pt"), os.path.join(args.work, "det.pt")
    om = args.ocr_minutes or args.minutes
    dm = args.det_minutes or args.minutes
    t0 = time.time()
    if not args.skip_train:
        print("training OCR (%.1f min) and detector (%.1f min) in parallel" % (om, dm), flush=True)
        tr = [sys.executable, os.path.join(HERE, "train.py"), "--seed", str(args.seed)]
        det_p = subprocess.Popen(tr + ["--task", "det", "--minutes", str(dm), "--ckpt", det_ck])
        # OCR: phase 1 (curriculum from clean to hard crops), then phase 2: fine-tune on fresh hard crops
        p1 = os.path.join(args.work, "ocr_phase1.pt")
        rc_ocr = subprocess.call(tr + ["--task", "ocr", "--minutes", str(om), "--ckpt", p1])
        if rc_ocr == 0 and args.ocr_finetune_minutes > 0:
            rc_ocr = subprocess.call(tr + ["--task", "ocr", "--minutes", str(args.ocr_finetune_minutes),
                                           "--init", p1, "--index-offset", "10000000", "--lr", "6e-4",
                                           "--threads", "2", "--ckpt", ocr_ck])
        elif rc_ocr == 0:
            shutil.copy(p1, ocr_ck)
        rc = [rc_ocr, det_p.wait()]
        if any(rc):
            sys.exit("training failed: %s" % rc)
    torch.manual_seed(args.seed)
    ocr, det = OCR(), Detector()
    ock, dck = torch.load(ocr_ck), torch.load(det_ck)
    ocr.load_state_dict(ock["model"])
    det.load_state_dict(dck["model"])
    det_path, ocr_path = os.path.join(args.out, "detector.onnx"), os.path.join(args.out, "ocr.onnx")
    det_ops, det_diff = export(det, (1, 1, DET_H, DET_W), det_path)
    # two heads were trained: the fixed-slot classifier and the auxiliary CTC head (decoded greedily into
    # slots inside the graph). Ship the one that reads more synthetic validation plates (never real photos).
    ocr.eval()
    ctc_slots = CTCSlots(ocr).eval()
    val = synthetic_val(args.seed)
    acc_slot, acc_ctc = val_acc(ocr, val), val_acc(ctc_slots, val)
    print("synthetic validation exact: slot head %.3f, CTC head %.3f" % (acc_slot, acc_ctc), flush=True)
    head = "ctc" if acc_ctc > acc_slot else "slots"
    ocr_ops, ocr_diff = export(ctc_slots if head == "ctc" else ocr, (1, 1, OCR_H, OCR_W), ocr_path)
    det_params = sum(p.numel() for p in det.parameters())
    ocr_params = sum(p.numel() for p in ocr.parameters())
    version = args.version or datetime.date.today().strftime("%Y.%m.%d") + "-1"
    manifest = {
        "version": version,
        "detector": {"file": "detector.onnx", "sha256": sha256(det_path),
                     "input": {"channels": 1, "height": DET_H, "width": DET_W}, **DET_CFG},
        "ocr": {"file": "ocr.onnx", "sha256": sha256(ocr_path),
                "input": {"channels": 1, "height": OCR_H, "width": OCR_W},
                "alphabet": ALPHABET, "pad_char": "_", "slots": SLOTS, "crop_margin": CROP_MARGIN},
        "provenance": {
            "command": "python3 models/train/make_models.py --out %s --samples %s --minutes %g --ocr-minutes %g --ocr-finetune-minutes %g --seed %d" % (
                args.out, args.samples, args.minutes, args.ocr_minutes, args.ocr_finetune_minutes, args.seed),
            "seed": args.seed, "torch": torch.__version__, "device": "cpu (2 cores)",
            "minutes": args.minutes, "ocr_minutes": om, "ocr_finetune_minutes": args.ocr_finetune_minutes,
            "det_minutes": dm,
            "ocr_steps": ock.get("step"), "ocr_samples": ock.get("seen"),
            "det_steps": dck.get("step"), "det_samples": dck.get("seen"),
            "detector_params": det_params, "ocr_params": ocr_params,
            "detector_ops": det_ops, "ocr_ops": ocr_ops,
            "ocr_head": {"ctc": "greedy CTC decoded into slots inside the graph", "slots": "slot classifier"}[head],
            "synthetic_val_exact": {"slot_head": round(acc_slot, 4), "ctc_head": round(acc_ctc, 4), "n": len(val[1])},
            "data": "synthetic only (models/train/synth.py); no real photos used for training",
            "license": "Apache-2.0",
        },
    }
    with open(os.path.join(args.out, "manifest.json"), "w") as f:
        json.dump(manifest, f, indent=2)
        f.write("\n")
    print(json.dumps(manifest, indent=2), flush=True)
    make_samples(args.out, args.samples, args.seed)
    print("all done in %.1f min" % ((time.time() - t0) / 60), flush=True)


if __name__ == "__main__":
    main()
