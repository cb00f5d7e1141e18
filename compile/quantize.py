"""Post-training int8 quantization of each group path through the converter's own PT2E flow (issue 13).

Each group is quantized on its own (per-channel symmetric int8 weights, int8 activations, calibrated on a
seeded sample of training images), so the int8 signatures of a level still add up groups 1..k and the
runtime combines their dequantized contributions with the level's weights. The quantizer is litert-torch's
PT2EQuantizer (XNNPACK's scheme); torchao's prepare_pt2e/convert_pt2e insert the observers and the
quantize/dequantize pairs, and litert-torch folds them into int8 TFLite kernels. Nothing here writes a
flatbuffer by hand. Measured before (../shared/docs/measured.md): within 0.11 points of float32 at every
level of the old default, file 0.28x.
"""
import numpy as np
import torch

from compile.errors import UserError
from compile.validate import TFLITE_PRECISIONS

CALIBRATION_IMAGES = 256
CALIBRATION_SEED = 0
# Verification tolerance of an int8 signature, in steps of its output's quantization grid: the golden
# logits are this host's int8 kernels; a board's (XNNPACK's NEON paths, or TFLite's reference kernels where
# XNNPACK is not applied) may round an intermediate the other way. Measured here: the batch-8 and batch-1
# signatures of the default (same grids) differed by at most one output step.
INT8_TOLERANCE_STEPS = 3


def precisions_of(choice):
    """--precision fp32|int8|both -> the list of precisions a file carries."""
    if choice not in TFLITE_PRECISIONS:
        raise UserError("--precision must be one of %s, got %r" % (", ".join(TFLITE_PRECISIONS), choice))
    return ["fp32", "int8"] if choice == "both" else [choice]


def calibration_images(data_dir, size, channels, n=CALIBRATION_IMAGES, seed=CALIBRATION_SEED):
    """uint8 [n, C, H, W] drawn without replacement from the TRAINING split (never the test images the
    accuracies are measured on), and the record of which ones, for the manifest."""
    if not data_dir:
        raise UserError("int8 levels are calibrated on training images: pass --data DIR (the data set the model "
                        "was trained on), or build float32 only with --precision fp32")
    from compile.data import load_dataset
    ds = load_dataset(data_dir, "auto", size, None if channels == 3 else channels)
    if int(ds.train_x.shape[1]) != channels:
        raise UserError("--data %s has %d-channel images but the model takes %d" % (data_dir, ds.train_x.shape[1],
                                                                                  channels))
    rng = np.random.default_rng(seed)
    idx = np.sort(rng.choice(len(ds.train_x), min(n, len(ds.train_x)), replace=False))
    record = {"images": int(len(idx)), "split": "train", "seed": seed, "data_fingerprint": ds.fingerprint,
              "indices_sha256": _sha(idx)}
    return ds.train_x[torch.from_numpy(idx)], record


def _sha(idx):
    from runtime.bundle import sha256_bytes
    return sha256_bytes(np.asarray(idx, np.int64).tobytes())


def quantizer():
    from compile.emit_tflite import _import_litert_torch
    _import_litert_torch()
    from litert_torch.quantize import pt2e_quantizer as pq
    return pq.PT2EQuantizer().set_global(pq.get_symmetric_quantization_config(is_per_channel=True,
                                                                              is_dynamic=False))


def quantize_path(path, batch, calib, qz):
    """The int8 GraphModule of one group path at one batch size, calibrated on every calibration image in
    chunks of `batch`. Each batch size's graph is prepared afresh from the same float path: their int8
    weights come out byte-identical, so the converter stores them once (measured: sharing one batch's
    observer state instead stored them again, 3.09 vs 1.91 MB for the widest group at batches 1 and 32).
    The activation histograms see the images in other chunks, so a group's scales differ slightly by batch
    size: int8 test accuracy at batch 8 and 32 differed by at most 0.11 points, within the golden tolerance."""
    from torchao.quantization.pt2e import move_exported_model_to_eval, quantize_pt2e
    shape = (batch,) + tuple(calib.shape[1:])
    gm = quantize_pt2e.prepare_pt2e(torch.export.export(path.eval(), (torch.zeros(shape),)).module(), qz)
    with torch.no_grad():
        for i in range(0, len(calib), batch):
            part = calib[i:i + batch]
            if len(part) < batch:  # the exported graph has a fixed batch: pad the last chunk with repeats
                part = torch.cat([part, calib[:batch - len(part)]])
            gm(part)
    gm = move_exported_model_to_eval(quantize_pt2e.convert_pt2e(gm, fold_quantize=False))
    gm.training = False  # what litert-torch checks (it warns of "training mode" otherwise)
    return gm
