"""Load committed ONNX weights back into the torch nets of nets.py, to continue training from them.

  python3 models/train/onnx_init.py --models models      # load both, check torch against onnxruntime

The export ran in eval mode, so every BatchNorm was folded into the convolution before it: the
ONNX file holds, per Conv node in graph order, a fused weight W and bias b (y = W x + b). Graph
order is the order nets.py registers its convolutions, and every shape is checked.

To train on from there, each BatchNorm gets back statistics that make train mode behave like
eval mode: one eval-mode pass over synthetic data measures the per-channel mean m and variance v
of W x; then running_mean = m, running_var = v, gamma = sqrt(v + eps), beta = m + b. Eval mode
gives exactly W x + b again (the check below), and batch statistics are close to (m, v), so the
first training steps start from the committed model instead of a rescaled one.

The training phases recorded in the manifest beside the ONNX file come along, so a later phase
draws samples no earlier phase drew (train.py's --index-offset rule).
"""
import argparse
import json
import os
import sys

import numpy as np
import torch
import torch.nn as nn

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import synth  # noqa: E402
from nets import OCR, CTCSlots, Detector  # noqa: E402

CALIB_SEED = 4242  # synthetic data only; another seed than any training phase


def onnx_convs(path):
    """[(weight, bias or None)] of every Conv node of the ONNX graph, in graph order."""
    import onnx
    from onnx import numpy_helper
    m = onnx.load(path)
    consts = {t.name: numpy_helper.to_array(t) for t in m.graph.initializer}
    for n in m.graph.node:  # folded constants may also sit in Constant nodes
        if n.op_type == "Constant" and n.attribute and n.attribute[0].name == "value":
            consts[n.output[0]] = numpy_helper.to_array(n.attribute[0].t)
        if n.op_type == "Identity" and n.input[0] in consts:  # the exporter shares equal constants
            consts[n.output[0]] = consts[n.input[0]]
    out = []
    for n in m.graph.node:
        if n.op_type != "Conv":
            continue
        w = consts[n.input[1]]
        b = consts[n.input[2]] if len(n.input) > 2 and n.input[2] else None
        out.append((w, b))
    return out


def conv_bn_pairs(model):
    """(conv, the BatchNorm right after it or None) for every convolution, in registration order."""
    mods = [m for m in model.modules() if not list(m.children())]
    pairs = []
    for i, m in enumerate(mods):
        if isinstance(m, (nn.Conv1d, nn.Conv2d)):
            nxt = mods[i + 1] if i + 1 < len(mods) else None
            pairs.append((m, nxt if isinstance(nxt, (nn.BatchNorm1d, nn.BatchNorm2d)) else None))
    return pairs


def calibration_batch(task, n=256, ocr_height=32):
    xs = []
    for i in range(n):
        rng = synth.sample_rng(CALIB_SEED, i)
        if task == "ocr":
            a, _ = synth.ocr_sample(rng, 128, ocr_height)
        else:
            a, _ = synth.scene_sample(rng, 416, 320)
        xs.append(a[None])
    return torch.from_numpy(np.stack(xs))


