"""ONNX-level unrolling of the recurrent layers RNN, GRU and LSTM, which TVM's Relax importer
lacks. With a static sequence length (the batch may be symbolic) each layer is written out
step by step with MatMul, Add, Mul and its activations, exactly as the ONNX operator definitions give
the equations (gate order: LSTM i, o, f, c; GRU z, r, h; weights W [dirs, G*H, I],
R [dirs, G*H, H], B [dirs, 2*G*H]). Runtime `sequence_lens` are honoured for forward
directions by masking (a finished sequence keeps its state and outputs zeros); a reverse
direction with sequence_lens is left to TVM (which refuses it).
"""

from __future__ import annotations

import numpy as np
import onnx
from onnx import helper

from .control_flow import Emitter

GATES = {"RNN": 1, "GRU": 3, "LSTM": 4}
DEFAULT_ACTIVATIONS = {"RNN": ["Tanh"], "GRU": ["Sigmoid", "Tanh"],
                       "LSTM": ["Sigmoid", "Tanh", "Tanh"]}
MAX_STEPS = 512


def _attrs(node: onnx.NodeProto) -> dict:
    return {a.name: helper.get_attribute_value(a) for a in node.attribute}


class _Cell:
    """Emits one direction's steps of one recurrent node."""

    def __init__(self, emit: Emitter, dtype: np.dtype, attrs: dict, op: str):
        self.emit, self.dtype, self.op = emit, dtype, op
        names = [a.decode() if isinstance(a, bytes) else a
                 for a in attrs.get("activations", [])] or None
        self.alphas = list(attrs.get("activation_alpha", []))
        self.betas = list(attrs.get("activation_beta", []))
        self.activations = names
        self.clip = attrs.get("clip")
        self.linear_before_reset = int(attrs.get("linear_before_reset", 0))
        self.input_forget = int(attrs.get("input_forget", 0))

    def const(self, value, hint="c") -> str:
        return self.emit.const(np.asarray(value, dtype=self.dtype), hint)

    def act(self, index: int, x: str) -> str:
        name = self.activations[index]
        alpha = self.alphas[index] if index < len(self.alphas) else None
        beta = self.betas[index] if index < len(self.betas) else None
        e = self.emit
        if name in ("Sigmoid", "Tanh", "Relu", "Softsign", "Softplus"):
            return e.node(name, [x], name.lower())
        if name == "LeakyRelu":
            return e.node(name, [x], "leaky", alpha=alpha if alpha is not None else 0.01)
        if name == "ThresholdedRelu":
            return e.node(name, [x], "thr", alpha=alpha if alpha is not None else 1.0)
        if name == "Elu":
            return e.node(name, [x], "elu", alpha=alpha if alpha is not None else 1.0)
        if name == "HardSigmoid":
            return e.node(name, [x], "hsig", alpha=alpha if alpha is not None else 0.2,
                          beta=beta if beta is not None else 0.5)
        if name == "Affine":
            scaled = e.node("Mul", [x, self.const(alpha if alpha is not None else 1.0)], "aff")
            return e.node("Add", [scaled, self.const(beta if beta is not None else 0.0)], "aff")
        if name == "ScaledTanh":
            inner = e.node("Mul", [x, self.const(beta if beta is not None else 1.0)], "st")
            return e.node("Mul", [e.node("Tanh", [inner], "st"),
                                  self.const(alpha if alpha is not None else 1.0)], "st")
        raise ValueError(name)

    def clipped(self, x: str) -> str:
        if self.clip is None:
            return x
        low = self.emit.node("Max", [x, self.const(-self.clip)], "clip")
        return self.emit.node("Min", [low, self.const(self.clip)], "clip")

    def gate(self, parts: list[str], index: int, hidden: int) -> str:
        """Columns [index*H, (index+1)*H) of the summed projections."""
        cols = self.emit.const(np.arange(index * hidden, (index + 1) * hidden, dtype=np.int64), "cols")
        picked = [self.emit.node("Gather", [p, cols], "g", axis=1) for p in parts]
        total = picked[0]
        for p in picked[1:]:
            total = self.emit.node("Add", [total, p], "sum")
        return total

    def step(self, x_proj: str, h: str, c: str | None, rt: str, rb: str | None,
             peep: list[str] | None, hidden: int):
        """One time step: returns (H_t, C_t)."""
        e = self.emit
        h_proj = e.node("MatMul", [h, rt], "hr")
        if rb is not None:
            h_proj = e.node("Add", [h_proj, rb], "hrb")
        if self.op == "GRU":
            return self._gru(x_proj, h_proj, h, rt, rb, hidden), None
        if self.op == "RNN":
            pre = self.gate([x_proj, h_proj], 0, hidden)
            return self.act(0, self.clipped(pre)), None
        i_pre = self.gate([x_proj, h_proj], 0, hidden)
        o_pre = self.gate([x_proj, h_proj], 1, hidden)
        f_pre = self.gate([x_proj, h_proj], 2, hidden)
        c_pre = self.gate([x_proj, h_proj], 3, hidden)
        if peep is not None:
            i_pre = e.node("Add", [i_pre, e.node("Mul", [peep[0], c], "pi")], "pi")
            f_pre = e.node("Add", [f_pre, e.node("Mul", [peep[2], c], "pf")], "pf")
        i_t = self.act(0, self.clipped(i_pre))
        f_t = self.act(0, self.clipped(f_pre))
        if self.input_forget:
            f_t = e.node("Sub", [self.const(1.0), i_t], "coupled")
        c_hat = self.act(1, self.clipped(c_pre))
        c_new = e.node("Add", [e.node("Mul", [f_t, c], "fc"), e.node("Mul", [i_t, c_hat], "ic")],
                       "c")
        if peep is not None:
            o_pre = e.node("Add", [o_pre, e.node("Mul", [peep[1], c_new], "po")], "po")
        o_t = self.act(0, self.clipped(o_pre))
        return e.node("Mul", [o_t, self.act(2, c_new)], "h"), c_new

    def _gru(self, x_proj: str, h_proj: str, h: str, rt: str, rb: str | None,
             hidden: int) -> str:
        e = self.emit
        z_t = self.act(0, self.clipped(self.gate([x_proj, h_proj], 0, hidden)))
        r_t = self.act(0, self.clipped(self.gate([x_proj, h_proj], 1, hidden)))
        cols = e.const(np.arange(2 * hidden, 3 * hidden, dtype=np.int64), "cols")
        rh = e.node("Gather", [rt, cols], "rh", axis=1)                # [H, H]
        x_h = e.node("Gather", [x_proj, cols], "xh", axis=1)           # includes Wbh
        if self.linear_before_reset:
            hr = e.node("MatMul", [h, rh], "hrh")
            if rb is not None:
                hr = e.node("Add", [hr, e.node("Gather", [rb, cols], "rbh", axis=0)], "hrb")
            pre = e.node("Add", [x_h, e.node("Mul", [r_t, hr], "rhr")], "pre")
        else:
            hr = e.node("MatMul", [e.node("Mul", [r_t, h], "rth"), rh], "hrh")
            if rb is not None:
                hr = e.node("Add", [hr, e.node("Gather", [rb, cols], "rbh", axis=0)], "hrb")
            pre = e.node("Add", [x_h, hr], "pre")
        h_hat = self.act(1, self.clipped(pre))
        keep = e.node("Mul", [z_t, h], "zh")
        fresh = e.node("Mul", [e.node("Sub", [self.const(1.0), z_t], "1mz"), h_hat], "zhh")
        return e.node("Add", [fresh, keep], "h")


