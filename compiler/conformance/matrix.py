"""The model x target matrix for CI and the README: every cell says how the target ran
the model here and with what error against ONNX Runtime.

A cell is `executed` or `simulated` (verify: compiled, run, every output within the
tolerance of the precision used, with max abs / max rel error), `compiled only` (the
target builds here but cannot run: compile success is all that is claimed), `failed`
(with the reason: a wrong result or an error on the way), or `unavailable` (the target
cannot even compile here; not counted as a failure, the row says why). Every cell whose
target can run or compile here is expected to pass.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field
from xml.etree import ElementTree as ET

from ..format_error import FORMAT_ERROR_MULTIPLIER

EXECUTED, SIMULATED, COMPILED_ONLY = "executed", "simulated", "compiled only"
FAILED, UNAVAILABLE = "failed", "unavailable"


@dataclass
class Cell:
    model: str
    target: str
    status: str
    passed: bool
    how: str = ""               # how the target runs here (executed/simulated/compiled only)
    precision: str = ""
    max_abs: float | None = None
    max_rel: float | None = None
    tolerance: str = ""
    reason: str = ""
    seconds: float = 0.0
    rule: str = "elementwise"   # "format-error" when an output passed by that rule (verify)
    where: str = ""             # a farm server "HOST ADDR (remote, key K)"; "" = this machine
    # a model with symbolic dims: each shape verified ({symbol: size}), or for a compiled-only
    # cell the bounds it compiled for ({symbol: [lo, hi]}); empty for a static model
    sizes: list = field(default_factory=list)
    symbols: dict = field(default_factory=dict)

    @property
    def expected_to_pass(self) -> bool:
        return self.status != UNAVAILABLE

    def as_dict(self) -> dict:
        return asdict(self)

    def shapes_text(self) -> str:
        """'at batch=1, 33, 64' (each shape verified) or 'for batch=1..64' (compiled only);
        '' for a static model."""
        if self.sizes:
            names = list(self.sizes[0])
            per = {n: ", ".join(str(p[n]) for p in self.sizes) for n in names}
            return "at " + "; ".join(f"{n}={v}" for n, v in per.items())
        if self.symbols:
            return "for " + ", ".join(f"{n}={lo}..{hi}" for n, (lo, hi) in self.symbols.items())
        return ""

    def text(self) -> str:
        shapes = f", {self.shapes_text()}" if self.sizes or self.symbols else ""
        if self.status in (EXECUTED, SIMULATED):
            by = f", within {FORMAT_ERROR_MULTIPLIER:g}x its format's error" \
                if self.rule == "format-error" else ""
            return f"{self.status} ✓ max rel {self.max_rel:.2g} ({self.precision}{by}{shapes})"
        if self.status == COMPILED_ONLY:
            why = ", ".join(x for x in (self.reason, shapes[2:]) if x)
            return "compiled only ✓" + (f" ({why})" if why else "")
        if self.status == FAILED:
            return f"failed ✗ {self.reason[:80]}"
        return f"unavailable: {self.reason[:60]}"


def matrix_targets(spec: str) -> list[str]:
    """'all' -> every target known here (unavailable ones give unavailable cells);
    otherwise the comma-separated names, validated."""
    from ..registry import expand_targets, targets

    if spec == "all":
        return [t.name for t in targets()]
    return expand_targets(spec)


def run_cell(model: str, target: str, remote=None, options: dict | None = None,
             source=None) -> Cell:
    """Verify (runnable targets) or compile (compiles-only targets) one model on one target.
    `remote` (compiler/farm) verifies on a farm server instead of here. `options`: shapes=,
    dims=, gears= as verify takes them; a symbolic model is verified at every shape verify
    checks (its bounds, midpoint and gears), and the cell lists them. `source`: `model`
    already loaded with those options (a ModelSource this call may consume)."""
    options = dict(options or {})
    from ..backend import Mode
    from ..driver import compile_model
    from ..errors import AnychipError
    from ..registry import execution, get_profile
    from ..verify import verify_model

    start = time.perf_counter()
    mode = execution(get_profile(target))
    if mode.mode is Mode.UNAVAILABLE:
        return Cell(model, target, UNAVAILABLE, False, reason=mode.why)
    cell = Cell(model, target, FAILED, False, how=mode.mode.verb)
    try:
        if mode.can_run or remote is not None:
            report = verify_model(source or model, target=target, remote=remote, **options)
            cell.how, cell.where = report.how, report.where
            cell.sizes = [dict(r.sizes) for r in report.by_shape] or \
                ([dict(report.sizes)] if report.sizes else [])
            worst = next((o for o in report.outputs if not o.passed), None)
            cell.status = report.how if report.passed else FAILED
            cell.passed = report.passed
            cell.precision = report.precision
            cell.max_abs, cell.max_rel = report.max_abs, report.max_rel
            if any(o.rule == "format-error" for o in report.outputs):
                cell.rule = "format-error"
            first = report.outputs[0] if report.outputs else None
            cell.tolerance = f"rtol={first.rtol:g} atol={first.atol:g}" if first else ""
            if worst is not None:
                cell.reason = (f"{worst.mismatches}/{worst.size} values of '{worst.name}' out "
                               f"of tolerance (max abs {worst.max_abs:.3g}, max rel "
                               f"{worst.max_rel:.3g})")
        else:
            artifact = compile_model(source or model, target=target, **options)
            cell.status, cell.passed, cell.precision = COMPILED_ONLY, True, artifact.precision
            cell.symbols = {n: [lo, hi] for n, (lo, hi) in artifact.symbols.items()}
    except AnychipError as exc:
        cell.reason = str(exc).splitlines()[0][:300]
    except Exception as exc:  # noqa: BLE001 - a TVM or anychip bug is a failed cell, not a crash
        cell.reason = f"{type(exc).__name__}: {(str(exc).strip().splitlines() or [''])[-1][:300]}"
    cell.seconds = round(time.perf_counter() - start, 2)
    return cell


# A worker compiles one model for every target (ResNet-50 peaks at ~2 GiB); as many workers
# as cores, each with this much memory.
WORKER_MEMORY_BYTES = 4 << 30


def default_jobs() -> int:
    """One worker per usable core, as many as the memory holds (at least 1)."""
    import psutil

    from ..dispatch import usable_cores

    return max(1, min(usable_cores(), psutil.virtual_memory().available // WORKER_MEMORY_BYTES))


def model_cells(model: str, targets: list[str], options: dict | None = None,
                on_cell=None) -> list[Cell]:
    """Every target of one model, in one process (a worker's task: the model is loaded and
    its zoo cache read by one process, not by one per cell). TVM's native log lines (a spawned
    worker that loads many artifacts gets "SystemLib symbol ... overriden" per load) are kept
    out of the terminal: each cell carries its own outcome. `on_cell(cell)` as each ends."""
    import copy

    from .. import progress
    from ..errors import AnychipError
    from ..frontend import load_model

    options = dict(options or {})
    try:   # once, not per target (VGG-19: ~5 s of parsing, checks and hashing)
        source = load_model(model, None, options.get("shapes"), options.get("dims"))
    except AnychipError:
        source = None   # each cell reports the error itself
    cells = []
    for target in targets:   # a copy per target: a backend may rewrite the proto it gets
        with progress.native_messages([]):
            cells.append(run_cell(model, target, options=options,
                                  source=copy.deepcopy(source) if source else None))
        if on_cell is not None:
            on_cell(cells[-1])
    return cells


def _weight_bytes(model: str) -> int:
    """A cheap size hint for scheduling: the .onnx file's bytes, or the zoo model's cached
    file's (0 when not known: such models start last)."""
    import os

    if not model.startswith("zoo:"):
        return os.path.getsize(model) if os.path.isfile(model) else 0
    from anychip.models.cache import cache_dir

    root = cache_dir()
    if root is None:
        return 0
    return max((e.stat().st_size for e in root.glob(f"{model[4:]}-*.onnx")), default=0)


