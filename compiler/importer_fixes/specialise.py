"""Shape-like graph inputs specialised at compile time, with a run-time guard.

Policy. Every anychip target compiles static shapes (importer.py). Some ONNX operators take
what decides their output's shape as an input tensor rather than an attribute: Reshape's
shape, Expand's shape, Tile's repeats, Slice's starts/ends/axes/steps, the reductions' and
(Un)Squeeze's axes, TopK's k, OneHot's depth, Range's bounds, ConstantOfShape's shape,
Resize's scales and sizes, Pad's pads, Split's split, CumSum's axis, and so on (SHAPE_SLOTS).
When such an input is a *graph input*, its value is needed at compile time, exactly like a
dynamic dimension that `--shape` fixes. A caller that knows the values (the conformance
harness knows them from the case's data) may ask to specialise: the model keeps the input,
its consumers see the given value as a constant, and the compiled code checks at every run
that the input still holds that value (a Relax `match_cast` on the count of differing
elements), so an artifact specialised for `shape=[3, 4]` refuses `shape=[4, 3]` instead of
computing garbage. Results report the specialised inputs by name (`notes`). Inputs that feed
anything other than such slots (data, indices, a condition) are never specialised.
"""

from __future__ import annotations

import numpy as np
import onnx
from onnx import helper, numpy_helper

GUARD_OP = "AnychipSpecialisedInput"
GUARD_DOMAIN = "anychip"

# ONNX operator -> indices of inputs that are shape, axis, count or size parameters.
SHAPE_SLOTS: dict[str, tuple[int, ...]] = {
    "Reshape": (1,), "Expand": (1,), "Tile": (1,), "ConstantOfShape": (0,),
    "Slice": (1, 2, 3, 4), "Squeeze": (1,), "Unsqueeze": (1,), "Split": (1,),
    "ReduceSum": (1,), "ReduceMean": (1,), "ReduceMax": (1,), "ReduceMin": (1,),
    "ReduceProd": (1,), "ReduceL1": (1,), "ReduceL2": (1,), "ReduceLogSum": (1,),
    "ReduceLogSumExp": (1,), "ReduceSumSquare": (1,),
    "TopK": (1,), "OneHot": (1,), "Range": (0, 1, 2), "CumSum": (1,), "CumProd": (1,),
    "Resize": (1, 2, 3), "Upsample": (1,), "Pad": (1, 3), "CenterCropPad": (1,),
    "Trilu": (1,), "MaxUnpool": (2,), "AffineGrid": (1,), "Col2Im": (1, 2),
    "DFT": (1, 2), "STFT": (1, 3), "HannWindow": (0,), "HammingWindow": (0,),
    "BlackmanWindow": (0,), "MelWeightMatrix": (0, 1, 2),
    # not shapes, but what the converters need as constants: NMS's count and thresholds,
    # Dropout's ratio and training_mode (which decide whether random numbers are drawn)
    "NonMaxSuppression": (2, 3, 4), "Dropout": (1, 2),
}


# Operators through which a shape-like value stays shape-like (shape arithmetic).
SHAPE_ARITHMETIC = {
    "Add", "Sub", "Mul", "Div", "Mod", "Max", "Min", "Neg", "Abs", "Ceil", "Floor", "Round",
    "Sqrt", "Pow", "Sign", "Cast", "CastLike", "Identity", "Concat", "Gather", "Slice",
    "Squeeze", "Unsqueeze", "Reshape", "Flatten", "Expand", "Equal", "Less", "Greater",
    "LessOrEqual", "GreaterOrEqual", "Not", "And", "Or", "Where", "ReduceProd", "ReduceSum",
    "ReduceMax", "ReduceMin",
}   # not Shape or Size: their input's values do not matter, only its shape


def _slot_use(node: onnx.NodeProto, index: int) -> bool:
    return node.domain in ("", "ai.onnx") and index in SHAPE_SLOTS.get(node.op_type, ())


def shape_values(model: onnx.ModelProto) -> set[str]:
    """Values that decide a shape: used at a SHAPE_SLOTS input, or by shape arithmetic with
    an output that decides a shape (they may be used as data elsewhere too)."""
    consumers: dict[str, list[tuple[onnx.NodeProto, int]]] = {}
    for node in model.graph.node:
        for index, name in enumerate(node.input):
            if name:
                consumers.setdefault(name, []).append((node, index))
    result: set[str] = set()

    def decide(name: str) -> None:
        if any(_slot_use(n, i) or (n.op_type in SHAPE_ARITHMETIC and n.domain in ("", "ai.onnx")
                                   and any(o in result for o in n.output if o))
               for n, i in consumers.get(name, [])):
            result.add(name)

    for node in reversed(model.graph.node):
        for out in node.output:
            if out:
                decide(out)
    for vi in model.graph.input:
        decide(vi.name)
    return result


def shape_inputs(model: onnx.ModelProto) -> list[str]:
    """Graph inputs that decide a shape (shape_values), in graph-input order."""
    inits = {i.name for i in model.graph.initializer}
    used = shape_values(model)
    return [vi.name for vi in model.graph.input if vi.name not in inits and vi.name in used]


def specialise_inputs(model: onnx.ModelProto, values: dict[str, np.ndarray]) -> list[str]:
    """Route every consumer of each named graph input through a guard node that holds its
    value; the input stays a graph input. Returns the names specialised."""
    done = []
    types = {vi.name: vi.type for vi in model.graph.input}
    for name, value in values.items():
        guarded = f"{name}__specialised"
        if name in types:   # so ONNX shape inference carries on past the guard
            model.graph.value_info.append(helper.make_value_info(guarded, types[name]))
        node = helper.make_node(GUARD_OP, [name], [guarded], domain=GUARD_DOMAIN,
                                name=f"specialise/{name}",
                                value=numpy_helper.from_array(np.asarray(value)))
        for consumer in model.graph.node:
            consumer.input[:] = [guarded if i == name else i for i in consumer.input]
        model.graph.node.insert(0, node)
        done.append(name)
    if done and all(o.domain != GUARD_DOMAIN for o in model.opset_import):
        model.opset_import.append(helper.make_opsetid(GUARD_DOMAIN, 1))
    return done


def guard_converter():
    """The Relax converter of the guard node: returns the value as a constant, and emits a
    check that the run-time input equals it, which the compiled code keeps (a match_cast has
    an effect, so dead-code elimination leaves it)."""
    from tvm import relax
    from tvm.relax.frontend.onnx.onnx_frontend import OnnxOpConverter, get_numpy

    class AnychipSpecialisedInput(OnnxOpConverter):
        @classmethod
        def _impl_v1(cls, bb, inputs, attr, params):
            value = get_numpy(attr["value"])
            actual = inputs[0]
            const = relax.const(value, str(value.dtype))
            if value.dtype == np.bool_:   # not_equal on bool lowers to a float compare
                differs = bb.emit(relax.op.logical_xor(actual, const))
            else:
                differs = bb.emit(relax.op.not_equal(actual, const))
            count = bb.emit(relax.op.sum(relax.op.astype(differs, "int64")))
            as_shape = bb.emit(relax.op.tensor_to_shape(relax.op.reshape(count, [1])))
            bb.match_cast(as_shape, relax.ShapeType([0]))
            return const

    return AnychipSpecialisedInput
