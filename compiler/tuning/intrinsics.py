"""Import TVM's tensor intrinsics without its minute and a half of stack walks.

MetaSchedule imports `tvm.s_tir.tensor_intrin` when it makes a tune context and again in every
builder worker process. Each of the module's TVMScript `@T.prim_func` definitions calls
`inspect.stack()`, which resolves every frame's module by scanning `sys.modules`; for frames
without a file ("<ast>", "<string>", frozen importlib) the scan never finds one and runs to the
end: 31k scans of ~1,400 modules, 87 s of CPU per process on the 2-core build machine (TVM
0.27, measured 2026-12-04 with cProfile: `inspect.getmodule` 185 s cumulative under the
profiler). It made `anychip tune --trials 2` of one elementwise kernel take 5 minutes.

During that import only, `inspect.stack` is replaced by an equivalent that takes each frame's
file name from its code object and its line from linecache: what TVM's parser reads from the
stack (the frames, their functions, the decorator's line).
"""

from __future__ import annotations

import contextlib
import inspect
import linecache
import sys

MODULE = "tvm.s_tir.tensor_intrin"


def _stack_without_module_lookup(context: int = 1) -> list[inspect.FrameInfo]:
    """inspect.stack() with filenames from the code objects (no sys.modules scan)."""
    frames, frame = [], sys._getframe(1)
    while frame is not None:
        filename, lineno = frame.f_code.co_filename, frame.f_lineno
        line = linecache.getline(filename, lineno) if context > 0 else ""
        frames.append(inspect.FrameInfo(frame, filename, lineno, frame.f_code.co_name,
                                        [line] if line else None, 0 if line else None))
        frame = frame.f_back
    return frames


@contextlib.contextmanager
def _cheap_stack():
    original = inspect.stack
    inspect.stack = _stack_without_module_lookup
    try:
        yield
    finally:
        inspect.stack = original


def import_tensor_intrinsics() -> None:
    """Import tvm.s_tir.tensor_intrin (once per process) the cheap way. Also the builder
    workers' initializer (compiler/tuning/tune.py), so it must stay a module-level function."""
    if MODULE in sys.modules:
        return
    with _cheap_stack():
        import tvm.s_tir.tensor_intrin  # noqa: F401