def _quiet_worker(threads: int | None = None) -> None:
    """Workers print nothing: the parent reports each cell (and stays quiet with --json).
    With `threads`, each runs its artifacts on that many threads (the cores shared among the
    workers; $ANYCHIP_NUM_THREADS set by the user wins): two workers each running TVM's pool
    and the library on both cores of a 2-core machine took the matrix from 213 to 313 s."""
    import os

    from .. import progress

    progress.configure(quiet=True)
    if threads:
        os.environ.setdefault("ANYCHIP_NUM_THREADS", str(threads))


def local_matrix(models: list[str], targets: list[str], options: dict | None = None,
                 jobs: int = 1, on_cell=None) -> list[Cell]:
    """Cells in models x targets order; with jobs > 1, models run in that many spawned worker
    processes (a compile is mostly one thread: two cores build two models at once).
    `on_cell(cell, done, total)` is called as each cell is known."""
    total, done = len(models) * len(targets), 0

    def report(cell: Cell) -> None:
        nonlocal done
        done += 1
        if on_cell is not None:
            on_cell(cell, done, total)

    if jobs <= 1 or len(models) <= 1:   # here, model by model (the same task as a worker's)
        return [cell for m in models for cell in model_cells(m, targets, options, report)]
    import multiprocessing as mp
    from concurrent.futures import ProcessPoolExecutor, as_completed

    results: dict[str, list[Cell]] = {}
    from ..dispatch import usable_cores

    workers = min(jobs, len(models))
    with ProcessPoolExecutor(max_workers=workers, initializer=_quiet_worker,
                             initargs=(max(1, usable_cores() // workers),),
                             mp_context=mp.get_context("spawn")) as pool:
        # largest first (their weights' bytes): the last model to start sets the tail
        futures = {pool.submit(model_cells, m, targets, options): m
                   for m in sorted(models, key=_weight_bytes, reverse=True)}
        for future in as_completed(futures):
            model = futures[future]
            try:
                cells = future.result()
            except Exception as exc:  # noqa: BLE001 - a worker that died fails its cells
                why = f"worker process failed: {type(exc).__name__}: {exc}"[:300]
                cells = [Cell(model, t, FAILED, False, reason=why) for t in targets]
            results[model] = cells
            for cell in cells:
                report(cell)
    return [cell for m in models for cell in results[m]]


def markdown(cells: list[Cell], models: list[str], targets: list[str]) -> str:
    """A models x targets table (README-ready), with the legend."""
    by = {(c.model, c.target): c for c in cells}
    lines = ["| model | " + " | ".join(targets) + " |",
             "|---|" + "---|" * len(targets)]
    for model in models:
        row = [by[(model, t)].text().replace("|", "/") if (model, t) in by else "" for t in targets]
        lines.append(f"| {model} | " + " | ".join(row) + " |")
    lines.append("")
    lines.append("executed / simulated: outputs within tolerance of ONNX Runtime (CPU provider) "
                 "on the original model, max relative error shown; \"within 3x its format's "
                 "error\": a reduced-precision output outside rtol/atol whose RMS error is within "
                 "3x that of the model run with every tensor stored in that format (see the "
                 "tolerance section); compiled only: built here, not run; unavailable: the target "
                 "cannot compile on this machine.")
    return "\n".join(lines) + "\n"


def junit_xml(cells: list[Cell]) -> bytes:
    root = ET.Element("testsuites", name="anychip matrix")
    suite = ET.SubElement(root, "testsuite", name="matrix", tests=str(len(cells)),
                          failures=str(sum(c.status == FAILED for c in cells)),
                          skipped=str(sum(c.status == UNAVAILABLE for c in cells)), errors="0")
    for c in cells:
        case = ET.SubElement(suite, "testcase", classname=f"matrix.{c.target}", name=c.model,
                             time=f"{c.seconds:.2f}")
        if c.status == FAILED:
            ET.SubElement(case, "failure", message=c.reason[:1000], type="failed")
        elif c.status == UNAVAILABLE:
            ET.SubElement(case, "skipped", message=c.reason[:1000])
        else:
            ET.SubElement(case, "system-out").text = c.text()
    ET.indent(root)
    return ET.tostring(root, encoding="utf-8", xml_declaration=True)
