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
from .tensor_spec import TensorSpec


def concrete_shape(spec: TensorSpec, sizes: Mapping[str, int] | None) -> tuple[int, ...]:
    """The spec's shape with its symbolic dims evaluated at `sizes` ({symbol: value})."""
    from .importer_fixes.symbolic import evaluate

    shape = []
    for dim in spec.shape:
        value = evaluate(dim, dict(sizes or {}))
        if value is None:
            raise AnychipError(f"input '{spec.name}' has the symbolic dim '{dim}': give its "
                               f"value (--shape or --dim), or pass inputs.")
        shape.append(int(value))
    return tuple(shape)


def random_inputs(specs: Sequence[TensorSpec], seed: int = 0,
                  sizes: Mapping[str, int] | None = None) -> dict[str, np.ndarray]:
    """Seeded inputs keyed by the user's names: N(0,1) floats, integers in the declared range.
    Symbolic dims take their value from `sizes` ({symbol: value})."""
    rng = np.random.default_rng(seed)
    feed = {}
    for spec in specs:
        shape = concrete_shape(spec, sizes)
        dtype = np.dtype(spec.dtype)
        if dtype == np.bool_:
            value = rng.random(shape) < 0.5
        elif np.issubdtype(dtype, np.integer):
            low, high = spec.value_range or (0, 10)
            value = rng.integers(int(low), int(high), size=shape).astype(dtype)
            if (int(low), int(high)) == (0, 2) and value.ndim >= 1 and value.shape[-1] > 0:
                value[..., 0] = 1   # a 0/1 mask: no row masked entirely (softmax of nothing)
        else:
            value = rng.standard_normal(shape).astype(dtype)
        feed[spec.name] = np.asarray(value)
    return feed


_ID_WORDS = ("ids", "id", "token", "tokens", "input_ids", "position", "positions", "index",
             "indices", "labels")
_MASK_WORDS = ("mask",)


def integer_input_ranges(model, specs: Sequence[TensorSpec]) -> dict[str, tuple[int, int]]:
    """[low, high) for integer inputs that random inputs must respect to mean anything:
    an input that indexes an embedding (Gather on a constant table, through Casts) covers the
    table's rows, the whole vocabulary; a mask-like name gets 0/1. Why: ids drawn from [0, 10)
    exercise 10 rows of a 30k-row embedding, and a 'mask' of 0..9 is not a mask."""
    inits = {t.name: tuple(t.dims) for t in model.graph.initializer}
    consts = {n.output[0]: tuple(n.attribute[0].t.dims) for n in model.graph.node
              if n.op_type == "Constant" and n.attribute and n.attribute[0].name == "value"}
    tables = {**inits, **consts}
    ranges: dict[str, tuple[int, int]] = {}
    for spec in specs:
        if not np.issubdtype(np.dtype(spec.dtype), np.integer):
            continue
        words = spec.name.lower().replace(".", "_").replace("/", "_").split("_")
        if any(w in words or w in spec.name.lower() for w in _MASK_WORDS):
            ranges[spec.name] = (0, 2)
            continue
        names, rows = {spec.name}, None
        for node in model.graph.node:   # graph order: Casts before their consumers
            if node.op_type in ("Cast", "Identity", "Reshape", "Unsqueeze", "Squeeze") and \
                    node.input and node.input[0] in names:
                names.add(node.output[0])
            elif node.op_type == "Gather" and len(node.input) > 1 and node.input[1] in names \
                    and node.input[0] in tables:
                axis = next((a.i for a in node.attribute if a.name == "axis"), 0)
                dims = tables[node.input[0]]
                if dims:
                    rows = min(rows or dims[axis], dims[axis])
        if rows:
            ranges[spec.name] = (0, int(rows))
        elif any(w in words for w in _ID_WORDS):
            ranges[spec.name] = (0, 10)
    return ranges


def _describe(dtype, shape) -> str:
    return f"{np.dtype(dtype).name}[{'x'.join(str(d) for d in shape)}]"


