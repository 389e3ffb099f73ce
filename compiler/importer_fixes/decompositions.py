"""ONNX-level decompositions of operators TVM's importer lacks into standard ONNX operators
it imports, following each operator's definition. One function per operator; `decompose`
applies them. Only operators without an ONNX function body are here (those are expanded by
onnx_level.expand_schema_functions).
"""

from __future__ import annotations

import numpy as np
import onnx
from onnx import helper, numpy_helper

from .control_flow import Emitter


def _attrs(node: onnx.NodeProto) -> dict:
    out = {}
    for a in node.attribute:
        value = helper.get_attribute_value(a)
        out[a.name] = value.decode() if isinstance(value, bytes) else value
    return out


def reverse_sequence(node, emit: Emitter, shapes: dict, dtypes: dict):
    """ReverseSequence (opset 10): along time_axis, the first sequence_lens[b] steps of each
    batch entry b are reversed and the rest kept: a GatherElements with index
    lens-1-t where t < lens, else t. Cases: test_reversesequence_*."""
    x, lens = node.input[0], node.input[1]
    if x not in shapes:
        return None
    attrs = _attrs(node)
    time_axis, batch_axis = int(attrs.get("time_axis", 0)), int(attrs.get("batch_axis", 1))
    shape = shapes[x]
    view = [1] * len(shape)
    view[time_axis] = shape[time_axis]
    steps = emit.const(np.arange(shape[time_axis], dtype=np.int64).reshape(view), "t")
    lens_view = [1] * len(shape)
    lens_view[batch_axis] = shape[batch_axis]
    lens64 = emit.node("Cast", [lens], "lens", to=onnx.TensorProto.INT64)
    lens64 = emit.node("Reshape", [lens64, emit.const(np.array(lens_view, np.int64), "v")], "lens")
    flipped = emit.node("Sub", [emit.node("Sub", [lens64, emit.const(np.array(1, np.int64),
                                                                        "one")], "l1"), steps],
                        "flip")
    index = emit.node("Where", [emit.node("Less", [steps, lens64], "inside"), flipped, steps],
                      "index")
    index = emit.node("Expand", [index, emit.const(np.array(shape, np.int64), "shape")], "index")
    emit.nodes.append(helper.make_node("GatherElements", [x, index], [node.output[0]],
                                       axis=time_axis))
    return emit.nodes


def _split_groups(node, groups: int) -> tuple[str, str, list[list[str]]]:
    rate, count = node.input[0], node.input[1]
    tensors = list(node.input[2:])
    n = len(tensors) // groups
    return rate, count, [tensors[g * n:(g + 1) * n] for g in range(groups)]


def _scalar(emit: Emitter, value: float, like: str, dtypes: dict) -> str:
    return emit.const(np.array(value, dtype=dtypes.get(like, "float32")), "c")


def _regularized(emit, x, g, coefficient, dtypes):
    if not coefficient:
        return g
    return emit.node("Add", [emit.node("Mul", [_scalar(emit, coefficient, x, dtypes), x], "nx"), g],
                     "greg")


def adagrad(node, emit: Emitter, shapes: dict, dtypes: dict):
    """Adagrad (ai.onnx.preview.training): r = R / (1 + T * decay_factor);
    G' = norm_coefficient * X + G; H' = H + G'^2; X' = X - r * G' / (sqrt(H') + epsilon).
    Cases: test_adagrad, test_adagrad_multiple."""
    a = _attrs(node)
    rate, count, (xs, gs, hs) = _split_groups(node, 3)
    decay = emit.node("Mul", [emit.node("Cast", [count], "t", to=onnx.TensorProto.FLOAT),
                              emit.const(np.array(a.get("decay_factor", 0.0), np.float32), "d")],
                      "td")
    r = emit.node("Div", [rate, emit.node("Add", [emit.const(np.array(1, np.float32), "one"),
                                                  decay], "den")], "r")
    outs_x, outs_h = [], []
    for x, g, h in zip(xs, gs, hs):
        g2 = _regularized(emit, x, g, a.get("norm_coefficient", 0.0), dtypes)
        h_new = emit.node("Add", [h, emit.node("Mul", [g2, g2], "gg")], "h")
        adaptive = emit.node("Add", [emit.node("Sqrt", [h_new], "sq"),
                                     _scalar(emit, a.get("epsilon", 1e-6), x, dtypes)], "ha")
        step = emit.node("Div", [emit.node("Mul", [r, g2], "rg"), adaptive], "step")
        outs_x.append(emit.node("Sub", [x, step], "x"))
        outs_h.append(h_new)
    return _bind(emit, node, outs_x + outs_h)


