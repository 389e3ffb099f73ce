"""anychip: one model, any chip.

    art = anychip.compile("model.onnx" | torch_module | "zoo:resnet18", target="cpu")
    outs = art.run(inputs); art.save("m.anychip"); art = anychip.load("m.anychip")
    report = anychip.verify(model, target="cpu"); anychip.targets()

The public functions import TVM lazily, so `anychip targets` and `--help` stay fast.
"""

from __future__ import annotations

from .compiler.version import __version__  # the one source of the version


def compile(model, target: str = "cpu", **kwargs):  # noqa: A001 - the public name is `compile`
    """Compile an ONNX path, ModelProto, torch.nn.Module or 'zoo:NAME' for one target."""
    from .compiler.driver import compile_model

    return compile_model(model, target=target, **kwargs)


def load(path):
    """Load a saved artifact, checking its file hashes and the anychip/TVM versions."""
    from .compiler.artifact import load_artifact

    return load_artifact(path)


def verify(model, target: str = "cpu", **kwargs):
    """Compile, run and compare with ONNX Runtime's CPU provider on the original model."""
    from .compiler.verify import verify_model

    return verify_model(model, target=target, **kwargs)


def targets():
    """Every chip profile with its family, vendor and execution mode on this machine."""
    from .compiler.registry import targets as _targets

    return _targets()


__all__ = ["compile", "load", "verify", "targets", "__version__"]


# -- training (issue 6) -------------------------------------------------------------------------
from . import optim  # noqa: E402 - light (dataclasses only): anychip.optim.SGD works after import


def compile_training(model, example_inputs=None, loss: str = "cross_entropy", optimizer=None,
                     target: str = "cpu", **kwargs):
    """Compile a train step (forward, loss, TVM gradient, optimizer) for one target.

    Returns a Trainer: `.step(x, y) -> float`, `.state_dict()`, `.load_state_dict(sd)`,
    `.save(path)`. Optimizers: anychip.optim.SGD / anychip.optim.Adam, with torch's rules.
    """
    from .compiler.training import compile_training as _compile_training

    return _compile_training(model, example_inputs=example_inputs, loss=loss,
                             optimizer=optimizer, target=target, **kwargs)


def load_training(path):
    """Load a trainer saved with Trainer.save, checking its hashes and versions."""
    from .compiler.training import load_training as _load_training

    return _load_training(path)


__all__ += ["compile_training", "load_training", "optim"]


# -- language models (issue 17) -----------------------------------------------------------------
def compile_lm(model, target: str = "cpu", max_seq_len: int = 256, **kwargs):
    """Compile a causal LM as a prefill and a decode function sharing a static KV cache.

    `model`: a transformers causal LM, a local model folder or config.json, or zoo:llama /
    zoo:gpt2. Returns a CompiledLM: `.generate(input_ids, max_new_tokens=N, do_sample=False |
    temperature/top_k/top_p with seed, eos_token_id=...)` -> numpy ids [batch, prompt + new].
    """
    from .compiler.lm.compiled_lm import compile_lm as _compile_lm

    return _compile_lm(model, target=target, max_seq_len=max_seq_len, **kwargs)


__all__ += ["compile_lm"]
