#!/usr/bin/env python3
"""How fast tract runs a detector design, against onnxruntime on the same weights, before anyone
trains it (speed does not depend on the weights).

  python3 models/eval/arch_speed.py [--platecam target/release/platecam] [--rounds 4] [NAME ...]

Each design is exported with random weights (BatchNorm folded, as make_models.py exports) beside
a copy of our manifest and OCR, with the score threshold at 0.9999 so random heat maps yield no
boxes; tract's time is the `detect` stage of `platecam recognize --json` over samples/ (median,
first two photos dropped as warm-up), onnxruntime's the median of 15 runs (1 thread) after 3
warm-ups, interleaved round by round so both see the same machine load. Designs (all map
[1,1,384,640] to the detector contract [1,5,96,160]):

  v1    nets.Detector (the shipped design: thin 3x3 convolutions down to stride 4)
  v2    a 4x4 stride-4 "patchify" stem, wider 3x3 convolutions at /8../32, a 1x1 head at /4
  v3    as v2 but nothing at /4: a 1x1 head at /8 and a pixel shuffle to the stride-4 output
  v2w, v3w   the same, wider
  k3, k1, dwpw   probes at /8: 4 3x3 convs, 36 1x1 convs (same MACs), 36 depthwise+1x1 blocks

Needs torch, onnx and onnxruntime (models/train/requirements.txt) and a platecam binary.
"""
import argparse
import hashlib
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time

import numpy as np
import onnxruntime as ort
import torch
import torch.nn as nn
import torch.nn.functional as F

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.join(ROOT, "models", "train"))
from nets import Detector, cbr  # noqa: E402


def out5(o):
    return torch.cat([torch.sigmoid(o[:, 0:3]), o[:, 3:5]], 1)


def stem(c):
    return nn.Sequential(nn.Conv2d(1, c, 4, 4, 0, bias=False), nn.BatchNorm2d(c), nn.ReLU(inplace=True))


class Pyramid(nn.Module):
    """Patchify stem, 3x3 convolutions at /8../32, top-down sums; head at /4 (v2) or /8 (v3)."""

    def __init__(self, w, head_at_8):
        super().__init__()
        a, b, c, d = w
        self.head_at_8 = head_at_8
        self.stem = stem(a)
        self.s4 = nn.Identity() if head_at_8 else cbr(a, a)
        self.s8 = nn.Sequential(cbr(a, b, 3, 2), cbr(b, b))
        self.s16 = nn.Sequential(cbr(b, c, 3, 2), cbr(c, c))
        self.s32 = nn.Sequential(cbr(c, d, 3, 2), cbr(d, d))
        self.l16, self.m16 = cbr(d, c, 1), cbr(c, c)
        self.l8, self.m8 = cbr(c, b, 1), cbr(b, b)
        if head_at_8:
            self.head = nn.Sequential(cbr(b, b, 1), nn.Conv2d(b, 20, 1))
        else:
            self.l4 = cbr(b, a, 1)
            self.head = nn.Sequential(cbr(a, a, 1), nn.Conv2d(a, 5, 1))

    def forward(self, x):
        f4 = self.s4(self.stem(x))
        f8 = self.s8(f4)
        f16 = self.s16(f8)
        f32 = self.s32(f16)
        p = self.m16(F.interpolate(self.l16(f32), scale_factor=2.0, mode="nearest") + f16)
        p = self.m8(F.interpolate(self.l8(p), scale_factor=2.0, mode="nearest") + f8)
        if self.head_at_8:
            return out5(F.pixel_shuffle(self.head(p), 2))
        return out5(self.head(F.interpolate(self.l4(p), scale_factor=2.0, mode="nearest") + f4))


class Probe(nn.Module):
    """One kind of layer repeated at /8 (64 channels), to see what tract runs well."""

    def __init__(self, kind, c=64):
        super().__init__()
        self.down = nn.Sequential(stem(32), cbr(32, c, 1), nn.MaxPool2d(2))
        if kind == "k3":
            layers = [cbr(c, c) for _ in range(4)]
        elif kind == "k1":
            layers = [cbr(c, c, 1) for _ in range(36)]
        else:
            layers = [nn.Sequential(nn.Conv2d(c, c, 3, 1, 1, groups=c, bias=False), nn.BatchNorm2d(c),
                                    nn.ReLU(inplace=True), cbr(c, c, 1)) for _ in range(36)]
        self.body = nn.Sequential(*layers)
        self.head = nn.Conv2d(c, 20, 1)

    def forward(self, x):
        return out5(F.pixel_shuffle(self.head(self.body(self.down(x))), 2))


