"""TrainGraph -> the Relax `backbone` module that relax.training.SetupTrainer takes.

    backbone(inputs..., [key,] params..., states...) -> (prediction, new_states...)
    module attrs: param_num, state_num

`key` (uint32 [3]: seed, counter, train) is there when the model has Dropout with p > 0: the
masks are drawn from it inside the step (training/dropout.py).

The graph goes through the inference path's frontend (checks, shape inference, C-identifier
I/O names) and importer (from_onnx with the initializers kept as inputs). Then: initializers that
are neither trained nor states become constants, train-mode batch norms are rewritten with
torch's running-statistics rule (see graph.py), and the parameters are put in backbone order.
"""

from __future__ import annotations

from dataclasses import dataclass

from ..errors import AnychipError
from ..frontend import TensorSpec, prepare
from ..importer import to_relax
from ..names import sanitize_initializer_names
from ..passes import target_neutral_passes
from .graph import TrainGraph

BACKBONE = "backbone"


@dataclass
class Backbone:
    module: object              # tvm.IRModule with `backbone`, param_num, state_num
    inputs: list[TensorSpec]    # graph inputs (user names, static shapes)
    prediction: object          # relax.TensorType of the prediction
    proto: object = None        # the train-mode ONNX graph (names nodes in refusals)
    dropouts: list = None       # Dropout ratios (p > 0): the step then takes the dropout key
    padding_rows: dict = None   # parameter Var name -> embedding padding_idx (gradients.py)


def build_backbone(graph: TrainGraph) -> Backbone:
    import tvm

    source = prepare(graph.proto, graph.label, None, graph.shapes or None)
    init_names = [i.name for i in source.proto.graph.initializer]
    sanitize_initializer_names(source.proto)   # parameters reach device code by name
    # the inference path's target-neutral passes too: an out-of-range token id must not read
    # out of bounds in a train step either, and Pow(x, 2) must not become NaN under fast math
    mod = tvm.transform.Sequential(target_neutral_passes())(
        to_relax(source, keep_params_in_input=True))
    func = mod["main"]
    num_input = int(func.attrs["num_input"])
    if len(func.params) - num_input != len(init_names):
        raise AnychipError(f"{graph.label}: {len(init_names)} initializers became "
                           f"{len(func.params) - num_input} Relax parameters (two names sanitize "
                           f"to the same identifier?); rename the initializers.")
    var_of = dict(zip(init_names, func.params[num_input:]))
    inputs = list(func.params[:num_input])
    kept = set(graph.params) | set(graph.states)
    constants = {var_of[n]: graph.values[n] for n in init_names if n not in kept}
    func = tvm.relax.Function(func.params, func.body, func.ret_ty, func.is_pure)
    if constants:
        func = func.bind_params(constants)
    func = _rewrite_batch_norms(func, {var_of[s.mean].name: s for s in graph.batch_norms})
    keys = []
    specs = source.inputs
    if graph.dropouts:
        from .dropout import KEY_NAME, rewrite_dropouts
        from .graph import dropout_marker

        markers = {dropout_marker(i): i for i in range(len(graph.dropouts))}
        marker_vars = {v: markers[v.name] for v in inputs if v.name in markers}
        if len(marker_vars) != len(markers):
            raise AnychipError(f"{graph.label}: the dropout markers did not survive the import; "
                               f"report the model.")
        inputs = [v for v in inputs if v not in marker_vars]
        specs = [s for s in source.inputs if s.name not in markers]
        keys = [tvm.relax.Var(KEY_NAME, tvm.relax.TensorType([3], "uint32"))]
        func = rewrite_dropouts(func, graph.dropouts, marker_vars, keys[0])
    params = (inputs + keys + [var_of[n] for n in graph.params]
              + [var_of[n] for n in graph.states])
    func = _with_tuple_return(func, params, len(graph.states))
    func = func.with_attr("global_symbol", BACKBONE)
    module = tvm.IRModule({BACKBONE: func}).with_attrs(
        {"param_num": len(graph.params), "state_num": len(graph.states)})
    try:
        tvm.relax.analysis.well_formed(module)
    except Exception as exc:
        first = (str(exc).strip().splitlines() or ["?"])[-1][:200]
        raise AnychipError(f"{graph.label}: the training backbone is not well formed ({first}); "
                           f"report the model.") from exc
    prediction = func.body.body.fields[0].ty if len(graph.states) else func.body.body.ty
    padding = {var_of[n].name: row for n, row in graph.padding_rows.items() if n in var_of}
    return Backbone(module, specs, prediction, graph.proto, list(graph.dropouts), padding)


