"""The real CNN architectures that the onnx package ships under onnx/backend/test/data/light,
with their placeholder weights replaced by seeded random ones of a sensible scale.

The shipped files compute every weight with a ConstantOfShape node (value 0.02, shape from a
`<weight>__SHAPE` initializer). Under constant weights every channel of a layer is the same
number, so a kernel that swaps channels, drops a bias or misreads a stride still gives the
expected output. Here every ConstantOfShape output becomes an initializer drawn from a normal or
uniform distribution chosen by how the tensor is consumed (see `_ROLES`), seeded by the model
and tensor names, so the same bytes come out on every build.

The files also hold a few real initializers (reshape targets, batch-norm statistics of the
original trained network, some conv biases); they are kept. Random weights alone still let a
deep network's activations drift by orders of magnitude (ResNet-50's softmax comes out one-hot,
shufflenet's overflows), so models/calibration.py then rescales the random conv weights that
feed a batch norm, and the classifier, measured on a seeded input: see there. Result, for a
standard-normal input: activations of RMS 0.1 to 10 throughout, top softmax probability about
0.1 (0.08 to 0.22 across the nine models).

Other edits: the IR version goes from 3 to 4 so initializers no longer have to be listed as
graph inputs (the graph inputs are then exactly the real inputs, e.g. 'gpu_0/data_0' of shape
1x3x224x224, with their original names), and initializers no node reads are dropped.
"""

from __future__ import annotations

import hashlib
import os
from collections import defaultdict

import numpy as np
import onnx
from onnx import numpy_helper

from anychip.compiler.errors import AnychipError

from .calibration import calibrate

LIGHT = {
    "resnet50": "light_resnet50",
    "densenet121": "light_densenet121",
    "inception_v1": "light_inception_v1",
    "inception_v2": "light_inception_v2",
    "squeezenet": "light_squeezenet",
    "shufflenet": "light_shufflenet",
    "vgg19": "light_vgg19",
    "bvlc_alexnet": "light_bvlc_alexnet",
    "zfnet512": "light_zfnet512",
}

DESCRIPTIONS = {
    "resnet50": "ResNet-50 (Caffe2 export), 1x3x224x224 -> 1000-way softmax",
    "densenet121": "DenseNet-121, BN as Unsqueeze+Mul/Add, 1x3x224x224 -> 1000 logits (1x1 conv)",
    "inception_v1": "GoogLeNet / Inception v1 with LRN, 1x3x224x224 -> 1000-way softmax",
    "inception_v2": "Inception v2 (BN-Inception), 1x3x224x224 -> 1000-way softmax",
    "squeezenet": "SqueezeNet 1.0 (fire modules, global average pool), 1x3x224x224 -> softmax",
    "shufflenet": "ShuffleNet v1 (group conv, channel shuffle), 1x3x224x224 -> 1000-way softmax",
    "vgg19": "VGG-19 (143M parameters, 575 MB), 1x3x224x224 -> 1000-way softmax",
    "bvlc_alexnet": "AlexNet (BVLC Caffe, LRN), 1x3x224x224 -> 1000-way softmax",
    "zfnet512": "ZFNet-512 (LRN), 1x3x224x224 -> 1000-way softmax",
}

SHAPE_SUFFIX = "__SHAPE"
SEED = "anychip-zoo-v1"


def light_dir() -> str:
    return os.path.join(os.path.dirname(onnx.__file__), "backend", "test", "data", "light")


def source_path(name: str) -> str:
    return os.path.join(light_dir(), LIGHT[name] + ".onnx")


def _rng(model: str, tensor: str) -> np.random.Generator:
    digest = hashlib.sha256(f"{SEED}/{model}/{tensor}".encode()).digest()
    return np.random.default_rng(int.from_bytes(digest[:8], "little"))


def _he_normal(rng, shape, fan_in):
    """Kaiming/He: keeps the second moment through a ReLU (std = sqrt(2 / fan_in))."""
    return rng.standard_normal(shape, dtype=np.float32) * np.float32(np.sqrt(2.0 / fan_in))


def _small(rng, shape, std=0.05):
    return rng.standard_normal(shape, dtype=np.float32) * np.float32(std)


def _uniform(rng, shape, low=0.5, high=1.5):
    return rng.uniform(low, high, size=shape).astype(np.float32)


def _conv_weight(rng, shape, node):
    return _he_normal(rng, shape, int(np.prod(shape[1:])))


def _gemm_weight(rng, shape, node):
    trans_b = next((a.i for a in node.attribute if a.name == "transB"), 0)
    fan_in = shape[1] if trans_b else shape[0]
    return _he_normal(rng, shape, fan_in)


