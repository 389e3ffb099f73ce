"""Find backends (entry points) and targets (profiles), and say what each can do here.

Backends register under the `anychip.backends` entry-point group, so a vendor's backend can be
installed as a separate package (after JAX's plugins). A family with profiles but no
registered backend is listed as unavailable, never silently replaced by another.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from importlib.metadata import entry_points

from .backend import Backend, Execution, Mode
from .errors import AnychipError
from .profiles import Profile, load_profile, profile_paths

ENTRY_POINT_GROUP = "anychip.backends"


@functools.lru_cache(maxsize=1)
def backends() -> dict[str, Backend]:
    """All registered backend families, keyed by family name."""
    found: dict[str, Backend] = {}
    for ep in entry_points(group=ENTRY_POINT_GROUP):
        backend = ep.load()()
        found[backend.family] = backend
    return found


@functools.lru_cache(maxsize=1)
def profiles() -> dict[str, Profile]:
    """All chip profiles, validated (the family's chip schema included), keyed by name."""
    result = {}
    paths = list(profile_paths())
    for backend in backends().values():   # a separately installed family ships its own chips
        paths += [p for p in backend.profile_paths() if p.stem not in {q.stem for q in paths}]
    for path in paths:
        import yaml

        family = (yaml.safe_load(path.read_text()) or {}).get("family") if path.exists() else None
        backend = backends().get(family) if isinstance(family, str) else None
        result[path.stem] = load_profile(path, getattr(backend, "chip_schema", None))
    return result


def get_profile(name: str) -> Profile:
    table = profiles()
    if name not in table:
        raise AnychipError(f"unknown target '{name}'; run 'anychip targets' for the list "
                           f"({', '.join(sorted(table))}).")
    return table[name]


# The target that runs on this machine's own CPU: where a simulating family's host fallback is
# built and what `targets()` lists first. A default, not a family the compiler branches on.
HOST_TARGET = "cpu"


def host_profile() -> Profile:
    """The profile of the host CPU (HOST_TARGET)."""
    return get_profile(HOST_TARGET)


def get_backend(profile: Profile) -> Backend:
    backend = backends().get(profile.family)
    if backend is None:
        raise AnychipError(f"target '{profile.name}': no backend of family '{profile.family}' is "
                           f"installed; install the package that provides it.")
    return backend


def execution(profile: Profile) -> Execution:
    backend = backends().get(profile.family)
    if backend is None:
        return Execution(Mode.UNAVAILABLE, f"no '{profile.family}' backend is installed")
    return backend.execution(profile)


@dataclass(frozen=True)
class TargetInfo:
    name: str
    family: str
    vendor: str
    execution: str
    why: str
    description: str

    def as_dict(self) -> dict:
        return dict(self.__dict__)


def targets() -> list[TargetInfo]:
    """Every profile with its backend family, vendor, and execution mode on this machine."""
    infos = []
    for name, profile in sorted(profiles().items(), key=lambda kv: (kv[0] != HOST_TARGET, kv[0])):
        ex = execution(profile)
        infos.append(TargetInfo(name, profile.family, profile.vendor, ex.mode.value, ex.why,
                                profile.description))
    return infos


def expand_targets(spec: str) -> list[str]:
    """'all' -> every target that executes or simulates here; 'a,b' -> [a, b] (validated)."""
    if spec == "all":
        return [t.name for t in targets() if t.execution in (Mode.EXECUTES.value, Mode.SIMULATES.value)]
    names = [s.strip() for s in spec.split(",") if s.strip()]
    for name in names:
        get_profile(name)
    return names