def _unroll(node: onnx.NodeProto, shapes: dict, dtypes: dict, opset: int) -> list | None:
    op, attrs = node.op_type, _attrs(node)
    inputs = list(node.input) + [""] * (8 - len(node.input))
    x, w, r, b, lens, init_h, init_c, peeps = inputs[:8]
    if len(shapes.get(x) or []) != 3 or x not in dtypes or op not in GATES:
        return None
    layout = int(attrs.get("layout", 0))
    direction = attrs.get("direction", b"forward")
    direction = direction.decode() if isinstance(direction, bytes) else direction
    dirs = 2 if direction == "bidirectional" else 1
    hidden = int(attrs["hidden_size"])
    seq, batch = (shapes[x][1], shapes[x][0]) if layout else (shapes[x][0], shapes[x][1])
    if seq is None or seq > MAX_STEPS or (lens and direction != "forward"):
        return None
    emit = Emitter(node.name or f"{op}_{node.output[0] or node.output[1]}", opset)
    cell = _Cell(emit, np.dtype(dtypes[x]), attrs, op)
    acts = cell.activations or DEFAULT_ACTIVATIONS[op] * dirs
    per_dir = len(DEFAULT_ACTIVATIONS[op])
    gates = GATES[op]
    if layout:
        x = emit.node("Transpose", [x], "xs", perm=[1, 0, 2])
        init_h = emit.node("Transpose", [init_h], "h0", perm=[1, 0, 2]) if init_h else ""
        init_c = emit.node("Transpose", [init_c], "c0", perm=[1, 0, 2]) if init_c else ""

    def pick(tensor: str, index: int, hint: str) -> str:
        return emit.node("Gather", [tensor, emit.const(np.array(index, np.int64), "i")], hint,
                         axis=0)

    def cols(tensor: str, start: int, stop: int) -> str:
        return emit.node("Gather", [tensor, emit.const(np.arange(start, stop, dtype=np.int64),
                                                       "cols")], "part", axis=0)

    ys, last_h, last_c = [], [], []
    for d in range(dirs):
        cell.activations = acts[d * per_dir:(d + 1) * per_dir]
        wt = emit.node("Transpose", [pick(w, d, "w")], "wt", perm=[1, 0])
        rt = emit.node("Transpose", [pick(r, d, "r")], "rt", perm=[1, 0])
        wb = rb = None
        if b:
            b_d = pick(b, d, "b")
            wb, rb = cols(b_d, 0, gates * hidden), cols(b_d, gates * hidden, 2 * gates * hidden)
        zeros = (cell.const(np.zeros((batch, hidden)), "zeros") if batch is not None
                 else _zeros_like_batch(emit, cell, x, hidden))
        h = pick(init_h, d, "h0") if init_h else zeros
        c = (pick(init_c, d, "c0") if init_c else zeros) if op == "LSTM" else None
        peep = None
        if peeps:
            p_d = pick(peeps, d, "p")
            peep = [cols(p_d, k * hidden, (k + 1) * hidden) for k in range(3)]
        reverse = direction == "reverse" or d == 1
        outs: list[str | None] = [None] * seq
        for t in (range(seq - 1, -1, -1) if reverse else range(seq)):
            x_proj = emit.node("MatMul", [pick(x, t, "xt"), wt], "xw")
            if wb is not None:
                x_proj = emit.node("Add", [x_proj, wb], "xwb")
            h_new, c_new = cell.step(x_proj, h, c, rt, rb, peep, hidden)
            if lens:
                running = emit.node("Less", [emit.const(np.array(t, np.int64), "t"),
                                             _as_int64(emit, lens, dtypes)], "running")
                mask = emit.unsqueeze(running, 1)
                outs[t] = emit.node("Where", [mask, h_new, zeros], "y")
                h = emit.node("Where", [mask, h_new, h], "h")
                if c is not None:
                    c = emit.node("Where", [mask, c_new, c], "c")
            else:
                outs[t], h, c = h_new, h_new, c_new
        ys.append(outs)
        last_h.append(h)
        last_c.append(c)

    def stack(parts: list[str], hint: str) -> str:
        grown = [emit.unsqueeze(p, 0) for p in parts]
        return grown[0] if len(grown) == 1 else emit.node("Concat", grown, hint, axis=0)

    results = []
    if len(node.output) > 0 and node.output[0]:
        y = stack([stack([ys[d][t] for d in range(dirs)], "yt") for t in range(seq)], "y")
        results.append((node.output[0], emit.node("Transpose", [y], "yb", perm=[2, 0, 1, 3])
                        if layout else y))
    for k, states in ((1, last_h), (2, last_c)):
        if len(node.output) > k and node.output[k]:
            s = stack(states, "state")
            results.append((node.output[k], emit.node("Transpose", [s], "sb", perm=[1, 0, 2])
                            if layout else s))
    for target, value in results:
        emit.nodes.append(helper.make_node("Identity", [value], [target]))
    return emit.nodes


