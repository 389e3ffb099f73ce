"""Model inputs: seeded random generation, validation against the model's specs, .npz I/O.

Wrong names, shapes or dtypes are user errors (exit 2) caught here, before any kernel runs:
a compiled kernel trusts its shapes and would read out of bounds.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np

from .atomic import write_file
from .errors import AnychipError
from .frontend import TensorSpec


def random_inputs(specs: Sequence[TensorSpec], seed: int = 0) -> dict[str, np.ndarray]:
    """Seeded inputs keyed by the user's names: N(0,1) floats, integers in the declared range."""
    rng = np.random.default_rng(seed)
    feed = {}
    for spec in specs:
        shape = tuple(int(d) for d in spec.shape)
        dtype = np.dtype(spec.dtype)
        if dtype == np.bool_:
            value = rng.random(shape) < 0.5
        elif np.issubdtype(dtype, np.integer):
            low, high = spec.value_range or (0, 10)
            value = rng.integers(int(low), int(high), size=shape).astype(dtype)
        else:
            value = rng.standard_normal(shape).astype(dtype)
        feed[spec.name] = np.asarray(value)
    return feed


def _describe(dtype, shape) -> str:
    return f"{np.dtype(dtype).name}[{'x'.join(str(d) for d in shape)}]"


def order_inputs(specs: Sequence[TensorSpec], feed, label: str) -> list[np.ndarray]:
    """Inputs in graph order; `feed` is a dict (user's or safe names), a sequence, or one array."""
    if isinstance(feed, np.ndarray) or not isinstance(feed, (Mapping, Sequence)):
        feed = [feed]
    if isinstance(feed, Mapping):
        by_safe = {s.safe_name: s.name for s in specs}
        named = {by_safe.get(k, k): v for k, v in feed.items()}
        unknown = sorted(set(named) - {s.name for s in specs})
        if unknown:
            raise AnychipError(f"{label}: unknown input '{unknown[0]}'; the inputs are "
                               f"{', '.join(s.name for s in specs)}.")
        missing = [s.name for s in specs if s.name not in named]
        if missing:
            raise AnychipError(f"{label}: missing input '{missing[0]}'; give all of "
                               f"{', '.join(s.name for s in specs)}.")
        values = [named[s.name] for s in specs]
    else:
        values = list(feed)
        if len(values) != len(specs):
            raise AnychipError(f"{label}: got {len(values)} inputs, the model takes {len(specs)} "
                               f"({', '.join(s.name for s in specs)}).")
    ordered = []
    for spec, value in zip(specs, values):
        arr = _to_numpy(value)
        want = tuple(int(d) for d in spec.shape)
        if arr.dtype != np.dtype(spec.dtype) or arr.shape != want:
            raise AnychipError(f"{label}: input '{spec.name}' must be "
                               f"{_describe(spec.dtype, want)}, got {_describe(arr.dtype, arr.shape)}; "
                               f"cast or reshape it (or recompile with --shape).")
        ordered.append(np.asarray(arr, order="C"))   # ascontiguousarray makes 0-d arrays 1-d
    return ordered


def _to_numpy(value) -> np.ndarray:
    if hasattr(value, "detach") and hasattr(value, "cpu"):
        return value.detach().cpu().numpy()
    return np.asarray(value)


def load_npz(path: str | Path) -> dict[str, np.ndarray]:
    path = Path(path)
    if not path.is_file():
        raise AnychipError(f"{path}: no such file; give an .npz keyed by the model's input names.")
    try:
        with np.load(path, allow_pickle=False) as data:
            return {k: data[k] for k in data.files}
    except Exception as exc:
        raise AnychipError(f"{path}: not a readable .npz file ({str(exc)[:120]}); write it with "
                           f"numpy.savez.") from exc


def save_npz(path: str | Path, arrays: Mapping[str, np.ndarray], force: bool = False) -> Path:
    def write(tmp: Path) -> None:
        with open(tmp, "wb") as fh:
            np.savez(fh, **dict(arrays))

    return write_file(path, write, force=force)
