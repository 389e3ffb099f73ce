"""Backbone -> the compiled train step for one target.

relax.training.SetupTrainer appends the loss, decomposes ops for training, differentiates with
relax.transform.Gradient and adds the optimizer. The module then goes through the driver's
orchestration exactly as inference does (compiler/driver.py `lower_and_build`), with a
CompileContext whose `training` is set: the backend's `lower_train_step`, then `build`, so a
family can pick its training defaults. The compiler never looks at the family's name.

A backend that cannot lower a train step raises NotImplementedError from `lower` or `build`.
If its target simulates (the functional simulator runs on the host), the step is then built for
the host CPU and the fact is written in the trainer's report; a target that executes or only
compiles gets the error instead. No fallback happens silently.
"""

from __future__ import annotations

import re
import time
from dataclasses import dataclass, field

from ..backend import CompileOptions, Execution, Mode
from ..driver import lower_and_build, new_context
from ..errors import (AnychipError, NotExecutable, error_line, memory_ceiling_error,
                      out_of_memory)
from ..registry import get_backend, get_profile, host_profile
from .gradients import PADDING_ROWS
from .losses import loss_function
from .undifferentiable import check_differentiable

ADJOINT = "backbone_loss_adjoint"
OPTIMIZER = "optimizer"


@dataclass
class CompiledStep:
    executable: object            # relax Executable with ADJOINT and OPTIMIZER
    optim_state: list             # numpy arrays: the optimizer's initial state
    label_shape: tuple[int, ...]
    label_dtype: str
    target: str
    execution: Execution
    precision: str
    runtime: dict
    report: dict = field(default_factory=dict)


def setup_trainer(backbone, loss_name: str, optimizer, label: str, fused_update: bool = False):
    """Backbone -> module with ADJOINT and OPTIMIZER (not legalized: the backend lowers it).
    `fused_update`: Adam's per-parameter update as one kernel (optim._adam_kernel)."""
    import tvm
    from tvm.relax.training import SetupTrainer

    loss, label_type = loss_function(loss_name, backbone.prediction)
    loss(backbone.prediction, label_type)  # our own code: its errors are not the model's
    check_differentiable(backbone, loss, label_type, label)  # all ops without a gradient
    relax_optimizer = optimizer.relax_optimizer(fused=fused_update)
    padding = PADDING_ROWS.set(dict(backbone.padding_rows or {}))
    try:
        mod = SetupTrainer(loss, relax_optimizer,
                           [backbone.prediction, label_type], legalize=False)(backbone.module)
    except AnychipError:
        raise
    except Exception as exc:
        detail = error_line(exc)
        missing = re.search(r"FPrimalGradient has not been registered for (\S+)", detail)
        if missing:
            raise AnychipError(f"{label}: TVM has no gradient for operator '{missing[1]}', so "
                               f"the layer that uses it cannot be trained; replace it with one "
                               f"that TVM can differentiate.") from exc
        raise AnychipError(f"{label}: TVM cannot differentiate the model: {detail}.") from exc
    finally:
        PADDING_ROWS.reset(padding)
    optim_state = [t.numpy() for t in mod.attrs["optim_state"]]
    keep = {gv: func for gv, func in mod.functions_items() if gv.name_hint in (ADJOINT, OPTIMIZER)}
    keep.update(getattr(relax_optimizer, "kernels", {}))   # a fused update's TIR kernels
    step_mod = tvm.IRModule(keep)
    shape = tuple(int(d) for d in label_type.shape)
    return step_mod, optim_state, shape, str(label_type.dtype.dtype)


def build_step(mod, target: str, options: CompileOptions, label: str):
    """Lower and build through the target's backend; see the module docstring for fallbacks."""
    profile = get_profile(target)
    backend = get_backend(profile)
    execution = backend.execution(profile)
    if execution.mode is Mode.UNAVAILABLE:
        raise NotExecutable(f"target '{target}' cannot compile here: {execution.why}.")
    report = {"target": target, "family": profile.family, "built_for": target}
    try:
        ctx = new_context(backend, profile, options, training=True)
        result = lower_and_build(backend, mod, profile, options, ctx)
    except NotImplementedError as exc:
        if execution.mode is not Mode.SIMULATES:
            raise AnychipError(f"target '{target}': the '{profile.family}' backend cannot compile "
                               f"a train step yet ({exc or 'not implemented'}).") from exc
        host = host_profile()
        host_backend = get_backend(host)
        host_ctx = new_context(host_backend, host, CompileOptions(), training=True)
        result = _lower_build_errors(lower_and_build, host_backend, mod, host, CompileOptions(),
                                     host_ctx, target=target)
        report["built_for"] = host.name
        report["note"] = (f"the '{profile.family}' backend does not lower train steps yet "
                          f"({exc or 'not implemented'}); the step was built for the host CPU "
                          f"(LLVM) and runs there as the simulation of '{target}'")
    except AnychipError:
        raise
    except Exception as exc:  # TVM raises its own error types from C++
        if out_of_memory(exc):
            raise memory_ceiling_error("compiling the train step", target) from exc
        raise AnychipError(f"{label}: compiling the train step for '{target}' failed: "
                           f"{error_line(exc)}. Rerun with --debug for the trace.") from exc
    return result, execution, report


def _lower_build_errors(fn, *args, target):
    try:
        return fn(*args)
    except AnychipError:
        raise
    except Exception as exc:
        raise AnychipError(f"compiling the train step of '{target}' for the host failed: "
                           f"{error_line(exc)}.") from exc


def compile_step(backbone, loss_name: str, optimizer, target: str, options: CompileOptions,
                 label: str) -> CompiledStep:
    started = time.perf_counter()
    # a family may take one kernel per parameter's Adam update (the backend says so)
    profile = get_profile(target)
    fused = bool(getattr(get_backend(profile), "fused_optimizer_update", False))
    mod, optim_state, label_shape, label_dtype = setup_trainer(backbone, loss_name, optimizer,
                                                               label, fused)
    result, execution, report = build_step(mod, target, options, label)
    report["backend_report"] = dict(result.report)
    report["compile_s"] = round(time.perf_counter() - started, 3)
    report["execution"] = execution.mode.value
    report["execution_why"] = execution.why
    return CompiledStep(result.executable, optim_state, label_shape, label_dtype, target,
                        execution, result.precision, dict(result.runtime), report)
