"""Structural checks on an untrusted ONNX model, run before anything allocates or opens files.

`onnx.checker` proves little about hostile files (docs/security.md: it accepts mismatched
raw_data lengths, short external data and element-count overflow, and external-data path
traversal has come back in new forms for years). These checks cover docs/security.md cases
1-5, 9 and 11: path containment, symlinks and hard links, sizes, element counts, nesting depth.
They walk every graph, subgraph and model-local function body: external data or a huge
tensor hidden in a function is as dangerous as one in the main graph. The limits come from
limits.py; the file checks (`check_model_file`) run before anything reads or hashes a model.
"""

from __future__ import annotations

import os
import re
import stat
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import onnx
from google.protobuf.descriptor import FieldDescriptor
from onnx import TensorProto, helper

from .errors import AnychipError
from .limits import (
    DATA_PROP_MAX_ELEMENTS,
    MAX_MODEL_FILE_BYTES,
    MAX_NODES,
    MAX_STATIC_ELEMENTS,
    MAX_TENSOR_BYTES,
    MAX_WEIGHT_BYTES,
)

MAX_GRAPH_DEPTH = 16  # real models nest control flow a few levels; protobuf itself stops near 30
KNOWN_EXTERNAL_KEYS = {"location", "offset", "length", "checksum", "basepath"}
_WINDOWS_ABS = re.compile(r"^([A-Za-z]:|\\\\|//)")


def check_model_file(path: Path, label: str) -> int:
    """A model path must be a regular file of known size under the protobuf limit; returns the
    size. Runs before anything opens it: /dev/zero would be read until memory runs out, a
    named pipe would block forever."""
    try:
        info = os.stat(path)
    except FileNotFoundError:
        raise AnychipError(f"{label}: no such file; give a path to an .onnx model or zoo:NAME "
                           f"(see 'anychip zoo').") from None
    except OSError as exc:
        raise AnychipError(f"{label}: cannot read it ({exc.strerror or exc}).") from None
    if stat.S_ISDIR(info.st_mode):
        raise AnychipError(f"{label}: is a folder; give the .onnx file inside it.")
    if not stat.S_ISREG(info.st_mode):
        raise AnychipError(f"{label}: is not a regular file (a device, pipe or socket); save the "
                           f"model to a file first.")
    if info.st_size > MAX_MODEL_FILE_BYTES:
        raise AnychipError(f"{label}: a single protobuf over 2 GiB cannot be loaded; save the "
                           f"weights as ONNX external data (onnx.save(..., "
                           f"save_as_external_data=True)).")
    return info.st_size


def iter_graphs(model: onnx.ModelProto, label: str) -> Iterator[onnx.GraphProto]:
    """Every graph (the main one and subgraphs, also those inside function bodies), without
    recursion."""
    stack = [(model.graph, 0)]
    stack += [(sub, 1) for fn in model.functions for sub in _subgraphs(fn.node)]
    while stack:
        graph, depth = stack.pop()
        if depth > MAX_GRAPH_DEPTH:
            raise AnychipError(f"{label}: subgraphs are nested more than {MAX_GRAPH_DEPTH} deep; "
                               f"such a model is refused (flatten its control flow).")
        yield graph
        stack.extend((g, depth + 1) for g in _subgraphs(graph.node))


def _subgraphs(nodes) -> Iterator[onnx.GraphProto]:
    for node in nodes:
        for attr in node.attribute:
            if attr.HasField("g"):
                yield attr.g
            yield from attr.graphs


def iter_node_lists(model: onnx.ModelProto, label: str):
    """The node list of every graph and of every model-local function body."""
    for graph in iter_graphs(model, label):
        yield graph.node
    for fn in model.functions:
        yield fn.node


