"""The built-in zoo: every model builds, is checked, static and deterministic; the light
models' placeholder weights are gone and their softmax is neither one-hot nor uniform.

ONNX Runtime only: TVM compilation of the zoo is tested in tests/compiler/test_verify.py.
The first run builds into the per-user cache (about a minute for the nine light models).
"""

from __future__ import annotations

import hashlib

import numpy as np
import onnx
import onnxruntime as ort
import pytest

from anychip import models
from anychip.compiler.errors import AnychipError
from anychip.models import onnx_light

TORCH = ["mlp", "resnet18", "bert", "gpt2", "llama", "vit", "mobilenet_v3", "efficientnet"]
LIGHT = ["resnet50", "densenet121", "inception_v1", "inception_v2", "squeezenet", "shufflenet",
         "vgg19", "bvlc_alexnet", "zfnet512"]
CHEAP = ["mlp", "bert", "squeezenet", "shufflenet", "inception_v1"]  # rebuilt uncached in seconds


@pytest.fixture(scope="module", params=TORCH + LIGHT)
def zoo(request):
    """One built model per name; module scope groups the tests of one model together."""
    return models.build(request.param)


def _inputs(model: models.ZooModel, seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    inits = {t.name for t in model.proto.graph.initializer}
    feed = {}
    for vi in model.proto.graph.input:
        if vi.name in inits:
            continue
        shape = [d.dim_value for d in vi.type.tensor_type.shape.dim]
        dtype = onnx.helper.tensor_dtype_to_np_dtype(vi.type.tensor_type.elem_type)
        if np.issubdtype(dtype, np.integer):
            low, high = model.input_ranges[vi.name]
            feed[vi.name] = rng.integers(low, high, size=shape).astype(dtype)
        else:
            feed[vi.name] = rng.standard_normal(shape).astype(dtype)
    return feed


def _session(proto: onnx.ModelProto) -> ort.InferenceSession:
    options = ort.SessionOptions()
    options.log_severity_level = 3
    return ort.InferenceSession(proto.SerializeToString(), options,
                                providers=["CPUExecutionProvider"])


def _dims(vi: onnx.ValueInfoProto) -> list:
    return [d.dim_value if d.HasField("dim_value") else d.dim_param
            for d in vi.type.tensor_type.shape.dim]


def test_names_are_the_documented_zoo():
    assert models.names() == TORCH + LIGHT


def test_unknown_name_lists_the_zoo():
    with pytest.raises(AnychipError) as err:
        models.build("resnet1000")
    message = str(err.value)
    assert "\n" not in message and "zoo:resnet1000" in message
    assert all(name in message for name in TORCH + LIGHT)


def test_zoo_prefix_is_accepted():
    assert models.build("zoo:mlp").name == "mlp"


def test_checked_and_static(zoo):
    onnx.checker.check_model(zoo.proto, full_check=True)
    assert zoo.description and zoo.name in models.names()
    inits = {t.name for t in zoo.proto.graph.initializer}
    real = [vi for vi in zoo.proto.graph.input if vi.name not in inits]
    assert real, "a model needs at least one real input"
    for vi in list(real) + list(zoo.proto.graph.output):
        dims = _dims(vi)
        assert dims and all(isinstance(d, int) and d > 0 for d in dims), (vi.name, dims)
    assert not [t.name for t in zoo.proto.graph.initializer
                if t.data_location == onnx.TensorProto.EXTERNAL]


def _digest(proto) -> str:
    """sha256 of the serialized model: comparing MB-sized bytes directly makes pytest's
    failure diff run for many minutes."""
    return hashlib.sha256(proto.SerializeToString(deterministic=True)).hexdigest()


def test_same_bytes_when_built_again(zoo):
    assert _digest(models.build(zoo.name).proto) == _digest(zoo.proto)


@pytest.mark.parametrize("name", CHEAP)
def test_uncached_build_is_deterministic(name):
    assert _digest(models.build(name, use_cache=False).proto) == _digest(models.build(name).proto)


@pytest.mark.slow
@pytest.mark.parametrize("name", [n for n in TORCH + LIGHT if n not in CHEAP])
def test_uncached_build_is_deterministic_slow(name):
    assert _digest(models.build(name, use_cache=False).proto) == _digest(models.build(name).proto)


def test_input_ranges_name_integer_inputs_and_hold(zoo):
    """Every integer input has a [low, high) range, and the model runs at both ends of it."""
    graph = zoo.proto.graph
    inits = {t.name: t for t in graph.initializer}
    integer = {vi.name for vi in graph.input if vi.name not in inits
               and np.issubdtype(onnx.helper.tensor_dtype_to_np_dtype(
                   vi.type.tensor_type.elem_type), np.integer)}
    assert set(zoo.input_ranges) == integer
    for name, (low, high) in zoo.input_ranges.items():
        assert isinstance(low, int) and isinstance(high, int) and low < high
        # The range is the embedding table: a Gather reading this input indexes rows [0, high).
        tables = [inits[n.input[0]] for n in graph.node
                  if n.op_type == "Gather" and n.input[1] == name and n.input[0] in inits]
        assert tables and all(t.dims[0] == high for t in tables), name
    if integer:
        session = _session(zoo.proto)
        for pick in ("low", "high"):
            feed = _inputs(zoo)
            for name, (low, high) in zoo.input_ranges.items():
                feed[name] = np.full_like(feed[name], low if pick == "low" else high - 1)
            assert all(np.isfinite(o).all() for o in session.run(None, feed))


def test_outputs_are_finite_and_vary_with_the_input(zoo):
    session = _session(zoo.proto)
    first = session.run(None, _inputs(zoo, 0))
    second = session.run(None, _inputs(zoo, 1))
    for a, b in zip(first, second):
        assert np.isfinite(a).all() and np.abs(a).max() < 1e4
        assert np.abs(a - b).max() > 1e-3, "the output does not depend on the input"


def test_torch_models_match_their_module(zoo):
    """The exported ONNX computes what the torch module computes, at its example inputs."""
    if zoo.name not in TORCH:
        assert zoo.torch_module is None and zoo.example_inputs is None
        return
    import torch

    module = zoo.torch_module
    assert isinstance(module, torch.nn.Module) and not module.training
    inputs = [vi.name for vi in zoo.proto.graph.input]
    assert len(inputs) == len(zoo.example_inputs)
    feed = {n: t.numpy() for n, t in zip(inputs, zoo.example_inputs)}
    for n, t in zip(inputs, zoo.example_inputs):
        assert list(t.shape) == _dims(zoo.proto.graph.input[inputs.index(n)])
    with torch.no_grad():
        want = module(*zoo.example_inputs).numpy()
    got = _session(zoo.proto).run(None, feed)[0]
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("name", ["gpt2", "llama"])
def test_decoders_are_causal(name):
    """Changing token 64 leaves the logits of tokens 0..63 as they were and changes the rest
    (the -1e4 mask gives exactly zero attention to later tokens)."""
    model = models.build(name)
    session = _session(model.proto)
    feed = _inputs(model, 3)
    changed = {"input_ids": feed["input_ids"].copy()}
    changed["input_ids"][0, 64] = (changed["input_ids"][0, 64] + 1) % 8192
    before, after = session.run(None, feed)[0], session.run(None, changed)[0]
    np.testing.assert_allclose(after[:, :64], before[:, :64], rtol=0, atol=1e-6)
    assert np.abs(after[:, 64:] - before[:, 64:]).max(axis=-1).min() > 1e-3


def _light(name: str) -> models.ZooModel:
    return models.build(name)


@pytest.mark.parametrize("name", LIGHT)
def test_light_placeholders_are_replaced(name):
    original = onnx.load(onnx_light.source_path(name))
    placeholders = [n.output[0] for n in original.graph.node if n.op_type == "ConstantOfShape"]
    orig_inits = {t.name for t in original.graph.initializer}
    proto = _light(name).proto
    graph = proto.graph
    assert not [n for n in graph.node if n.op_type == "ConstantOfShape"]
    assert not [t.name for t in graph.initializer if t.name.endswith("__SHAPE")]
    inits = {t.name: t for t in graph.initializer}
    # The real inputs keep their names and shapes (e.g. 'gpu_0/data_0', 1x3x224x224).
    assert [(vi.name, _dims(vi)) for vi in graph.input] == \
        [(vi.name, _dims(vi)) for vi in original.graph.input if vi.name not in orig_inits]
    # Every placeholder is now a seeded random initializer, not a constant.
    assert placeholders and set(placeholders) <= set(inits)
    for name_ in placeholders:
        values = onnx.numpy_helper.to_array(inits[name_])
        assert values.dtype == np.float32 and np.isfinite(values).all()
        assert values.size == 1 or values.std() > 0, f"{name_} is constant"
    # The kept initializers (reshape targets, real BN statistics) are the original tensors.
    for t in original.graph.initializer:
        if not t.name.endswith("__SHAPE") and t.name in inits:
            assert inits[t.name].SerializeToString() == t.SerializeToString(), t.name


@pytest.mark.parametrize("name", LIGHT)
def test_light_softmax_is_neither_one_hot_nor_uniform(name):
    """Under a standard-normal input the top class has between 1% and 90% probability."""
    model = _light(name)
    out = _session(model.proto).run(None, _inputs(model, 7))[0].reshape(1, -1)
    if name == "densenet121":              # ends in logits (1x1000x1x1): apply the softmax
        e = np.exp(out - out.max())
        out = e / e.sum()
    assert abs(out.sum() - 1.0) < 1e-4
    assert 0.01 < out.max() < 0.9, f"{name}: top probability {out.max():.4f}"


def test_a_batch_whose_inputs_exceed_the_host_is_refused_before_any_export():
    """`bench --batch` exports a torch-built zoo model again at the batch; a batch whose
    repeated example inputs alone pass the activation limit is one line, not gigabytes."""
    with pytest.raises(AnychipError, match=r"zoo:mlp at batch 1000000000000: .*GiB.*smaller"):
        models.build("mlp", use_cache=False, batch=10**12)
