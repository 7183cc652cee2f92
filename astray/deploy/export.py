"""ONNX export with a parity check (``astray export SWEEP_OR_RUN_DIR [--trial best|front|ID]``).

Each model becomes ``<out>/<trial>-<precision>/model.onnx`` with a dynamic batch axis,
passes ``onnx.checker``, and is then run by onnxruntime (CPU) on real validation images
next to the PyTorch fp32 model; the result lands in ``export.json`` beside the file.

``fp16`` converts the PyTorch model to half precision and exports that, wrapped so the
file still takes and returns float32: callers feed the same arrays to either file.
(onnx has no float16 converter of its own; onnxconverter-common would be one more
dependency for the same result.)
"""

from __future__ import annotations

import copy
import datetime as _dt
import hashlib
import json
import warnings
from dataclasses import asdict, dataclass
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.onnx import _constants  # private, so every name read from it has a fallback
from torch.utils.data import DataLoader, Dataset, Subset

from astray import __version__
from astray.deploy.trained import Trained, load_model
from astray.engine.data import build_datasets
from astray.errors import AstrayError
from astray.io import progress, write_text, write_with

DEFAULT_OPSET = 17  # widely supported by runtimes; the first with LayerNormalization
INPUT, OUTPUT, BATCH = "input", "logits", "batch"
# Pass criteria against the PyTorch fp32 model. fp16 logits carry ~3 significant
# digits, so their error scales with the logits: the bound is relative to the largest.
FP32_MAX_ABS_DIFF = 1e-4
FP16_REL_DIFF = 1e-2  # × max(1, max |fp32 logit|)
FP16_MIN_TOP1 = 0.99  # near-ties may flip when rounded to half precision


@dataclass(frozen=True)
class Parity:
    """ONNX Runtime against PyTorch fp32 on the same validation images."""

    samples: int
    batch_sizes: list[int]  # distinct batch sizes the file ran with (the batch axis is dynamic)
    max_abs_diff: float  # over all logits
    max_abs_logit: float  # of the PyTorch fp32 model: the scale of the fp16 bound
    top1_agreement: float  # share of samples where both pick the same class
    tolerance: float  # max_abs_diff allowed
    min_top1_agreement: float | None  # fp32: None, see check_parity
    passed: bool


class HalfCompute(nn.Module):
    """A half-precision model behind a float32 interface."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model.half()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x.half()).float()


def opset_range() -> tuple[int, int]:
    """Opsets both the installed onnx and the torch TorchScript exporter can write."""
    import onnx  # ~0.3 s to import; only export needs it

    lo = getattr(_constants, "ONNX_MIN_OPSET", 7)
    hi = getattr(_constants, "ONNX_TORCHSCRIPT_EXPORTER_MAX_OPSET", getattr(_constants, "ONNX_MAX_OPSET", 17))
    return lo, min(hi, onnx.defs.onnx_opset_version())


def check_opset(opset: int) -> None:
    import onnx  # ~0.3 s to import; only export needs it

    lo, hi = opset_range()
    if not lo <= opset <= hi:
        raise AstrayError(f"--opset {opset} cannot be written here: onnx {onnx.__version__} and torch "
                          f"{torch.__version__.split('+')[0]}'s exporter support opsets {lo}..{hi}")


def export_onnx(model: nn.Module, example: torch.Tensor, path: Path, opset: int, precision: str) -> None:
    """Write ``model`` (eval mode, CPU) to ``path`` with a dynamic batch axis, and check it.

    The file appears only once it has passed the checks: a failed export leaves none.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    write_with(path, lambda tmp: _export_checked(model, example, tmp, opset, precision))


def _export_checked(model: nn.Module, example: torch.Tensor, path: Path, opset: int, precision: str) -> None:
    import onnx  # ~0.3 s to import; only export needs it

    # A copy: the caller's fp32 model stays the parity reference.
    net = HalfCompute(copy.deepcopy(model)) if precision == "fp16" else model
    with warnings.catch_warnings():
        # The TorchScript exporter is deprecated in favour of the dynamo one, which
        # needs the onnxscript package; this one needs nothing beyond torch.
        warnings.simplefilter("ignore", DeprecationWarning)
        try:
            torch.onnx.export(net, (example,), str(path), input_names=[INPUT], output_names=[OUTPUT],
                              dynamic_axes={INPUT: {0: BATCH}, OUTPUT: {0: BATCH}}, opset_version=opset,
                              do_constant_folding=True, dynamo=False)
        except torch.onnx.errors.OnnxExporterError as exc:
            raise AstrayError(f"ONNX export at opset {opset} failed: {str(exc).splitlines()[0]}") from None
    onnx.checker.check_model(str(path), full_check=True)  # by path: files over 2 GB check too
    graph = onnx.load(str(path), load_external_data=False).graph
    dim = next(i for i in graph.input if i.name == INPUT).type.tensor_type.shape.dim[0]
    if dim.dim_param != BATCH:
        raise AstrayError(f"{str(path)!r}: the exporter fixed the batch axis to {dim.dim_value}")