def iter_tensors(model: onnx.ModelProto, label: str) -> Iterator[TensorProto]:
    for graph in iter_graphs(model, label):
        yield from graph.initializer
        for sparse in graph.sparse_initializer:
            yield sparse.values
            yield sparse.indices
    for nodes in iter_node_lists(model, label):
        for node in nodes:
            for attr in node.attribute:
                if attr.HasField("t"):
                    yield attr.t
                yield from attr.tensors
                if attr.HasField("sparse_tensor"):
                    yield attr.sparse_tensor.values
                    yield attr.sparse_tensor.indices
                for sparse in attr.sparse_tensors:
                    yield sparse.values
                    yield sparse.indices


def check_strings(message, label: str) -> None:
    """Every string field must be UTF-8. protobuf hands an invalid one to Python as bytes,
    which then fails deep inside onnx or TVM with a TypeError; refuse it here, naming where."""
    stack = [(message, "model")]
    string = FieldDescriptor.TYPE_STRING
    msg_type = FieldDescriptor.TYPE_MESSAGE
    while stack:
        msg, where = stack.pop()
        for field, value in msg.ListFields():
            if field.type == string:
                values = value if _repeated(field) else [value]
                if any(isinstance(v, bytes) for v in values):
                    raise AnychipError(f"{label}: {where}.{field.name} is not valid UTF-8; the "
                                       f"file is corrupt, re-export the model.")
            elif field.type == msg_type:
                name = getattr(msg, "name", "") if field.name != "graph" else ""
                here = f"{where}{f' {name!r}' if isinstance(name, str) and name else ''}"
                if _repeated(field):
                    stack.extend((v, f"{here}.{field.name}") for v in value)
                else:
                    stack.append((value, f"{here}.{field.name}"))


def _repeated(field) -> bool:
    return getattr(field, "is_repeated", None) if hasattr(field, "is_repeated") \
        else field.label == FieldDescriptor.LABEL_REPEATED


def check_limits(model: onnx.ModelProto, label: str) -> None:
    """Node count and total weight bytes (inline and external) before anything is loaded."""
    nodes = sum(len(nodes) for nodes in iter_node_lists(model, label))
    if nodes > MAX_NODES:
        raise AnychipError(f"{label}: {nodes} nodes, over the limit of {MAX_NODES} "
                           f"(ANYCHIP_MAX_NODES); refusing to compile it.")
    for graph in iter_graphs(model, label):
        sparse = [(s.values.name, s.dims) for s in graph.sparse_initializer]
        for name, dims in sparse:
            if any(d < 0 for d in dims) or np.prod(dims, dtype=object) > MAX_STATIC_ELEMENTS:
                raise AnychipError(f"{label}: sparse tensor '{name}' has dense shape "
                                   f"{list(dims)}, over the limit of {MAX_STATIC_ELEMENTS} "
                                   f"elements (ANYCHIP_MAX_ELEMENTS).")


def _itemsize(data_type: int) -> int | None:
    """Bytes per element for fixed-size types; None for strings and sub-byte types."""
    if data_type in (TensorProto.STRING, TensorProto.UNDEFINED):
        return None
    try:
        dtype = helper.tensor_dtype_to_np_dtype(data_type)
    except (KeyError, ValueError, TypeError):
        return None
    name = helper.tensor_dtype_to_string(data_type)
    if any(s in name for s in ("INT4", "FLOAT4", "INT2")):
        return None
    return np.dtype(dtype).itemsize


