"""The built-in model zoo: `zoo:NAME` anywhere a model is accepted.

    anychip.models.names()          -> ['mlp', 'resnet18', 'bert', 'gpt2', 'llama', 'vit', ...]
    anychip.models.build("bert")    -> ZooModel(name, proto, description, input_ranges, ...)

Everything is built here from code and the onnx package's own test files: no downloads. Torch
models (mlp, resnet18, the depthwise mobilenet_v3 and efficientnet, and the transformers bert,
gpt2, llama and vit) are defined in this
package from configurations with seeded random weights and exported with the dynamo
exporter; the others are the real architectures that onnx ships under
onnx/backend/test/data/light, with their constant placeholder weights replaced by seeded random
ones (models/onnx_light.py). Every model has static shapes, passes the full ONNX checker, and
comes out as the same bytes on every build; built bytes are cached per user (models/cache.py).
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import onnx

from anychip.compiler.errors import AnychipError

from . import cache, calibration, onnx_light

_TORCH = {"mlp": "mlp", "resnet18": "resnet", "bert": "bert", "gpt2": "gpt2", "llama": "llama",
          "vit": "vit", "mobilenet_v3": "mobilenet_v3",
          "efficientnet": "efficientnet"}              # zoo name -> module here


@dataclass
class ZooModel:
    """One built zoo model.

    `input_ranges` gives [low, high) for integer inputs (token ids). For torch models,
    `torch_module` (eval mode, built on first access: resnet18's batch-norm statistics take
    forward passes) and `example_inputs` are what `proto` was exported from; both are None for
    the ONNX-file models.
    """

    name: str
    proto: onnx.ModelProto
    description: str
    input_ranges: dict[str, tuple[int, int]] = field(default_factory=dict)
    example_inputs: tuple | None = None
    module_factory: Callable[[], Any] | None = field(default=None, repr=False)
    _module: Any = field(default=None, init=False, repr=False, compare=False)

    @property
    def torch_module(self):
        if self._module is None and self.module_factory is not None:
            self._module = self.module_factory()
        return self._module


def names() -> list[str]:
    return list(_TORCH) + list(onnx_light.LIGHT)


def _versions(*libs: str) -> dict[str, str]:
    return {lib: importlib.import_module(lib).__version__ for lib in libs}


def _build_torch(name: str, use_cache: bool, batch: int | None = None) -> ZooModel:
    from anychip.compiler import torch_export

    spec = importlib.import_module(f"{__name__}.{_TORCH[name]}")
    examples = spec.example_inputs()
    if batch is not None:   # the same rows repeated: a shape to time, the values do not matter
        from anychip.compiler.limits import MAX_ACTIVATION_BYTES

        size = sum(t.element_size() * t.numel() // max(t.shape[0], 1) for t in examples) * batch
        if size > MAX_ACTIVATION_BYTES:
            raise AnychipError(f"zoo:{name} at batch {batch}: its inputs alone would take "
                               f"{size / 2**30:.1f} GiB, over this host's limit of "
                               f"{MAX_ACTIVATION_BYTES / 2**30:.1f} GiB "
                               f"(ANYCHIP_MAX_ACTIVATION_BYTES); use a smaller batch.")
        examples = tuple(t.repeat(batch, *[1] * (t.dim() - 1)) for t in examples)
    zoo = ZooModel(name, None, spec.DESCRIPTION, dict(spec.INPUT_RANGES), examples,
                   spec.build_module)

    def export() -> onnx.ModelProto:
        proto = torch_export.export_torch(zoo.torch_module, zoo.example_inputs,
                                          spec.INPUT_NAMES, spec.OUTPUT_NAMES)
        onnx.checker.check_model(proto, full_check=True)
        return proto

    # the shared CNN initialisation (a path: importing it would import torch here)
    sources = [spec.__file__, torch_export.__file__, str(Path(__file__).with_name("cnn_init.py"))]
    key = name if batch is None else f"{name}.batch{batch}"   # not matched by `name-*`
    zoo.proto = (cache.cached_model(key, sources, _versions("torch", "onnx", "onnxscript"),
                                    export) if use_cache else export())
    return zoo


def _build_light(name: str, use_cache: bool) -> ZooModel:
    def build() -> onnx.ModelProto:
        return onnx_light.build_light(name)

    sources = [onnx_light.source_path(name), onnx_light.__file__, calibration.__file__]
    versions = _versions("onnx", "numpy", "onnxruntime")
    proto = cache.cached_model(name, sources, versions, build) if use_cache else build()
    return ZooModel(name, proto, onnx_light.DESCRIPTIONS[name])


def build(name: str, use_cache: bool = True, batch: int | None = None) -> ZooModel:
    """Build zoo model `name` (a cache hit returns the stored bytes, parsed).

    `batch`: a torch-built model exported again with its example inputs' leading dim `batch`
    (their ONNX graphs bake the export's batch into reshapes, so a --shape override of the
    batch-1 file cannot work); the ONNX-file models ignore it (their batch comes from a shape
    override)."""
    if name.startswith("zoo:"):
        name = name[4:]
    if name in _TORCH:
        return _build_torch(name, use_cache, batch)
    if name in onnx_light.LIGHT:
        return _build_light(name, use_cache)
    raise AnychipError(f"zoo:{name}: no such built-in model; the zoo has "
                       f"{', '.join(names())} (see 'anychip zoo').")
