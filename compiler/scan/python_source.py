"""Find CUDA lock-in in one Python file with `ast`, never regular expressions.

Why `ast`: grep cannot see that `tc.synchronize()` is `torch.cuda.synchronize()` after
`import torch.cuda as tc`, that `.to(device)` moves to "cuda" three lines after
`device = "cuda"`, or that a "cuda" in a docstring is not a device. The analysis is:

1. imports give an alias table (local name -> fully qualified name), including
   `from torch import cuda`, `from torch.cuda import amp` and `tc = torch.cuda`;
2. a flow-insensitive pass records names bound to CUDA device strings (`device = "cuda"`,
   `f"cuda:{rank}"`, `torch.device("cuda", i)`, `"cuda" if ok else "cpu"`, `self.device = ...`);
3. the same walk's nodes, by type, report each qualified name against rules.py, each CUDA
   device literal once (richer rules such as amp claim theirs first), each use of a
   CUDA-bound name where a device is expected, and library imports.
"""

from __future__ import annotations

import ast
import re
from dataclasses import replace

from .findings import Finding
from .requirements import requirement_rule
from .rules import AMP_DEVICE_TYPE_CALLS, LIBRARIES, TORCH_API, Rule, lookup, torch_cuda_rule
from .syntax import CUDA_DEVICE as _CUDA_DEVICE
from .syntax import dotted as _dotted
from .syntax import is_cuda_string as _is_cuda_string
from .syntax import nodes_by_type as _nodes_by_type
from .syntax import source_lines

_NCCL = re.compile(r"^(?:\w+:\w+,)*(?:\w+:)?nccl(?:,\w+:\w+)*$", re.IGNORECASE)
_REQUIRES_KWARGS = {"install_requires", "setup_requires", "extras_require", "requires"}
_DEVICE_KWARGS = {"device", "device_map", "map_location", "device_type", "output_device"}
_DTYPES = {"torch.bfloat16": "bfloat16", "torch.float64": "float64", "torch.double": "float64",
           "torch.float8_e4m3fn": "float8", "torch.float8_e5m2": "float8",
           "torch.float8_e4m3fnuz": "float8", "torch.float8_e5m2fnuz": "float8"}
_DTYPE_METHODS = {"bfloat16": "bfloat16", "double": "float64"}
_DTYPE_STRINGS = {"bfloat16": "bfloat16", "bf16": "bfloat16", "float64": "float64",
                  "double": "float64"}


