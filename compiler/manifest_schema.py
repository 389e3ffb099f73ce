"""The JSON schema of an artifact's manifest.json, checked before any field is used.

A manifest is input: an artifact may come from another machine, a cache or a farm worker, and
may have been edited. Every field the loader and the runners read has a type here, so a
missing `inputs`, `files` given as a list or `num_threads: "abc"` is one line naming the field
(exit 2) instead of a KeyError deep in a runner. New optional fields may be added by backends;
the required core below is the contract other tools (farm workers) rely on.
"""

from __future__ import annotations

import jsonschema

from .errors import AnychipError

_SHA256 = {"type": "string", "pattern": "^[0-9a-f]{64}$"}
_NAME = {"type": "string", "minLength": 1, "maxLength": 4096}
_TENSOR = {
    "type": "object",
    "required": ["name", "safe_name", "shape", "dtype"],
    "properties": {
        "name": {"type": "string", "maxLength": 4096},
        "safe_name": {"type": "string", "pattern": "^[A-Za-z_][A-Za-z0-9_]*$",
                      "maxLength": 4096},
        "shape": {"type": "array", "maxItems": 64,
                  "items": {"anyOf": [{"type": "integer", "minimum": 0,
                                       "maximum": 2**63 - 1},
                                      {"type": "string", "maxLength": 256}]}},
        "dtype": {"type": "string", "pattern": "^[a-z0-9_]+$", "maxLength": 64},
        "value_range": {"type": "array", "items": {"type": "number"},
                        "minItems": 2, "maxItems": 2},
    },
}

MANIFEST_SCHEMA = {
    "$schema": "https://json-schema.org/draft/2020-12/schema",
    "title": "anychip artifact manifest (format_version 1)",
    "type": "object",
    "required": ["format_version", "versions", "target", "family", "profile", "profile_sha256",
                 "model", "inputs", "outputs", "precision", "options", "runtime", "files"],
    "properties": {
        "format_version": {"const": 1},
        "versions": {"type": "object", "required": ["anychip", "tvm"],
                     "additionalProperties": {"type": "string"}},
        "target": _NAME,
        "family": {"type": "string", "pattern": "^[a-z0-9_-]+$", "maxLength": 64},
        "profile": {"type": "object",
                    "required": ["name", "vendor", "family", "description", "target", "dtypes",
                                 "precisions"],
                    "properties": {"name": _NAME, "family": {"type": "string"},
                                   "vendor": {"type": "string"},
                                   "description": {"type": "string"},
                                   "target": {"type": "object"},
                                   "dtypes": {"type": "array", "items": {"type": "string"}},
                                   "precisions": {"type": "array",
                                                  "items": {"type": "string"}}}},
        "profile_sha256": _SHA256,
        "model": {"type": "object", "required": ["sha256"],
                  "properties": {"label": {"type": "string"}, "sha256": _SHA256}},
        "inputs": {"type": "array", "items": _TENSOR, "maxItems": 100_000},
        "outputs": {"type": "array", "items": _TENSOR, "minItems": 1, "maxItems": 100_000},
        "precision": {"type": "string", "maxLength": 64},
        "options": {"type": "object"},
        "runtime": {
            "type": "object",
            "required": ["device"],
            "properties": {
                "device": {"type": "string", "maxLength": 64},
                "mcpu": {"type": "string", "minLength": 1, "maxLength": 256},
                "num_threads": {"type": "integer", "minimum": 1, "maximum": 4096},
                "libraries": {"type": "array", "items": {"type": "string"}},
            },
            # code built for the host CPU must say which CPU, or the host check cannot run
            "if": {"properties": {"device": {"const": "cpu"}}},
            "then": {"required": ["device", "mcpu", "num_threads"]},
        },
        "files": {"type": "object", "maxProperties": 100_000,
                  "additionalProperties": _SHA256},
        "symbols": {"type": "object"},
        # a gear artifact (compiler/gears.py): one static artifact per gear under gears/
        "gears": {"type": "array", "maxItems": 1024,
                  "items": {"type": "object", "required": ["sizes", "path"],
                            "properties": {"sizes": {"type": "object"},
                                           "path": {"type": "string", "maxLength": 4096}}}},
        "gear_modes": {"type": "object"},
    },
    # lib.so is required, except in a gear artifact, whose programs are in gears/*/lib.so
    "if": {"not": {"required": ["gears"]}},
    "then": {"properties": {"files": {"required": ["lib.so"]}}},
}

_VALIDATOR = jsonschema.Draft202012Validator(MANIFEST_SCHEMA)


def validate_manifest(manifest, label: str) -> dict:
    """The manifest if it matches the schema, else one line naming the first bad field."""
    error = jsonschema.exceptions.best_match(_VALIDATOR.iter_errors(manifest))
    if error is None:
        return manifest
    where = "/".join(str(p) for p in error.absolute_path) or "(top level)"
    message = error.message if len(error.message) <= 160 else error.message[:157] + "..."
    raise AnychipError(f"{label}: manifest.json field '{where}': {message}; the artifact is "
                       f"malformed or was edited, recompile the model.")
