"""Running a batch-1 model at another batch when its graph bakes the batch into Reshapes.

Exporters trace at one shape, and many write that trace's batch into Reshape targets (the
ONNX model zoo's ResNet-50 flattens with Reshape(x, [1, 2048])); overriding the input's
leading dim (`--shape`, `bench --batch`) then fails in any importer. The common fix (ONNX
Runtime's `make_dynamic_shape_fixed` tools, onnx-modifier) is to rewrite those targets; here a
Reshape target whose first entry is the old batch becomes 0 ("copy the input's leading dim",
ONNX Reshape with allowzero=0) when its data's leading dim is the old batch too.

That rewrite is a guess about which axis is the batch, so it is checked before it is used:
ONNX Runtime runs the rewritten model on N distinct rows and the original model on rows
0, 1, N/2 and N-1 alone (bounded work for any N); those output rows must agree
(tolerances.REBATCH). A graph that mixes rows (or where the
guess was wrong) is refused with one line naming the first rewritten node.
"""

from __future__ import annotations

import onnx
from onnx import numpy_helper

from .errors import AnychipError


def new_batch(model: onnx.ModelProto, shapes: dict[str, tuple[int, ...]]) -> tuple[int, int] | None:
    """(old, new) when `shapes` changes only the leading dim of the inputs it names, every one
    from the same static old batch to the same new one; else None."""
    declared = {vi.name: [d.dim_value if d.HasField("dim_value") else None
                          for d in vi.type.tensor_type.shape.dim] for vi in model.graph.input}
    pairs = set()
    for name, shape in shapes.items():
        old = declared.get(name)
        if not old or len(old) != len(shape) or None in old or list(shape[1:]) != old[1:]:
            return None
        if shape[0] != old[0]:
            pairs.add((old[0], int(shape[0])))
    return pairs.pop() if len(pairs) == 1 else None


def unbake_batch(model: onnx.ModelProto, inferred: onnx.ModelProto, old: int) -> list[str]:
    """Rewrite, in `model`, each top-level Reshape whose constant target starts with `old` and
    whose data's leading dim (from `inferred`, the model at its declared shapes) is `old`:
    the target's first entry becomes 0. Returns the rewritten nodes' names."""
    leading = {vi.name: vi.type.tensor_type.shape.dim[0].dim_value
               for vi in [*inferred.graph.value_info, *inferred.graph.input]
               if vi.type.tensor_type.shape.dim
               and vi.type.tensor_type.shape.dim[0].HasField("dim_value")}
    constants = {t.name: t for t in model.graph.initializer}
    for node in model.graph.node:
        if node.op_type == "Constant" and node.attribute and node.attribute[0].name == "value":
            constants[node.output[0]] = node.attribute[0].t
    rewritten = []
    for i, node in enumerate(model.graph.node):
        if node.op_type != "Reshape" or len(node.input) < 2 or node.input[1] not in constants:
            continue
        if any(a.name == "allowzero" and a.i for a in node.attribute):
            continue   # 0 would be a literal zero there
        target = numpy_helper.to_array(constants[node.input[1]])
        if target.ndim != 1 or not target.size or int(target[0]) != old \
                or leading.get(node.input[0]) != old:
            continue
        target = target.copy()
        target[0] = 0
        name = f"{node.input[1]}__rebatched_{i}"   # the original may be shared: a new one
        model.graph.initializer.append(numpy_helper.from_array(target, name))
        node.input[1] = name
        rewritten.append(node.name or f"Reshape #{i}")
    return rewritten


def check_rows(original: onnx.ModelProto, rebatched: onnx.ModelProto, inputs, label: str,
               rewritten: list[str]) -> None:
    """ONNX Runtime: the rebatched model on distinct rows == the original on each row alone."""
    from .inputs import random_inputs
    from .reference import reference_session, run_onnxruntime
    from .tolerances import REBATCH, compare

    feed = random_inputs(inputs, seed=0)
    batch = next(iter(feed.values())).shape[0]
    refused = AnychipError(
        f"{label}: the graph fixes its batch; rewriting {len(rewritten)} Reshape target(s) to "
        f"follow the new batch (first: {rewritten[0]}) changes the results, so a batch of "
        f"{batch} cannot be run from this file; export the model with a symbolic or a "
        f"batch-{batch} input instead.")
    try:
        together = run_onnxruntime(rebatched, feed, label)
    except AnychipError as exc:   # the rewritten graph does not even run
        raise refused from exc
    run_alone = reference_session(original, label)   # one session for every row
    # rows that a graph mixing them would change: the first two, the middle, the last
    for row in sorted({0, min(1, batch - 1), batch // 2, batch - 1}):
        alone = run_alone({k: v[row:row + 1] for k, v in feed.items()})
        for got, want in zip(together, alone):
            if got.ndim == 0 or got.shape[0] != batch \
                    or not compare(got[row:row + 1], want, REBATCH).passed:
                raise refused

