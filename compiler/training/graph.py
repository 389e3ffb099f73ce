"""The training graph: the model's ONNX graph in train mode, imported into a Relax `backbone`.

    torch module -> ONNX (TorchScript exporter, opset 17, TrainingMode.TRAINING)
    .onnx model  -> the same graph with BatchNormalization switched to training mode
        -> train-mode edits (below) -> frontend.prepare -> importer.to_relax(keep_params_in_input)
        -> backbone(inputs..., params..., states...) -> (prediction, new_states...)

The import is the inference path's (compiler.frontend and compiler.importer); what training
adds is only which initializers are trained, which are states, and two train-mode rules:

- BatchNormalization uses the batch statistics, and its running mean and variance become states
  updated as torch does: new = (1 - m) * old + m * batch, with the unbiased (n / (n - 1))
  batch variance for running_var. TVM's own train-mode batch_norm is not used for this: its ONNX
  converter passes ONNX's momentum (0.9, the weight of the old value) where Relax expects
  torch's (the weight of the new value), and it updates running_var with the biased variance.
- Dropout with p = 0 (or training_mode false) is an identity; with p > 0 it stays a Dropout
  x * anychip_dropout_<i> (a scalar input marking it), which the backbone replaces with a
  seeded counter-based random mask drawn inside the compiled step (training/dropout.py).
"""

from __future__ import annotations

import io
import warnings
from dataclasses import dataclass, field

import numpy as np
import onnx
from onnx import helper, numpy_helper

from ..errors import AnychipError

OPSET = 17


@dataclass(frozen=True)
class BatchNormSpec:
    """One train-mode BatchNormalization: its running statistics and torch's momentum."""

    node: str
    mean: str          # initializer name of the running mean
    var: str           # initializer name of the running variance
    momentum: float    # torch's convention: weight of the batch statistic
    epsilon: float


@dataclass
class TrainGraph:
    """A model ready for the train step. Names are ONNX initializer names; `keys` maps them to
    the user's state_dict keys (torch's, or the initializer names for an .onnx model)."""

    label: str
    proto: onnx.ModelProto                   # train-mode graph, BN statistics as extra outputs
    params: list[str]                        # trained initializers, in backbone order
    states: list[str]                        # running statistics, in backbone order
    batch_norms: list[BatchNormSpec]
    values: dict[str, np.ndarray]            # initial value of every initializer
    keys: dict[str, str]                     # initializer name -> state_dict key
    state_dict_keys: list[str]               # every state_dict key, in the user's order
    extra: dict[str, np.ndarray] = field(default_factory=dict)  # keys not in the graph
    counters: list[str] = field(default_factory=list)  # num_batches_tracked: +1 per step
    aliases: dict[str, str] = field(default_factory=dict)  # tied weight key -> its source key
    shapes: dict[str, tuple[int, ...]] = field(default_factory=dict)  # static input shapes
    dropouts: list[float] = field(default_factory=list)  # ratio of each Dropout p > 0, in order
    # initializer -> an Embedding's padding_idx: lookups of that row add no gradient (torch)
    padding_rows: dict[str, int] = field(default_factory=dict)


# ---------------------------------------------------------------------------------------------
# Model forms -> TrainGraph


def training_graph(model, example_inputs=None, shapes=None) -> TrainGraph:
    """A torch module (with example inputs), zoo:NAME, an .onnx path or a ModelProto.

    `shapes` ({input: shape}) fixes an ONNX model's input shapes (the batch to train on).
    """
    graph = _training_graph(model, example_inputs)
    graph.shapes = {k: tuple(int(d) for d in v) for k, v in (shapes or {}).items()}
    return graph


