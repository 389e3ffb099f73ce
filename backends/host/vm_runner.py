"""VmRunner: an artifact's lib.so run through the Relax VM on a TVM device (the cpu family, the
npu simulator, and GPU families where their device is present)."""

from __future__ import annotations

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

    def run(self, inputs: list[np.ndarray]) -> list[np.ndarray]:
        args = [self._device_tensor(i, x) for i, x in enumerate(inputs)]
        if self._main is None:
            self._main = self._vm["main"]
        out = self._main(*args)
        return [self._host_array(o) for o in _flatten(out)]

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


def _flatten(value) -> list:
    import tvm

    if isinstance(value, tvm.runtime.Tensor):
        return [value]
    result = []
    for item in value:
        result.extend(_flatten(item))
    return result
