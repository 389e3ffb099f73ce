"""VmRunner keeps TVM's load-time log off the terminal: loading a second artifact into a
process made TVM print "SystemLib symbol ... overriden" for every load (verify --target all)."""

from __future__ import annotations

import numpy as np

import anychip
from anychip.compiler.inputs import random_inputs

from ...conftest import make_linear_model


def test_loading_several_artifacts_prints_nothing_on_stderr(capfd):
    outputs = []
    for target in ("cpu", "ascend-310p", "ascend-910"):
        art = anychip.compile(make_linear_model(), target=target)
        outputs.append(art.run(random_inputs(art.inputs, 0)))
    assert all(np.all(np.isfinite(np.asarray(o["y"]))) for o in outputs)
    assert "overriden" not in capfd.readouterr().err