def expected_nbytes(tensor: TensorProto, label: str) -> int | None:
    """Bytes the tensor must hold, refusing negative dims and overflowing element counts."""
    count = 1
    for dim in tensor.dims:
        if dim < 0:
            raise AnychipError(f"{label}: tensor '{tensor.name}' has a negative dimension "
                               f"{list(tensor.dims)}; the model is malformed.")
        count *= dim
    if count > MAX_STATIC_ELEMENTS:
        raise AnychipError(f"{label}: tensor '{tensor.name}' of shape {list(tensor.dims)} has "
                           f"{count} elements, over the limit of {MAX_STATIC_ELEMENTS} "
                           f"(ANYCHIP_MAX_ELEMENTS); refusing to allocate it.")
    itemsize = _itemsize(tensor.data_type)
    if itemsize is None:
        return None
    nbytes = count * itemsize
    if nbytes > MAX_TENSOR_BYTES:
        raise AnychipError(f"{label}: tensor '{tensor.name}' of shape {list(tensor.dims)} needs "
                           f"{nbytes} bytes, over the {MAX_TENSOR_BYTES}-byte cap "
                           f"(ANYCHIP_MAX_TENSOR_BYTES); refusing to allocate it.")
    return nbytes


def _external_info(tensor: TensorProto, label: str) -> dict[str, str]:
    info = {}
    for entry in tensor.external_data:
        if entry.key not in KNOWN_EXTERNAL_KEYS:
            raise AnychipError(f"{label}: tensor '{tensor.name}' has unknown external_data key "
                               f"'{entry.key}'; the model is refused.")
        info[entry.key] = entry.value
    return info


def check_external_path(location: str, base_dir: Path, tensor: str, label: str) -> Path:
    """Resolve an external-data location, refusing anything that can leave the model folder."""
    where = f"{label}: tensor '{tensor}' external data '{location}'"
    if not location or "\x00" in location:
        raise AnychipError(f"{where}: empty or invalid location.")
    if location.startswith("/") or _WINDOWS_ABS.match(location) or "\\" in location:
        raise AnychipError(f"{where}: absolute or Windows-style paths are refused; external "
                           f"data must be a relative path inside the model's folder.")
    if ".." in Path(location).parts:
        raise AnychipError(f"{where}: '..' is refused; external data must stay inside the "
                           f"model's folder.")
    base = base_dir.resolve()
    candidate = base / location
    probe = base
    for part in Path(location).parts:
        probe = probe / part
        if probe.is_symlink():
            raise AnychipError(f"{where}: is or passes through a symbolic link; refused.")
    resolved = candidate.resolve()
    if base not in resolved.parents:
        raise AnychipError(f"{where}: resolves outside the model's folder; refused.")
    if not resolved.is_file():
        raise AnychipError(f"{where}: no such file next to the model.")
    if resolved.stat().st_nlink > 1:
        raise AnychipError(f"{where}: the file has other hard links; refused (copy it).")
    return resolved


def check_tensors(model: onnx.ModelProto, base_dir: Path | None, label: str) -> None:
    """Sizes, raw_data lengths and external-data containment of every tensor in the model,
    and their total (forty tensors may point at one sparse file: each passes alone)."""
    total = 0
    for tensor in iter_tensors(model, label):
        nbytes = expected_nbytes(tensor, label)
        total += nbytes or 0
        if total > MAX_WEIGHT_BYTES:
            raise AnychipError(f"{label}: the weights add up to more than {MAX_WEIGHT_BYTES} "
                               f"bytes (at tensor '{tensor.name}'), over the limit "
                               f"(ANYCHIP_MAX_WEIGHT_BYTES, default half this host's memory).")
        if tensor.data_location == TensorProto.EXTERNAL:
            info = _external_info(tensor, label)
            if base_dir is None:
                raise AnychipError(f"{label}: tensor '{tensor.name}' refers to external data but "
                                   f"the model was given without a folder; load it by path.")
            path = check_external_path(info.get("location", ""), base_dir, tensor.name, label)
            try:
                offset = int(info.get("offset", 0))
                length = int(info["length"]) if "length" in info else None
            except ValueError as exc:
                raise AnychipError(f"{label}: tensor '{tensor.name}' has a non-numeric external "
                                   f"offset or length.") from exc
            size = path.stat().st_size
            length = size - offset if length is None else length
            if offset < 0 or length < 0 or offset + length > size:
                raise AnychipError(f"{label}: tensor '{tensor.name}': external data "
                                   f"[{offset}, {offset + length}) is past the end of "
                                   f"'{info['location']}' ({size} bytes).")
            if nbytes is not None and length != nbytes:
                raise AnychipError(f"{label}: tensor '{tensor.name}': external data holds "
                                   f"{length} bytes, its shape needs {nbytes}.")
        elif tensor.HasField("raw_data") and nbytes is not None and len(tensor.raw_data) != nbytes:
            raise AnychipError(f"{label}: tensor '{tensor.name}' raw_data holds "
                               f"{len(tensor.raw_data)} bytes, its shape {list(tensor.dims)} "
                               f"needs {nbytes}; the file is corrupt.")


