"""Relax-level lowering of the npu backend: the simulated graph becomes the chip's program.

Phases (each one pass or function, in the order `lower` runs them):
1. import: the precision-annotated ONNX (precision.py) through the project's importer, so
   each op already computes in the dtype ATC gives it;
2. graph: inference decomposition, constants folded in numpy, BatchNorm folded into conv
   weights (ATC's conv+BN fusion), as the cpu backend does it;
3. vector numerics: reductions over float16/bfloat16 (softmax, layer norm, mean, sum,
   average pooling) accumulate in float32 and round their result, as CANN's reduce kernels do
   (an assumption, listed in the report);
4. cube: every matmul and 2-D convolution whose dtype the cube takes becomes a call to a
   tiled, tensorized TIR kernel (cube.py); convolutions go through im2col on the way into L1.
Everything else (elementwise, pooling, data movement) is legalized by TVM and scheduled as
vector kernels (vector.py).
"""

from __future__ import annotations

import math

import numpy as np

from anychip.compiler.errors import AnychipError
from anychip.compiler.relax_info import dtype_of, static_shape

from .chip import Chip
from .cube import Conv2dGeometry, CubePlan, Tile, check_capacity, cube_kernel, plan_tiles


def _dtype(expr) -> str | None:
    return dtype_of(expr) or None


def import_simulated(proto, label: str, specialise: dict | None = None):
    """Import a precision-annotated ONNX model the way the driver imports what prepare_onnx
    returns (kept for tests that lower a placed model by hand)."""
    from anychip.compiler.driver import neutral_relax, source_from_proto

    return neutral_relax(source_from_proto(proto, label, specialise))


def graph_passes(mod):
    """Phase 2: decomposition and numpy-side constant folding (backends/host/relax_passes)."""
    from tvm import relax

    from anychip.backends.host import relax_passes as passes

    mod = relax.transform.DecomposeOpsForInference()(mod)
    mod = relax.transform.CanonicalizeBindings()(mod)
    mod = passes.fold_constants(mod)
    mod = passes.sum_as_add(mod)
    mod = passes.fold_conv_affine(mod)
    return passes.fold_constants(mod)


# Relax reductions whose float16 form accumulates in float32 on the vector unit.
REDUCTIONS = ("relax.nn.softmax", "relax.nn.log_softmax", "relax.nn.layer_norm",
              "relax.nn.group_norm", "relax.nn.instance_norm", "relax.nn.rms_norm",
              "relax.mean", "relax.sum", "relax.variance", "relax.prod", "relax.nn.avg_pool2d",
              "relax.nn.adaptive_avg_pool2d", "relax.nn.avg_pool1d", "relax.nn.avg_pool3d")
# Elementwise math that TVM's LLVM codegen has no float16 lowering for ("unknown intrinsic
# tirx.acos"): computed in float32 and rounded once, as a float16 vector kernel built from
# float32 arithmetic would be (an assumption about CANN's kernels, like the reductions').
WIDENED_MATH = ("relax.acos", "relax.asin", "relax.atan", "relax.cosh", "relax.sinh")


def fp32_reductions(mod):
    """Phase 3: float16/bfloat16 reductions (and WIDENED_MATH) compute in float32 and cast the
    result back."""
    import tvm
    from tvm import relax
    from tvm.relax.expr_functor import PyExprMutator, mutator

    ops = {tvm.ir.Op.get(name) for name in REDUCTIONS + WIDENED_MATH}

    @mutator
    class _Fp32Reductions(PyExprMutator):
        def visit_call_(self, call):  # noqa: N802 - TVM's visitor naming
            call = self.visit_expr_post_order(call)
            low = _dtype(call)
            if call.op not in ops or low not in ("float16", "bfloat16"):
                return call
            args = [relax.op.astype(a, "float32") if _dtype(a) == low else a for a in call.args]
            wide = relax.Call(call.op, args, call.attrs, call.ty_args)
            return relax.op.astype(self.builder_.normalize(wide), low)

    out = tvm.IRModule(dict(mod.functions), attrs=mod.attrs)
    for gvar, func in list(out.functions.items()):
        if isinstance(func, relax.Function):
            out[gvar] = _Fp32Reductions(out).visit_expr(func)
    return out