def load(model, onnx_path, task):
    """Fill `model` (a fresh nets.OCR or nets.Detector) from the ONNX export at onnx_path."""
    convs = onnx_convs(onnx_path)
    pairs = conv_bn_pairs(model)
    if len(convs) != len(pairs):
        raise ValueError("%s has %d Conv nodes, the net %d convolutions" % (onnx_path, len(convs), len(pairs)))
    fused_bias = []
    with torch.no_grad():
        for k, ((w, b), (conv, bn)) in enumerate(zip(convs, pairs)):
            if tuple(w.shape) != tuple(conv.weight.shape):
                raise ValueError("conv %d: ONNX weight %s, net %s" % (k, w.shape, tuple(conv.weight.shape)))
            conv.weight.copy_(torch.from_numpy(np.array(w)))
            b = np.zeros(w.shape[0], np.float32) if b is None else b
            if bn is None:
                if conv.bias is None:
                    raise ValueError("conv %d has an ONNX bias but neither a bias nor a BatchNorm" % k)
                conv.bias.copy_(torch.from_numpy(np.array(b)))
            else:
                # identity BatchNorm plus the folded bias: exact in eval mode, statistics below
                bn.running_mean.zero_()
                bn.running_var.fill_(1.0 - bn.eps)
                bn.weight.fill_(1.0)
                bn.bias.copy_(torch.from_numpy(np.array(b)))
            fused_bias.append(b)
    # measure W x per channel (the BatchNorm's input) in eval mode, then move the statistics
    # into the BatchNorms without changing what eval mode computes
    stats = {}
    hooks = []
    for conv, bn in pairs:
        if bn is not None:
            def hook(mod, inp, _out, key=bn):
                z = inp[0].transpose(0, 1).reshape(inp[0].shape[1], -1).double()
                stats[key] = (z.mean(1), z.var(1))
            hooks.append(bn.register_forward_hook(hook))
    model.eval()
    x = calibration_batch(task, 256, model.height) if task == "ocr" else calibration_batch(task, 32)
    with torch.no_grad():
        model(x)
    for h in hooks:
        h.remove()
    with torch.no_grad():
        for (conv, bn), b in zip(pairs, fused_bias):
            if bn is None:
                continue
            m, v = stats[bn]
            bn.running_mean.copy_(m.float())
            bn.running_var.copy_(v.float())
            bn.weight.copy_(torch.sqrt(v + bn.eps).float())
            bn.bias.copy_((m + torch.from_numpy(b).double()).float())
    return model


def input_height(onnx_path):
    """Rows of the ONNX model's input [N, C, H, W]."""
    import onnx
    return onnx.load(onnx_path).graph.input[0].type.tensor_type.shape.dim[2].dim_value


def new_net(onnx_path, task):
    """A fresh net of the shape of the ONNX export at onnx_path."""
    if task != "ocr":
        return Detector()
    height = input_height(onnx_path)
    # the deep reader is the one whose convolutions the export holds
    deep = len(onnx_convs(onnx_path)) == len(conv_bn_pairs(OCR(height=height, deep=True)))
    return OCR(height=height, deep=deep)


def phases_of(onnx_path, task):
    """The training phases the manifest beside onnx_path records for this model."""
    mpath = os.path.join(os.path.dirname(os.path.abspath(onnx_path)), "manifest.json")
    with open(mpath) as f:
        man = json.load(f)
    return man["provenance"]["training"]["ocr" if task == "ocr" else "detector"]


def checkpoint(onnx_path, task):
    """A train.py checkpoint ({"model", "phases"}) made from an ONNX export."""
    model = load(new_net(onnx_path, task), onnx_path, task)
    state = {k: v.detach().cpu() for k, v in model.state_dict().items()}
    return {"model": state, "phases": phases_of(onnx_path, task)}


def check(model, onnx_path, task, n=4):
    """Largest relative |torch - onnxruntime| over n inputs (one synthetic, the rest random)."""
    import onnxruntime as ort
    sess = ort.InferenceSession(onnx_path, providers=["CPUExecutionProvider"])
    shape = (1, 1, model.height, 128) if task == "ocr" else (1, 1, 384, 640)
    net = CTCSlots(model) if task == "ocr" else model
    net.eval()
    worst = 0.0
    for k in range(n):
        if k == 0 and task == "ocr":
            a, _ = synth.ocr_sample(synth.sample_rng(CALIB_SEED + 1, 0), 128, model.height)
            x = torch.from_numpy(a[None, None])
        else:
            x = torch.rand(*shape)
        with torch.no_grad():
            ref = net(x).numpy()
        got = sess.run(None, {sess.get_inputs()[0].name: x.numpy()})[0]
        worst = max(worst, float((np.abs(ref - got) / (1.0 + np.abs(ref))).max()))
    return worst


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--models", default="models")
    args = ap.parse_args()
    for task, name in (("ocr", "ocr.onnx"), ("det", "detector.onnx")):
        path = os.path.join(args.models, name)
        model = load(new_net(path, task), path, task)
        diff = check(model, path, task)
        print("%s: loaded %s, %d phases, max rel |torch-ort| %.2e" % (task, path, len(phases_of(path, task)), diff))
        if diff > 1e-4:
            sys.exit("%s: torch does not match onnxruntime after loading" % task)


if __name__ == "__main__":
    main()
