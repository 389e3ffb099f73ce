"""The per-user model cache: location and mode, atomic entries, corrupt entries rebuilt."""

from __future__ import annotations

import os
import stat

import onnx
import pytest
from onnx import TensorProto, helper

from anychip import models
from anychip.models import cache


def _tiny() -> onnx.ModelProto:
    node = helper.make_node("Relu", ["x"], ["y"])
    graph = helper.make_graph([node], "tiny",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2])])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


@pytest.fixture
def cache_root(tmp_path, monkeypatch):
    root = tmp_path / "anychip-cache"
    monkeypatch.setenv(cache.ENV, str(root))
    monkeypatch.delenv(cache.OFF, raising=False)
    return root


@pytest.fixture
def source(tmp_path):
    path = tmp_path / "builder.py"
    path.write_text("# version 1\n")
    return path


def _counting_builder():
    calls = []

    def build():
        calls.append(1)
        return _tiny()

    return build, calls


def test_first_build_stores_then_reads(cache_root, source):
    build, calls = _counting_builder()
    first = cache.cached_model("tiny", [source], {"onnx": "1"}, build)
    second = cache.cached_model("tiny", [source], {"onnx": "1"}, build)
    assert len(calls) == 1
    assert first.SerializeToString() == second.SerializeToString()
    assert stat.S_IMODE(cache_root.stat().st_mode) == 0o700
    assert stat.S_IMODE((cache_root / "zoo").stat().st_mode) == 0o700
    entries = list((cache_root / "zoo").iterdir())
    assert len(entries) == 1 and entries[0].name.startswith("tiny-")
    assert not [p for p in (cache_root / "zoo").iterdir() if p.name.endswith(".tmp")]


def test_key_follows_sources_versions_and_name(source):
    key = cache.cache_key("tiny", [source], {"torch": "2.13.0"})
    assert cache.cache_key("tiny", [source], {"torch": "2.14.0"}) != key
    assert cache.cache_key("other", [source], {"torch": "2.13.0"}) != key
    source.write_text("# version 2\n")
    assert cache.cache_key("tiny", [source], {"torch": "2.13.0"}) != key


def test_changed_source_rebuilds_and_replaces_the_old_entry(cache_root, source):
    build, calls = _counting_builder()
    cache.cached_model("tiny", [source], {}, build)
    source.write_text("# version 2\n")
    cache.cached_model("tiny", [source], {}, build)
    assert len(calls) == 2
    assert len(list((cache_root / "zoo").glob("tiny-*.onnx"))) == 1


@pytest.mark.parametrize("damage", ["garbage", "empty", "truncated"])
def test_corrupt_entry_is_rebuilt(cache_root, source, damage):
    build, calls = _counting_builder()
    cache.cached_model("tiny", [source], {}, build)
    (entry,) = (cache_root / "zoo").glob("tiny-*.onnx")
    data = entry.read_bytes()
    entry.write_bytes({"garbage": b"\x08\xff\xff not a protobuf",
                       "empty": b"", "truncated": data[: len(data) // 2]}[damage])
    proto = cache.cached_model("tiny", [source], {}, build)
    assert len(calls) == 2
    assert proto.graph.node[0].op_type == "Relu"
    assert onnx.load_from_string(entry.read_bytes()).graph.node[0].op_type == "Relu"


@pytest.mark.skipif(os.name != "posix", reason="POSIX permissions")
def test_folder_open_to_others_is_not_used(cache_root, source):
    cache_root.mkdir(mode=0o700)
    os.chmod(cache_root, 0o777)
    build, calls = _counting_builder()
    with pytest.warns(UserWarning, match="writable by others"):
        cache.cached_model("tiny", [source], {}, build)
    assert not list(cache_root.iterdir())


def test_no_cache_switch(cache_root, source, monkeypatch):
    monkeypatch.setenv(cache.OFF, "1")
    build, calls = _counting_builder()
    cache.cached_model("tiny", [source], {}, build)
    cache.cached_model("tiny", [source], {}, build)
    assert len(calls) == 2 and not cache_root.exists()


def test_default_location_is_under_home(monkeypatch, tmp_path):
    monkeypatch.delenv(cache.ENV, raising=False)
    monkeypatch.delenv(cache.OFF, raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))
    assert cache.cache_dir() == tmp_path / ".cache" / "anychip" / "zoo"


def test_zoo_uses_the_cache(cache_root):
    models.build("mlp")
    (entry,) = (cache_root / "zoo").glob("mlp-*.onnx")
    assert onnx.load_from_string(entry.read_bytes()).graph.output[0].name == "logits"