def cube_bias_in_fp32(mod):
    """Phase 3b: a float16/bfloat16 conv2d or matmul followed by the add of a constant bias
    keeps its float32 accumulator for the add and rounds once, as the cube does when the bias
    is the accumulator's initial value (L0C / 910B's bias table) instead of a vector add on
    the rounded result."""
    import tvm
    from tvm import relax
    from tvm.relax.expr_functor import PyExprMutator, mutator

    cube_ops = {tvm.ir.Op.get("relax.nn.conv2d"), tvm.ir.Op.get("relax.matmul")}
    add = tvm.ir.Op.get("relax.add")
    const = tvm.ir.expr.GenericConst

    @mutator
    class _BiasInFp32(PyExprMutator):
        def __init__(self, mod, uses):
            super().__init__(mod)
            self.uses = uses

        def visit_call_(self, call):  # noqa: N802
            call = self.visit_expr_post_order(call)
            low = _dtype(call)
            if call.op != add or low not in ("float16", "bfloat16") or len(call.args) != 2:
                return call
            lhs, bias = call.args
            if not isinstance(bias, const):
                lhs, bias = bias, lhs
            acc = bound_value(self, lhs) if isinstance(lhs, relax.Var) and \
                self.uses.get(lhs, 0) == 1 else None
            if not isinstance(bias, const) or not isinstance(acc, relax.Call) or \
                    acc.op not in cube_ops or _dtype(acc) != low or \
                    static_shape(bias) is None or static_shape(call) != static_shape(acc):
                return call
            if acc.op.name == "relax.nn.conv2d":
                a = acc.attrs
                wide = relax.op.nn.conv2d(acc.args[0], acc.args[1], a.strides, a.padding,
                                          a.dilation, a.groups, a.data_layout, a.kernel_layout,
                                          a.out_layout, "float32")
            else:
                wide = relax.op.matmul(acc.args[0], acc.args[1], "float32")
            total = relax.op.add(self.builder_.normalize(wide), relax.op.astype(bias, "float32"))
            return relax.op.astype(self.builder_.normalize(total), low)

    from anychip.backends.host.relax_passes import bound_value, use_counts

    out = tvm.IRModule(dict(mod.functions), attrs=mod.attrs)
    for gvar, func in list(out.functions.items()):
        if isinstance(func, relax.Function):
            out[gvar] = _BiasInFp32(out, use_counts(func)).visit_expr(func)
    return relax.transform.DeadCodeElimination()(out)


