"""The npu backend's passes over the ONNX model in one compile: shape inference never sees
the weights, and runs once per stage that rewrites the model (frontend, fusion, precision,
ATC's legalisation), not again in build."""

from __future__ import annotations

import onnx

import anychip

from .conftest import matmul_softmax_model


def test_an_ascend_compile_infers_shapes_without_the_weights(monkeypatch):
    model = matmul_softmax_model(m=8, k=256, n=256)        # a 256 KiB weight
    weights = model.ByteSize()
    seen: list[int] = []
    real = onnx.shape_inference.infer_shapes

    def counting(m, *args, **kwargs):   # onnx's own inference, sizes of what it is given
        seen.append(len(m) if isinstance(m, bytes) else m.ByteSize())
        return real(m, *args, **kwargs)

    monkeypatch.setattr(onnx.shape_inference, "infer_shapes", counting)
    monkeypatch.setenv("ANYCHIP_NO_CACHE", "1")           # a compile, not a cache hit
    art = anychip.compile(model, target="ascend-910b")
    assert art.report["placement"]["nodes"]
    assert 1 <= len(seen) <= 4, seen   # frontend, fusion, precision, ATC: once each
    assert max(seen) < weights // 50, (seen, weights)
