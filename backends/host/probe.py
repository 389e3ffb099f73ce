"""What the host CPU is, as LLVM sees it, and the TVM target of a profile built for it."""

from __future__ import annotations

from anychip.compiler.dispatch import usable_cores


def host_cpu_name() -> str:
    import tvm

    return tvm.get_global_func("tvm.codegen.llvm.GetHostCPUName")()


def host_cores() -> int:
    """Cores this process may use (affinity and cgroup limits included)."""
    return usable_cores()


def host_cpu_features() -> str:
    """Digest of the instruction-set features LLVM sees on this host (AVX-512 masked by a VM
    gives another digest: an artifact built with them must not be reused without them)."""
    import hashlib

    import tvm

    features = tvm.get_global_func("tvm.codegen.llvm.GetHostCPUFeatures")()
    enabled = sorted(str(k) for k, v in features.items() if v)
    return hashlib.sha256(",".join(enabled).encode()).hexdigest()[:16]


def host_target(profile):
    """The profile's LLVM target with `mcpu: host` resolved to this CPU and `num-cores` set
    to the usable cores (unless the profile fixes them)."""
    import tvm

    attrs = dict(profile.target)
    if attrs.get("mcpu") == "host":
        attrs["mcpu"] = host_cpu_name()
    attrs.setdefault("num-cores", host_cores())
    return tvm.target.Target(attrs)


def check_built_here(manifest: dict, what: str = "built for CPU") -> None:
    """Refuse an artifact built for another CPU model: its code may use instructions this one
    lacks. `what` words the message ('built for CPU', 'built to simulate on CPU')."""
    from anychip.compiler.errors import AnychipError

    built_for = (manifest.get("runtime") or {}).get("mcpu")
    here = host_cpu_name()
    if not built_for:   # a deleted or emptied field must not skip the check
        raise AnychipError("the artifact's manifest does not say which CPU it was built for "
                           "(runtime.mcpu); it was edited or is corrupted. Recompile it here.")
    if built_for != here:
        raise AnychipError(f"artifact was {what} '{built_for}' but this host is "
                           f"'{here}'; its code may use instructions this CPU lacks. "
                           f"Recompile it here.")
