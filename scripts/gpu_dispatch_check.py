"""GPU library dispatch, checked and measured on an NVIDIA GPU host in one run (< 5 minutes on
16 cores): zoo models compiled for an nvidia-* profile with and without cuBLAS/cuDNN dispatch
through torch, each verified against ONNX Runtime, then timed at batch 1 and 32 against torch
eager and torch.compile, interleaved in the same run (compiler/bench.py's method and engines).

    python scripts/gpu_dispatch_check.py OUT.json [--models resnet50,bert] [--batches 1,32]
        [--target nvidia-h100] [--precision fp32] [--no-torch-compile] [--compile-only]
        [--repeat 20] [--workers 8] [--cuda-graph]

Phase 1 compiles every (model, batch, dispatch) artifact in parallel worker processes
(spawned: no CUDA state is forked) while the main process builds and warms up the torch
engines (torch.compile's inductor compiles there, on the GPU). Phase 2, on the GPU, one
(model, batch) at a time: verify both artifacts against ONNX Runtime (CPU provider) on the
same seeded inputs, then time anychip with dispatch, anychip TVM-only, torch eager and
torch.compile, interleaved. Prints a markdown table and writes everything to OUT.json.
`--compile-only` runs phase 1 alone (what a machine without a GPU can check).
Exit code: 0 when every artifact verified (or compiled, with --compile-only), 1 otherwise.
"""

from __future__ import annotations

import argparse
import concurrent.futures as futures
import functools
import json
import multiprocessing
import os
import sys
import tempfile
import time
from pathlib import Path


@functools.lru_cache(maxsize=None)
def _specs(model: str) -> tuple:
    """The zoo model's input specs (names, batch-1 shapes, token-id ranges)."""
    from anychip.compiler.frontend import load_model

    return tuple(load_model(f"zoo:{model}", None, {}).inputs)


def _shapes(model: str, batch: int) -> dict:
    """{input: shape} at `batch` (the model's own shape with the first dim replaced)."""
    return {s.name: (batch, *tuple(s.shape)[1:]) for s in _specs(model)}


def _feed(model: str, batch: int) -> dict:
    import dataclasses

    from anychip.compiler.inputs import random_inputs

    return random_inputs([dataclasses.replace(s, shape=(batch, *tuple(s.shape)[1:]))
                          for s in _specs(model)], 0)


def _batched_onnx(model: str, batch: int, workdir: Path) -> Path:
    """The zoo model's ONNX graph with its batch-1 Reshape targets made batch-free (a leading
    1 becomes -1: zoo graphs were exported at batch 1, e.g. resnet50's [1, 2048] and bert's
    [1, 128, 4, 64]), so that it imports at any batch."""
    import copy

    import onnx
    from onnx import numpy_helper

    from anychip import models as zoo

    proto = copy.deepcopy(zoo.build(model).proto)
    targets = {n.input[1] for n in proto.graph.node if n.op_type == "Reshape"}
    for init in proto.graph.initializer:
        value = numpy_helper.to_array(init)
        if init.name in targets and value.ndim == 1 and value.size and value[0] == 1:
            init.CopyFrom(numpy_helper.from_array(_lead(value), init.name))
    for node in proto.graph.node:
        if node.op_type == "Constant" and node.output[0] in targets:
            value = numpy_helper.to_array(node.attribute[0].t)
            if value.ndim == 1 and value.size and value[0] == 1:
                node.attribute[0].t.CopyFrom(numpy_helper.from_array(_lead(value)))
    for value_info in (*proto.graph.input, *proto.graph.output):
        dims = value_info.type.tensor_type.shape.dim
        if dims and dims[0].HasField("dim_value") and dims[0].dim_value == 1:
            dims[0].dim_value = batch
    path = workdir / f"{model}-b{batch}.onnx"
    onnx.save(proto, path)
    return path


def _lead(value):
    out = value.copy()
    out[0] = -1
    return out


