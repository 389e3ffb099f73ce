"""VmRunner: an artifact's lib.so run through the Relax VM on a TVM device (the cpu family, the
npu simulator, and GPU families where their device is present)."""

from __future__ import annotations

import math

import numpy as np

from anychip.compiler import progress
from anychip.compiler.backend import Execution
from anychip.compiler.dispatch import run_threads


class VmRunner:
    """Runs an artifact's lib.so on a TVM device through the Relax VM.

    Kernel libraries the artifact calls into (manifest runtime `libraries`) are registered
    first: the VM resolves packed functions when it is created.
    """

    def __init__(self, artifact, device: str, execution: Execution):
        import tvm
        from tvm import relax

        from anychip.compiler.dispatch import make_available

        runtime = artifact.manifest.get("runtime", {})
        threads = run_threads(runtime.get("num_threads"))
        make_available(list(runtime.get("libraries", [])), threads)
        self.execution = execution
        self._inputs: dict = {}   # position -> (device tensor, its numpy view), reused
        self._dev = tvm.device(device, 0)
        self._host = device == "cpu"
        # TVM logs "SystemLib symbol __tvm_ffi__library_bin get overriden" each time a second
        # artifact loads into a process (verify --target all, a matrix worker): kept here, in
        # `native_log`, not on the user's terminal; a failed load shows its log unchanged
        self.native_log: list[dict] = []
        with progress.native_messages(self.native_log):
            lib = tvm.runtime.load_module(str(artifact.library_path))
            self._vm = relax.VirtualMachine(lib, self._dev)
        self._main = None   # the VM's "main", looked up once (1.2 us a lookup)
        self._held = None   # the last run's outputs and their addresses (_host_outputs)
        self._copied: set[int] = set()   # outputs found in memory that persists

    def run(self, inputs: list[np.ndarray]) -> list[np.ndarray]:
        args = [self._device_tensor(i, x) for i, x in enumerate(inputs)]
        if self._main is None:
            self._main = self._vm["main"]
        outs = _flatten(self._main(*args))
        if not self._host:
            return [self._host_array(o) for o in outs]
        return self._host_outputs(outs)

    def _host_outputs(self, outs: list) -> list[np.ndarray]:
        """The outputs as numpy arrays, sharing the VM's memory where no later run can write
        it. A copy of a large output is a real share of a run (zoo:llama's 4 MB of logits:
        0.4 ms of 8). An output the VM allocated for this run is only freed when nothing
        refers to it, so a numpy view of it is the caller's to keep. What persists across
        runs is copied: an output in a kept input buffer (refilled by the next run) and one
        whose memory the next run returns again (a constant, or storage the VM keeps), found
        by holding the last run's outputs: memory still referenced is never handed out
        again, so a repeated address is memory that persists. The first run copies all."""
        if all(math.prod(o.shape) < VIEW_MIN_ELEMENTS for o in outs):
            self._held = None   # small outputs: a copy costs less than the bookkeeping
            return [self._host_array(o) for o in outs]
        views = [np.from_dlpack(o) if o.dtype in _PLAIN_DTYPES else None for o in outs]
        addresses = [v.__array_interface__["data"][0] if v is not None else None
                     for v in views]
        previous, self._held = self._held, (outs, addresses)
        result = []
        for i, (out, view, address) in enumerate(zip(outs, views, addresses)):
            persistent = (view is None or previous is None or i in self._copied
                          or address in previous[1] or self._in_kept_input(address))
            if persistent and previous is not None and view is not None \
                    and address in previous[1]:
                self._copied.add(i)
            result.append(self._host_array(out) if persistent else view)
        return result

    def _in_kept_input(self, address: int) -> bool:
        for _, array in self._inputs.values():
            start = array.__array_interface__["data"][0]
            if start <= address < start + max(array.nbytes, 1):
                return True
        return False

    def _device_tensor(self, position: int, x):
        """A device tensor holding `x`. On the host, one TVM-allocated tensor per input
        position (64-byte aligned, as its kernels assume; replaced when the shape changes)
        is kept and refilled by numpy: a run's own cost is most of a small model's time
        (zoo:mlp: 67 -> 19 us a run with the artifact's specs read once, the VM's call
        itself 7). Reuse is safe: the kernels only read their inputs, and every output is
        copied out before the next run refills them."""
        import tvm

        x = np.asarray(x, order="C")
        if not self._host or x.dtype not in _PLAIN_NUMPY:
            return tvm.runtime.tensor(x, self._dev)
        kept = self._inputs.get(position)
        if kept is None or kept[1].shape != x.shape or kept[1].dtype != x.dtype:
            tensor = tvm.runtime.empty(x.shape, str(x.dtype), self._dev)
            kept = self._inputs[position] = (tensor, np.from_dlpack(tensor))
        kept[1][...] = x
        return kept[0]

    def _host_array(self, tensor) -> np.ndarray:
        """An output as a numpy array of its own (a copy: the VM may reuse its memory)."""
        if not self._host or tensor.dtype not in _PLAIN_DTYPES:
            return np.asarray(tensor.numpy())
        return np.array(np.from_dlpack(tensor))


# dtypes numpy reads through DLPack exactly as TVM stores them (bool, bfloat16 and the like
# take TVM's own conversion)
_PLAIN_DTYPES = frozenset(f"{k}{b}" for k in ("float", "int", "uint") for b in (8, 16, 32, 64)
                          if f"{k}{b}" != "float8")
_PLAIN_NUMPY = frozenset(np.dtype(d) for d in _PLAIN_DTYPES)


# outputs smaller than this (float32: 64 KB) are copied without the bookkeeping above: zoo:mlp
# runs in 10-20 us, and the checks of a view cost more than copying a few hundred numbers
VIEW_MIN_ELEMENTS = 16384


def _flatten(value) -> list:
    import tvm

    if isinstance(value, tvm.runtime.Tensor):
        return [value]
    result = []
    for item in value:
        result.extend(_flatten(item))
    return result