def _value_bytes(vi: onnx.ValueInfoProto) -> tuple[int, int] | None:
    """(elements, bytes) of a statically shaped tensor value, else None."""
    tensor_type = vi.type.tensor_type if vi.type.HasField("tensor_type") else None
    if tensor_type is None or not tensor_type.HasField("shape"):
        return None
    count = 1
    for dim in tensor_type.shape.dim:
        if not dim.HasField("dim_value") or dim.dim_value < 0:
            return None
        count *= dim.dim_value
    itemsize = _itemsize(tensor_type.elem_type) or 1
    return count, count * itemsize


def check_planned_memory(model: onnx.ModelProto, label: str, budget: int, where: str) -> None:
    """After shape inference: every static tensor within the element limit, and every node's
    inputs and outputs (alive together in any plan) within `budget` bytes of `where`'s memory.
    A [1,1,4,2**31-1] activation is refused here, naming it, instead of TVM's build growing
    past the machine's memory and aborting."""
    graph = model.graph
    sizes: dict[str, int] = {}
    for vi in (*graph.input, *graph.value_info, *graph.output):
        measured = _value_bytes(vi)
        if measured is None:
            continue
        count, nbytes = measured
        if count > MAX_STATIC_ELEMENTS:
            raise AnychipError(f"{label}: tensor '{vi.name}' would hold {count} elements, over "
                               f"the limit of {MAX_STATIC_ELEMENTS} (ANYCHIP_MAX_ELEMENTS); "
                               f"give smaller static shapes (--shape).")
        sizes[vi.name] = nbytes
    for init in graph.initializer:
        sizes[init.name] = expected_nbytes(init, label) or 0
    for node in graph.node:
        names = [n for n in (*node.input, *node.output) if n]
        need = sum(sizes.get(n, 0) for n in set(names))
        if need > budget:
            biggest = max(names, key=lambda n: sizes.get(n, 0))
            raise AnychipError(f"{label}: node '{node.name or node.op_type}' ({node.op_type}) "
                               f"needs {need / 2**30:.1f} GiB at once (largest tensor "
                               f"'{biggest}', {sizes.get(biggest, 0) / 2**30:.1f} GiB), more than "
                               f"{where} allows ({budget / 2**30:.1f} GiB); give smaller shapes.")


def check_profile_memory(source, profile) -> None:
    """The per-node memory check again, against the target chip's memory (profile
    memory.size_gb) when the profile states it: a model that cannot fit the device is refused
    before compiling, naming the tensor."""
    size_gb = (profile.raw.get("memory") or {}).get("size_gb")
    if not size_gb:
        return
    check_planned_memory(source.original, source.label, int(size_gb * 1e9),
                         f"target '{profile.name}' ({size_gb:g} GB)")


def data_propagation_is_cheap(model: onnx.ModelProto) -> bool:
    """Whether onnx's data propagation may run: no declared value of the main graph has more
    than DATA_PROP_MAX_ELEMENTS static elements (its cost grows with them)."""
    graph = model.graph
    for vi in (*graph.input, *graph.output, *graph.value_info):
        measured = _value_bytes(vi)
        if measured is not None and measured[0] > DATA_PROP_MAX_ELEMENTS:
            return False
    return True