# (consumer op, input index) -> generator(rng, shape, consumer node). Unsqueeze and Reshape are
# looked through: densenet and inception_v2 apply an extra per-channel scale and shift after
# BatchNormalization as Mul/Add with an unsqueezed vector; inception_v1 reshapes its classifier.
# Calibration (models/calibration.py) then rescales BN-fed conv weights and the classifier, and
# turns a random BN mean behind a conv into that channel's measured mean plus this offset.
_ROLES = {
    ("Conv", 1): _conv_weight,
    ("Conv", 2): lambda rng, shape, node: _small(rng, shape),
    ("Gemm", 1): _gemm_weight,
    ("Gemm", 2): lambda rng, shape, node: _small(rng, shape),
    ("BatchNormalization", 1): lambda rng, shape, node: _uniform(rng, shape),   # gamma
    ("BatchNormalization", 2): lambda rng, shape, node: _small(rng, shape, 0.1),  # beta
    ("BatchNormalization", 3): lambda rng, shape, node: _small(rng, shape, 0.1),  # mean
    ("BatchNormalization", 4): lambda rng, shape, node: _uniform(rng, shape),   # variance
    ("Mul", 1): lambda rng, shape, node: _uniform(rng, shape, 0.75, 1.25),
    ("Add", 1): lambda rng, shape, node: _small(rng, shape, 0.1),
}
_PASS_THROUGH = ("Unsqueeze", "Reshape")


class _Graph:
    """Producer/consumer maps over one graph's nodes."""

    def __init__(self, graph: onnx.GraphProto):
        self.graph = graph
        self.inits = {t.name: t for t in graph.initializer}
        self.consumers = defaultdict(list)
        for node in graph.node:
            for k, name in enumerate(node.input):
                self.consumers[name].append((node, k))

    def final_use(self, value: str, label: str):
        """(node, input index, shape the consumer sees) for a weight, through Unsqueeze/Reshape."""
        uses = self.consumers[value]
        if len(uses) != 1:
            raise AnychipError(f"{label}: placeholder weight '{value}' has {len(uses)} consumers, "
                               f"the zoo expects one; the onnx package's light models changed: "
                               f"update models/onnx_light.py.")
        node, k = uses[0]
        if node.op_type not in _PASS_THROUGH or k != 0:
            return node, k, None
        consumer, index, view = self.final_use(node.output[0], label)
        if view is None and node.op_type == "Reshape" and node.input[1] in self.inits:
            target = numpy_helper.to_array(self.inits[node.input[1]])
            view = tuple(int(d) for d in target) if (target > 0).all() else None
        return consumer, index, view


def _replace_placeholders(model: onnx.ModelProto, name: str) -> dict[str, str]:
    """Swap ConstantOfShape weights for initializers in place; return weight -> role op."""
    label = f"zoo:{name}"
    graph = model.graph
    g = _Graph(graph)
    roles = {}
    for node in [n for n in graph.node if n.op_type == "ConstantOfShape"]:
        shape_name, out = node.input[0], node.output[0]
        if shape_name not in g.inits:
            raise AnychipError(f"{label}: ConstantOfShape '{node.name}' has a computed shape "
                               f"'{shape_name}'; the zoo only replaces placeholder weights.")
        shape = tuple(int(d) for d in numpy_helper.to_array(g.inits[shape_name]))
        consumer, k, seen_shape = g.final_use(out, label)
        make = _ROLES.get((consumer.op_type, k))
        if make is None:
            raise AnychipError(f"{label}: no weight rule for '{out}' used as input {k} of "
                               f"{consumer.op_type} '{consumer.name}'; add one to _ROLES in "
                               f"models/onnx_light.py.")
        view = seen_shape if seen_shape and np.prod(seen_shape) == np.prod(shape) else shape
        array = make(_rng(name, out), view, consumer).reshape(shape)
        graph.initializer.add().CopyFrom(numpy_helper.from_array(array, out))
        roles[out] = f"{consumer.op_type}:{k}"
    _delete(graph.node, lambda n: n.op_type == "ConstantOfShape")
    return roles


def _delete(repeated, drop) -> None:
    """Delete matching messages in place (no copy of the big tensors that stay)."""
    for i in reversed([i for i, item in enumerate(repeated) if drop(item)]):
        del repeated[i]


def _drop_unused_and_initializer_inputs(model: onnx.ModelProto) -> None:
    """Initializers stop being graph inputs (IR 4); `__SHAPE` and unread ones go."""
    graph = model.graph
    used = {i for n in graph.node for i in n.input} | {o.name for o in graph.output}
    inits = {t.name for t in graph.initializer}
    _delete(graph.initializer, lambda t: t.name not in used)
    _delete(graph.input, lambda vi: vi.name in inits or vi.name.endswith(SHAPE_SUFFIX))
    model.ir_version = max(model.ir_version, 4)


def build_light(name: str) -> onnx.ModelProto:
    """The light model `name` with seeded random weights, checked with full_check=True."""
    model = onnx.load(source_path(name))
    roles = _replace_placeholders(model, name)
    _drop_unused_and_initializer_inputs(model)
    calibrate(model, set(roles))
    onnx.checker.check_model(model, full_check=True)
    return model
