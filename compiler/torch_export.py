"""torch.nn.Module -> self-contained ONNX ModelProto, through torch.onnx.export(dynamo=True).

Why the dynamo exporter (torch 2.13, measured in docs/tvm-notes.md): it traces with torch.export,
decomposes to core ATen and emits opset 20 with static shapes folded into initializers, so a
BERT-style encoder imports into `tvm.relax.frontend.onnx` as it is. The TorchScript exporter's
BERT does not import into TVM (the import stops at its ConstantOfShape nodes; measured on
Hugging Face BERT), and it fails outright on GPT-2 (`aten::diff`). Shapes are static
unless the caller passes `dynamic_shapes` (importer_fixes/symbolic.py keeps them through TVM).

An export costs seconds (about 4 s for a small MLP in a fresh process, most of it torch.export
tracing and onnxscript's optimizer), which is why the zoo caches exported bytes (models/cache.py).
"""

from __future__ import annotations

import contextlib
import io
import logging
import re
import warnings
from collections.abc import Sequence

import onnx

from .errors import AnychipError

# Loggers that the dynamo exporter writes progress and "torchvision is not installed" to.
_NOISY_LOGGERS = ("torch.onnx", "torch.export", "torch._export", "torch._dynamo",
                  "torch.fx", "onnxscript", "onnx_ir")


@contextlib.contextmanager
def _quiet():
    """Swallow the exporter's progress prints, warnings and log records for one export."""
    saved = {}
    for name in _NOISY_LOGGERS:
        logger = logging.getLogger(name)
        saved[name] = logger.level
        logger.setLevel(logging.CRITICAL)
    sink = io.StringIO()
    try:
        with warnings.catch_warnings(), contextlib.redirect_stdout(sink), \
                contextlib.redirect_stderr(sink):
            warnings.simplefilter("ignore")
            yield sink
    finally:
        for name, level in saved.items():
            logging.getLogger(name).setLevel(level)


def _reason(exc: BaseException) -> str:
    """The root cause's first line: the exporter wraps it in a multi-line 'next steps' banner."""
    root, seen = exc, set()
    while (root.__cause__ or root.__context__) is not None and id(root) not in seen:
        seen.add(id(root))
        root = root.__cause__ or root.__context__
    text = re.sub(r"\x1b\[[0-9;]*m", "", str(root)).strip()
    line = text.splitlines()[0].strip() if text else ""
    return f"{type(root).__name__}: {line}"[:300] if line else type(root).__name__


def export_torch(module, example_inputs: tuple, input_names: Sequence[str] | None = None,
                 output_names: Sequence[str] | None = None,
                 dynamic_shapes=None) -> onnx.ModelProto:
    """Export `module` (switched to eval mode) at the shapes of `example_inputs`.

    `dynamic_shapes` is torch.export's (e.g. `({1: Dim("seq", min=2, max=512)},)`): those
    dims become ONNX dim_params named after the Dim, which anychip keeps symbolic
    (docs/dynamic-shapes.md); without it every shape is static.

    Guarantees: static input and output shapes unless `dynamic_shapes` says otherwise, every
    initializer embedded in the returned proto (no external data), opset chosen by the exporter (20 with torch 2.13). A failed
    export raises AnychipError with one line naming the module class and the first line of
    the reason.
    """
    import torch

    name = type(module).__name__
    if not isinstance(module, torch.nn.Module):
        raise AnychipError(f"export_torch: expected a torch.nn.Module, got {name}; pass the "
                           f"model object itself (not a state_dict or a class).")
    if not isinstance(example_inputs, tuple):
        example_inputs = (example_inputs,)
    module.eval()
    try:
        with _quiet(), torch.no_grad():
            program = torch.onnx.export(
                module, example_inputs, dynamo=True, external_data=False,
                input_names=list(input_names) if input_names else None,
                output_names=list(output_names) if output_names else None,
                dynamic_shapes=dynamic_shapes,
                optimize=True, verify=False, report=False)
        proto = program.model_proto
    except Exception as exc:  # the exporter raises many types; the user needs one line
        raise AnychipError(
            f"torch.onnx.export failed for {name}: {_reason(exc)}; make forward() "
            f"traceable by torch.export (no data-dependent Python control flow, tensors in and "
            f"out), or export it to .onnx yourself and pass the file.") from exc
    external = [t.name for t in proto.graph.initializer
                if t.data_location == onnx.TensorProto.EXTERNAL]
    if external:
        raise AnychipError(f"torch.onnx.export for {name} put {len(external)} weights in external "
                           f"data (first: {external[0]}); the model is too big to embed (2 GiB "
                           f"protobuf limit): export it to a folder and pass the .onnx path.")
    _drop_exporter_metadata(proto.graph)
    _check_dims_stayed_dynamic(proto, dynamic_shapes, name)
    return proto


def _check_dims_stayed_dynamic(proto: onnx.ModelProto, dynamic_shapes, name: str) -> None:
    """Every dim `dynamic_shapes` names is a dim_param of the exported input. The ONNX
    exporter returns a model with the dim fixed, silently, where torch.export itself raises
    "Constraints violated" (the module's code fixes that size: Funnel's pooling, CANINE's
    downsampling); anychip then refused the user's bounds later with a puzzling line."""
    if not isinstance(dynamic_shapes, (tuple, list)):
        return
    inits = {t.name for t in proto.graph.initializer}
    inputs = [vi for vi in proto.graph.input if vi.name not in inits]
    for vi, axes in zip(inputs, dynamic_shapes):
        if not isinstance(axes, dict):
            continue
        dims = vi.type.tensor_type.shape.dim
        for axis, dim in axes.items():
            if dim is None or not isinstance(axis, int) or not -len(dims) <= axis < len(dims):
                continue
            d = dims[axis]
            if d.HasField("dim_value"):
                label = getattr(dim, "__name__", None) or str(dim)
                raise AnychipError(
                    f"torch.onnx.export for {name} fixed input '{vi.name}' axis {axis} (Dim "
                    f"'{label}') at {d.dim_value}: the module's code only works at that size "
                    f"(torch.export reports 'Constraints violated'); export that dim static "
                    f"or make forward() shape-generic.")


def _drop_exporter_metadata(graph: onnx.GraphProto) -> None:
    """Remove the exporter's per-node metadata (FX node text, Python stack traces).

    The stack traces hold the absolute paths of the exporting process's source files, so the
    same module exported from two installs gave different bytes (and different cache keys);
    nothing downstream reads them.
    """
    for coll in (graph.node, graph.input, graph.output, graph.value_info, graph.initializer):
        for item in coll:
            del item.metadata_props[:]
    for node in graph.node:
        for attr in node.attribute:
            for sub in ([attr.g] if attr.HasField("g") else []) + list(attr.graphs):
                _drop_exporter_metadata(sub)
