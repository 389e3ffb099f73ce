"""`.npz` I/O (issue 19, items 1, 5, 8): bfloat16/float8 inputs and outputs through
`run --inputs/-o` with the dtype in the key, zip bombs refused before inflating, zero-size
outputs in the CLI summary."""

from __future__ import annotations

import zipfile

import ml_dtypes
import numpy as np
import onnx
import pytest
from anychip.compiler.cli.main import main
from anychip.compiler.errors import AnychipError
from anychip.compiler.inputs import encode_npz, load_npz, save_npz
from onnx import TensorProto, helper


def _model(elem: int) -> onnx.ModelProto:
    """y = cast_back(float(x) * 2); empty = the first 0 rows of float(x)."""
    two = helper.make_tensor("two", TensorProto.FLOAT, [], [2.0])
    zero = helper.make_tensor("zero", TensorProto.INT64, [1], [0])
    nodes = [helper.make_node("Cast", ["x"], ["xf"], to=TensorProto.FLOAT),
             helper.make_node("Mul", ["xf", "two"], ["m"]),
             helper.make_node("Cast", ["m"], ["y"], to=elem),
             helper.make_node("Slice", ["xf", "zero", "zero", "zero"], ["empty"])]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", elem, [2, 3])],
                              [helper.make_tensor_value_info("y", elem, [2, 3]),
                               helper.make_tensor_value_info("empty", TensorProto.FLOAT,
                                                             [0, 3])], [two, zero])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 21)])


@pytest.mark.parametrize("elem,dtype", [(TensorProto.BFLOAT16, ml_dtypes.bfloat16),
                                        (TensorProto.FLOAT8E4M3FN, ml_dtypes.float8_e4m3fn)])
def test_low_precision_inputs_and_outputs_round_trip_through_the_cli(elem, dtype, tmp_path,
                                                                     capsys):
    model = tmp_path / "m.onnx"
    onnx.save(_model(elem), str(model))
    x = np.array([[1.5, -2.0, 0.25], [3.0, np.nan, -0.0]], np.float32).astype(dtype)
    save_npz(tmp_path / "in.npz", {"x": x})
    with np.load(tmp_path / "in.npz") as raw:       # plain numpy sees the documented encoding
        assert raw.files == [f"x::{np.dtype(dtype).name}"]
        assert raw[raw.files[0]].dtype == np.dtype(f"uint{8 * np.dtype(dtype).itemsize}")
    art = tmp_path / "m.anychip"
    assert main(["compile", str(model), "-o", str(art)]) == 0
    assert main(["run", str(art), "--inputs", str(tmp_path / "in.npz"),
                 "-o", str(tmp_path / "out.npz")]) == 0
    out = capsys.readouterr().out
    assert "empty: float32[0, 3] (empty)" in out and "1 NaN" in out
    got = load_npz(tmp_path / "out.npz")
    assert got["y"].dtype == np.dtype(dtype) and got["empty"].shape == (0, 3)
    # ONNX Runtime takes no bfloat16 numpy arrays; the spec's Cast rounds to nearest even
    # (and saturates float8), which ml_dtypes' astype does for these in-range values
    want = (x.astype(np.float32) * 2).astype(dtype)
    np.testing.assert_array_equal(got["y"].astype(np.float32), want.astype(np.float32))


def test_raw_void_arrays_get_a_hint(tmp_path):
    np.savez(tmp_path / "v.npz", x=np.zeros(3, ml_dtypes.bfloat16))
    with pytest.raises(AnychipError, match=r"x::bfloat16"):
        load_npz(tmp_path / "v.npz")


def test_zip_bomb_is_refused_before_inflating(tmp_path, monkeypatch):
    from anychip.compiler import limits

    monkeypatch.setattr(limits, "MAX_NPZ_MEMBER_BYTES", 64 << 20)
    path = tmp_path / "bomb.npz"
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as archive, \
            archive.open("x.npy", "w", force_zip64=True) as member:
        np.lib.format.write_array_header_1_0(
            member, {"descr": "<f4", "fortran_order": False, "shape": (1 << 25,)})
        chunk = bytes(1 << 20)
        for _ in range(128):
            member.write(chunk)
    assert path.stat().st_size < 1 << 20          # 128 MiB of zeros deflate to ~130 KiB
    with pytest.raises(AnychipError, match="zip bomb"):
        load_npz(path)


def test_encoding_keeps_ordinary_arrays_untouched():
    members = encode_npz({"a": np.ones(2, np.float32), "b": np.zeros(2, ml_dtypes.float8_e5m2)})
    assert set(members) == {"a", "b::float8_e5m2"} and members["a"].dtype == np.float32