def momentum(node, emit: Emitter, shapes: dict, dtypes: dict):
    """Momentum (ai.onnx.preview.training): G' = norm_coefficient * X + G; V' = alpha * V +
    beta' * G' with beta' = beta after the first step (T > 0) and 1 before; standard:
    X' = X - R * V', nesterov: X' = X - R * (G' + alpha * V'). Cases: test_momentum,
    test_momentum_multiple, test_nesterov_momentum."""
    a = _attrs(node)
    rate, count, (xs, gs, vs) = _split_groups(node, 3)
    started = emit.node("Greater", [count, emit.const(np.array(0, np.int64), "zero")], "t0")
    outs_x, outs_v = [], []
    for x, g, v in zip(xs, gs, vs):
        g2 = _regularized(emit, x, g, a.get("norm_coefficient", 0.0), dtypes)
        beta = emit.node("Where", [started, _scalar(emit, a["beta"], x, dtypes),
                                   _scalar(emit, 1.0, x, dtypes)], "beta")
        v_new = emit.node("Add", [emit.node("Mul", [_scalar(emit, a["alpha"], x, dtypes), v], "av"),
                                  emit.node("Mul", [beta, g2], "bg")], "v")
        direction = v_new if a.get("mode", "standard") == "standard" else emit.node(
            "Add", [g2, emit.node("Mul", [_scalar(emit, a["alpha"], x, dtypes), v_new], "av")],
            "nes")
        outs_x.append(emit.node("Sub", [x, emit.node("Mul", [rate, direction], "rv")], "x"))
        outs_v.append(v_new)
    return _bind(emit, node, outs_x + outs_v)


def adam(node, emit: Emitter, shapes: dict, dtypes: dict):
    """Adam (ai.onnx.preview.training): G' = norm_coefficient * X + G; V' = alpha * V +
    (1 - alpha) * G'; H' = beta * H + (1 - beta) * G'^2; R' = R * sqrt(1 - beta^T) /
    (1 - alpha^T) after the first step (T > 0), else R; X' = (X - R' * V' / (sqrt(H') +
    epsilon)) * (1 - norm_coefficient_post). Cases: test_adam, test_adam_multiple."""
    a = _attrs(node)
    alpha, beta = float(a.get("alpha", 0.9)), float(a.get("beta", 0.999))
    rate, count, (xs, gs, vs, hs) = _split_groups(node, 4)
    t = emit.node("Cast", [count], "t", to=onnx.TensorProto.FLOAT)
    one = emit.const(np.array(1, np.float32), "one")
    bias = emit.node("Div", [
        emit.node("Sqrt", [emit.node("Sub", [one, emit.node(
            "Pow", [emit.const(np.array(beta, np.float32), "b"), t], "bt")], "1b")], "sq"),
        emit.node("Sub", [one, emit.node("Pow", [emit.const(np.array(alpha, np.float32), "a"),
                                                  t], "at")], "1a")], "bias")
    started = emit.node("Greater", [count, emit.const(np.array(0, np.int64), "zero")], "t0")
    r = emit.node("Where", [started, emit.node("Mul", [rate, bias], "rb"), rate], "r")
    outs_x, outs_v, outs_h = [], [], []
    for x, g, v, h in zip(xs, gs, vs, hs):
        g2 = _regularized(emit, x, g, a.get("norm_coefficient", 0.0), dtypes)
        v_new = emit.node("Add", [emit.node("Mul", [_scalar(emit, alpha, x, dtypes), v], "av"),
                                  emit.node("Mul", [_scalar(emit, 1 - alpha, x, dtypes), g2],
                                            "ag")], "v")
        h_new = emit.node("Add", [emit.node("Mul", [_scalar(emit, beta, x, dtypes), h], "bh"),
                                  emit.node("Mul", [_scalar(emit, 1 - beta, x, dtypes),
                                                    emit.node("Mul", [g2, g2], "gg")], "bg")],
                          "h")
        denom = emit.node("Add", [emit.node("Sqrt", [h_new], "sq"),
                                  _scalar(emit, a.get("epsilon", 1e-6), x, dtypes)], "den")
        x_new = emit.node("Sub", [x, emit.node("Mul", [r, emit.node("Div", [v_new, denom], "vd")],
                                               "step")], "x")
        post = float(a.get("norm_coefficient_post", 0.0))
        if post:
            x_new = emit.node("Mul", [x_new, _scalar(emit, 1 - post, x, dtypes)], "xp")
        outs_x.append(x_new)
        outs_v.append(v_new)
        outs_h.append(h_new)
    return _bind(emit, node, outs_x + outs_v + outs_h)


def binarizer(node, emit: Emitter, shapes: dict, dtypes: dict):
    """Binarizer (ai.onnx.ml): 1 where X > threshold, else 0, in X's type. Case:
    test_ai_onnx_ml_binarizer."""
    x = node.input[0]
    above = emit.node("Greater", [x, _scalar(emit, _attrs(node).get("threshold", 0.0), x,
                                             dtypes)], "gt")
    emit.nodes.append(helper.make_node("Where", [above, _scalar(emit, 1, x, dtypes),
                                                 _scalar(emit, 0, x, dtypes)], [node.output[0]]))
    return emit.nodes


def array_feature_extractor(node, emit: Emitter, shapes: dict, dtypes: dict):
    """ArrayFeatureExtractor (ai.onnx.ml): the elements of X's last axis at the given
    indices. Case: test_ai_onnx_ml_array_feature_extractor."""
    x, indices = node.input[0], node.input[1]
    flat = emit.node("Reshape", [indices, emit.const(np.array([-1], np.int64), "flat")], "idx")
    emit.nodes.append(helper.make_node("Gather", [x, flat], [node.output[0]], axis=-1))
    return emit.nodes