def _zeros_like_batch(emit: Emitter, cell: _Cell, x: str, hidden: int) -> str:
    """Zeros [batch, hidden] for a batch known only at run time (x is [seq, batch, input]):
    a recurrent layer under a dynamic batch, the common export, unrolls as a static one."""
    batch = emit.node("Gather", [emit.node("Shape", [x], "shape"),
                                 emit.const(np.array([1], np.int64), "axis")], "batch", axis=0)
    dims = emit.node("Concat", [batch, emit.const(np.array([hidden], np.int64), "hidden")],
                     "dims", axis=0)
    return emit.node("Expand", [cell.const(np.zeros((1, hidden)), "zero"), dims], "zeros")


def _as_int64(emit: Emitter, name: str, dtypes: dict) -> str:
    if dtypes.get(name) == "int64":
        return name
    return emit.node("Cast", [name], "lens", to=onnx.TensorProto.INT64)


def unroll_recurrent(model: onnx.ModelProto, shapes: dict, dtypes: dict) -> list[str]:
    """RNN, GRU and LSTM with a static sequence length become their unrolled equations
    (see the module docstring): all directions, layouts, biases, initial states, peepholes,
    clip, input_forget, linear_before_reset, the ONNX activation functions, and forward
    sequence_lens. Cases: test_simple_rnn_*, test_rnn_seq_length, test_gru_*, test_lstm_*.
    Returns the op types unrolled. `shapes`/`dtypes` describe values by name."""
    opset = next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), 1)
    new_nodes, done = [], []
    for node in model.graph.node:
        replaced = None
        if node.op_type in GATES and node.domain in ("", "ai.onnx"):
            try:
                replaced = _unroll(node, shapes, dtypes, opset)
            except (KeyError, ValueError):   # an activation or attribute this does not know
                replaced = None
        if replaced is None:
            new_nodes.append(node)
        else:
            new_nodes.extend(replaced)
            done.append(node.op_type)
    if done:
        del model.graph.node[:]
        model.graph.node.extend(new_nodes)
    return done