class _Analyser:
    def __init__(self, path: str, lines: list[str]):
        self.path = path
        self.lines = lines
        self.aliases: dict[str, str] = {}
        self.cuda_names: dict[str, int] = {}  # dotted name -> line where it got a CUDA string
        self.claimed: set[int] = set()  # ids of literals already reported by a richer rule
        self.findings: list[Finding] = []
        self.modules: list[tuple[ast.ClassDef, str]] = []
        self.guarded: set[int] = set()  # imports inside try/except ImportError

    # -- helpers ---------------------------------------------------------------------------
    def qualname(self, node: ast.AST) -> str | None:
        dotted = _dotted(node)
        if dotted is None:
            return None
        head, _, rest = dotted.partition(".")
        base = self.aliases.get(head)
        if base is None:
            return None
        return f"{base}.{rest}" if rest else base

    def code(self, line: int) -> str:
        text = self.lines[line - 1].strip() if 0 < line <= len(self.lines) else ""
        return text if len(text) <= 200 else text[:197] + "..."

    def column(self, node: ast.AST) -> int:
        line = self.lines[node.lineno - 1] if 0 < node.lineno <= len(self.lines) else ""
        return len(line.encode()[:node.col_offset].decode(errors="replace")) + 1

    def add(self, node: ast.AST, rule: Rule, api: str, message: str, kind: str | None = None,
            portable: str | None = None) -> None:
        self.findings.append(Finding(
            path=self.path, line=node.lineno, column=self.column(node), category=rule.category,
            severity=rule.severity, rule=rule.rule, kind=kind or rule.kind, api=api,
            message=message, portable=portable or rule.portable, code=self.code(node.lineno),
            fixable=rule.fixable))

    # -- pass 1: aliases and CUDA-bound names ----------------------------------------------
    def collect(self, tree: ast.Module) -> dict[type, list]:
        """Pass 1 over one walk of the tree; returns the nodes by type for pass 2."""
        nodes = _nodes_by_type(tree)
        for kind in (ast.Try, getattr(ast, "TryStar", ast.Try)):
            for node in set(nodes.get(kind, ())):
                if any(_catches_import_error(h.type) for h in node.handlers):
                    self.guarded.update(id(n) for stmt in node.body for n in ast.walk(stmt)
                                        if isinstance(n, (ast.Import, ast.ImportFrom)))
        assigns = []
        for node in nodes.get(ast.Import, ()):
            for a in node.names:
                if a.asname:
                    self.aliases[a.asname] = a.name
                else:
                    head = a.name.split(".")[0]
                    self.aliases[head] = head
        for node in nodes.get(ast.ImportFrom, ()):
            if node.module and not node.level:
                for a in node.names:
                    if a.name != "*":
                        self.aliases[a.asname or a.name] = f"{node.module}.{a.name}"
        for node in nodes.get(ast.Assign, ()):
            assigns.append((node.targets, node.value, node.lineno))
        for node in nodes.get(ast.AnnAssign, ()):
            if node.value is not None:
                assigns.append(([node.target], node.value, node.lineno))
        for kind in (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda):
            for node in nodes.get(kind, ()):
                args = node.args
                positional = args.posonlyargs + args.args
                pairs = list(zip(positional[len(positional) - len(args.defaults):],
                                 args.defaults))
                pairs += [(a, d) for a, d in zip(args.kwonlyargs, args.kw_defaults) if d]
                for arg, default in pairs:
                    assigns.append(([ast.Name(id=arg.arg)], default, default.lineno))
        for targets, value, _ in assigns:  # tc = torch.cuda
            qual = self.qualname(value) if type(value) is ast.Attribute else None
            if qual and qual.startswith("torch."):
                for target in targets:
                    if isinstance(target, ast.Name):
                        self.aliases.setdefault(target.id, qual)
        for _ in range(3):  # a few rounds propagate `dev = device` chains; no fixpoint needed
            before = len(self.cuda_names)
            for targets, value, line in assigns:
                if self._cuda_valued(value):
                    for target in targets:
                        key = _dotted(target)
                        if key and key not in self.cuda_names:
                            self.cuda_names[key] = line
            if len(self.cuda_names) == before:
                break
        return nodes

    # -- pass 2: each kind of node, richer rules first (they claim the literals they explain)
    def report(self, nodes: dict[type, list]) -> None:
        get = nodes.get
        for node in get(ast.Import, ()):
            self.visit_Import(node)
        for node in get(ast.ImportFrom, ()):
            self.visit_ImportFrom(node)
        for node in get(ast.Call, ()):
            self.visit_Call(node)
        for node in get(ast.Compare, ()):
            self.visit_Compare(node)
        for node in get(ast.BinOp, ()):
            self.visit_BinOp(node)
        for node in get(ast.JoinedStr, ()):
            self.visit_JoinedStr(node)
        for node in get(ast.Constant, ()):
            self.visit_Constant(node)
        attributes = get(ast.Attribute, ())
        inner = {id(a.value) for a in attributes}  # only the outermost chain is looked up
        for node in attributes:
            if id(node) not in inner:
                self._api(node)
            if node.attr == "is_cuda":
                self.add(node, _IS_CUDA, ".is_cuda", "tests for the CUDA device")
        for node in get(ast.Name, ()):
            if id(node) not in inner and isinstance(node.ctx, ast.Load):
                self._api(node)  # `tc = torch.cuda` is reported on its right side
        for kind in (ast.FunctionDef, ast.AsyncFunctionDef):
            for node in get(kind, ()):
                self.visit_FunctionDef(node)
        for node in get(ast.ClassDef, ()):
            self.visit_ClassDef(node)

    def _cuda_valued(self, node: ast.AST) -> bool:
        kind = type(node)
        if kind in (ast.Name, ast.Attribute):
            return bool(self.cuda_names) and _dotted(node) in self.cuda_names
        if kind is ast.IfExp:
            return self._cuda_valued(node.body) or self._cuda_valued(node.orelse)
        if kind is ast.Call and node.args and not _is_cuda_string(node):
            return self._cuda_valued(node.args[0]) and self.qualname(node.func) == "torch.device"
        return kind in (ast.Constant, ast.JoinedStr, ast.BinOp, ast.Call) and _is_cuda_string(node)

    def visit_Import(self, node: ast.Import) -> None:
        for a in node.names:
            self._library(node, [a.name])

    def visit_ImportFrom(self, node: ast.ImportFrom) -> None:
        if node.module and not node.level:
            self._library(node, [node.module] + [f"{node.module}.{a.name}" for a in node.names])

    def _library(self, node: ast.AST, names: list[str]) -> None:
        best = None
        for name in names:
            found = lookup(LIBRARIES, name)
            if found and (best is None or len(found[0]) > len(best[0])):
                best = found
        if not best:
            return
        key, rule = best
        if id(node) in self.guarded and rule.severity == "blocks":
            rule = replace(rule, severity="port", kind="cuda-library-optional")
            self.add(node, rule, key, f"imports {key} (NVIDIA only) inside try/except "
                     f"ImportError: the code runs without it but loses what it provides")
            return
        self.add(node, rule, key, f"imports {key}, which runs on NVIDIA GPUs only"
                 if rule.severity == "blocks" else f"imports {key}")

    def _api(self, node: ast.AST) -> None:
        """Report a qualified torch name (dtype, torch.cuda.*, backend flags, extensions)."""
        qual = self.qualname(node)
        if qual is None:
            return
        if qual in _DTYPES:
            self._dtype(node, _DTYPES[qual], qual)
            return
        found = torch_cuda_rule(qual)
        if found:
            _, rule = found
            self.add(node, rule, qual, f"{qual} is CUDA-specific" if rule.severity != "info"
                     else f"{qual}: a CUDA/cuDNN backend setting")

    def _dtype(self, node: ast.AST, dtype: str, api: str) -> None:
        rule = Rule(f"dtype-{dtype}", "dtype", "info", f"dtype:{dtype}",
                    "float32, or float16 with torch.amp.GradScaler, on chips without "
                    f"{dtype} (see --target)")
        self.add(node, rule, api, f"uses {dtype}, which not every chip computes natively")

    def visit_Constant(self, node: ast.Constant) -> None:
        if id(node) in self.claimed or not isinstance(node.value, str):
            return
        if _CUDA_DEVICE.match(node.value):
            self._device_literal(node)
        elif _NCCL.match(node.value):
            self._nccl_literal(node)
        elif node.value == "CUDA_VISIBLE_DEVICES":
            rule = Rule("cuda-visible-devices", "cuda-device", "info", "torch-cuda-api",
                        "the vendor's visible-devices variable, or torch.accelerator."
                        "set_device_index per process")
            self.add(node, rule, node.value, "selects devices through a CUDA variable")
        elif node.value.startswith("NCCL_"):
            rule = Rule("nccl-env", "nccl", "info", "nccl",
                        "the vendor collective's own variables (HCCL_* on Ascend)")
            self.add(node, rule, node.value, "configures NCCL through the environment")
        elif node.value.startswith("torch.cuda.") and node.value[11:].isidentifier():
            self.add(node, TORCH_API["torch.cuda"], node.value,
                     f"names {node.value} in a string (e.g. set_default_tensor_type)")
        elif node.value == "nvidia-smi" or node.value.startswith("nvidia-smi "):
            rule = Rule("nvidia-smi", "cuda-device", "port", "torch-cuda-api",
                        "torch.accelerator.device_count()/get_memory_info(), or the vendor's "
                        "SMI tool")
            self.add(node, rule, "nvidia-smi", "runs nvidia-smi")

    def visit_JoinedStr(self, node: ast.JoinedStr) -> None:
        if _is_cuda_string(node) and id(node) not in self.claimed:
            self.claimed.update(id(v) for v in node.values)
            self._device_literal(node)

    def visit_BinOp(self, node: ast.BinOp) -> None:
        if _is_cuda_string(node) and id(node) not in self.claimed:
            self.claimed.add(id(node.left))
            self._device_literal(node)

    def _device_literal(self, node: ast.AST) -> None:
        rule = Rule("cuda-device-string", "device-string", "port", "torch-cuda-api",
                    "torch.accelerator.current_accelerator() (a torch.device; "
                    "torch.device(acc.type, index) for one device)")
        self.add(node, rule, "\"cuda\"", "hard-coded CUDA device")

    def _nccl_literal(self, node: ast.Constant) -> None:
        rule = Rule("nccl-backend", "nccl", "port", "nccl",
                    "torch.distributed.get_default_backend_for_device(device) (the vendor's "
                    "collective: HCCL on Ascend), or init_process_group() without a backend")
        self.add(node, rule, "nccl", "NCCL process group: NVIDIA's collective library")

    def visit_Compare(self, node: ast.Compare) -> None:
        for operand in [node.left, *node.comparators]:
            if _is_cuda_string(operand):
                self.claimed.add(id(operand))
                rule = Rule("cuda-device-branch", "device-string", "info", "torch-cuda-api",
                            "compare with torch.accelerator.current_accelerator().type, so the "
                            "branch is taken on every accelerator")
                self.add(operand, rule, "\"cuda\"", "branches on the device being CUDA")

    def visit_Call(self, node: ast.Call) -> None:
        func = node.func
        qual = self.qualname(func)
        if _is_cuda_string(node) and id(node) not in self.claimed:  # "cuda:{}".format(i)
            self.claimed.add(id(func.value))
            self._device_literal(node)
        if qual in AMP_DEVICE_TYPE_CALLS:
            for arg in list(node.args[:1]) + [k.value for k in node.keywords
                                               if k.arg == "device_type" or k.arg == "device"]:
                if _is_cuda_string(arg):
                    self.claimed.add(id(arg))
                    rule = Rule("amp-device-type", "cuda-amp", "port", "torch-cuda-api",
                                "torch.amp with device.type instead of \"cuda\"", fixable=True)
                    self.add(arg, rule, qual, f"{qual} with device type \"cuda\"")
        if isinstance(func, ast.Attribute) and qual is None:
            self._method(node, func)
        if qual == "torch.utils.cpp_extension.load_inline" and (
                len(node.args) >= 3
                or any(k.arg == "cuda_sources" and not _empty(k.value) for k in node.keywords)):
            self.add(node, _EXT_INLINE, qual, "compiles CUDA sources at run time")
        if qual == "torch.utils.cpp_extension.load" and any(
                _mentions_cu(a) for a in [*node.args, *(k.value for k in node.keywords)]):
            self.add(node, _EXT_INLINE, qual, "compiles .cu sources at run time")
        for value in [*node.args, *(k.value for k in node.keywords if k.arg in _DEVICE_KWARGS)]:
            self._device_use(value, node)
        for k in node.keywords:
            if k.arg in _REQUIRES_KWARGS:  # setup(install_requires=[...])
                self._requirements(k.value)
            if k.arg in ("dtype", "torch_dtype") and isinstance(k.value, ast.Constant) \
                    and k.value.value in _DTYPE_STRINGS:
                self._dtype(k.value, _DTYPE_STRINGS[k.value.value], f"{k.arg}={k.value.value!r}")

    def _requirements(self, value: ast.AST) -> None:
        for const in ast.walk(value):
            if isinstance(const, ast.Constant) and isinstance(const.value, str):
                found = requirement_rule(const.value)
                if found:
                    self.claimed.add(id(const))
                    name, rule = found
                    self.add(const, rule, name, f"depends on {name}, built for NVIDIA GPUs only"
                             if rule.severity == "blocks" else f"depends on {name}")

    def _method(self, node: ast.Call, func: ast.Attribute) -> None:
        if func.attr == "cuda":
            fixable = not node.args and all(k.arg == "non_blocking" for k in node.keywords)
            rule = Rule("dot-cuda", "device-string", "port", "torch-cuda-api",
                        ".to(device) with device = torch.accelerator.current_accelerator()",
                        fixable=fixable)
            self.add(func, rule, ".cuda()", ".cuda() moves to the CUDA device")
        elif func.attr in _DTYPE_METHODS and not node.args:
            self._dtype(func, _DTYPE_METHODS[func.attr], f".{func.attr}()")

    def _device_use(self, value: ast.AST, call: ast.Call) -> None:
        """A name bound to a CUDA device string, used where a device is expected."""
        key = _dotted(value)
        if key is None or key not in self.cuda_names:
            return
        func = call.func
        is_sink = (value in [k.value for k in call.keywords]
                   or (isinstance(func, ast.Attribute) and func.attr in ("to", "set_device"))
                   or self.qualname(func) in ("torch.device", "torch.set_default_device"))
        if is_sink:
            rule = Rule("cuda-device-flow", "device-string", "info", "torch-cuda-api",
                        "make the definition portable (torch.accelerator.current_accelerator())")
            self.add(value, rule, key, f"'{key}' is a CUDA device (set on line "
                     f"{self.cuda_names[key]})")

    def visit_ClassDef(self, node: ast.ClassDef) -> None:
        for base in node.bases:
            if self.qualname(base) in ("torch.nn.Module", "torch.nn.modules.module.Module"):
                self.modules.append((node, self.qualname(base)))

    def visit_FunctionDef(self, node: ast.FunctionDef) -> None:
        for deco in node.decorator_list:
            target = deco.func if isinstance(deco, ast.Call) else deco
            qual = self.qualname(target) or ""
            if qual in ("triton.jit", "triton.autotune", "triton.heuristics"):
                self.add(deco, _TRITON_KERNEL, qual, f"Triton kernel '{node.name}'")


