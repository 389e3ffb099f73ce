"""The real-hardware path: the ONNX model ATC takes, its command line, and ORT's CANN provider.

`device_files` puts in the artifact's device/ folder:
- `model.onnx`: the legalised static-shape model: opset lowered to what the chip's ATC parses
  where onnx's version converter can, and int64 narrowed to int32 where that is provably safe
  (an input or constant used only as Gather indices into an axis shorter than 2**31: every
  valid index fits int32, and an invalid one is invalid in both);
- `atc.sh`: the matching `atc` command line (soc version, input shapes, precision mode);
- `tiling_plan.json`: the cube kernels' tiles and buffer use, for comparison with msprof.
When `onnxruntime-cann` is installed (ONNX Runtime with the CANNExecutionProvider), the
backend executes that model on the Ascend device (`CannRunner`); otherwise it simulates.
"""

from __future__ import annotations

import importlib.metadata
import json
import os
import shlex
import shutil

import numpy as np
import onnx
from onnx import TensorProto, numpy_helper

from anychip.compiler.importer_fixes.onnx_level import expand_schema_functions
from anychip.compiler.onnx_inference import infer_shapes

from .chip import Chip
from .placement import opset_of, static_shapes

INT32_MAX = 2**31 - 1
INDEX_USES = {("Gather", 1), ("GatherElements", 1), ("GatherND", 1)}


def cann_available() -> bool:
    try:
        import onnxruntime
    except ImportError:
        return False
    return "CANNExecutionProvider" in onnxruntime.get_available_providers()


def doctor() -> list[dict]:
    try:
        version = importlib.metadata.version("onnxruntime-cann")
    except importlib.metadata.PackageNotFoundError:
        version = None
    atc = shutil.which("atc")
    home = os.environ.get("ASCEND_TOOLKIT_HOME") or os.environ.get("ASCEND_HOME_PATH")
    return [
        {"name": "onnxruntime-cann", "found": cann_available(), "version": version,
         "detail": "executes ascend-* targets on an Ascend device" if cann_available() else
                   "not installed: ascend-* targets run in the functional simulator"},
        {"name": "CANN toolkit (atc)", "found": atc is not None, "version": None,
         "detail": atc or (f"ASCEND_TOOLKIT_HOME={home} but no atc on PATH" if home else
                           "atc not on PATH: the artifact's device/atc.sh is to be run where "
                           "CANN is installed")},
    ]


def _consumers(graph) -> dict[str, list[tuple[str, int]]]:
    uses: dict[str, list[tuple[str, int]]] = {}
    for node in graph.node:
        for i, name in enumerate(node.input):
            if name:
                uses.setdefault(name, []).append((node.op_type, i, node))
    return uses


def _index_axis_ok(node, shapes: dict) -> bool:
    data = shapes.get(node.input[0])
    if data is None:
        return False
    axis = next((a.i for a in node.attribute if a.name == "axis"), 0)
    if node.op_type == "GatherND":
        return max(data, default=0) <= INT32_MAX
    return -len(data) <= axis < len(data) and data[axis] <= INT32_MAX


def narrow_int64(model: onnx.ModelProto) -> list[str]:
    """Narrow int64 index inputs and constants to int32 in place; one note per change."""
    graph = model.graph
    shapes = static_shapes(model)
    uses = _consumers(graph)
    notes = []
    inits = {i.name: i for i in graph.initializer}

    def only_indices(name: str) -> bool:
        found = uses.get(name, [])
        return bool(found) and all((op, i) in INDEX_USES and _index_axis_ok(node, shapes)
                                   for op, i, node in found)

    for vi in graph.input:
        tt = vi.type.tensor_type
        if vi.name not in inits and tt.elem_type == TensorProto.INT64 and only_indices(vi.name):
            tt.elem_type = TensorProto.INT32
            notes.append(f"input '{vi.name}' int64 -> int32: used only as Gather indices into "
                         f"axes shorter than 2**31")
    for name, init in inits.items():
        if init.data_type != TensorProto.INT64 or not only_indices(name):
            continue
        values = numpy_helper.to_array(init)
        if values.size and (values.max() > INT32_MAX or values.min() < -INT32_MAX - 1):
            continue
        init.CopyFrom(numpy_helper.from_array(values.astype(np.int32), name))
        notes.append(f"constant '{name}' int64 -> int32: Gather indices within int32")
    return notes


def legalise(model: onnx.ModelProto, chip: Chip) -> tuple[onnx.ModelProto, list[str]]:
    """The static-shape model for ATC (see the module docstring) and what was changed."""
    out, notes, _ = legalised_bytes(model, chip)
    return out, notes


