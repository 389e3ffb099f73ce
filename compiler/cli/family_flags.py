"""Command-line flags generated from each backend family's `Options` (compiler/family_options.py).

Why generated: a family's options (a vendor graph compiler's precision mode, the host
family's layout...) belong to the family, so the core commands must not declare them one by one. Each
installed family gets one help group listing its flags; a flag given for targets of a family
that does not declare it is one clear error, and with several targets (`--target all`) a flag
goes to the targets whose family declares it.
"""

from __future__ import annotations

import argparse

from ..errors import AnychipError

DEST_PREFIX = "family_option__"


def _families() -> dict:
    from ..registry import backends

    return backends()


def _cli_fields(backend) -> list:
    return [f for f in backend.Options.fields() if f.metadata.get("cli", True)]


def add_family_flags(parser: argparse.ArgumentParser) -> None:
    """One argument group per installed family with options, e.g. `--precision-mode` under
    '<family>' family options. A name two families declare is one flag, listed in both groups' help."""
    from ..registry import profiles

    owners: dict[str, list[str]] = {}
    for family, backend in sorted(_families().items()):
        for f in _cli_fields(backend):
            owners.setdefault(f.name, []).append(family)
    added: set[str] = set()
    for family, backend in sorted(_families().items()):
        fields = _cli_fields(backend)
        if not fields:
            continue
        names = sorted(n for n, p in profiles().items() if p.family == family)
        shown = ", ".join(names[:4]) + (", ..." if len(names) > 4 else "")
        group = parser.add_argument_group(f"'{family}' family options (targets: {shown})")
        for f in fields:
            flag = "--" + f.name.replace("_", "-")
            if f.name in added:
                continue
            added.add(f.name)
            also = [o for o in owners[f.name] if o != family]
            choices = f.metadata.get("choices")
            group.add_argument(flag, dest=DEST_PREFIX + f.name, default=None,
                               metavar=f.metadata.get("metavar") or (
                                   "|".join(map(str, choices)) if choices else "VALUE"),
                               help=f.metadata.get("help", "") +
                               (f" (also for: {', '.join(also)})" if also else ""))


def given_family_flags(args) -> dict[str, str]:
    """{option name: value} of the family flags given on this command line."""
    return {k[len(DEST_PREFIX):]: v for k, v in vars(args).items()
            if k.startswith(DEST_PREFIX) and v is not None}


def family_options_for(args, target: str, all_targets: list[str] | None = None) -> dict:
    """The family flags that apply to `target`, as keyword options for anychip.compile.

    A flag that no selected target's family declares is an error naming the families that do.
    """
    from ..registry import get_backend, get_profile

    given = given_family_flags(args)
    if not given:
        return {}
    targets = all_targets or [target]
    declared = {t: set(get_backend(get_profile(t)).Options.names()) for t in targets}
    for name in given:
        if not any(name in names for names in declared.values()):
            owners = sorted(fam for fam, b in _families().items() if name in b.Options.names())
            families = sorted({get_profile(t).family for t in targets})
            raise AnychipError(f"--{name.replace('_', '-')} is an option of the "
                               f"{', '.join(owners) or 'no'} family's targets, not of "
                               f"{', '.join(targets)} (family {', '.join(families)}).")
    return {k: v for k, v in given.items() if k in declared[target]}