def _catches_import_error(handler_type: ast.AST | None) -> bool:
    names = [handler_type] if not isinstance(handler_type, ast.Tuple) else handler_type.elts
    return handler_type is None or any(
        isinstance(n, ast.Name) and n.id in ("ImportError", "ModuleNotFoundError", "Exception")
        for n in names)


def _empty(node: ast.AST) -> bool:
    return isinstance(node, (ast.List, ast.Tuple)) and not node.elts or (
        isinstance(node, ast.Constant) and not node.value)


def _mentions_cu(node: ast.AST) -> bool:
    return any(isinstance(n, ast.Constant) and isinstance(n.value, str)
               and n.value.endswith((".cu", ".cuh")) for n in ast.walk(node))


_EXT_INLINE = Rule("cuda-extension-jit", "cuda-extension", "blocks", "cuda-kernel",
                   "rewrite the kernel as torch ops (then export this module with anychip), as "
                   "a Triton kernel where the family has Triton, or in the vendor's kernel "
                   "language")
_IS_CUDA = Rule("is-cuda", "device-string", "info", "torch-cuda-api",
                 "x.device.type == torch.accelerator.current_accelerator().type")
_TRITON_KERNEL = Rule("triton-kernel", "triton", "blocks", "triton",
                      "keep it where the family has a Triton backend (see --target), else "
                      "rewrite as torch ops and export the module with anychip")
