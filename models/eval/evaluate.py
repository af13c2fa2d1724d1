#!/usr/bin/env python3
"""Measure platecam's recognizer on the openalpr benchmark photos, our models and the reference
models side by side, in one run, through `platecam recognize --json` (so tract runs both).

Scoring rule (../shared/data/README.md): a photo is *read* when any reported plate equals the
truth after upper-casing and dropping everything but A-Z and 0-9; it is *detected* when a reported
box overlaps the true box with IoU >= 0.3. `plates-us` holds plate crops: OCR only (--ocr-only).

False plates (whole scenes only): a reported read (some text) that is not the truth and whose box
does not overlap the true box (IoU < 0.3), i.e. a plate where the label has none; a misread of
the true plate is a miss, not a false plate. `false/ph` counts every such read `recognize`
reports, per photo. `recognize` also says of each read whether the daemon's pass rule
([tracking] min_confidence, min_chars, require_digit; defaults here) would send it as a pass
seen on that one frame (`kept`): `sent/ph` counts the false plates kept, `exact sent %` the
photos whose true plate is read and kept, i.e. what a unit would publish from that frame.

Usage: models/eval/evaluate.py [--platecam target/release/platecam] [--data ../shared/data/openalpr-benchmarks]
                               [--reference ../shared/models-reference] [--limit N] [--skip-reference]
Other models: PLATECAM_MODELS=DIR (the folder of their manifest.json).
On endtoend/eu our models also run with the European plate-format prior (`plate_formats = ["eu"]`)
and with the Slovak preset (`["sk"]`: most of those photos are Slovak), on endtoend/us and
plates-us with the US preset (`["us"]`), so each prior is measured with and without it.
Standard library only. Prints one table; exits non-zero if platecam fails to run.
"""
import argparse
import csv
import json
import os
import re
import subprocess
import sys
import tempfile

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def norm(s):
    return re.sub(r"[^A-Z0-9]", "", s.upper())


def iou(a, b):
    ax, ay, aw, ah = a
    bx, by, bw, bh = b
    ix = max(0, min(ax + aw, bx + bw) - max(ax, bx))
    iy = max(0, min(ay + ah, by + bh) - max(ay, by))
    inter = ix * iy
    union = aw * ah + bw * bh - inter
    return inter / union if union > 0 else 0.0


def load_endtoend(folder):
    rows = []
    with open(os.path.join(folder, "groundtruth.tsv")) as f:
        for line in f:
            parts = line.rstrip("\n").split("\t")
            if len(parts) < 6:
                continue
            name, x, y, w, h, plate = parts[:6]
            rows.append((os.path.join(folder, name), (int(x), int(y), int(w), int(h)), plate))
    return rows


def load_plates(folder):
    rows = []
    with open(os.path.join(folder, "groundtruth.csv")) as f:
        for rec in csv.reader(f):
            if len(rec) >= 3 and rec[0] != "file":
                rows.append((os.path.join(folder, rec[0]), None, rec[2]))
    return rows


def run_platecam(binary, config, images, ocr_only):
    cmd = [binary, "recognize", "--json"]
    if config:
        cmd += ["--config", config]
    if ocr_only:
        cmd.append("--ocr-only")
    out = {}
    # Chunks keep the command line short; one process per chunk loads the models once.
    for i in range(0, len(images), 200):
        chunk = images[i:i + 200]
        proc = subprocess.run(cmd + chunk, capture_output=True, text=True)
        if proc.returncode not in (0, 1):
            sys.exit(f"platecam failed ({proc.returncode}): {proc.stderr.strip()}")
        for line in proc.stdout.splitlines():
            rec = json.loads(line)
            out[rec["image"]] = rec
    return out