def _training_graph(model, example_inputs) -> TrainGraph:
    if isinstance(model, str) and model.startswith("zoo:"):
        from anychip import models as zoo

        built = zoo.build(model[4:])
        module = getattr(built, "torch_module", None)
        if module is not None:
            inputs = example_inputs if example_inputs is not None else built.example_inputs
            return from_torch(module, inputs, label=model)
        return from_onnx(built.proto, model)
    if _is_torch_module(model):
        if example_inputs is None:
            raise AnychipError(f"{type(model).__name__}: compile_training needs "
                               f"example_inputs=(x,) with the batch shape to train on.")
        return from_torch(model, example_inputs)
    if isinstance(model, onnx.ModelProto):
        return from_onnx(model, f"<ModelProto {model.graph.name}>")
    if isinstance(model, str) or hasattr(model, "__fspath__"):
        from ..frontend import read_onnx_file

        proto, _base = read_onnx_file(model)
        if any(t.data_location == onnx.TensorProto.EXTERNAL for t in proto.graph.initializer):
            raise AnychipError(f"{model}: training from an ONNX model with external data is not "
                               f"supported; save it with the weights inside the file.")
        return from_onnx(proto, str(model))
    raise AnychipError(f"cannot train a {type(model).__name__}: give a torch.nn.Module with "
                       f"example_inputs, zoo:NAME, or an .onnx path.")


def _is_torch_module(obj) -> bool:
    try:
        import torch
    except ImportError:
        return False
    return isinstance(obj, torch.nn.Module)


def _check_torch_layers(module, label: str) -> None:
    import torch

    for name, sub in module.named_modules():
        if isinstance(sub, torch.nn.modules.batchnorm._BatchNorm):
            if not sub.track_running_stats:
                raise AnychipError(f"{label}: BatchNorm '{name}' has track_running_stats=False; "
                                   f"training supports BatchNorm with running statistics only. "
                                   f"Use track_running_stats=True.")
            if sub.momentum is None:
                raise AnychipError(f"{label}: BatchNorm '{name}' has momentum=None (cumulative "
                                   f"average), which training does not support; set a momentum, "
                                   f"e.g. 0.1 (torch's default), on every BatchNorm first.")


def from_torch(module, example_inputs, label: str | None = None) -> TrainGraph:
    """Export in train mode with the TorchScript exporter and map initializers to state_dict."""
    import torch

    label = label or f"<torch {type(module).__name__}>"
    _check_torch_layers(module, label)
    if not isinstance(example_inputs, (tuple, list)):
        example_inputs = (example_inputs,)
    inputs = tuple(x if isinstance(x, torch.Tensor) else torch.as_tensor(x)
                   for x in example_inputs)
    names = ["x"] if len(inputs) == 1 else [f"x{i}" for i in range(len(inputs))]
    # Exporting in training mode runs the model once, which updates BatchNorm statistics and
    # counters: keep the state from before and put it back into the user's module afterwards.
    before = {k: v.detach().clone() for k, v in module.state_dict().items()}
    was_training = module.training
    buf = io.BytesIO()
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # the exporter's deprecation and num_batches notes
            torch.onnx.export(module, inputs, buf, dynamo=False, opset_version=OPSET,
                              training=torch.onnx.TrainingMode.TRAINING,
                              do_constant_folding=False, input_names=names,
                              output_names=["prediction"])
    except Exception as exc:
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:300]
        raise AnychipError(f"{label}: torch.onnx.export (TorchScript, opset {OPSET}, training "
                           f"mode) failed: {first}") from exc
    finally:
        module.train(was_training)
        module.load_state_dict(before)
    proto = onnx.load_from_string(buf.getvalue())
    state = {k: v.cpu().numpy() for k, v in before.items()}
    for init in proto.graph.initializer:
        if init.name in state:
            init.CopyFrom(numpy_helper.from_array(state[init.name], init.name))
    trainable = {k for k, p in module.named_parameters() if p.requires_grad}
    aliases = _aliases(module)
    keys: dict[str, str] = {}
    for init in proto.graph.initializer:
        if init.name in state:
            keys[init.name] = init.name
    missing = [k for k in trainable if k not in keys and aliases.get(k) not in keys]
    _refuse_renamed(proto, keys, missing, state, label)
    graph = _train_mode(proto, label, trainable_names={n for n in keys if n in trainable})
    graph.keys = keys
    graph.state_dict_keys = list(state)
    graph.aliases = {k: a for k, a in aliases.items() if k not in keys and a in keys}
    graph.extra = {k: state[k] for k in state if k not in keys and k not in graph.aliases}
    bn_modules = {n for n, m in module.named_modules()
                  if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)}
    graph.counters = [f"{n}.num_batches_tracked" for n in sorted(bn_modules)
                      if f"{n}.num_batches_tracked" in state]
    graph.padding_rows = _padding_rows(module, keys, graph.aliases)
    return graph


