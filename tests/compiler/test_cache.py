"""The compile cache (compiler/cache.py, docs/security.md): reuse, corruption, concurrency,
unsafe or unwritable folders, eviction. Every test uses its own cache folder."""

from __future__ import annotations

import errno
import json
import os
import subprocess
import sys
import time
import warnings

import numpy as np
import pytest

import anychip
from anychip.compiler import cache as cache_mod
from anychip.compiler.backend import CompileOptions
from anychip.compiler.cache import CacheWarning, CompileCache, cache_key, key_parts
from anychip.compiler.frontend import load_model

from ..conftest import make_linear_model


@pytest.fixture
def cache_dir(tmp_path, monkeypatch):
    root = tmp_path / "cache"
    monkeypatch.setenv("ANYCHIP_CACHE_DIR", str(root))
    monkeypatch.delenv("ANYCHIP_NO_CACHE", raising=False)
    cache_mod._WARNED.clear()
    return root


@pytest.fixture
def model_path(tmp_path):
    import onnx

    path = tmp_path / "linear.onnx"
    onnx.save(make_linear_model(), str(path))
    return path


def _entries(root):
    return sorted(p for p in (root / "entries").glob("*/*") if p.is_dir())


def _count_builds(monkeypatch):
    from anychip.compiler.registry import backends

    backend = backends()["cpu"]
    calls = []
    original = type(backend).build

    def counting(self, mod, profile, options, ctx=None):
        calls.append(1)
        return original(self, mod, profile, options, ctx)

    monkeypatch.setattr(type(backend), "build", counting)
    return calls


def test_second_compile_is_a_hit_without_building(cache_dir, model_path, monkeypatch):
    builds = _count_builds(monkeypatch)
    first = anychip.compile(model_path, target="cpu")
    second = anychip.compile(model_path, target="cpu")
    assert len(builds) == 1
    assert first.path == second.path and first.path.parent.parent == cache_dir / "entries"
    assert len(_entries(cache_dir)) == 1
    x = np.ones((2, 8), np.float32)
    np.testing.assert_array_equal(first.run(x)["y"], second.run(x)["y"])
    assert (cache_dir.stat().st_mode & 0o777) == 0o700


def test_key_changes_with_what_shapes_the_artifact(model_path):
    source = load_model(model_path)
    base = cache_key(key_parts(source, "cpu", CompileOptions()))
    assert base == cache_key(key_parts(load_model(model_path), "cpu", CompileOptions()))
    assert base != cache_key(key_parts(source, "cpu", CompileOptions(extra={"dispatch": False})))
    other = load_model(make_linear_model(out_name="out"))
    assert base != cache_key(key_parts(other, "cpu", CompileOptions()))
    parts = key_parts(source, "cpu", CompileOptions())
    assert parts["backend"]["mcpu"] and parts["backend"]["library"].startswith("torch-cpu")
    assert parts["versions"]["code"] and parts["versions"]["tvm"]


