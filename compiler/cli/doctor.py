"""`anychip doctor`: what this machine has for each backend family, and what that means.

Vendor SDK mismatches are the most common complaint in accelerator vendors' trackers, so
each backend reports its own toolchain facts (Backend.doctor) and what to install to do more.
"""

from __future__ import annotations

import json
import platform

from ..registry import backends, targets
from .common import table


def add_parser(sub) -> None:
    p = sub.add_parser("doctor", help="toolchains and devices found here, per backend family")
    p.add_argument("--json", action="store_true", help="print JSON")
    p.set_defaults(func=run)


def _core_facts() -> list[dict]:
    import onnx
    import onnxruntime
    import tvm

    cpu = tvm.get_global_func("tvm.codegen.llvm.GetHostCPUName")()
    return [
        {"family": "core", "name": "python", "found": True, "version": platform.python_version(), "detail": ""},
        {"family": "core", "name": "apache-tvm", "found": True, "version": tvm.__version__, "detail": f"LLVM host CPU {cpu}"},
        {"family": "core", "name": "onnx", "found": True, "version": onnx.__version__, "detail": ""},
        {"family": "core", "name": "onnxruntime", "found": True, "version": onnxruntime.__version__,
         "detail": "providers: " + ", ".join(onnxruntime.get_available_providers())},
    ]


def run(args) -> int:
    facts = _core_facts()
    for family, backend in sorted(backends().items()):
        hook = getattr(backend, "doctor", None)
        for fact in (hook() if hook else []):
            facts.append({"family": family, **fact})
    infos = targets()
    if args.json:
        print(json.dumps({"facts": facts, "targets": [t.as_dict() for t in infos]}, indent=2))
        return 0
    print(table(["family", "component", "found", "version", "detail"],
                [[f["family"], f["name"], "yes" if f.get("found") else "no", f.get("version") or "-",
                  f.get("detail", "")] for f in facts]))
    print()
    print(table(["target", "here", "why"], [[t.name, t.execution, t.why] for t in infos]))
    return 0