_EXPORT = Rule("plain-module", "export", "info", "export",
               "a plain graph: export this module with anychip (torch.export -> ONNX -> "
               "'anychip compile MODEL --target T')")


# Every rule needs one of these words in the source (lower-cased): a file without any is only
# parsed (a file that does not parse is still reported) and checked for plain modules.
_TRIGGERS = tuple(sorted({"cuda", "nccl", "triton", "nvidia", "requires", "cpp_extension",
                          "bfloat16", "bf16", "float64", "double", "float8",
                          "dataparallel"}
                         | {name.split(".")[0] for name in LIBRARIES}))


def analyse(path: str, source: str) -> list[Finding]:
    """All findings in one Python source (raises SyntaxError/ValueError if it does not parse)."""
    tree = ast.parse(source, filename=path)
    analyser = _Analyser(path, source_lines(source))
    lowered = source.lower()
    if any(word in lowered for word in _TRIGGERS):
        analyser.report(analyser.collect(tree))
    else:  # no CUDA word anywhere: only top-level modules can give a (plain-module) finding
        imports = [n for n in tree.body if isinstance(n, (ast.Import, ast.ImportFrom))]
        analyser.collect(ast.Module(body=imports, type_ignores=[]))
        analyser.report({ast.ClassDef: [n for n in tree.body if isinstance(n, ast.ClassDef)]})
    for cls, base in analyser.modules:
        end = cls.end_lineno or cls.lineno
        inside = [f for f in analyser.findings
                  if cls.lineno <= f.line <= end and f.severity != "info"]
        has_forward = any(isinstance(n, ast.FunctionDef) and n.name == "forward"
                          for n in cls.body)
        if has_forward and not inside:
            analyser.add(cls, _EXPORT, base, f"{base} subclass '{cls.name}' uses no CUDA-only "
                         f"API")
    return sorted(analyser.findings, key=lambda f: (f.line, f.column, f.rule))
