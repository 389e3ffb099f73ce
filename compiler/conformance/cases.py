"""ONNX's node test cases (`onnx.backend.test.case.node.collect_testcases`) as plain records.

Each case is one ONNX model with one data set of inputs and expected outputs, and its own
tolerance (ONNX's backend defaults, rtol 1e-3 and atol 1e-7, unless the case says otherwise).
`op` names the operator a case tests; an `_expanded` case (the operator replaced by its ONNX
function body) is filed under the operator it expands.
"""

from __future__ import annotations

import pickle
import re
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..errors import AnychipError
from .undefined import undefined_masks

_EXPANDED = re.compile(r"_expanded(_ver\d+)?$")


@dataclass
class Case:
    """One conformance case: a model, its inputs, the outputs ONNX expects, the tolerance."""

    name: str
    op: str
    model: bytes                 # serialized ModelProto (cheap to pickle to workers)
    inputs: list                 # numpy arrays (lists for sequence inputs), in graph order
    outputs: list
    rtol: float
    atol: float
    # per output, elements the ONNX spec leaves undefined (not compared; see undefined.py)
    undefined: list | None = None

    @property
    def expanded(self) -> bool:
        return bool(_EXPANDED.search(self.name))


def _op_of(name: str, model, ops_by_name: dict[str, str]) -> str:
    twin = _EXPANDED.sub("", name)
    if twin != name and twin in ops_by_name:
        return ops_by_name[twin]
    nodes = model.graph.node
    if len(nodes) == 1:
        return nodes[0].op_type
    # an expanded case without a plain twin: test_<op>_..._expanded_verN; match the op's name
    stem = twin[len("test_"):].replace("_", "").lower()
    candidates = sorted({n.op_type for n in nodes}, key=len, reverse=True)
    for op in candidates:
        if stem.startswith(op.lower()):
            return op
    known = sorted(set(ops_by_name.values()), key=len, reverse=True)
    return next((op for op in known if stem.startswith(op.lower())), nodes[0].op_type)


def _to_numpy(value):
    """Case data as numpy: some cases store TensorProto (bfloat16, float8, 4-bit types)."""
    import onnx
    from onnx import numpy_helper

    if isinstance(value, onnx.TensorProto):
        return numpy_helper.to_array(value)
    if isinstance(value, (list, tuple)):
        return [_to_numpy(v) for v in value]
    return value


def collect() -> list[Case]:
    """Every node case of the installed onnx package, in its order."""
    from onnx.backend.test.case.node import collect_testcases

    with warnings.catch_warnings(), np.errstate(all="ignore"):
        warnings.simplefilter("ignore")
        raw = collect_testcases()
    ops_by_name = {c.name: c.model.graph.node[0].op_type for c in raw
                   if c.model is not None and len(c.model.graph.node) == 1}
    cases = []
    for c in raw:
        if c.model is None or not c.data_sets:
            continue
        inputs, outputs = c.data_sets[0]
        inputs = [_to_numpy(v) for v in inputs]
        outputs = [_to_numpy(v) for v in outputs]
        cases.append(Case(c.name, _op_of(c.name, c.model, ops_by_name),
                          c.model.SerializeToString(), inputs, outputs,
                          float(c.rtol), float(c.atol),
                          undefined_masks(c.model, inputs, len(outputs))))
    return cases


def select(cases: list[Case], ops: list[str] | None = None, names: list[str] | None = None,
           limit: int | None = None) -> list[Case]:
    """Filter by operator (case-insensitive) and case-name substring; `limit` keeps the first N."""
    if ops:
        wanted = {o.strip().lower() for o in ops if o.strip()}
        known = {c.op.lower() for c in cases}
        unknown = sorted(wanted - known)
        if unknown:
            raise AnychipError(f"--ops: no conformance case tests {', '.join(unknown)}; operators "
                               f"are ONNX op types such as Add, Conv, Softmax.")
        cases = [c for c in cases if c.op.lower() in wanted]
    if names:
        cases = [c for c in cases if any(n in c.name for n in names)]
    if limit is not None:
        if limit < 1:
            raise AnychipError("--limit must be at least 1.")
        cases = cases[:limit]
    return cases


def save(cases: list[Case], path: Path) -> None:
    """Cases to a pickle the workers read (a file we write ourselves, read back by our workers)."""
    with open(path, "wb") as fh:
        pickle.dump({c.name: c for c in cases}, fh, protocol=pickle.HIGHEST_PROTOCOL)


def load(path: Path) -> dict[str, Case]:
    with open(path, "rb") as fh:
        return pickle.load(fh)  # noqa: S301 - written by this process's parent, never user input
