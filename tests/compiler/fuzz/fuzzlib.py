"""Mutation fuzzing of the model loader and compile.

Small valid models are mutated at the byte level (bit flips, truncation, inserted bytes) and
at the protobuf level (a field deleted, a repeated element duplicated, two swapped, a string
replaced by a hostile one, an integer by an extreme one). Each mutant goes to a worker process
that runs the loader and, when the model loads, the compile for the cpu target, under a memory
ceiling; the parent enforces a time limit per mutant. The only acceptable outcomes are the
CLI's exit 0 (compiled) and exit 2 (refused with one line); a traceback of any other exception
type, a crash (signal) or a hang is a finding, and the mutant is saved.

Compile is the slow step (seconds), so a loaded mutant is compiled only when its structure
(the model with tensor contents blanked) has not been compiled in this run: mutants that only
change weights take the same compile paths.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import random
import resource
import shutil
import select
import struct
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import onnx
from google.protobuf.descriptor import FieldDescriptor
from onnx import TensorProto, helper, numpy_helper

REPO = Path(__file__).resolve().parents[3]
WORKER_MEMORY = 4 << 30
HOSTILE_STRINGS = ["", "a/b", "a:b", "a_b", "../../etc/passwd", "/dev/zero", "x" * 5000,
                   "\u202e", "con", "for", "0", "a\x00b", "%s%n", "\U0001f600", "lib.so",
                   "\\\\server\\share", "~", "$(id)"]
HOSTILE_INTS = [0, -1, 1, 2**31 - 1, 2**31, 2**63 - 1, -(2**63), 255, 65536, 7]


# -- seed models -------------------------------------------------------------------------------

def seed_models() -> list[onnx.ModelProto]:
    """Small valid models covering the loader's paths: weights, attributes, a subgraph, a
    model-local function, several inputs and outputs."""
    f = TensorProto.FLOAT
    rng = np.random.default_rng(0)
    w = numpy_helper.from_array(rng.standard_normal((4, 3)).astype(np.float32), "W")
    b = numpy_helper.from_array(rng.standard_normal(3).astype(np.float32), "B")
    linear = helper.make_graph(
        [helper.make_node("MatMul", ["in/x", "W"], ["mm"], name="fc/mm"),
         helper.make_node("Add", ["mm", "B"], ["z"], name="fc/add"),
         helper.make_node("Relu", ["z"], ["out:y"], name="fc/relu")],
        "linear", [helper.make_tensor_value_info("in/x", f, [2, 4])],
        [helper.make_tensor_value_info("out:y", f, [2, 3])], [w, b])
    conv_w = numpy_helper.from_array(rng.standard_normal((2, 1, 3, 3)).astype(np.float32), "cw")
    conv = helper.make_graph(
        [helper.make_node("Conv", ["x", "cw"], ["c"], pads=[1, 1, 1, 1], name="conv"),
         helper.make_node("Sigmoid", ["c"], ["s"]),
         helper.make_node("ReduceMean", ["s"], ["y"], axes=[2, 3], keepdims=0),
         helper.make_node("Softmax", ["y"], ["p"], axis=1)],
        "conv", [helper.make_tensor_value_info("x", f, [1, 1, 5, 5])],
        [helper.make_tensor_value_info("p", f, [1, 2])], [conv_w])
    then = helper.make_graph([helper.make_node("Neg", ["a"], ["t"])], "then", [],
                             [helper.make_tensor_value_info("t", f, [3])])
    other = helper.make_graph([helper.make_node("Abs", ["a"], ["e"])], "else", [],
                              [helper.make_tensor_value_info("e", f, [3])])
    branch = helper.make_graph(
        [helper.make_node("ReduceSum", ["a"], ["s"], keepdims=0),
         helper.make_node("Greater", ["s", "zero"], ["cond"]),
         helper.make_node("If", ["cond"], ["r"], then_branch=then, else_branch=other),
         helper.make_node("Concat", ["r", "a"], ["y"], axis=0)],
        "branch", [helper.make_tensor_value_info("a", f, [3])],
        [helper.make_tensor_value_info("y", f, [6])],
        [helper.make_tensor("zero", f, [], [0.0])])
    body = [helper.make_node("Mul", ["p", "q"], ["pq"]), helper.make_node("Tanh", ["pq"], ["o"])]
    fn = helper.make_function("local", "MulTanh", ["p", "q"], ["o"], body,
                              [helper.make_opsetid("", 17)])
    func = helper.make_graph(
        [helper.make_node("MulTanh", ["u", "v"], ["m"], domain="local"),
         helper.make_node("Sub", ["m", "u"], ["y1"]), helper.make_node("Cast", ["m"], ["y2"],
                                                                       to=TensorProto.FLOAT16)],
        "func", [helper.make_tensor_value_info(n, f, [2, 2]) for n in ("u", "v")],
        [helper.make_tensor_value_info("y1", f, [2, 2]),
         helper.make_tensor_value_info("y2", TensorProto.FLOAT16, [2, 2])])
    opset = [helper.make_opsetid("", 17)]
    return [helper.make_model(linear, opset_imports=opset),
            helper.make_model(conv, opset_imports=opset),
            helper.make_model(branch, opset_imports=opset),
            helper.make_model(func, functions=[fn],
                              opset_imports=opset + [helper.make_opsetid("local", 1)])]


# -- mutators ----------------------------------------------------------------------------------

def _repeated(field) -> bool:
    if hasattr(field, "is_repeated"):
        return bool(field.is_repeated)
    return field.label == FieldDescriptor.LABEL_REPEATED


def _messages(msg) -> list:
    """Every message inside `msg` (itself included), for structural mutations."""
    out, stack = [], [msg]
    while stack:
        m = stack.pop()
        out.append(m)
        for field, value in m.ListFields():
            if field.type == FieldDescriptor.TYPE_MESSAGE:
                if _repeated(field):
                    stack.extend(value)
                else:
                    stack.append(value)
    return out


def _mutate_fields(model: onnx.ModelProto, rng: random.Random) -> tuple[bytes, str]:
    model = onnx.ModelProto.FromString(model.SerializeToString())
    msg = rng.choice(_messages(model))
    fields = msg.ListFields()
    if not fields:
        return model.SerializeToString(), "no-op"
    field, value = rng.choice(fields)
    repeated = _repeated(field)
    action = rng.choice(["delete", "duplicate", "swap", "string", "int"])
    if action == "delete" or (action in ("duplicate", "swap") and not repeated):
        if repeated and len(value) > 0:
            del value[rng.randrange(len(value))]
        else:
            msg.ClearField(field.name)
        action = "delete"
    elif action == "duplicate":
        if len(value):
            item = value[rng.randrange(len(value))]
            if field.type == FieldDescriptor.TYPE_MESSAGE:
                value.add().CopyFrom(item)
            else:
                value.append(item)
    elif action == "swap" and len(value) >= 2:
        i, j = rng.sample(range(len(value)), 2)
        if field.type == FieldDescriptor.TYPE_MESSAGE:
            a, b = type(value[i])(), type(value[j])()
            a.CopyFrom(value[i])
            b.CopyFrom(value[j])
            value[i].CopyFrom(b)
            value[j].CopyFrom(a)
        else:
            value[i], value[j] = value[j], value[i]
    strings = [f for f in msg.DESCRIPTOR.fields if f.type == FieldDescriptor.TYPE_STRING]
    ints = [f for f in msg.DESCRIPTOR.fields
            if f.type in (FieldDescriptor.TYPE_INT64, FieldDescriptor.TYPE_INT32)]
    if action == "string" and strings:
        target = rng.choice(strings)
        text = rng.choice(HOSTILE_STRINGS)
        if _repeated(target):
            getattr(msg, target.name).append(text)
        else:
            setattr(msg, target.name, text)
    elif action == "int" and ints:
        target = rng.choice(ints)
        number = rng.choice(HOSTILE_INTS)
        if target.type == FieldDescriptor.TYPE_INT32:
            number = max(-(2**31), min(2**31 - 1, number))
        if _repeated(target):
            getattr(msg, target.name).append(number)
        else:
            setattr(msg, target.name, number)
    return model.SerializeToString(), f"{action}:{type(msg).__name__}.{field.name}"


def mutate(model: onnx.ModelProto, rng: random.Random) -> tuple[bytes, str]:
    """One mutant of `model` and a short description of what was done."""
    data = bytearray(model.SerializeToString())
    kind = rng.choice(["bitflip", "truncate", "insert", "fields", "fields", "fields"])
    if kind == "bitflip":
        for _ in range(rng.randint(1, 8)):
            i = rng.randrange(len(data))
            data[i] ^= 1 << rng.randrange(8)
        return bytes(data), "bitflip"
    if kind == "truncate":
        return bytes(data[:rng.randrange(len(data))]), "truncate"
    if kind == "insert":
        i = rng.randrange(len(data))
        return bytes(data[:i] + rng.randbytes(rng.randint(1, 16)) + data[i:]), "insert"
    return _mutate_fields(model, rng)


def structure_digest(data: bytes) -> str | None:
    """sha256 of the model with tensor contents blanked (None when it does not parse)."""
    from google.protobuf.message import DecodeError

    try:
        model = onnx.ModelProto.FromString(data)
    except (DecodeError, ValueError, RuntimeError):
        return None
    for msg in _messages(model):
        if isinstance(msg, TensorProto):
            msg.ClearField("raw_data")
            for name in ("float_data", "int32_data", "int64_data", "double_data",
                         "uint64_data", "string_data"):
                msg.ClearField(name)
    return hashlib.sha256(model.SerializeToString()).hexdigest()


# -- worker (child process) ----------------------------------------------------------------------

def worker_main(folder: str) -> None:
    """Read (flag, length, bytes) frames from stdin; run loader (+ compile when flag is 1);
    answer one JSON line per frame on the original stdout. Each mutant is written into
    `folder`, which the parent made and removes."""
    resource.setrlimit(resource.RLIMIT_DATA, (WORKER_MEMORY, resource.RLIM_INFINITY))
    results = os.fdopen(os.dup(1), "w", buffering=1)
    os.dup2(2, 1)          # whatever anychip or TVM prints goes to stderr, not the protocol
    os.environ["ANYCHIP_NO_CACHE"] = "1"
    from anychip.compiler.driver import compile_model
    from anychip.compiler.frontend import load_model

    results.write(json.dumps({"ready": True}) + "\n")
    _serve(Path(folder), results, compile_model, load_model)


def _serve(folder: Path, results, compile_model, load_model) -> None:
    from anychip.compiler.errors import AnychipError, InternalCompilerError

    stdin = sys.stdin.buffer
    while True:
        header = stdin.read(5)
        if len(header) < 5:
            return
        flag, size = struct.unpack("<BI", header)
        path = folder / "model.onnx"
        path.write_bytes(stdin.read(size))
        outcome, detail = "ok", ""
        try:
            source = load_model(path)
            if flag:
                compile_model(source, target="cpu")
                outcome = "compiled"
            else:
                outcome = "loaded"
        except InternalCompilerError as exc:
            outcome, detail = "internal", str(exc).splitlines()[0][:200]
        except AnychipError as exc:
            outcome, detail = f"exit{exc.exit_code}", str(exc).splitlines()[0][:200]
            if "\n" in str(exc).strip():
                outcome, detail = "multi-line", str(exc)[:400]
        except BaseException as exc:   # noqa: BLE001 - that is the finding
            outcome, detail = "traceback", f"{type(exc).__name__}: {str(exc)[:300]}"
        results.write(json.dumps({"outcome": outcome, "detail": detail}) + "\n")


@dataclasses.dataclass
class Finding:
    index: int
    mutation: str
    outcome: str
    detail: str
    saved: Path


class Worker:
    def __init__(self):
        # the worker's scratch folder, made and removed here: a worker killed on a hang
        # cannot remove its own (one folder was left in /tmp per campaign before)
        self.folder = tempfile.mkdtemp(prefix="anychip-fuzz-")
        self.proc = subprocess.Popen(
            [sys.executable, "-c",
             "import sys; from tests.compiler.fuzz.fuzzlib import worker_main; "
             "worker_main(sys.argv[1])", self.folder],
            cwd=REPO, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL)
        self.read_line(300)   # the ready line (TVM import)

    def read_line(self, timeout: float) -> dict | None:
        ready, _, _ = select.select([self.proc.stdout], [], [], timeout)
        if not ready:
            return None
        line = self.proc.stdout.readline()
        return json.loads(line) if line else None

    def ask(self, data: bytes, compile_it: bool, timeout: float) -> dict:
        try:
            self.proc.stdin.write(struct.pack("<BI", int(compile_it), len(data)) + data)
            self.proc.stdin.flush()
        except BrokenPipeError:
            pass
        answer = self.read_line(timeout)
        if answer is not None:
            return answer
        if self.proc.poll() is None:
            self.close()
            return {"outcome": "hang", "detail": f"no answer in {timeout:.0f} s"}
        return {"outcome": "crash", "detail": f"worker died with {self.proc.returncode}"}

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait()
        shutil.rmtree(self.folder, ignore_errors=True)


# "internal": a mutant that passed every input check and then failed inside TVM, reported as
# one line naming the op (InternalCompilerError, exit 1). Not a failure of input handling (no
# traceback, abort or hang), so accepted, but counted apart in the outcomes so it is seen.
ACCEPTED = {"exit2", "loaded", "compiled", "internal"}


def run_campaign(seed: int, mutants: int, seconds: float, out_dir: Path,
                 per_mutant_timeout: float = 120.0, log=None) -> dict:
    """Mutate and test until `mutants` or `seconds` is reached; returns counts, rate and
    findings (each saved under out_dir)."""
    rng = random.Random(seed)
    seeds = seed_models()
    compiled: set[str] = set()
    counts: dict[str, int] = {}
    findings: list[Finding] = []
    worker = Worker()
    start = time.monotonic()
    done = 0
    try:
        while done < mutants and time.monotonic() - start < seconds:
            data, what = mutate(rng.choice(seeds), rng)
            digest = structure_digest(data)
            compile_it = digest is not None and digest not in compiled
            answer = worker.ask(data, compile_it, per_mutant_timeout)
            outcome = answer["outcome"]
            if outcome == "compiled":
                compiled.add(digest)
            counts[outcome] = counts.get(outcome, 0) + 1
            if outcome not in ACCEPTED:
                out_dir.mkdir(parents=True, exist_ok=True)
                saved = out_dir / f"seed{seed}-{done}-{outcome}.onnx"
                saved.write_bytes(data)
                findings.append(Finding(done, what, outcome, answer.get("detail", ""), saved))
                if log:
                    log(f"FINDING {outcome} ({what}): {answer.get('detail', '')[:200]} -> {saved}")
                if outcome in ("crash", "hang"):
                    worker.close()
                    worker = Worker()
            done += 1
    finally:
        worker.close()
    elapsed = time.monotonic() - start
    return {"seed": seed, "mutants": done, "seconds": round(elapsed, 1),
            "mutants_per_s": round(done / elapsed, 2) if elapsed else 0.0,
            "outcomes": dict(sorted(counts.items())), "findings": findings}