def order_inputs(specs: Sequence[TensorSpec], feed, label: str,
                 symbols: Mapping[str, tuple[int, int]] | None = None) -> list[np.ndarray]:
    """Inputs in graph order; `feed` is a dict (user's or safe names), a sequence, or one array.
    Symbolic dims are bound from the arrays and checked against `symbols` ({name: (lo, hi)}):
    outside the bounds, or two inputs disagreeing on one symbol, is one line (exit 2)."""
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
    arrays = [_to_numpy(v) for v in values]
    sizes = bind_symbols(specs, arrays, label, symbols or {})
    for spec, arr in zip(specs, arrays):
        want = concrete_shape(spec, sizes)
        if arr.dtype != np.dtype(spec.dtype) or arr.shape != want:
            raise AnychipError(f"{label}: input '{spec.name}' must be "
                               f"{_describe(spec.dtype, want)}, got {_describe(arr.dtype, arr.shape)}; "
                               f"cast or reshape it (or recompile with --shape).")
        ordered.append(np.asarray(arr, order="C"))   # ascontiguousarray makes 0-d arrays 1-d
    return ordered


def static_signature(specs: Sequence[TensorSpec]) -> tuple | None:
    """((name, numpy dtype, shape), ...) of inputs whose shapes are all static and whose
    dtypes numpy holds natively, for `order_static`; None otherwise."""
    try:
        if all(s.is_static for s in specs):
            return tuple((s.name, np.dtype(s.dtype), tuple(s.shape)) for s in specs)
    except TypeError:   # a low-bit dtype numpy does not know by name
        pass
    return None


def order_static(signature: tuple, feed) -> list[np.ndarray] | None:
    """The inputs in graph order when `feed` is a dict naming every input (user's names) with
    a C-contiguous numpy array of exactly its dtype and shape, as a serving loop passes them;
    None for anything else, which `order_inputs` then binds, checks and explains. Why: for a
    small model the general path's checks cost as much as the VM's call (zoo:mlp, 5.6 of a
    20 us run)."""
    if type(feed) is not dict or len(feed) != len(signature):
        return None
    ordered = []
    for name, dtype, shape in signature:
        x = feed.get(name)
        if type(x) is not np.ndarray or x.dtype != dtype or x.shape != shape or \
                not x.flags.c_contiguous:
            return None
        ordered.append(x)
    return ordered


def bind_symbols(specs: Sequence[TensorSpec], arrays: Sequence[np.ndarray], label: str,
                 symbols: Mapping[str, tuple[int, int]]) -> dict[str, int]:
    """{symbol: value} read from the inputs' plain symbolic dims ('seq', not 'past+1'),
    checked for agreement between inputs and against the bounds."""
    sizes: dict[str, int] = {}
    source: dict[str, str] = {}
    for spec, arr in zip(specs, arrays):
        if arr.ndim != len(spec.shape):
            continue   # the shape check after this reports the rank
        for axis, dim in enumerate(spec.shape):
            if isinstance(dim, int) or not str(dim).isidentifier():
                continue
            value = int(arr.shape[axis])
            where = f"input '{spec.name}' axis {axis}"
            bounds = symbols.get(dim)
            bounds_text = f" (bounds {bounds[0]}..{bounds[1]})" if bounds else ""
            if dim in sizes and sizes[dim] != value:
                raise AnychipError(f"{label}: symbol '{dim}'{bounds_text} is {sizes[dim]} in "
                                   f"{source[dim]} but {value} in {where}; inputs sharing a "
                                   f"symbol must agree.")
            if bounds and not bounds[0] <= value <= bounds[1]:
                raise AnychipError(f"{label}: symbol '{dim}' is {value} in {where}, outside its "
                                   f"bounds {bounds[0]}..{bounds[1]}; recompile with --dim "
                                   f"{dim}=LO..HI to serve it.")
            sizes.setdefault(dim, value)
            source.setdefault(dim, where)
    return sizes


def _to_numpy(value) -> np.ndarray:
    if hasattr(value, "detach") and hasattr(value, "cpu"):
        return value.detach().cpu().numpy()
    return np.asarray(value)