class OnnxAsTorch:
    """torch eager for a zoo model that has no torch module (resnet50 is a Caffe2 ONNX
    export): the ONNX graph executed node by node with torch's own kernels (cuDNN
    convolutions, cuBLAS GEMM), weights as tensors on the device. Only the ops the zoo's CNNs
    use; anything else raises (the engine is then reported n/a)."""

    def __new__(cls, proto):
        import torch
        from onnx import helper, numpy_helper

        F = torch.nn.functional

        class Module(torch.nn.Module):
            def __init__(self):
                super().__init__()
                self.names = [i.name for i in proto.graph.input]
                self.outputs = [o.name for o in proto.graph.output]
                self.nodes = [(n.op_type, list(n.input), list(n.output),
                               {a.name: helper.get_attribute_value(a) for a in n.attribute})
                              for n in proto.graph.node]
                self.consts = torch.nn.ParameterDict()
                self.keys, self.ints = {}, {}   # integer constants (shapes) stay Python lists
                for i, init in enumerate(proto.graph.initializer):
                    value = numpy_helper.to_array(init)
                    if value.dtype.kind in "iu":
                        self.ints[init.name] = [int(v) for v in value.reshape(-1)]
                        continue
                    key = f"c{i}"
                    self.keys[init.name] = key
                    self.consts[key] = torch.nn.Parameter(torch.from_numpy(value.copy()),
                                                          requires_grad=False)

            def forward(self, *inputs):
                env = {k: self.consts[v] for k, v in self.keys.items()}
                env.update(self.ints)
                env.update(zip(self.names, inputs))
                for op, ins, outs, at in self.nodes:
                    x = [env[n] if n else None for n in ins]
                    if op == "Conv":
                        pads = at.get("pads", [0, 0, 0, 0])
                        assert pads[0] == pads[2] and pads[1] == pads[3]
                        y = F.conv2d(x[0], x[1], x[2] if len(x) > 2 else None,
                                     at.get("strides", 1), pads[:2], at.get("dilations", 1),
                                     at.get("group", 1))
                    elif op == "BatchNormalization":
                        y = F.batch_norm(x[0], x[3], x[4], x[1], x[2], False, 0.0,
                                         at.get("epsilon", 1e-5))
                    elif op == "Relu":
                        y = torch.relu(x[0])
                    elif op in ("Sum", "Add"):
                        y = x[0]
                        for other in x[1:]:
                            y = y + other
                    elif op in ("MaxPool", "AveragePool"):
                        pads = at.get("pads", [0, 0, 0, 0])
                        pool = F.max_pool2d if op == "MaxPool" else F.avg_pool2d
                        y = pool(x[0], at["kernel_shape"], at.get("strides", 1), pads[:2])
                    elif op == "GlobalAveragePool":
                        y = x[0].mean((2, 3), keepdim=True)
                    elif op == "Reshape":
                        y = x[0].reshape(x[1])
                    elif op == "Flatten":
                        y = x[0].flatten(at.get("axis", 1))
                    elif op == "Gemm":
                        b = x[1].t() if at.get("transB", 0) else x[1]
                        y = torch.addmm(x[2], x[0], b) if len(x) > 2 else x[0] @ b
                    elif op == "Softmax":
                        y = torch.softmax(x[0], at.get("axis", -1 if x[0].dim() == 2 else 1))
                    else:
                        raise NotImplementedError(f"OnnxAsTorch: no {op}")
                    env[outs[0]] = y
                out = [env[n] for n in self.outputs]
                return out[0] if len(out) == 1 else tuple(out)

        return Module().eval()


def _engine(job: dict) -> str:
    return ("anychip+lib" if job["dispatch"] else
            "anychip-tvm+graph" if job.get("cuda_graph") else "anychip-tvm")


def _compile_one(job: dict) -> dict:
    """Worker: compile one artifact and save it; returns what the report needs."""
    import anychip

    started = time.perf_counter()
    try:
        art = anychip.compile(job["onnx"], target=job["target"],
                              precision=job["precision"], shapes=job["shapes"],
                              dispatch=job["dispatch"],
                              **({"cuda_graph": True} if job.get("cuda_graph") else {}))
        saved = art.save(job["path"])
        report = art.report
        return {**job, "ok": True, "path": str(saved.path),
                "compile_s": round(time.perf_counter() - started, 1),
                "dispatch_report": report.get("dispatch"), "kernels": report.get("kernels"),
                "precision_used": art.precision,
                "device_code": (report.get("device_code") or {}).get("cubin_arch")}
    except Exception as exc:  # noqa: BLE001 - reported per artifact, the run goes on
        return {**job, "ok": False, "error": f"{type(exc).__name__}: {str(exc)[:300]}",
                "compile_s": round(time.perf_counter() - started, 1)}