def check_parity(path: Path, model: nn.Module, data: Dataset, precision: str, batch_size: int) -> Parity:
    """Run ``path`` in onnxruntime and ``model`` in PyTorch fp32 on ``data``; compare logits."""
    ort = require_onnxruntime()

    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    worst, scale, agree, n, sizes = 0.0, 0.0, 0, 0, set()
    with torch.no_grad():
        loader = DataLoader(data, batch_size=batch_size)
        for x, _, _ in progress(loader, len(loader), f"parity {precision}"):
            ref = model(x).numpy()
            got = session.run([OUTPUT], {INPUT: x.numpy().astype(np.float32)})[0]
            worst = max(worst, float(np.abs(got.astype(np.float64) - ref).max()))
            scale = max(scale, float(np.abs(ref).max()))
            agree += int((got.argmax(1) == ref.argmax(1)).sum())
            n += len(x)
            sizes.add(len(x))
    top1 = agree / max(n, 1)
    if precision == "fp16":
        tolerance, min_top1 = FP16_REL_DIFF * max(1.0, scale), FP16_MIN_TOP1
        passed = worst <= tolerance and top1 >= min_top1
    else:
        # Logits within the tolerance can only swap classes whose logits lie within twice
        # the tolerance of each other; such a near-tie is no export error, so fp32 is
        # judged on the logits alone and its top-1 agreement is reported.
        tolerance, min_top1 = FP32_MAX_ABS_DIFF, None
        passed = worst <= tolerance
    return Parity(n, sorted(sizes, reverse=True), worst, scale, top1, tolerance, min_top1, passed=n > 0 and passed)


def require_onnxruntime() -> Any:
    try:
        import onnxruntime  # ~0.2 s to import; only the parity check needs it
    except ImportError:
        raise AstrayError("the parity check runs the file in onnxruntime, which is not installed: "
                          "pip install onnxruntime (or astray[dev])") from None
    return onnxruntime


def parity_subset(data: Dataset, limit: int) -> Dataset:
    """At most ``limit`` samples, evenly spread over the split (0 = all of them)."""
    n = len(data)  # type: ignore[arg-type]
    if limit <= 0 or limit >= n:
        return data
    return Subset(data, np.linspace(0, n - 1, limit).round().astype(int).tolist())


def export_trained(trained: Trained, out: Path, precision: str, opset: int, samples: int,
                   batch_size: int) -> tuple[Path, dict[str, Any]]:
    """Export one trained model and write its ``export.json``; returns the file and the record."""
    model, meta = load_model(trained)
    val = build_datasets(trained.config.dataset).val
    check = parity_subset(val, samples)
    # Two real images: a batch of one would let the tracer treat the batch as a constant.
    example = torch.stack([val[i][0] for i in range(min(2, len(val)))])
    path = out / f"{trained.name}-{precision}" / "model.onnx"
    export_onnx(model, example, path, opset, precision)
    parity = check_parity(path, model, check, precision, batch_size)
    record = {
        "trial_id": trained.name, "status": trained.status, "model_name": trained.config.model.name,
        "num_classes": meta.get("num_classes"),
        "checkpoint": str(trained.checkpoint), "checkpoint_used": trained.checkpoint_note,
        "checkpoint_epoch": meta.get("epoch"), "checkpoint_best_val_acc": meta.get("best_val_acc"),
        "onnx_file": path.name, "onnx_bytes": path.stat().st_size, "onnx_sha256": _sha256(path),
        "opset": opset, "precision": precision,
        "precision_note": ("half-precision weights and compute; float32 input and output" if precision == "fp16"
                           else "float32 weights and compute"),
        "exporter": "torch.onnx.export (TorchScript, dynamo=False), constant folding on",
        "input": {"name": INPUT, "dtype": "float32", "shape": [BATCH, *example.shape[1:]],
                  "preprocessing": f"as dataset.type={trained.config.dataset.type} validation images"},
        "output": {"name": OUTPUT, "dtype": "float32", "shape": [BATCH, meta.get("num_classes")]},
        "parity": {"reference": "PyTorch fp32 on CPU", "runtime": "onnxruntime CPUExecutionProvider",
                   "data": f"validation split of dataset.type={trained.config.dataset.type}", **asdict(parity)},
        "versions": {"astray": __version__, "torch": torch.__version__, "onnx": _version("onnx"),
                     "onnxruntime": _version("onnxruntime")},
        "created": _dt.datetime.now(_dt.timezone.utc).isoformat(),
    }
    write_text(path.parent / "export.json", json.dumps(record, indent=2))
    return path, record


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _version(name: str) -> str | None:
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return None
