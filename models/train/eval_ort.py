"""Evaluate the exported models with onnxruntime and the Rust decode (pipeline.py).

  python3 models/train/eval_ort.py --models models --data /path/to/openalpr-benchmarks

Scoring (data/README.md): detected = a reported box has IoU >= 0.3 with the true box;
read = any reported plate equals the truth after upper-casing and keeping only A-Z0-9.
Sets: endtoend/us, endtoend/eu (detector + OCR), plates-us (OCR on the whole crop image).
Measuring only: never train or tune on these photos.
"""
import argparse
import csv
import os
import sys
import time

from PIL import Image

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from pipeline import Pipeline, iou, norm  # noqa: E402


def eval_endtoend(p, folder, verbose=False, limit=0):
    rows = [l.rstrip("\n").split("\t") for l in open(os.path.join(folder, "groundtruth.tsv")) if l.strip()]
    if limit:
        rows = rows[:limit]
    det = read = 0
    t_total = 0.0
    for r in rows:
        f, x, y, w, h, plate = r[0], *map(float, r[1:5]), r[5]
        img = Image.open(os.path.join(folder, f)).convert("RGB")
        t = time.time()
        res = p.recognize(img)
        t_total += time.time() - t
        d = any(iou(b, (x, y, w, h)) >= 0.3 for b, _, _, _ in res)
        ok = any(norm(txt) == norm(plate) for _, _, txt, _ in res)
        det += d
        read += ok
        if verbose:
            best = max(res, key=lambda q: iou(q[0], (x, y, w, h)), default=None)
            print("%-45s %-9s det=%d read=%d n=%d best=%s" % (
                f, plate, d, ok, len(res), (best[2], round(best[1], 2)) if best else None))
    n = len(rows)
    return {"n": n, "detected": det / n, "exact": read / n, "ms_per_photo": 1000 * t_total / n}


def eval_crops(p, folder, verbose=False, limit=0):
    rows = list(csv.reader(open(os.path.join(folder, "groundtruth.csv"))))
    rows = [r for r in rows if r and r[0].lower().endswith((".png", ".jpg"))
            and os.path.exists(os.path.join(folder, r[0]))]  # the csv also lists the held-out half
    if limit:
        rows = rows[:limit]
    ok = 0
    for f, state, plate in rows:
        img = Image.open(os.path.join(folder, f)).convert("RGB")
        txt, _ = p.read_crop(img)
        ok += norm(txt) == norm(plate)
        if verbose and norm(txt) != norm(plate):
            print("%-14s %-9s got %s" % (f, plate, txt))
    return {"n": len(rows), "exact": ok / len(rows)}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--models", default=os.path.join(os.path.dirname(__file__), ".."))
    ap.add_argument("--data", default="/work/shared/data/openalpr-benchmarks")
    ap.add_argument("--verbose", action="store_true")
    ap.add_argument("--limit", type=int, default=0)
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()
    p = Pipeline(args.models, args.threads)
    out = {}
    for name in ["endtoend/us", "endtoend/eu"]:
        folder = os.path.join(args.data, name)
        if os.path.isdir(folder):
            out[name] = eval_endtoend(p, folder, args.verbose, args.limit)
            print(name, out[name], flush=True)
    folder = os.path.join(args.data, "plates-us")
    if os.path.isdir(folder):
        out["plates-us"] = eval_crops(p, folder, args.verbose, args.limit)
        print("plates-us", out["plates-us"], flush=True)
    return out


if __name__ == "__main__":
    main()