def _padding_rows(module, keys: dict[str, str], aliases: dict[str, str]) -> dict[str, int]:
    """{initializer: padding_idx} of the module's nn.Embedding layers. torch's embedding
    backward adds nothing for lookups of padding_idx (Gemma, Phi-3, OPT, RoBERTa set it):
    without this the row drifted away from torch's at every step (loss 1e-2 apart in 8)."""
    import torch

    init_of = {key: init for init, key in keys.items()}
    rows = {}
    for name, layer in module.named_modules():
        if isinstance(layer, torch.nn.Embedding) and layer.padding_idx is not None:
            key = f"{name}.weight" if name else "weight"
            init = init_of.get(key) or init_of.get(aliases.get(key, ""))
            if init is not None:
                rows[init] = int(layer.padding_idx) % layer.num_embeddings
    return rows


def _aliases(module) -> dict[str, str]:
    """state_dict keys that share storage with an earlier key (tied weights)."""
    first: dict[int, str] = {}
    alias = {}
    for key, value in module.state_dict(keep_vars=True).items():
        ptr = value.data_ptr() if value.numel() else id(value)
        if ptr in first:
            alias[key] = first[ptr]
        else:
            first[ptr] = key
    return alias


def _refuse_renamed(proto, keys, missing, state, label) -> None:
    """A trainable parameter the exporter renamed would silently stay untrained: refuse."""
    unmapped = {tuple(i.dims) for i in proto.graph.initializer
                if i.name not in keys and i.data_type == onnx.TensorProto.FLOAT}
    for key in missing:
        if tuple(state[key].shape) in unmapped:
            raise AnychipError(f"{label}: parameter '{key}' was renamed by the ONNX exporter and "
                               f"cannot be mapped back to the state_dict; report the model.")


def from_onnx(proto: onnx.ModelProto, label: str) -> TrainGraph:
    """Train an ONNX model: every float initializer that is not a BatchNorm statistic (and not a
    scalar) is a parameter; state_dict keys are the initializer names."""
    graph = _train_mode(proto, label, trainable_names=None)
    graph.keys = {i.name: i.name for i in graph.proto.graph.initializer}
    graph.state_dict_keys = [i.name for i in graph.proto.graph.initializer]
    return graph


# ---------------------------------------------------------------------------------------------
# Train-mode edits on the ONNX graph


def _constant_value(name: str, consts: dict, inits: dict):
    if name in inits:
        return numpy_helper.to_array(inits[name])
    return consts.get(name)


def _constants(graph: onnx.GraphProto) -> dict[str, np.ndarray]:
    found = {}
    for node in graph.node:
        if node.op_type == "Constant":
            for attr in node.attribute:
                if attr.name == "value":
                    found[node.output[0]] = numpy_helper.to_array(attr.t)
    return found


def _edit_dropout(graph: onnx.GraphProto, label: str) -> list[float]:
    """Dropout p = 0 -> Identity; p > 0 -> x * marker input: the ratios, in order."""
    rates: list[float] = []
    consts, inits = _constants(graph), {i.name: i for i in graph.initializer}
    used = {name for node in graph.node for name in node.input} | {o.name for o in graph.output}
    for node in graph.node:
        if node.op_type != "Dropout":
            continue
        where = f"node '{node.name or node.output[0]}' (Dropout)"
        attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute}
        ratio = float(attrs.get("ratio", 0.5))   # an attribute before opset 12
        if len(node.input) > 1 and node.input[1]:
            value = _constant_value(node.input[1], consts, inits)
            if value is None:
                raise AnychipError(f"{label}: {where} has a computed ratio; training supports "
                                   f"only a constant dropout ratio.")
            ratio = float(value)
        training = True
        if len(node.input) > 2 and node.input[2]:
            value = _constant_value(node.input[2], consts, inits)
            training = True if value is None else bool(value)
        if not 0.0 <= ratio < 1.0:
            raise AnychipError(f"{label}: {where} has p={ratio:g}; dropout needs 0 <= p < 1.")
        if len(node.output) > 1 and node.output[1] in used:
            raise AnychipError(f"{label}: {where}: its mask output is used; not supported.")
        del node.output[1:]
        del node.attribute[:]
        del node.input[1:]
        if ratio > 0 and training:
            # x * marker, marker a scalar graph input the backbone replaces with the mask
            # (the importer turns any Dropout into an identity)
            marker = dropout_marker(len(rates))
            node.op_type = "Mul"
            node.input.append(marker)
            graph.input.append(helper.make_tensor_value_info(marker, onnx.TensorProto.FLOAT,
                                                             []))
            rates.append(ratio)
        else:
            node.op_type = "Identity"
    return rates