def score(rows, results):
    detected = read = read_sent = false = false_sent = 0
    ms = []
    for path, box, plate in rows:
        rec = results.get(path, {"plates": [], "ms": {"total": 0}})
        plates = rec.get("plates", [])
        if box is not None and any(iou(p["bbox"], box) >= 0.3 for p in plates):
            detected += 1
        right = [p for p in plates if norm(p["text"]) == norm(plate)]
        read += bool(right)
        read_sent += any(p["kept"] for p in right)
        if box is not None:
            wrong = [p for p in plates if norm(p["text"]) and norm(p["text"]) != norm(plate)
                     and iou(p["bbox"], box) < 0.3]
            false += len(wrong)
            false_sent += sum(1 for p in wrong if p["kept"])
        ms.append(rec.get("ms", {}).get("total", 0.0))
    n = len(rows)
    ms.sort()
    median = ms[len(ms) // 2] if ms else 0.0
    mean = sum(ms) / len(ms) if ms else 0.0
    pct = (lambda k: 100.0 * k / n) if n else (lambda k: 0.0)
    return (n, pct(detected), pct(read), (false / n if n else 0.0), pct(read_sent), (false_sent / n if n else 0.0),
            median, mean)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--platecam", default=os.path.join(ROOT, "target", "release", "platecam"))
    ap.add_argument("--data", default=os.path.join(ROOT, "..", "shared", "data", "openalpr-benchmarks"))
    ap.add_argument("--reference", default=os.path.join(ROOT, "..", "shared", "models-reference"))
    ap.add_argument("--limit", type=int, default=0, help="photos per set (0 = all)")
    ap.add_argument("--skip-reference", action="store_true", help="our models only (the reference does not change)")
    args = ap.parse_args()

    ref_cfg = tempfile.NamedTemporaryFile("w", suffix=".toml", delete=False)
    ref = os.path.abspath(args.reference)
    ref_cfg.write(
        "[recognition.detector]\nformat = \"yolo-end2end\"\n"
        f"path = \"{ref}/yolo-v9-t-416-license-plates-end2end1.onnx\"\n"
        "[recognition.ocr]\nformat = \"fast-plate-ocr\"\n"
        f"path = \"{ref}/cct_xs_v1_global.onnx\"\nconfig = \"{ref}/cct_xs_v1_global_plate_config.yaml\"\n"
    )
    ref_cfg.close()
    # our models with a plate-format prior (recognition.plate_formats): the European union of
    # presets; the Slovak one (most photos of endtoend/eu are Slovak: the preset a unit there
    # would use); the US one (no letter O) on the US sets
    priors = {}
    for preset in ("eu", "sk", "us"):
        f = tempfile.NamedTemporaryFile("w", suffix=".toml", delete=False)
        f.write(f"[recognition]\nplate_formats = [\"{preset}\"]\n")
        f.close()
        priors[preset] = (f"platecam models + {preset} formats", f.name)
    systems = [("platecam models", None)]
    if not args.skip_reference:
        systems.append(("reference (fast-alpr models)", ref_cfg.name))
    eu_systems = systems[:1] + [priors["eu"], priors["sk"]] + systems[1:]
    us_systems = systems[:1] + [priors["us"]] + systems[1:]
    sets = [
        ("endtoend/us", load_endtoend(os.path.join(args.data, "endtoend", "us")), False, us_systems),
        ("endtoend/eu", load_endtoend(os.path.join(args.data, "endtoend", "eu")), False, eu_systems),
        ("plates-us", load_plates(os.path.join(args.data, "plates-us")), True, us_systems),
    ]
    print(f"{'set':<13} {'system':<31} {'n':>4} {'detected %':>10} {'exact %':>8} {'false/ph':>8} "
          f"{'exact sent %':>12} {'sent/ph':>7} {'median ms':>10} {'mean ms':>8}")
    for set_name, rows, ocr_only, set_systems in sets:
        if args.limit:
            rows = rows[: args.limit]
        images = [r[0] for r in rows]
        for sys_name, cfg in set_systems:
            results = run_platecam(args.platecam, cfg, images, ocr_only)
            n, det, read, false, read_sent, false_sent, median, mean = score(rows, results)
            det_s, false_s, sent_s = ("-", "-", "-") if ocr_only else (f"{det:.1f}", f"{false:.2f}", f"{false_sent:.2f}")
            print(f"{set_name:<13} {sys_name:<31} {n:>4} {det_s:>10} {read:>8.1f} {false_s:>8} {read_sent:>12.1f} "
                  f"{sent_s:>7} {median:>10.1f} {mean:>8.1f}", flush=True)
    os.unlink(ref_cfg.name)
    for _, path in priors.values():
        os.unlink(path)


if __name__ == "__main__":
    main()