DESIGNS = {
    "v1": Detector,
    "v2": lambda: Pyramid((32, 64, 96, 128), False),
    "v3": lambda: Pyramid((32, 64, 96, 128), True),
    "v2w": lambda: Pyramid((48, 96, 128, 160), False),
    "v3w": lambda: Pyramid((48, 96, 128, 192), True),
    "k3": lambda: Probe("k3"),
    "k1": lambda: Probe("k1"),
    "dwpw": lambda: Probe("dwpw"),
}


def mmacs(model):
    total = 0

    def hook(mod, _inp, out):
        nonlocal total
        total += out.numel() * mod.in_channels // mod.groups * mod.kernel_size[0] * mod.kernel_size[1]

    hooks = [m.register_forward_hook(hook) for m in model.modules() if isinstance(m, nn.Conv2d)]
    with torch.no_grad():
        model(torch.rand(1, 1, 384, 640))
    for h in hooks:
        h.remove()
    return total / 1e6


def export(name, folder):
    torch.manual_seed(0)
    model = DESIGNS[name]().eval()
    os.makedirs(folder)
    path = os.path.join(folder, "detector.onnx")
    torch.onnx.export(model, (torch.rand(1, 1, 384, 640),), path, dynamo=False, opset_version=13,
                      input_names=["input"], output_names=["output"], do_constant_folding=True)
    with open(os.path.join(ROOT, "models", "manifest.json")) as f:
        manifest = json.load(f)
    with open(path, "rb") as f:
        manifest["detector"]["sha256"] = hashlib.sha256(f.read()).hexdigest()
    manifest["detector"]["score_threshold"] = 0.9999
    os.symlink(os.path.join(ROOT, "models", "ocr.onnx"), os.path.join(folder, "ocr.onnx"))
    with open(os.path.join(folder, "manifest.json"), "w") as f:
        json.dump(manifest, f)
    return path, mmacs(model)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--platecam", default=os.path.join(ROOT, "target", "release", "platecam"))
    ap.add_argument("--rounds", type=int, default=4)
    ap.add_argument("names", nargs="*", default=list(DESIGNS))
    args = ap.parse_args()
    photos = sorted(os.path.join(ROOT, "samples", p) for p in os.listdir(os.path.join(ROOT, "samples"))
                    if p.endswith(".jpg")) * 3
    so = ort.SessionOptions()
    so.intra_op_num_threads = 1
    so.inter_op_num_threads = 1
    x = np.random.rand(1, 1, 384, 640).astype(np.float32)
    with tempfile.TemporaryDirectory() as tmp:
        sess, macs, times = {}, {}, {n: {"tract": [], "ort": []} for n in args.names}
        for n in args.names:
            path, macs[n] = export(n, os.path.join(tmp, n))
            sess[n] = ort.InferenceSession(path, so, providers=["CPUExecutionProvider"])
        for _ in range(args.rounds):
            for n in args.names:
                env = dict(os.environ, PLATECAM_MODELS=os.path.join(tmp, n))
                proc = subprocess.run([args.platecam, "recognize", "--json"] + photos, capture_output=True,
                                      text=True, env=env)
                if proc.returncode not in (0, 1):
                    sys.exit(f"platecam failed on {n} ({proc.returncode}): {proc.stderr.strip()}")
                times[n]["tract"] += [json.loads(line)["ms"]["detect"] for line in proc.stdout.splitlines()][2:]
                for _ in range(3):
                    sess[n].run(None, {"input": x})
                for _ in range(15):
                    t = time.perf_counter()
                    sess[n].run(None, {"input": x})
                    times[n]["ort"].append((time.perf_counter() - t) * 1e3)
    print(f"{'design':<6} {'MMAC':>6} {'tract ms':>9} {'ort ms':>7} {'ratio':>6}")
    for n in args.names:
        t, o = statistics.median(times[n]["tract"]), statistics.median(times[n]["ort"])
        print(f"{n:<6} {macs[n]:>6.0f} {t:>9.1f} {o:>7.1f} {t / o:>6.2f}")


if __name__ == "__main__":
    main()
