"""Importer fixes: what anychip puts in front of TVM's ONNX importer, in one place.

`prepare_for_tvm(source)` is called by importer.to_relax before TVM sees a model. It returns
a ModelSource whose `proto` is a prepared copy (the caller's model is never edited), after,
in this order:

1. carrying low-bit element types (float8, float4, int4, int2) as uint8 storage with exact
   encode/decode (lowbit.py); refusing element types no target compiles (NotSupported,
   reported as unsupported);
2. inlining model-local functions (onnx's inliner);
3. expanding operators TVM cannot import into their ONNX function bodies (half-precision
   Attention computed in float32 first);
4. writing Constant's value_int(s)/value_float(s) as `value` tensors; auto_pad written as
   explicit pads (auto_pad.py) and torch's GroupNorm export as channel ops (group_norm.py);
5. decomposing operators without a function body into ONNX operators (decompositions.py);
   unrolling Scans (control_flow.py) and RNN/GRU/LSTM (recurrent.py), whose trip counts
   static shapes fix;
6. specialising shape-like graph inputs when the caller asked for it (specialise.py states
   the policy; the compiled code checks the values at every run);
7. folding shape computations to constants (static shapes make them constant);

and registers the extra Relax converters (converters.py). Each step is one function whose
docstring names the ONNX behaviour and the conformance cases it fixes; the steps a model
needed are listed in `source.extra["importer_fixes"]`.
"""

from __future__ import annotations

import copy
import dataclasses

from .refusal import NotSupported  # re-exported: callers catch it from here

SPECIALISE_KEY = "specialise"     # source.extra[...]: {input name: value} to specialise


# TVM has a converter under these names, but for another operator (com.microsoft's
# Attention), or without parts of the ONNX operator: expand them to their ONNX function.
def _expand_despite_converter(node, opset: int) -> bool:
    if node.op_type == "Attention":
        return opset >= 23          # ONNX Attention (q/kv_num_heads), not com.microsoft's
    if node.op_type == "LayerNormalization":
        return len([o for o in node.output if o]) > 1   # TVM gives the normalised output only
    if node.op_type == "RMSNormalization":               # TVM's fails for a non-last axis
        return any(a.name == "axis" and a.i != -1 for a in node.attribute)
    return False


def prepare_for_tvm(source):
    """The ModelSource TVM's importer should see (see the module docstring)."""
    from . import (auto_pad, control_flow, converters, decompositions, group_norm, onnx_level,
                   recurrent, specialise)

    converters.register()
    proto = copy.deepcopy(source.proto)
    applied: list[str] = []
    from . import lowbit
    if lowbit.uses_lowbit(proto):   # low-bit types as uint8 storage (lowbit.py)
        applied.append(f"emulate_lowbit({', '.join(sorted(set(lowbit.emulate_lowbit(proto))))})")
    bad = onnx_level.uncompilable_type(proto)
    if bad:
        raise NotSupported(f"{source.label}: {bad}; this element type is not supported by "
                           f"anychip (TVM cannot compile it). Cast it to a supported type "
                           f"before export.")
    if onnx_level.inline_local_functions(proto):
        applied.append("inline_local_functions")
    if onnx_level.attention_in_float32(proto):
        applied.append("attention_in_float32")
    known = _known_ops()
    expanded = onnx_level.expand_schema_functions(
        proto, lambda node, opset: node.op_type not in known
        or _expand_despite_converter(node, opset))
    if expanded:
        applied.append(f"expand_schema_functions({', '.join(sorted(set(expanded)))})")
    if onnx_level.constants_as_tensors(proto):
        applied.append("constants_as_tensors")
    explicit = auto_pad.explicit_auto_pads(proto)
    if explicit:
        applied.append(f"explicit_auto_pads({explicit})")
    if any(n.op_type == "InstanceNormalization" for n in proto.graph.node):
        fused = group_norm.fuse_group_norms(proto, onnx_level.static_shapes(proto),
                                            onnx_level.element_types(proto))
        if fused:
            applied.append(f"group_norms_in_channel_ops({fused})")
    if any((n.domain.replace("ai.onnx", "") if n.domain == "ai.onnx" else n.domain, n.op_type)
           in decompositions.DECOMPOSITIONS for n in proto.graph.node):
        done = decompositions.decompose(proto, onnx_level.static_shapes(proto),
                                        onnx_level.element_types(proto))
        if done:
            applied.append(f"decompose({', '.join(sorted(set(done)))})")
    if any(n.op_type in recurrent.GATES or n.op_type == "Scan" for n in proto.graph.node):
        shapes, dtypes = onnx_level.static_shapes(proto), onnx_level.element_types(proto)
        if control_flow.unroll_scans(proto, shapes):
            applied.append("unroll_scans")
        unrolled = recurrent.unroll_recurrent(proto, onnx_level.ranked_shapes(proto), dtypes)
        if unrolled:
            applied.append(f"unroll_recurrent({', '.join(sorted(set(unrolled)))})")
    values = source.extra.get(SPECIALISE_KEY) or {}
    if values:
        safe = {s.name: s.safe_name for s in source.inputs}
        names = specialise.specialise_inputs(proto, {safe.get(k, k): v for k, v in values.items()})
        applied.append(f"specialise_inputs({', '.join(names)})")
    if values and any(n.op_type == "Col2Im" for n in proto.graph.node):   # its shapes given
        done = decompositions.decompose(proto, onnx_level.static_shapes(proto),
                                        onnx_level.element_types(proto))
        if done:
            applied.append(f"decompose({', '.join(sorted(set(done)))})")
    if onnx_level.fold_shape_computations(proto, specialise.GUARD_OP,
                                          specialise.shape_values(proto)):
        applied.append("fold_shape_computations")
    extra = dict(source.extra)
    extra["importer_fixes"] = applied
    return dataclasses.replace(source, proto=proto, extra=extra,
                               inputs=lowbit.storage_specs(source.inputs),
                               outputs=lowbit.storage_specs(source.outputs))


def _known_ops() -> set[str]:
    from tvm.relax.frontend.onnx.onnx_frontend import _get_convert_map

    return set(_get_convert_map()) | {"If", "Constant"}


def specialise_for(source, feed: dict) -> list[str]:
    """Ask for the shape-like graph inputs of `source` to be specialised to their values in
    `feed` (see specialise.py for the policy); returns notes naming each one and its value."""
    from .specialise import shape_inputs

    by_safe = {s.safe_name: s.name for s in source.inputs}
    names = [by_safe.get(n, n) for n in shape_inputs(source.proto)]
    values = {n: feed[n] for n in names if n in feed}
    if not values:
        return []
    source.extra[SPECIALISE_KEY] = values
    return [f"specialised {n}={_short(v)}" for n, v in values.items()]


def specialised_by_safe_name(source) -> dict:
    """The values `specialise_for` asked for, keyed by the inputs' names in `source.proto`
    (sanitized): for a family whose prepare_onnx rewrites that proto, imported again."""
    safe = {s.name: s.safe_name for s in source.inputs}
    return {safe.get(k, k): v for k, v in (source.extra.get(SPECIALISE_KEY) or {}).items()}


def _short(value) -> str:
    import numpy as np

    arr = np.asarray(value)
    text = np.array2string(arr, threshold=8, separator=",").replace("\n", "")
    return text if len(text) <= 60 else text[:57] + "..."