def _torch_engines(model: str, onnx_path: Path, shapes: dict, feed: dict, with_compile: bool,
                   notes: dict, device: str) -> dict:
    """torch eager and torch.compile on `device` for one (model, batch), compiled and warmed:
    the zoo's torch module, else the ONNX graph run op by op (OnnxAsTorch)."""
    import onnx

    from anychip import models as zoo
    from anychip.compiler import bench as b
    from anychip.compiler.frontend import load_model

    source = load_model(str(onnx_path), None, shapes)
    engines = {}
    kinds = [("torch", False)] + ([("torch.compile", True)] if with_compile else [])
    for name, compiled in kinds:
        started = time.perf_counter()
        module = zoo.build(model).torch_module
        if module is None:
            module = OnnxAsTorch(onnx.load(str(onnx_path)))
            notes[f"{name} module"] = "the ONNX graph op by op in torch (no zoo torch module)"
        run, why = b._torch_engine(module, source, os.cpu_count() or 1, device,
                                   compiled=compiled)
        if run is None:
            notes[name] = why
            continue
        try:
            run(feed)   # torch.compile compiles here
            engines[name] = run
            notes[name] = f"{why or name}; first call {time.perf_counter() - started:.1f} s"
        except Exception as exc:  # noqa: BLE001 - inductor/triton raise many types
            notes[name] = f"failed: {(str(exc).splitlines() or ['?'])[0][:200]}"
    return engines


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("out", help="JSON file to write")
    p.add_argument("--models", default="resnet50,bert")
    p.add_argument("--batches", default="1,32")
    p.add_argument("--target", default="nvidia-h100")
    p.add_argument("--precision", default="fp32")
    p.add_argument("--repeat", type=int, default=20)
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--workers", type=int, default=min(8, os.cpu_count() or 1))
    p.add_argument("--no-torch-compile", action="store_true")
    p.add_argument("--compile-only", action="store_true")
    p.add_argument("--cuda-graph", action="store_true",
                   help="also TVM kernels captured as CUDA graphs (cuda_graph=true)")
    args = p.parse_args(argv)
    from anychip.compiler.registry import get_backend, get_profile

    profile = get_profile(args.target)
    backend = get_backend(profile)
    device = backend.bench_device(profile)   # 'cuda' for a GPU target (--target cpu: a dry run)
    if not args.compile_only:
        execution = backend.execution(profile)
        if not execution.can_run:
            print(f"'{args.target}' cannot run here: {execution.why}; --compile-only checks "
                  f"the compiles", file=sys.stderr)
            return 3
    t0 = time.perf_counter()
    models = [m.strip() for m in args.models.split(",") if m.strip()]
    batches = [int(b) for b in args.batches.split(",") if b.strip()]
    workdir = Path(tempfile.mkdtemp(prefix="anychip-gpu-check-"))
    jobs = []
    onnx_paths = {(m, b): _batched_onnx(m, b, workdir) for m in models for b in batches}
    for model in models:
        for batch in batches:
            shapes = _shapes(model, batch)
            variants = [(True, False), (False, False)] + ([(False, True)] if args.cuda_graph
                                                          else [])
            for dispatch, graph in variants:
                job = {"model": model, "batch": batch, "dispatch": dispatch,
                       "cuda_graph": graph, "onnx": str(onnx_paths[(model, batch)]),
                       "target": args.target, "precision": args.precision, "shapes": shapes}
                jobs.append({**job, "path": str(workdir / f"{model}-b{batch}-{_engine(job)}")})
    ctx = multiprocessing.get_context("spawn")
    pool = futures.ProcessPoolExecutor(max_workers=max(1, args.workers), mp_context=ctx)
    pending = [pool.submit(_compile_one, job) for job in jobs]

    # meanwhile: torch engines (and inductor) on the GPU
    torch_side: dict = {}
    if not args.compile_only:
        for model in models:
            for batch in batches:
                shapes = _shapes(model, batch)
                feed = _feed(model, batch)
                notes: dict = {}
                engines = _torch_engines(model, onnx_paths[(model, batch)], shapes, feed,
                                         not args.no_torch_compile, notes, device)
                torch_side[(model, batch)] = (feed, engines, notes)
    compiled = [f.result() for f in pending]
    pool.shutdown()
    phase1 = time.perf_counter() - t0
    print(f"phase 1 (compiles{'' if args.compile_only else ' + torch engines'}): "
          f"{phase1:.0f} s", flush=True)
    for c in compiled:
        state = (f"{c['compile_s']} s, kernels {c.get('kernels')}, dispatch "
                 f"{(c.get('dispatch_report') or {}).get('total', 0)} calls, kept in TVM "
                 f"{(c.get('dispatch_report') or {}).get('kept_in_tvm', {})}"
                 if c["ok"] else c["error"])
        print(f"  {c['model']} b{c['batch']} {_engine(c)}: {state}")
    results = {"target": args.target, "precision": args.precision, "compiles": compiled,
               "phase1_s": round(phase1, 1), "runs": []}
    failed = [c for c in compiled if not c["ok"]]
    if args.compile_only:
        _write(args.out, results)
        return 1 if failed else 0

    import anychip
    from anychip.compiler.bench import Latency, time_interleaved, _gpu_name
    from anychip.compiler.frontend import load_model
    from anychip.compiler.verify import verify_artifact

    results["gpu"] = _gpu_name() if device == "cuda" else "none (dry run on the host CPU)"
    import torch

    # torch eager runs with torch's defaults: cuDNN may use TF32 for fp32 convolutions
    results["torch"] = {"version": torch.__version__,
                        "cudnn_allow_tf32": bool(torch.backends.cudnn.allow_tf32),
                        "cublas_allow_tf32": bool(torch.backends.cuda.matmul.allow_tf32)}
    ok = not failed
    rows = []
    for model in models:
        for batch in batches:
            feed, engines, notes = torch_side[(model, batch)]
            source = load_model(str(onnx_paths[(model, batch)]), None, _shapes(model, batch))
            timed = dict(engines)
            entry = {"model": model, "batch": batch, "verify": {}, "notes": notes}
            for c in compiled:
                if (c["model"], c["batch"]) != (model, batch) or not c["ok"]:
                    continue
                name = _engine(c)
                try:
                    art = anychip.load(c["path"])
                    report = verify_artifact(art, source.original, source.label, inputs=feed)
                    entry["verify"][name] = {"passed": bool(report.passed),
                                             "summary": report.summary()[:400]}
                    ok = ok and bool(report.passed)
                    timed[name] = (lambda a: (lambda f: a.run(f)))(art)
                except Exception as exc:  # noqa: BLE001 - one line per failed engine
                    ok = False
                    entry["verify"][name] = {"passed": False,
                                             "summary": f"{type(exc).__name__}: {str(exc)[:300]}"}
            calls = {n: (lambda r: (lambda: r(feed)))(r) for n, r in timed.items()}
            samples = time_interleaved(calls, args.warmup, args.repeat, pause=0.01) \
                if calls else {}
            lat = {n: Latency.of(s).__dict__ for n, s in samples.items()}
            entry["latency_ms"] = lat
            best_torch = min((lat[n]["median"] for n in ("torch", "torch.compile") if n in lat),
                             default=None)
            entry["best_torch_ms"] = best_torch
            for n in ("anychip+lib", "anychip-tvm", "anychip-tvm+graph", "torch",
                      "torch.compile"):
                if n == "anychip-tvm+graph" and not args.cuda_graph:
                    continue
                if n not in lat:
                    rows.append((model, batch, n, "n/a", "",
                                 entry["verify"].get(n, {}).get("summary", notes.get(n, ""))))
                    continue
                ratio = f"{lat[n]['median'] / best_torch:.2f}x" if best_torch else ""
                verdict = ("verified" if entry["verify"].get(n, {}).get("passed") else
                           "NOT verified") if n.startswith("anychip") else ""
                rows.append((model, batch, n, f"{lat[n]['median']:.3f}", ratio, verdict))
            results["runs"].append(entry)
            print(f"  timed {model} b{batch} ({time.perf_counter() - t0:.0f} s)", flush=True)
    results["total_s"] = round(time.perf_counter() - t0, 1)
    print(f"\n{args.target} ({args.precision}) on {results['gpu']}, median of {args.repeat} "
          f"interleaved runs, numpy in and out for every engine; ratio = median / the better "
          f"of torch eager and torch.compile; torch {results['torch']}\n")
    print("| model | batch | engine | median ms | ratio | check |")
    print("|---|---|---|---|---|---|")
    for r in rows:
        print("| " + " | ".join(str(x) for x in r) + " |")
    print(f"\ntotal {results['total_s']} s")
    _write(args.out, results)
    return 0 if ok else 1


def _write(path: str, results: dict) -> None:
    Path(path).write_text(json.dumps(results, indent=2, default=str))
    print(f"wrote {path}")


if __name__ == "__main__":
    sys.exit(main())