def dropout_marker(index: int) -> str:
    """The name of the scalar input that marks Dropout number `index` in the ONNX graph."""
    return f"anychip_dropout_{index}"


def _edit_batch_norm(graph: onnx.GraphProto, label: str) -> list[BatchNormSpec]:
    inits = {i.name for i in graph.initializer}
    specs = []
    for index, node in enumerate(graph.node):
        if node.op_type != "BatchNormalization":
            continue
        where = f"node '{node.name or node.output[0]}' (BatchNormalization)"
        if node.input[3] not in inits or node.input[4] not in inits:
            raise AnychipError(f"{label}: {where}: its running mean and variance must be "
                               f"initializers to be trained.")
        attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute}
        momentum = float(attrs.get("momentum", 0.9))
        epsilon = float(attrs.get("epsilon", 1e-5))
        del node.attribute[:]
        node.attribute.extend([helper.make_attribute("epsilon", epsilon),
                               helper.make_attribute("momentum", momentum),
                               helper.make_attribute("training_mode", 1)])
        while len(node.output) < 3:
            node.output.append("")
        for i in (1, 2):
            if not node.output[i]:
                node.output[i] = f"{node.output[0]}__running_{'mean' if i == 1 else 'var'}_{index}"
        specs.append(BatchNormSpec(node.name or node.output[0], node.input[3], node.input[4],
                                   round(1.0 - momentum, 7), epsilon))
    return specs


def _train_mode(proto: onnx.ModelProto, label: str, trainable_names: set[str] | None) -> TrainGraph:
    proto = _copy(proto)
    graph = proto.graph
    if len(graph.output) != 1:
        raise AnychipError(f"{label}: the model has {len(graph.output)} outputs; training needs "
                           f"exactly one (the prediction the loss compares with the labels).")
    has_bn = any(n.op_type == "BatchNormalization" for n in graph.node)
    for opset in proto.opset_import:
        if has_bn and opset.domain in ("", "ai.onnx") and opset.version < 14:
            raise AnychipError(f"{label}: opset {opset.version}: training BatchNormalization "
                               f"needs opset >= 14 (training_mode); re-export with opset {OPSET}.")
    dropouts = _edit_dropout(graph, label)
    specs = _edit_batch_norm(graph, label)
    del graph.value_info[:]  # re-inferred by frontend.prepare
    inits = {i.name: i for i in graph.initializer}
    for spec in specs:
        node = next(n for n in graph.node if spec.mean in n.input[3:4])
        for out, stat in zip(node.output[1:3], (spec.mean, spec.var)):
            graph.output.append(helper.make_tensor_value_info(
                out, inits[stat].data_type, list(inits[stat].dims)))
    stats = {n for s in specs for n in (s.mean, s.var)}
    values = {i.name: numpy_helper.to_array(i) for i in graph.initializer}
    params = [i.name for i in graph.initializer
              if i.name not in stats and values[i.name].dtype.kind == "f"
              and (trainable_names is None and values[i.name].size > 1
                   or trainable_names is not None and i.name in trainable_names)]
    states = [n for s in specs for n in (s.mean, s.var)]
    if not params:
        raise AnychipError(f"{label}: the model has no trainable parameters.")
    return TrainGraph(label, proto, params, states, specs, values, {}, [], dropouts=dropouts)


def _copy(proto: onnx.ModelProto) -> onnx.ModelProto:
    copied = onnx.ModelProto()
    copied.CopyFrom(proto)
    return copied