def col2im(node, emit: Emitter, shapes: dict, dtypes: dict, values: dict):
    """Col2Im (opset 18; torch's F.fold): the columns [N, C * prod(block), L] summed back
    into an image [N, C, *image_shape]. That is a ConvTranspose with group C and a one-hot
    weight [C * K, 1, *block] (column k of channel c puts its value at kernel offset k), with
    the op's strides, dilations and pads; output_padding adds the trailing rows no block
    reaches (zeros, as the definition gives them). image_shape, block_shape and the column
    count C * K must be constants. Cases: test_col2im*. MobileViT-V2 folds its patches so."""
    x = node.input[0]
    image = values.get(node.input[1])
    block = values.get(node.input[2])
    dims = shapes.get(x)
    if image is None or block is None or dims is None or len(dims) != 3 or dims[1] is None:
        return None
    image, block = [int(v) for v in image.reshape(-1)], [int(v) for v in block.reshape(-1)]
    rank, kernel = len(block), int(np.prod(block))
    if rank != len(image) or rank not in (1, 2, 3) or dims[1] % kernel or kernel == 0:
        return None
    attrs = _attrs(node)
    dilations = list(attrs.get("dilations", [1] * rank))
    strides = list(attrs.get("strides", [1] * rank))
    pads = list(attrs.get("pads", [0] * 2 * rank))
    blocks, extra = [], []
    for i in range(rank):
        span = dilations[i] * (block[i] - 1) + 1
        full = image[i] + pads[i] + pads[rank + i]
        if full < span:
            return None
        count = (full - span) // strides[i] + 1
        blocks.append(count)
        extra.append(full - (strides[i] * (count - 1) + span))
    if any(e >= max(s, d) for e, s, d in zip(extra, strides, dilations)):
        return None   # (ONNX's ConvTranspose bounds output_padding)
    channels = dims[1] // kernel
    dtype = np.dtype(dtypes.get(x, "float32"))
    weight = np.zeros((channels * kernel, 1, *block), dtype)
    for c in range(channels):
        for k in range(kernel):
            weight[(c * kernel + k, 0, *np.unravel_index(k, block))] = 1
    grid = emit.node("Reshape", [x, emit.const(np.array([0, dims[1], *blocks], np.int64),
                                                "grid")], "grid")
    out = emit.node("ConvTranspose", [grid, emit.const(weight, "onehot")], "folded",
                    group=channels, strides=strides, dilations=dilations, pads=pads,
                    output_padding=extra, kernel_shape=block)
    return _bind(emit, node, [out])


def _bind(emit: Emitter, node, values: list[str]):
    for target, value in zip(node.output, values):
        if target:
            emit.nodes.append(helper.make_node("Identity", [value], [target]))
    return emit.nodes


DECOMPOSITIONS = {
    ("", "ReverseSequence"): reverse_sequence,
    ("", "Col2Im"): col2im,
    ("ai.onnx.preview.training", "Adagrad"): adagrad,
    ("ai.onnx.preview.training", "Momentum"): momentum,
    ("ai.onnx.preview.training", "Adam"): adam,
    ("ai.onnx.ml", "Binarizer"): binarizer,
    ("ai.onnx.ml", "ArrayFeatureExtractor"): array_feature_extractor,
}


def decompose(model: onnx.ModelProto, shapes: dict, dtypes: dict) -> list[str]:
    """Replace every node DECOMPOSITIONS covers; returns the op types decomposed."""
    opset = next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), 1)
    values = {t.name: numpy_helper.to_array(t) for t in model.graph.initializer
              if t.data_type == onnx.TensorProto.INT64 and len(t.dims) <= 1}
    from .specialise import GUARD_OP   # (a specialised input's value, checked at run time)

    values.update({n.output[0]: numpy_helper.to_array(n.attribute[0].t)
                   for n in model.graph.node if n.op_type in ("Constant", GUARD_OP)
                   and n.attribute and n.attribute[0].name == "value"})
    new_nodes, done, ranked = [], [], None
    for node in model.graph.node:
        rule = DECOMPOSITIONS.get(("" if node.domain == "ai.onnx" else node.domain,
                                   node.op_type))
        emitter = Emitter(node.name or f"{node.op_type}_{node.output[0]}", opset)
        replaced = None
        if rule is col2im:   # (a symbolic batch is fine: ranked shapes)
            if ranked is None:
                from .onnx_level import ranked_shapes

                ranked = ranked_shapes(model)
            replaced = rule(node, emitter, ranked, dtypes, values)
        elif rule:
            replaced = rule(node, emitter, shapes, dtypes)
        if replaced is None:
            new_nodes.append(node)
        else:
            new_nodes.extend(replaced)
            done.append(node.op_type)
    if done:
        del model.graph.node[:]
        model.graph.node.extend(new_nodes)
    return done