def legalised_bytes(model: onnx.ModelProto, chip: Chip
                    ) -> tuple[onnx.ModelProto, list[str], bytes | None]:
    """`legalise`, and the model serialised once for both the ONNX checker and
    device/model.onnx (None where shape inference failed before it)."""
    out = onnx.ModelProto()
    out.CopyFrom(model)
    notes = []
    opset, wanted = opset_of(out), int(chip.raw["max_onnx_opset"])
    if opset > wanted:
        expanded = expand_schema_functions(out, lambda node, _opset: _newer_than(node, wanted))
        if expanded:
            notes.append(f"expanded {', '.join(sorted(set(expanded)))} (newer than opset "
                         f"{wanted}) into their ONNX function bodies")
        try:
            out = onnx.version_converter.convert_version(out, wanted)
            notes.append(f"opset {opset} -> {wanted} (ATC parses opset <= {wanted})")
        except Exception as exc:  # the converter has no adapter for some ops
            first = (str(exc).strip().splitlines() or ["no adapter"])[0][:160]
            notes.append(f"opset {opset} kept: onnx's version converter cannot lower it to "
                         f"{wanted} ({first}); ATC may refuse ops newer than opset {wanted}")
    notes += narrow_int64(out)
    del out.graph.value_info[:]
    data = None
    try:   # inference without a pass over the weights (compiler/onnx_inference.py)
        out = infer_shapes(out, strict_mode=True)
        data = out.SerializeToString()
        onnx.checker.check_model(data)
    except Exception as exc:
        first = (str(exc).strip().splitlines() or ["check failed"])[0][:160]
        notes.append(f"the legalised model does not pass the ONNX checker ({first})")
    return out, notes, data


def _newer_than(node, opset: int) -> bool:
    """Whether `node`'s operator did not exist (in this form) at `opset`."""
    try:
        onnx.defs.get_schema(node.op_type, opset, node.domain or "")
    except onnx.defs.SchemaError:
        return True
    return False


def atc_command(model: onnx.ModelProto, chip: Chip, mode: str, output: str = "model") -> str:
    inits = {i.name for i in model.graph.initializer}
    inputs = [vi for vi in model.graph.input if vi.name not in inits]
    shapes = ";".join(f"{vi.name}:" + ",".join(str(d.dim_value)
                                               for d in vi.type.tensor_type.shape.dim)
                      for vi in inputs)
    four_d = inputs and all(len(vi.type.tensor_type.shape.dim) == 4 for vi in inputs)
    # ATC spells the bf16 mix mode allow_mix_precision_bf16 and the fp16 one allow_mix_precision
    atc_mode = "allow_mix_precision" if mode == "allow_mix_precision_fp16" else mode
    args = ["atc", "--model=model.onnx", "--framework=5", f"--output={output}",
            f"--soc_version={chip.raw['soc_version']}",
            f"--input_format={'NCHW' if four_d else 'ND'}", f"--input_shape={shapes}",
            f"--precision_mode={atc_mode}", "--log=error"]
    return " ".join(shlex.quote(a) for a in args)


def device_files(model, chip: Chip, profile, report: dict) -> tuple[dict[str, bytes], dict]:
    if model is None:
        return {}, {}
    legal, notes, data = legalised_bytes(model, chip)
    command = atc_command(legal, chip, report.get("precision_mode", "force_fp16"))
    script = ("#!/bin/sh\n# Compile device/model.onnx for "
              f"{profile.name} ({chip.raw['soc_version']}) with CANN's ATC.\nset -e\n"
              f"cd \"$(dirname \"$0\")\"\n{command}\n")
    plan = {"target": profile.name, "kernels": report.get("cube_kernels", {})}
    narrowed = [n.split("'")[1] for n in notes if n.startswith("input '")]
    files = {"model.onnx": legal.SerializeToString() if data is None else data,
             "atc.sh": script.encode(),
             "tiling_plan.json": json.dumps(plan, indent=2).encode()}
    return files, {"model": "device/model.onnx", "command": command, "legalisation": notes,
                   "narrowed_inputs": narrowed,
                   "runs_on_device_here": cann_available()}


class CannRunner:
    """Runs device/model.onnx through ONNX Runtime's CANN execution provider."""

    def __init__(self, artifact, execution):
        import onnxruntime as ort

        self.execution = execution
        report = artifact.report
        self._narrowed = set(report.get("atc", {}).get("narrowed_inputs", []))
        mode = report.get("precision_mode", "force_fp16")
        options = {"precision_mode": "allow_mix_precision" if mode.startswith("allow_mix")
                   and not mode.endswith("bf16") else mode}
        path = artifact.path / "device" / "model.onnx"
        self._session = ort.InferenceSession(str(path), providers=[
            ("CANNExecutionProvider", options), "CPUExecutionProvider"])
        self._names = [i.name for i in self._session.get_inputs()]

    def run(self, inputs: list[np.ndarray]) -> list[np.ndarray]:
        feed = {}
        for name, value in zip(self._names, inputs):
            value = np.asarray(value)
            feed[name] = value.astype(np.int32) if name in self._narrowed else value
        return [np.asarray(o) for o in self._session.run(None, feed)]
