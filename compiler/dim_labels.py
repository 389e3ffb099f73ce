"""Input dim labels that are not symbols anychip can compile, renamed to ones it can.

ONNX makes a `dim_param` any string: a label, checked by nothing, that only says which dims
share a size. anychip reads an input's label as an expression over the inputs' symbols
('2*seq' is twice the input dim named 'seq'; importer_fixes/symbolic.parse), which compiles to
a check at every call. A label that is not such an expression -- punctuation ('a:b',
'input:0_dim_0', 'sequence length'), a number ('0'), or arithmetic over names no input dim
binds on its own ('past + 1' with no 'past' dim, 'a/b') -- is, as for ONNX Runtime, an opaque
name. It is renamed, in the whole main graph, to a C identifier (`a_b`), unique among the
inputs' symbols, before anything else reads the model; the manifest and verify show the new
name, and `--dim` / `dims=` accept either (frontend.load_model maps the old one).

Before, such a label reached the importer as an expression it could not read and the compile
failed with the label alone as its message (a KeyError; found by the fuzzer)."""

from __future__ import annotations

import re

import onnx

from .importer_fixes.symbolic import dim_names, parse
from .names import c_identifier

# source.extra[...]: {the model's label: the symbol it was compiled as}
RENAMED_DIMS_KEY = "renamed_dims"
_BARE = re.compile(r"[A-Za-z_][A-Za-z0-9_.]*")
# longer labels are renamed too (to their first _KEEP characters, made unique): the manifest
# holds a dim in at most 256 characters, and a 5000-character label made every cached entry
# of the model fail its schema check (quarantined, recompiled at each load)
MAX_LABEL = 64
_KEEP = 48


def rename_opaque_labels(model: onnx.ModelProto) -> dict[str, str]:
    """Rename, in `model`'s main graph, each input dim label that is not an expression over
    the inputs' bare symbols; returns {old label: new name} ({} when none)."""
    inits = {t.name for t in model.graph.initializer}
    inputs = [vi for vi in model.graph.input if vi.name not in inits]
    labels = [d.dim_param for vi in inputs if vi.type.HasField("tensor_type")
              for d in vi.type.tensor_type.shape.dim if d.dim_param]
    bare = {label for label in labels if _BARE.fullmatch(label) and len(label) <= MAX_LABEL}
    taken = set(bare)
    renamed: dict[str, str] = {}
    for label in labels:
        if label in bare or label in renamed or _readable(label, bare):
            continue
        renamed[label] = c_identifier(label[:_KEEP], taken)
    if renamed:
        graph = model.graph
        for vi in (*graph.input, *graph.output, *graph.value_info):
            if not vi.type.HasField("tensor_type"):
                continue
            for d in vi.type.tensor_type.shape.dim:
                if d.dim_param in renamed:
                    d.dim_param = renamed[d.dim_param]
    return renamed


def _readable(label: str, bare: set[str]) -> bool:
    """An expression with at least one name, every name bound by an input dim of its own."""
    names = dim_names(label)
    if len(label) > MAX_LABEL or not names or any(n not in bare for n in names):
        return False
    return parse(label, {n: 1 for n in names}) is not None
