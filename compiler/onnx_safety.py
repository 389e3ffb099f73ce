"""Structural checks on an untrusted ONNX model, run before anything allocates or opens files.

`onnx.checker` proves little about hostile files (reliability.md §1: it accepts mismatched
raw_data lengths, short external data and element-count overflow, and external-data path
traversal has come back in new forms for years). These checks cover reliability.md §2 cases
1-5, 9 and 11: path containment, symlinks and hard links, sizes, element counts, nesting depth.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper

from .errors import AnychipError

MAX_GRAPH_DEPTH = 16  # real models nest control flow a few levels; protobuf itself stops near 30
MAX_TENSOR_BYTES = int(os.environ.get("ANYCHIP_MAX_TENSOR_BYTES", 16 << 30))
KNOWN_EXTERNAL_KEYS = {"location", "offset", "length", "checksum", "basepath"}
_WINDOWS_ABS = re.compile(r"^([A-Za-z]:|\\\\|//)")


def iter_graphs(model: onnx.ModelProto, label: str) -> Iterator[onnx.GraphProto]:
    """Every graph (the main one, subgraphs, function bodies are nodes) without recursion."""
    stack = [(model.graph, 0)]
    while stack:
        graph, depth = stack.pop()
        if depth > MAX_GRAPH_DEPTH:
            raise AnychipError(f"{label}: subgraphs are nested more than {MAX_GRAPH_DEPTH} deep; "
                               f"such a model is refused (flatten its control flow).")
        yield graph
        for node in graph.node:
            for attr in node.attribute:
                if attr.HasField("g"):
                    stack.append((attr.g, depth + 1))
                stack.extend((g, depth + 1) for g in attr.graphs)


def iter_tensors(model: onnx.ModelProto, label: str) -> Iterator[TensorProto]:
    for graph in iter_graphs(model, label):
        yield from graph.initializer
        for sparse in graph.sparse_initializer:
            yield sparse.values
            yield sparse.indices
        for node in graph.node:
            for attr in node.attribute:
                if attr.HasField("t"):
                    yield attr.t
                yield from attr.tensors


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
    """Sizes, raw_data lengths and external-data containment of every tensor in the model."""
    for tensor in iter_tensors(model, label):
        nbytes = expected_nbytes(tensor, label)
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
