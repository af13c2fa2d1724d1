#!/usr/bin/env python3
"""Exact reads of OCR models on synthetic plate crops, per plate style, side by side.

  /opt/train-venv/bin/python3 models/eval/synthetic_styles.py models /tmp/phase/models [--n 300]

The crops come from the training generator (synth.ocr_sample) with a seed no training phase
draws from, so this measures the readers on data they were not trained on without touching the
benchmark photos. Each model reads the crops at its own input size (manifest.json), through
onnxruntime (the fixed-slot output the Rust side decodes). `neg` crops hold no plate: the share
read as nothing. `mw`: US and EU crops whose text holds an M or a W (the look-alikes of H the
readers miss on real plates). Needs the training requirements (models/train/requirements.txt).
"""
import argparse
import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "train"))
import synth  # noqa: E402
from pipeline import Pipeline  # noqa: E402

SEED = 555001  # no training phase draws from it (train.py: 1234, 1235 plus index offsets)
STYLES = {"us": 0, "eu": 1, "br": 2, "neg": 3, "mw": 4}


def crops(style, k, n, w, h):
    """n crops of `style`, the same for every reader of one input size."""
    i = kept = 0
    while kept < n:
        rng = synth.sample_rng(SEED + k, i)
        i += 1
        if style == "neg":
            a, label = synth.ocr_sample(rng, w, h, negative=1.0)
        elif style == "mw":
            a, label = synth.ocr_sample(rng, w, h, style="us" if i % 2 else "eu")
            if not set(label) & set("MW"):
                continue
        else:
            a, label = synth.ocr_sample(rng, w, h, style=style)
        kept += 1
        yield a, label


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("models", nargs="+", help="folders holding manifest.json")
    ap.add_argument("--n", type=int, default=300, help="crops per style")
    args = ap.parse_args()
    pipes = [(d, Pipeline(d)) for d in args.models]
    print("%-5s %s" % ("style", "  ".join("%28s" % d[-28:] for d, _ in pipes)))
    for style, k in STYLES.items():
        row = []
        for _, p in pipes:
            ok = 0
            for a, label in crops(style, k, args.n, p.ow, p.oh):
                ok += p.read_input(a[None])[0] == label
            row.append("%27.1f%%" % (100.0 * ok / args.n))
        print("%-5s %s" % (style, "  ".join(row)), flush=True)


if __name__ == "__main__":
    main()
