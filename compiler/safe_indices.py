"""Index operators whose indices arrive at run time never touch memory outside their tensors.

TVM's kernels for gather_elements, gather_nd, scatter_elements and scatter_nd index without a
bounds check: an index from the user's data (a hostile or simply wrong input) read or wrote
outside the buffer and crashed the process (a segfault for an index 10^7 past the end; silent
corruption for one just past it). ONNX Runtime rejects such an index with an error; a compiled
artifact has no error channel at run time, so, as for Gather (passes.safe_take), the result says
it instead:

- gathers: a float result is NaN where its index was out of range, an integer result reads the
  clipped position;
- scatters: an update whose index is out of range is dropped (written into a scratch slot one
  past the end, which is sliced away).

In-range indices are unchanged, ONNX's negative indices included (-s <= i < s counts from the
end). Indices that are constants of the model are left alone (the ONNX checker and the
importer see them). Extents may be symbolic (a dynamic model: the bounds are read from the
data's shape at run time, where a static model has constants); the rank must be known, and
gather_nd/scatter_nd's index depth (the indices' last dim) static.
"""

from __future__ import annotations


def _shape(expr) -> list | None:
    """The dims of a tensor expression (ints, or PrimExprs where symbolic), or None (unknown
    rank or shape)."""
    shape = getattr(expr.ty, "shape", None)
    values = getattr(shape, "values", None)
    if values is None:
        return None
    return [int(d.value) if getattr(d, "value", None) is not None else d for d in values]


def _extents(dims: list, dtype: str, scalar: bool = False):
    """`dims` as an index tensor: constants where every dim is static, else read from the
    shape at run time (shape_to_tensor of the symbolic dims); a 0-d tensor when `scalar`."""
    import numpy as np
    from tvm import relax
    from tvm.relax import op

    if all(isinstance(d, int) for d in dims):
        values = np.array(dims[0] if scalar else dims, dtype=dtype)
        return relax.const(values, dtype)
    tensor = op.astype(op.shape_to_tensor(relax.ShapeExpr(dims)), dtype)
    return op.reshape(tensor, []) if scalar else tensor


def _normalised(indices, extent, dtype: str):
    """(indices with negatives counted from the end, in-range mask). `extent` is a tensor
    that broadcasts against the indices (_extents)."""
    from tvm import relax
    from tvm.relax import op

    s = extent
    zero = relax.const(0, dtype)
    counted = op.where(op.less(indices, zero), op.add(indices, s), indices)
    valid = op.logical_and(op.greater_equal(counted, zero), op.less(counted, s))
    return counted, valid


def _nan_where_invalid(result, valid):
    from tvm import relax
    from tvm.relax import op

    dtype = str(result.ty.dtype) if hasattr(result, "ty") and result.ty is not None else ""
    if not dtype.startswith(("float", "bfloat")):
        return result
    return op.where(valid, result, relax.const(float("nan"), dtype))


def safe_index_ops():
    """The module pass (compiler/passes.py lists it among the target-neutral passes)."""
    import tvm
    from tvm import relax
    from tvm.relax import op
    from tvm.relax.expr_functor import PyExprMutator, mutator

    from .relax_functions_pass import relax_functions_pass

    ops = {name: tvm.ir.Op.get(f"relax.{name}") for name in
           ("gather_elements", "gather_nd", "scatter_elements", "scatter_nd")}

    @mutator
    class _SafeIndices(PyExprMutator):
        def visit_call_(self, call):  # noqa: N802 - TVM's visitor naming
            call = super().visit_call_(call)
            which = next((n for n, o in ops.items() if call.op == o), None)
            if which is None or isinstance(call.args[1], tvm.ir.expr.GenericConst):
                return call
            data, indices = call.args[0], call.args[1]
            dshape, ishape = _shape(data), _shape(indices)
            if dshape is None or ishape is None:
                return call
            idtype = str(indices.ty.dtype)
            rewrite = getattr(self, "_" + which)
            return self.builder_.normalize(rewrite(call, data, indices, dshape, ishape, idtype))

        def _gather_elements(self, call, data, indices, dshape, ishape, idtype):
            axis = int(call.attrs.axis) % len(dshape)
            counted, valid = _normalised(indices, _extents([dshape[axis]], idtype, True),
                                         idtype)
            clipped = op.where(valid, counted, op.zeros_like(counted))
            result = self.builder_.normalize(op.gather_elements(data, clipped, axis))
            return _nan_where_invalid(result, valid)

        def _gather_nd(self, call, data, indices, dshape, ishape, idtype):
            batch = int(call.attrs.batch_dims)
            k = ishape[-1]
            if not isinstance(k, int):
                return call
            counted, valid = _normalised(indices, _extents(dshape[batch:batch + k], idtype),
                                         idtype)
            clipped = op.where(valid, counted, op.zeros_like(counted))
            result = self.builder_.normalize(op.gather_nd(data, clipped, batch))
            whole = op.equal(op.min(op.astype(valid, "int32"), axis=-1),
                             relax.const(1, "int32"))
            rest = len(dshape) - batch - k
            whole = op.reshape(whole, ishape[:-1] + [1] * rest) if rest else whole
            return _nan_where_invalid(result, whole)

        def _scatter_elements(self, call, data, indices, dshape, ishape, idtype):
            axis = int(call.attrs.axis) % len(dshape)
            extent = _extents([dshape[axis]], idtype, True)
            counted, valid = _normalised(indices, extent, idtype)
            scratch = op.full_like(counted, extent)
            redirected = op.where(valid, counted, scratch)
            pad_shape = [1 if i == axis else d for i, d in enumerate(dshape)]
            padded = op.concat([data, op.zeros(pad_shape, str(data.ty.dtype))], axis=axis)
            scattered = self.builder_.normalize(op.scatter_elements(
                padded, redirected, call.args[2], axis, str(call.attrs.reduction)))
            return op.strided_slice(scattered, [axis], [0], [dshape[axis]])

        def _scatter_nd(self, call, data, indices, dshape, ishape, idtype):
            k = ishape[-1]
            if not isinstance(k, int):
                return call
            counted, valid = _normalised(indices, _extents(dshape[:k], idtype), idtype)
            whole = op.equal(op.min(op.astype(valid, "int32"), axis=-1, keepdims=True),
                             relax.const(1, "int32"))
            scratch = _extents([dshape[0]] + [0] * (k - 1), idtype)
            redirected = op.where(whole, counted, scratch)
            pad_shape = [1] + dshape[1:]
            padded = op.concat([data, op.zeros(pad_shape, str(data.ty.dtype))], axis=0)
            scattered = self.builder_.normalize(op.scatter_nd(
                padded, redirected, call.args[2], str(call.attrs.reduction)))
            return op.strided_slice(scattered, [0], [0], [dshape[0]])

    return relax_functions_pass(_SafeIndices, "AnychipSafeIndexOps")
