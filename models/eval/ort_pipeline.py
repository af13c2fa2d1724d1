#!/usr/bin/env python3
"""All-in time per photo under onnxruntime (1 thread), to set beside `platecam recognize --json`.

  python3 models/eval/ort_pipeline.py [--reference ../shared/models-reference] PHOTO...

For each photo, one run of each pipeline, interleaved, after 3 warm-up photos: decode (PIL),
pre-process, detector, and the OCR of every box. Our models go through models/train/pipeline.py
(the Rust pre-processing and decode); the community ones (yolo-v9-t-416 end2end and
cct_xs_v1_global) mirror src/recognize: letterboxed centred at 416 with grey 114, RGB /255,
boxes scored >= 0.4; each crop stretched to 128x64, u8 NHWC. Prints the median and mean ms.
Needs numpy, pillow and onnxruntime (models/train/requirements.txt).
"""
import argparse
import os
import statistics
import sys
import time

import numpy as np
import onnxruntime as ort
from PIL import Image

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.join(ROOT, "models", "train"))
from pipeline import Pipeline  # noqa: E402


def session(path):
    so = ort.SessionOptions()
    so.intra_op_num_threads = 1
    so.inter_op_num_threads = 1
    return ort.InferenceSession(path, so, providers=["CPUExecutionProvider"])


class Community:
    def __init__(self, reference):
        self.det = session(os.path.join(reference, "yolo-v9-t-416-license-plates-end2end1.onnx"))
        self.ocr = session(os.path.join(reference, "cct_xs_v1_global.onnx"))

    def __call__(self, path):
        img = Image.open(path).convert("RGB")
        fw, fh = img.size
        s = min(416 / fw, 416 / fh)
        nw, nh = round(fw * s), round(fh * s)
        ox, oy = (416 - nw) // 2, (416 - nh) // 2
        canvas = Image.new("RGB", (416, 416), (114, 114, 114))
        canvas.paste(img.resize((nw, nh), Image.BILINEAR), (ox, oy))
        x = (np.asarray(canvas, np.float32) / 255.0).transpose(2, 0, 1)[None]
        for row in self.det.run(None, {self.det.get_inputs()[0].name: x})[0]:
            if row[6] < 0.4:
                continue
            x1, y1, x2, y2 = [(v - o) / s for v, o in zip(row[1:5], (ox, oy, ox, oy))]
            crop = img.crop((max(0, int(x1)), max(0, int(y1)), min(fw, int(x2)), min(fh, int(y2))))
            if crop.width >= 2 and crop.height >= 2:
                c = np.asarray(crop.resize((128, 64), Image.BILINEAR), np.uint8)[None]
                self.ocr.run(None, {self.ocr.get_inputs()[0].name: c})


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--reference", default=os.path.join(ROOT, "..", "shared", "models-reference"))
    ap.add_argument("photos", nargs="+")
    args = ap.parse_args()
    own = Pipeline(os.path.join(ROOT, "models"))
    pipelines = {"community models": Community(args.reference),
                 "own models": lambda p: own.recognize(Image.open(p).convert("RGB"))}
    for run in pipelines.values():
        for p in args.photos[:3]:
            run(p)
    ms = {name: [] for name in pipelines}
    for p in args.photos:
        for name, run in pipelines.items():
            t = time.perf_counter()
            run(p)
            ms[name].append((time.perf_counter() - t) * 1e3)
    for name, v in ms.items():
        print(f"onnxruntime, {name}: {len(v)} photos, all in median {statistics.median(v):.1f} ms, "
              f"mean {statistics.mean(v):.1f} ms")


if __name__ == "__main__":
    main()
