"""compiler/torch_export.py: the dynamo exporter, quiet, self-contained, one-line errors."""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch

from anychip.compiler.errors import AnychipError
from anychip.compiler.torch_export import export_torch


class WithDropout(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = torch.nn.Linear(8, 4)
        self.drop = torch.nn.Dropout(0.5)

    def forward(self, x):
        return self.drop(torch.relu(self.fc(x)))


class DataDependent(torch.nn.Module):
    def forward(self, x):
        if x.sum() > 0:
            return x
        return -x


def test_export_is_eval_mode_static_self_contained_and_quiet(capfd):
    torch.manual_seed(0)
    module = WithDropout().train()
    x = torch.randn(3, 8)
    proto = export_torch(module, (x,), input_names=["x"], output_names=["y"])
    out, err = capfd.readouterr()
    assert out == "" and err == ""
    assert not module.training
    onnx.checker.check_model(proto, full_check=True)
    assert [i.name for i in proto.graph.input] == ["x"]
    assert [o.name for o in proto.graph.output] == ["y"]
    for vi in list(proto.graph.input) + list(proto.graph.output):
        assert all(d.HasField("dim_value") for d in vi.type.tensor_type.shape.dim)
    assert all(t.data_location != onnx.TensorProto.EXTERNAL for t in proto.graph.initializer)
    assert not [n for n in proto.graph.node if n.op_type == "Dropout"
                and any(a.name == "training_mode" for a in n.attribute)]
    session = ort.InferenceSession(proto.SerializeToString(), providers=["CPUExecutionProvider"])
    with torch.no_grad():
        want = module(x).numpy()
    np.testing.assert_allclose(session.run(None, {"x": x.numpy()})[0], want, rtol=1e-5, atol=1e-6)


def test_failed_export_is_one_line_naming_the_class():
    with pytest.raises(AnychipError) as err:
        export_torch(DataDependent(), (torch.randn(4),))
    message = str(err.value)
    assert message.startswith("torch.onnx.export failed for DataDependent: ")
    assert "\n" not in message and "\x1b" not in message
    assert "data-dependent" in message


def test_not_a_module_is_refused():
    with pytest.raises(AnychipError, match="expected a torch.nn.Module, got dict"):
        export_torch({}, (torch.randn(2),))


def test_exported_bytes_do_not_depend_on_where_the_source_lives():
    """The exporter records Python stack traces (absolute file paths) per node; they are
    dropped so two installs of the same code export the same bytes (and zoo cache keys)."""
    torch.manual_seed(0)
    proto = export_torch(WithDropout(), (torch.randn(2, 8),))
    serialized = proto.SerializeToString()
    assert __file__.encode() not in serialized and b"stack_trace" not in serialized
    assert all(len(n.metadata_props) == 0 for n in proto.graph.node)


def test_a_dim_the_exporter_fixes_is_refused_at_export_naming_input_axis_and_dim():
    """torch.export raises 'Constraints violated' where the module's code fixes a size the
    caller marked dynamic; the ONNX exporter returned a model with the dim fixed, and
    anychip refused the user's bounds later ('--dim names seq, but the model's symbolic dims
    are ...': Funnel, CANINE in the transformers probe)."""
    class FixedWidth(torch.nn.Module):
        def forward(self, x):
            return x.reshape(x.shape[0], 4, 4).sum(-1)

    seq = torch.export.Dim("seq", min=2, max=64)
    with pytest.raises(AnychipError, match=r"fixed input 'x' axis 1 \(Dim 'seq'\) at 16"):
        export_torch(FixedWidth(), (torch.randn(2, 16),), ["x"], ["y"],
                     dynamic_shapes=({1: seq},))
    batch = torch.export.Dim("batch", min=1, max=8)   # the dim the code leaves free: fine
    proto = export_torch(FixedWidth(), (torch.randn(2, 16),), ["x"], ["y"],
                         dynamic_shapes=({0: batch},))
    assert proto.graph.input[0].type.tensor_type.shape.dim[0].dim_param == "batch"
