"""Typed errors that carry one user-facing line each.

The CLI maps the type to an exit code (docs/architecture.md): a failed check is 1, bad input or
usage is 2, a target that cannot execute on this machine is 3. The message is the whole
story for the user: what failed, where (file, node, target), and one next step.
"""

from __future__ import annotations


def one_line(text: str) -> str:
    """`text` with its control characters escaped: a name taken from the model (an op type
    with a newline in a corrupted file, found by the fuzzer) must not split the one line."""
    return "".join(c if c.isprintable() else repr(c)[1:-1] for c in text)


class AnychipError(Exception):
    """Bad input or usage: the user can fix it. Exit code 2. The message is kept to one line
    (one_line)."""

    exit_code = 2

    def __init__(self, *args):
        super().__init__(*(one_line(a) if isinstance(a, str) else a for a in args))


class CheckFailed(AnychipError):
    """A verification or conformance check ran and did not pass. Exit code 1."""

    exit_code = 1


class InternalCompilerError(AnychipError):
    """TVM (or anychip) failed on a model that passed the ONNX checks: not the user's bad
    input, so not exit 2. Exit code 1, and the message says it is an internal failure."""

    exit_code = 1


class InputsRejected(AnychipError):
    """The model does not run on these inputs although they match its declared inputs: ONNX
    Runtime fails on them, or the compiled program's shape checks do (two dims the graph needs
    equal differ at these sizes). Exit code 2; verify tries other sizes on it."""


class NotExecutable(AnychipError):
    """The target cannot execute on this machine (no device, compile-only family). Exit code 3."""

    exit_code = 3


class ProfileError(AnychipError):
    """A chip profile is malformed; the message names the file and the field."""


def out_of_memory(exc: BaseException) -> bool:
    """Whether an exception raised from TVM's C++ is an allocation failure: the compile ran
    into its memory ceiling (the model's shapes are too large), not a compiler bug."""
    if isinstance(exc, MemoryError):
        return True
    text = str(exc)
    return "std::bad_alloc" in text or "Cannot allocate memory" in text


def memory_ceiling_error(stage: str, target: str) -> AnychipError:
    """The one line for a compile that ran out of memory inside TVM: exit 2, naming the knob."""
    from .limits import COMPILE_MEMORY_BYTES

    return AnychipError(f"target '{target}': {stage} ran out of memory inside TVM "
                        f"(std::bad_alloc) under a ceiling of {COMPILE_MEMORY_BYTES / 2**30:.1f} "
                        f"GiB (ANYCHIP_COMPILE_MEMORY_BYTES); give smaller static shapes "
                        f"(--shape) or raise the ceiling.")


# TVM's printer notes after an IR dump: never the reason for a failure
_TVM_TRAILERS = ("# Metadata omitted", "Use show_meta")


def error_line(exc: BaseException, last: bool = True, limit: int = 300) -> str:
    """One line of an exception's message for a user-facing error: the last non-empty line by
    default (TVM puts the reason after its C++ trace), the first with last=False (onnx and
    Python errors); the exception's type name when the message is empty.

    A TVM error that ends with the IR it could not handle ("Offending call:", then the call
    and the printer's "# Metadata omitted" note) gives its reason line and the op's name
    instead: the last line alone was the printer's note, which names nothing."""
    lines = [ln.strip() for ln in str(exc).strip().splitlines()
             if ln.strip() and not ln.strip().startswith(_TVM_TRAILERS)]
    if not lines:
        return type(exc).__name__
    if last and any(ln.startswith("Offending call") for ln in lines):
        return _offending_call_line(lines)[:limit]
    return (lines[-1] if last else lines[0])[:limit]


def _offending_call_line(lines: list[str]) -> str:
    import re

    at = max(i for i, ln in enumerate(lines) if ln.startswith("Offending call"))
    reasons = [ln for ln in lines[:at] if re.match(r"[\w.]*(Error|Check failed)\b", ln)]
    reason = (reasons[-1] if reasons else lines[at - 1] if at else lines[at]).rstrip(".")
    call = " ".join(lines[at + 1:])
    op = re.search(r"\bR\.([\w.]+)\(", call)
    return f"{reason} (op relax.{op.group(1)})" if op else reason
