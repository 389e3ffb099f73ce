"""How a train step meets the backend contract: a simulating backend that cannot lower train
steps gets a host build, reported; a compile-only target compiles and refuses to step (exit 3).
Fake families stand in for the npu backend until it lands."""

from __future__ import annotations

import pytest

import anychip
from anychip.backends.cpu import CpuBackend
from anychip.compiler import registry
from anychip.compiler.backend import Execution, Mode, OptionalBackendHooks
from anychip.compiler.errors import NotExecutable
from anychip.compiler.profiles import Profile

from .torch_models import batches, make_model, parity, torch_reference


class SimulatorWithoutTraining(OptionalBackendHooks):
    family = "fake-sim"

    def execution(self, profile):
        return Execution(Mode.SIMULATES, "test simulator on the host")

    def lower(self, mod, profile, options, ctx=None):
        raise NotImplementedError("no train-step lowering in this test backend")

    build = lower_train_step = lower

    def target(self, profile):
        raise NotImplementedError("no target in this test backend")


class CompilesOnly(OptionalBackendHooks):
    """Compiles with the cpu backend's code but says it cannot run here."""

    family = "fake-compile"
    Options = CpuBackend.Options     # the options of the code it compiles with

    def __init__(self, cpu):
        self._cpu, self._host = cpu, registry.get_profile("cpu")

    def execution(self, profile):
        return Execution(Mode.COMPILES_ONLY, "no test device here")

    def lower(self, mod, profile, options, ctx=None):
        return self._cpu.lower(mod, self._host, options, ctx)

    def build(self, mod, profile, options, ctx=None):
        return self._cpu.build(mod, self._host, options, ctx)


def _profile(name: str, family: str) -> Profile:
    raw = {"name": name, "vendor": "test", "family": family, "description": "test chip",
           "target": {"kind": "llvm"}, "dtypes": ["float32"], "precisions": ["fp32"]}
    return Profile(name, "test", family, "test chip", {"kind": "llvm"}, ("float32",), ("fp32",),
                   raw)


@pytest.fixture
def fake_targets(monkeypatch):
    profiles, backends = dict(registry.profiles()), dict(registry.backends())
    profiles.update({"sim-chip": _profile("sim-chip", "fake-sim"),
                     "dev-chip": _profile("dev-chip", "fake-compile")})
    backends.update({"fake-sim": SimulatorWithoutTraining(),
                     "fake-compile": CompilesOnly(backends["cpu"])})
    monkeypatch.setattr(registry, "profiles", lambda: profiles)
    monkeypatch.setattr(registry, "backends", lambda: backends)


def test_simulating_backend_without_training_lowering_runs_a_reported_host_build(
        fake_targets, tmp_path):
    model, shape, _ = make_model("mlp")
    data = batches(shape, 5, 3)
    optimizer = anychip.optim.SGD(lr=0.1, momentum=0.9)
    ref_losses, ref_state = torch_reference(model, optimizer, data)
    trainer = anychip.compile_training(model, example_inputs=(data[0][0],),
                                       optimizer=optimizer, target="sim-chip")
    assert trainer.execution.mode is Mode.SIMULATES
    assert trainer.report["built_for"] == "cpu"
    assert "does not lower train steps yet" in trainer.describe()
    losses = [trainer.step(x, y) for x, y in data]
    parity(trainer, losses, ref_losses, ref_state)
    loaded = anychip.load_training(trainer.save(tmp_path / "sim.train"))
    assert loaded.execution.mode is Mode.SIMULATES and loaded.target == "sim-chip"


def test_compile_only_target_compiles_and_refuses_to_step(fake_targets, tmp_path):
    model, shape, _ = make_model("mlp")
    x, y = batches(shape, 5, 1)[0]
    trainer = anychip.compile_training(model, example_inputs=(x,),
                                       optimizer=anychip.optim.SGD(lr=0.1), target="dev-chip")
    assert trainer.execution.mode is Mode.COMPILES_ONLY
    with pytest.raises(NotExecutable, match="compiled but cannot run here: no test device"):
        trainer.step(x, y)
    assert NotExecutable.exit_code == 3
    # it can still be saved, to run where the device is, and its state read
    loaded = anychip.load_training(trainer.save(tmp_path / "dev.train"))
    assert set(loaded.state_dict()) == set(model.state_dict())


@pytest.mark.parametrize("target", ["nvidia-h100", "hygon-k100", "mthreads-s4000"])
def test_real_gpu_profiles_compile_a_train_step_with_torch_parameter_names(target):
    """nn.Sequential names its parameters `0.weight`, `2.bias`: the train step keeps them as
    kernel parameters, so they must reach nvcc/hipcc as C identifiers."""
    import torch

    execution = registry.get_backend(registry.get_profile(target)).execution(
        registry.get_profile(target))
    if execution.mode is Mode.UNAVAILABLE:
        pytest.skip(f"{target} cannot compile here: {execution.why}")
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(16, 32), torch.nn.ReLU(), torch.nn.Linear(32, 4))
    x = torch.randn(8, 16)
    trainer = anychip.compile_training(model, example_inputs=(x,), loss="cross_entropy",
                                       optimizer=anychip.optim.SGD(lr=0.1), target=target)
    assert trainer.report["built_for"] == target
    assert set(trainer.state_dict()) == set(model.state_dict())
    if execution.mode is Mode.COMPILES_ONLY:
        with pytest.raises(NotExecutable, match="cannot run here"):
            trainer.step(x.numpy(), torch.randint(0, 4, (8,)).numpy())