@pytest.mark.parametrize("damage", ["flip_library_byte", "truncate_library", "bad_manifest"])
def test_corrupted_entry_is_quarantined_and_rebuilt(cache_dir, model_path, damage, monkeypatch):
    first = anychip.compile(model_path, target="cpu")
    x = np.ones((2, 8), np.float32)
    expected = first.run(x)["y"]
    lib, manifest = first.path / "lib.so", first.path / "manifest.json"
    # the damage lands as a new file: this process has lib.so mapped, and rewriting a mapped
    # library in place would crash the test itself
    if damage == "flip_library_byte":
        data = bytearray(lib.read_bytes())
        data[len(data) // 2] ^= 0xFF
        _replace(lib, bytes(data))
    elif damage == "truncate_library":
        _replace(lib, lib.read_bytes()[:100])
    else:
        _replace(manifest, b"{not json")
    builds = _count_builds(monkeypatch)
    with pytest.warns(CacheWarning, match="quarantined"):
        again = anychip.compile(model_path, target="cpu")
    assert len(builds) == 1
    assert len(list((cache_dir / "quarantine").glob("*.why"))) == 1
    np.testing.assert_array_equal(again.run(x)["y"], expected)


def _replace(path, data: bytes) -> None:
    tmp = path.with_name(path.name + ".new")
    tmp.write_bytes(data)
    os.replace(tmp, path)


def test_concurrent_compiles_of_one_key_all_succeed(cache_dir, model_path, tmp_path):
    script = ("import sys, numpy as np, anychip\n"
              "a = anychip.compile(sys.argv[1], target='cpu')\n"
              "np.save(sys.argv[2], a.run(np.ones((2, 8), np.float32))['y'])\n")
    env = dict(os.environ, ANYCHIP_CACHE_DIR=str(cache_dir))
    procs = [subprocess.Popen([sys.executable, "-c", script, str(model_path),
                               str(tmp_path / f"out{i}.npy")], env=env) for i in range(3)]
    assert [p.wait(timeout=600) for p in procs] == [0, 0, 0]
    outs = [np.load(tmp_path / f"out{i}.npy") for i in range(3)]
    for out in outs[1:]:
        np.testing.assert_array_equal(out, outs[0])
    assert len(_entries(cache_dir)) == 1
    assert not list(cache_dir.glob(".tmp-*"))


def test_world_writable_cache_is_refused(cache_dir, model_path):
    cache_dir.mkdir(mode=0o700)
    cache_dir.chmod(0o777)
    with pytest.warns(CacheWarning, match="writable by group or others"):
        art = anychip.compile(model_path, target="cpu")
    assert not (cache_dir / "entries").exists()
    assert art.run(np.ones((2, 8), np.float32))["y"].shape == (2, 4)


@pytest.mark.skipif(not hasattr(os, "geteuid") or os.geteuid() != 0,
                    reason="giving the folder to another user needs root")
def test_cache_owned_by_another_user_is_refused(cache_dir):
    cache_dir.mkdir(mode=0o700)
    os.chown(cache_dir, 12345, -1)
    with pytest.warns(CacheWarning, match="owned by uid 12345"):
        assert CompileCache.open() is None


def test_unwritable_cache_compiles_in_memory(cache_dir, model_path, monkeypatch):
    def full_disk(src, dst, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(cache_mod.shutil, "copytree", full_disk)
    with pytest.warns(CacheWarning, match="No space left on device"):
        art = anychip.compile(model_path, target="cpu")
    assert art.run(np.ones((2, 8), np.float32))["y"].shape == (2, 4)
    assert not _entries(cache_dir) and not list(cache_dir.glob(".tmp-*"))


def test_no_cache_env_disables_it(cache_dir, model_path, monkeypatch):
    monkeypatch.setenv("ANYCHIP_NO_CACHE", "1")
    with warnings.catch_warnings():
        warnings.simplefilter("error", CacheWarning)
        anychip.compile(model_path, target="cpu")
    assert not cache_dir.exists()


def test_stale_temp_folders_are_cleaned_and_never_read(cache_dir):
    cache_dir.mkdir(mode=0o700)
    stale = cache_dir / ".tmp-999-dead"
    stale.mkdir()
    (stale / "lib.so").write_bytes(b"partial")
    os.utime(stale, (0, 0))
    fresh = cache_dir / ".tmp-1000-live"
    fresh.mkdir()
    CompileCache(cache_dir).clean_stale()
    assert not stale.exists() and fresh.exists()


def test_alias_finds_the_entry_before_the_frontend(cache_dir, model_path, monkeypatch):
    anychip.compile(model_path, target="cpu")
    from anychip.compiler import driver

    def no_frontend(*args, **kwargs):
        raise AssertionError("the frontend ran on a cache hit")

    with monkeypatch.context() as patched:
        patched.setattr(driver, "load_model", no_frontend)
        art = anychip.compile(model_path, target="cpu")
    assert art.path.parent.parent == cache_dir / "entries"
    alias = next((cache_dir / "aliases").iterdir())
    alias.write_text("not a key")
    assert anychip.compile(model_path, target="cpu").path == art.path   # bad alias: a miss
    assert len(json.loads(alias.read_text())["key"]) == 64               # and rewritten


def test_swapped_alias_files_do_not_hand_out_another_models_artifact(cache_dir, tmp_path):
    """Issue 19 item 6: two alias files swapped made model A's compile return model B's."""
    import onnx

    paths = []
    for name, out in (("a", "ya"), ("b", "yb")):
        path = tmp_path / f"{name}.onnx"
        onnx.save(make_linear_model(out_name=out), str(path))
        paths.append(path)
    first = [anychip.compile(p, target="cpu") for p in paths]
    aliases = sorted((cache_dir / "aliases").iterdir())
    assert len(aliases) == 2
    texts = [a.read_bytes() for a in aliases]
    aliases[0].write_bytes(texts[1])
    aliases[1].write_bytes(texts[0])
    again = [anychip.compile(p, target="cpu") for p in paths]
    assert [a.outputs[0].name for a in again] == ["ya", "yb"]
    assert [a.path for a in again] == [a.path for a in first]


def test_eviction_removes_least_recently_used_entries_only(cache_dir):
    cache = CompileCache(cache_dir)
    now = time.time()
    for i, age in enumerate([7200, 3600, 60]):   # seconds since last use
        key = f"{i:02d}" + "0" * 62
        path = cache.store(key, lambda tmp: (tmp / "lib.so").write_bytes(b"x" * 1000))
        os.utime(path, (now - age, now - age))
    removed = cache.evict(max_bytes=1500)
    assert [p.name[:2] for p in removed] == ["00", "01"]
    # the newest entry stays although the cache is still over budget: it was used recently
    assert [p.name[:2] for p in _entries(cache_dir)] == ["02"]
    assert cache.evict(max_bytes=0) == []