class CubeLowering:
    """Phase 4: matmul and conv2d -> call_tir of cube kernels; records one plan per kernel."""

    def __init__(self, chip: Chip, requested: Tile | None = None,
                 fp32_inputs_as: str | None = None):
        self.chip = chip
        self.requested = requested
        # a train step in allow_fp32_to_fp16 on a cube without float32: float32 operands are
        # rounded to this dtype, accumulated in float32, and the result stays float32 (for
        # inference, placement.py has already given every node its dtype: None)
        self.fp32_inputs_as = fp32_inputs_as
        self.kernels: dict[str, dict] = {}      # kernel name -> plan and checked buffer use
        self._funcs: dict[str, object] = {}

    def __call__(self, mod):
        import tvm
        from tvm import relax
        from tvm.relax.expr_functor import PyExprMutator, mutator

        matmul, conv2d = tvm.ir.Op.get("relax.matmul"), tvm.ir.Op.get("relax.nn.conv2d")
        conv2d_transpose = tvm.ir.Op.get("relax.nn.conv2d_transpose")
        lowering = self

        @mutator
        class _Cube(PyExprMutator):
            def visit_call_(self, call):  # noqa: N802
                call = self.visit_expr_post_order(call)
                new = None
                if call.op == matmul:
                    new = lowering.matmul(self.builder_, call)
                elif call.op == conv2d:
                    new = lowering.conv2d(self.builder_, call)
                elif call.op == conv2d_transpose:
                    new = lowering.conv2d_transpose(self.builder_, call)
                return call if new is None else new

        for gvar, func in list(mod.functions.items()):
            if isinstance(func, relax.Function):
                cube = _Cube(mod)
                new = cube.visit_expr(func)
                mod = cube.builder_.get()
                mod[gvar] = new
        return mod

    # -- helpers ---------------------------------------------------------------------------
    def _in_dtype(self, a, b) -> str | None:
        da, db = _dtype(a), _dtype(b)
        if da != db or da not in self.chip.cube_dtypes:
            return None             # not a cube dtype: stays a host op (placement said so)
        return da

    def _operands(self, builder, a, b):
        """(a, b, the cube's input dtype, the default output dtype), or None when the cube
        cannot take them (the op stays a vector/host kernel)."""
        from tvm import relax

        ind = self._in_dtype(a, b)
        if ind is not None:
            return a, b, ind, ind
        if self.fp32_inputs_as and _dtype(a) == _dtype(b) == "float32" and \
                self.fp32_inputs_as in self.chip.cube_dtypes:
            a = builder.normalize(relax.op.astype(a, self.fp32_inputs_as))
            b = builder.normalize(relax.op.astype(b, self.fp32_inputs_as))
            return a, b, self.fp32_inputs_as, "float32"
        return None

    def _kernel(self, builder, name: str, plan: CubePlan, a_shape, b_groups: int,
                conv: Conv2dGeometry | None):
        if name not in self._funcs:
            where = f" kernel '{name}'"
            # te.create_prim_func names every kernel 'main'; TVM's dispatch passes rebuild
            # the module with a BlockBuilder, which refuses duplicate global symbols
            func = cube_kernel(plan, a_shape, b_groups, conv).with_attr("global_symbol", name)
            used = check_capacity(func, self.chip, where)
            self._funcs[name] = builder.add_func(func, name)
            self.kernels[name] = {"kind": "conv2d" if conv else "matmul", **plan.as_dict(),
                                  "tir_buffer_bytes": used}
        return self._funcs[name]

    def _call(self, builder, gvar, args, shape, dtype):
        from tvm import relax

        return builder.normalize(relax.call_tir(gvar, args, relax.TensorType(shape, dtype)))

    def _out_dtype(self, call, default: str) -> str:
        out = str(getattr(call.attrs, "out_dtype", "") or "")
        if out in ("", "void"):
            out = default
        return out

    # -- matmul ----------------------------------------------------------------------------
    def matmul(self, builder, call):
        from tvm import relax

        a, b = call.args
        sa, sb = static_shape(a), static_shape(b)
        if sa is None or sb is None or not sa or not sb:
            return None
        # numpy's 1-D rules (ATC runs these on the cube too): a vector operand becomes a one-row
        # (a) or one-column (b) matrix, and that axis is dropped from the result
        drop_m, drop_n = len(sa) == 1, len(sb) == 1
        if drop_m:
            a, sa = builder.normalize(relax.op.reshape(a, (1,) + sa)), (1,) + sa
        if drop_n:
            b, sb = builder.normalize(relax.op.reshape(b, sb + (1,))), sb + (1,)
        operands = self._operands(builder, a, b)
        if operands is None:
            return None
        a, b, ind, default_out = operands
        outd = self._out_dtype(call, default_out)
        M, K = sa[-2:]
        N = sb[-1]
        a_batch, b_batch = sa[:-2], sb[:-2]
        if not b_batch:
            rows = math.prod(a_batch) * M
            a3 = relax.op.reshape(a, (1, rows, K))
            b3 = relax.op.reshape(b, (1, K, N))
            G, Ga, Gb, Mx, out_shape = 1, 1, 1, rows, a_batch + (M, N)
        else:
            batch = tuple(np.broadcast_shapes(a_batch, b_batch))
            G = math.prod(batch)
            a3, Ga = self._batched(a, a_batch, batch, (M, K))
            b3, Gb = self._batched(b, b_batch, batch, (K, N))
            Mx, out_shape = M, batch + (M, N)
        plan = plan_tiles(self.chip, G, Mx, N, K, ind, outd, self.requested)
        name = f"cube_matmul_{G}x{Mx}x{N}x{K}_{ind}_{outd}_a{Ga}_b{Gb}"
        gvar = self._kernel(builder, name, plan, (Ga, Mx, K), Gb, None)
        a3, b3 = builder.normalize(a3), builder.normalize(b3)
        out = self._call(builder, gvar, [a3, b3], (G, Mx, N), outd)
        result = list(out_shape)
        if drop_n:
            del result[-1]
        if drop_m:
            del result[-1 if drop_n else -2]
        return relax.op.reshape(out, tuple(result))

    @staticmethod
    def _batched(x, batch, full, tail):
        from tvm import relax

        if batch == full:
            return relax.op.reshape(x, (math.prod(full),) + tail), math.prod(full)
        if math.prod(batch) == 1:
            return relax.op.reshape(x, (1,) + tail), 1
        return relax.op.reshape(relax.op.broadcast_to(x, full + tail),
                                (math.prod(full),) + tail), math.prod(full)

    # -- conv2d ----------------------------------------------------------------------------
    def conv2d(self, builder, call):
        from tvm import relax

        x, w = call.args
        at = call.attrs
        out_layout = str(at.out_layout) or str(at.data_layout)
        # any order of N,C,H,W (a weight gradient is conv2d in CNHW/IOHW): permuted to
        # NCHW/OIHW on the way in, the result back to out_layout on the way out
        to_x, to_w = _to_canonical(at.data_layout, "NCHW"), _to_canonical(at.kernel_layout, "OIHW")
        back = _from_canonical(out_layout, "NCHW")
        if static_shape(x) is None or static_shape(w) is None or None in (to_x, to_w, back):
            return None
        operands = self._operands(builder, x, w)
        if operands is None:
            return None
        x, w, ind, default_out = operands
        if to_x != [0, 1, 2, 3]:
            x = builder.normalize(relax.op.permute_dims(x, to_x))
        if to_w != [0, 1, 2, 3]:
            w = builder.normalize(relax.op.permute_dims(w, to_w))
        sx, sw = static_shape(x), static_shape(w)
        outd = self._out_dtype(call, default_out)
        nb, c, h, wd = sx
        oc, cg, kh, kw = sw
        groups = int(at.groups)
        pad = tuple(int(p) for p in at.padding)
        if len(pad) == 2:
            pad = pad + pad
        geo = Conv2dGeometry(nb, c, h, wd, groups, (kh, kw), tuple(int(s) for s in at.strides),
                             pad, tuple(int(d) for d in at.dilation))
        oh, ow = geo.out_hw
        M, K, N = nb * oh * ow, cg * kh * kw, oc // groups
        if cg * groups != c or oc % groups:
            raise AnychipError(f"conv2d with {c} channels, {groups} groups and weight "
                               f"{list(sw)} is inconsistent.")
        plan = plan_tiles(self.chip, groups, M, N, K, ind, outd, self.requested)
        name = (f"cube_conv2d_{nb}x{c}x{h}x{wd}_{oc}x{cg}x{kh}x{kw}_g{groups}_s{geo.strides[0]}"
                f"x{geo.strides[1]}_p{'x'.join(map(str, pad))}_d{geo.dilation[0]}"
                f"x{geo.dilation[1]}_{ind}_{outd}")
        gvar = self._kernel(builder, name, plan, sx, groups, geo)
        # weights [OC, Cg, KH, KW] -> [G, Cg*KH*KW, OC/G] (constant-folded for constant weights)
        b = relax.op.permute_dims(relax.op.reshape(w, (groups, N, K)), [0, 2, 1])
        b = builder.normalize(b)
        out = self._call(builder, gvar, [x, b], (groups, M, N), outd)
        out = relax.op.reshape(out, (groups, nb, oh, ow, N))
        out = relax.op.permute_dims(out, [1, 0, 4, 2, 3])
        out = relax.op.reshape(out, (nb, oc, oh, ow))
        return out if back == [0, 1, 2, 3] else relax.op.permute_dims(
            builder.normalize(out), back)


    # -- conv2d_transpose ------------------------------------------------------------------
    def conv2d_transpose(self, builder, call):
        """A transposed convolution (an input gradient, a decoder's upsampling) as the conv2d
        the cube runs, as Conv2DBackpropInput does: the input with stride-1 zeros between its
        pixels, padded by dilation*(k-1)-pad (+ output_padding), convolved at stride 1 with
        the spatially flipped kernel, input and output channels swapped within each group (a
        grouped transposed convolution is the grouped conv2d). Packed layouts and a padding
        larger than the kernel's reach stay vector kernels."""
        from tvm import relax

        x, w = call.args
        at = call.attrs
        sx, sw = static_shape(x), static_shape(w)
        groups = int(at.groups)
        if sx is None or sw is None or str(at.data_layout) != "NCHW" \
                or str(at.kernel_layout) != "IOHW" or str(at.out_layout) not in ("NCHW", ""):
            return None
        nb, c, h, wd = sx
        kh, kw = sw[2:]
        sh, sw_ = (int(v) for v in at.strides)
        dh, dw = (int(v) for v in at.dilation)
        pad = [int(p) for p in at.padding]
        pt, pl, pb, pr = pad if len(pad) == 4 else pad + pad
        oph, opw = (int(v) for v in at.output_padding)
        edges = [dh * (kh - 1) - pt, dh * (kh - 1) - pb + oph,
                 dw * (kw - 1) - pl, dw * (kw - 1) - pr + opw]
        if min(edges) < 0:
            return None
        if sh > 1 or sw_ > 1:          # stride-1 zeros between pixels: [N,C,H,1,W,1] padded
            x = relax.op.reshape(x, (nb, c, h, 1, wd, 1))
            x = relax.op.nn.pad(x, [0, 0, 0, 0, 0, 0, 0, sh - 1, 0, 0, 0, sw_ - 1])
            x = relax.op.reshape(x, (nb, c, h * sh, wd * sw_))
            x = relax.op.strided_slice(x, axes=[2, 3], begin=[0, 0],
                                       end=[(h - 1) * sh + 1, (wd - 1) * sw_ + 1])
        x = builder.normalize(relax.op.nn.pad(x, [0, 0, 0, 0, edges[0], edges[1],
                                                  edges[2], edges[3]]))
        w = relax.op.flip(relax.op.flip(w, 2), 3)
        if groups == 1:
            w = builder.normalize(relax.op.permute_dims(w, [1, 0, 2, 3]))
        else:                          # [g*Ci, Co, k, k] -> [g, Co, Ci, k, k] -> [g*Co, Ci, k, k]
            ci, co = sw[0] // groups, sw[1]
            w = relax.op.reshape(w, (groups, ci, co, kh, kw))
            w = relax.op.permute_dims(w, [0, 2, 1, 3, 4])
            w = builder.normalize(relax.op.reshape(w, (groups * co, ci, kh, kw)))
        out_dtype = str(at.out_dtype or "")
        conv = builder.normalize(relax.op.nn.conv2d(
            x, w, strides=1, padding=0, dilation=(dh, dw), groups=groups,
            out_dtype=None if out_dtype in ("", "void") else out_dtype))
        return self.conv2d(builder, conv)


def _to_canonical(layout, canonical: str) -> list[int] | None:
    """permute_dims axes taking a tensor in `layout` (a permutation of `canonical`'s four
    letters) to `canonical`; None for any other layout (packed ones such as NCHW4c)."""
    layout = str(layout)
    if len(layout) != 4 or sorted(layout) != sorted(canonical):
        return None
    return [layout.index(c) for c in canonical]


def _from_canonical(layout, canonical: str) -> list[int] | None:
    """permute_dims axes taking a tensor in `canonical` to `layout`."""
    layout = str(layout)
    if len(layout) != 4 or sorted(layout) != sorted(canonical):
        return None
    return [canonical.index(c) for c in layout]


def requested_tile(extra: dict) -> Tile | None:
    """options.extra['cube_tile'] = [m1, n1, k1, k0] forces a tile (re-tiled if it overflows)."""
    value = extra.get("cube_tile")
    if value is None:
        return None
    if not isinstance(value, (list, tuple)) or len(value) != 4 or \
            not all(isinstance(v, int) and v > 0 for v in value):
        raise AnychipError(f"cube_tile={value!r}: give four positive integers [m1, n1, k1, k0].")
    return Tile(*value)