# ml_dtypes formats numpy cannot store: the npz key carries the dtype ("x::bfloat16") and the
# member holds the bit patterns as unsigned integers of the same width (docs/security.md)
DTYPE_SEPARATOR = "::"
ML_DTYPES = ("bfloat16", "float8_e4m3fn", "float8_e4m3fnuz", "float8_e5m2", "float8_e5m2fnuz",
             "float8_e8m0fnu", "float4_e2m1fn", "int4", "uint4", "int2", "uint2")


def _ml_dtype(name: str) -> np.dtype | None:
    if name not in ML_DTYPES:
        return None
    try:
        import ml_dtypes
    except ImportError:
        return None
    kind = getattr(ml_dtypes, name, None)
    return np.dtype(kind) if kind is not None else None


def _npz_members(path: Path) -> None:
    """Refuse a zip bomb before numpy inflates anything: the declared sizes of the members
    (what zipfile will inflate at most) within the limits, and no more members than allowed."""
    import zipfile

    from .limits import MAX_NPZ_MEMBER_BYTES, MAX_NPZ_MEMBERS

    try:
        with zipfile.ZipFile(path) as archive:
            infos = archive.infolist()
    except (zipfile.BadZipFile, OSError, ValueError, EOFError) as exc:
        raise AnychipError(f"{path}: not a readable .npz file ({str(exc)[:120]}); write it with "
                           f"numpy.savez.") from exc
    if len(infos) > MAX_NPZ_MEMBERS:
        raise AnychipError(f"{path}: {len(infos)} arrays, over the limit of {MAX_NPZ_MEMBERS}.")
    total = 0
    for info in infos:
        total += info.file_size
        if total > MAX_NPZ_MEMBER_BYTES:
            raise AnychipError(f"{path}: member '{info.filename}' inflates the arrays past "
                               f"{MAX_NPZ_MEMBER_BYTES} bytes (ANYCHIP_MAX_NPZ_BYTES); refusing "
                               f"to unpack it (a zip bomb, or inputs too large for this host).")


def load_npz(path: str | Path) -> dict[str, np.ndarray]:
    """Arrays keyed by input name; a key "NAME::bfloat16" (or another ml_dtypes name) is read
    as that format from its stored bit patterns."""
    path = Path(path)
    if not path.is_file():
        raise AnychipError(f"{path}: no such file; give an .npz keyed by the model's input names.")
    _npz_members(path)
    try:
        with np.load(path, allow_pickle=False) as data:
            raw = {k: data[k] for k in data.files}
    except Exception as exc:
        raise AnychipError(f"{path}: not a readable .npz file ({str(exc)[:120]}); write it with "
                           f"numpy.savez.") from exc
    arrays = {}
    for key, value in raw.items():
        name, sep, suffix = key.rpartition(DTYPE_SEPARATOR)
        dtype = _ml_dtype(suffix) if sep else None
        if dtype is not None:
            if value.dtype.kind not in "uiV" or value.dtype.itemsize != dtype.itemsize:
                raise AnychipError(f"{path}: '{key}' must hold {dtype.name} bit patterns as "
                                   f"uint{8 * dtype.itemsize}, got {value.dtype}.")
            value, key = np.ascontiguousarray(value).view(dtype), name
        elif value.dtype.kind == "V":
            raise AnychipError(f"{path}: '{key}' is stored as raw bytes ({value.dtype}); name the "
                               f"format in the key, e.g. '{key}{DTYPE_SEPARATOR}bfloat16', and "
                               f"store the bit patterns as unsigned integers.")
        arrays[key] = value
    return arrays


def encode_npz(arrays: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    """The npz members for `arrays`: ml_dtypes formats under "NAME::DTYPE" as bit patterns."""
    out = {}
    for name, value in arrays.items():
        value = np.asarray(value)
        if value.dtype.name in ML_DTYPES:
            bits = np.dtype(f"uint{8 * value.dtype.itemsize}")
            out[f"{name}{DTYPE_SEPARATOR}{value.dtype.name}"] = (
                np.ascontiguousarray(value).view(bits))
        else:
            out[name] = value
    return out


def save_npz(path: str | Path, arrays: Mapping[str, np.ndarray], force: bool = False) -> Path:
    members = encode_npz(arrays)

    def write(tmp: Path) -> None:
        with open(tmp, "wb") as fh:
            np.savez(fh, **members)

    return write_file(path, write, force=force)