def _with_tuple_return(func, params, num_states: int):
    """backbone(params in training order) returning (prediction, states...) as a tuple of
    output vars, as AppendLoss requires; the bindings are re-emitted unchanged."""
    from tvm import relax

    body = func.body
    if len(body.blocks) != 1 or not isinstance(body.blocks[0], relax.DataflowBlock):
        raise AnychipError("the model imports without a single dataflow block (control flow such "
                           "as If or Loop?); training needs a straight-line graph.")
    *bindings, last = body.blocks[0].bindings
    if not last.var.same_as(body.body):
        raise AnychipError("unexpected form of the imported graph's output; report the model.")
    fields = last.value.fields if num_states else None
    if num_states and not isinstance(last.value, relax.Tuple):
        raise AnychipError("unexpected form of the imported graph's outputs; report the model.")
    bb = relax.BlockBuilder()
    with bb.function(BACKBONE, params):
        with bb.dataflow():
            for binding in bindings if num_states else body.blocks[0].bindings:
                bb.emit_normalized(binding)
            if num_states:
                result = relax.Tuple([bb.emit_output(value) for value in fields])
            else:
                result = body.body
        bb.emit_func_output(result)
    return bb.get()[BACKBONE]


def _rewrite_batch_norms(func, specs: dict):
    """Train-mode batch_norm -> batch statistics plus torch's running-statistics update."""
    import tvm
    from tvm import relax

    op = relax.op

    @relax.expr_functor.mutator
    class TrainBatchNorm(relax.PyExprMutator):
        def visit_call_(self, call):
            call = self.visit_expr_post_order(call)
            if not isinstance(call.op, tvm.ir.Op) or call.op.name != "relax.nn.batch_norm":
                return call
            x, gamma, beta, mean_old, var_old = call.args
            spec = specs.get(getattr(mean_old, "name", None))
            if spec is None or not call.attrs.training:
                raise AnychipError(f"batch_norm on '{getattr(mean_old, 'name', '?')}' is not in "
                                   f"training mode or its statistics are not states; report it.")
            emit = self.builder_.emit
            shape = [int(d) for d in x.ty.shape]
            axis = int(call.attrs.axis) % len(shape)
            axes = [i for i in range(len(shape)) if i != axis]
            count = 1
            for i in axes:
                count *= shape[i]
            if count < 2:
                raise AnychipError(f"batch norm on '{mean_old.name}': {count} value per channel "
                                   f"in a batch; training needs more (use a larger batch).")
            dtype = x.ty.dtype.dtype

            def c(value):
                return relax.const(value, dtype)

            mean = emit(op.mean(x, axes))
            var = emit(op.variance(x, axes))
            centered = op.subtract(x, op.expand_dims(mean, axes))
            y = emit(op.divide(centered, op.sqrt(op.add(op.expand_dims(var, axes),
                                                        c(float(call.attrs.epsilon))))))
            if call.attrs.scale:
                y = emit(op.multiply(y, op.expand_dims(gamma, axes)))
            if call.attrs.center:
                y = emit(op.add(y, op.expand_dims(beta, axes)))
            m = spec.momentum
            unbiased = op.multiply(var, c(count / (count - 1)))
            new_mean = emit(op.add(op.multiply(c(m), mean), op.multiply(c(1.0 - m), mean_old)))
            new_var = emit(op.add(op.multiply(c(m), unbiased), op.multiply(c(1.0 - m), var_old)))
            return relax.Tuple([y, new_mean, new_var])

    return TrainBatchNorm().visit_expr(func)
