"""Running a gear artifact (compiler/gears.py): pick the smallest gear that fits the inputs,
zero-pad them to it, cut the outputs back.

Its own module, with the loader passed in, because artifact.py runs gear artifacts and
gears.py writes them through artifact.py: with the runner in gears.py the two imported each
other.
"""

from __future__ import annotations

import numpy as np

from .errors import AnychipError


def tag(sizes: dict[str, int]) -> str:
    return ",".join(f"{k}={v}" for k, v in sizes.items())


def _pad(arr: np.ndarray, shape: tuple[int, ...], fill) -> np.ndarray:
    out = fill(shape, arr.dtype)
    out[tuple(slice(0, n) for n in arr.shape)] = arr
    return out


def _valid(arr: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    return arr[tuple(slice(0, n) for n in shape)]


class GearRunner:
    """Runs a gear artifact: the smallest gear that fits, inputs zero-padded, outputs cut."""

    def __init__(self, artifact, load) -> None:
        self.artifact, self._load = artifact, load     # load: artifact.py's load_artifact
        self._loaded: dict[str, object] = {}

    def pick(self, sizes: dict[str, int]) -> dict:
        manifest = self.artifact.manifest
        modes = manifest.get("gear_modes") or {}
        fitting = []
        for gear in manifest["gears"]:
            g = gear["sizes"]
            if all(g[n] == v if modes.get(n) == "exact" else g[n] >= v for n, v in sizes.items()):
                fitting.append(gear)
        if not fitting:
            exact = " (exact: padding changes the result)"
            listed = "; ".join(f"{n}: {sorted({g['sizes'][n] for g in manifest['gears']})}"
                               f"{exact if modes.get(n) == 'exact' else ''}" for n in sizes)
            raise AnychipError(f"{self.artifact.path.name}: no gear serves "
                               f"{tag(sizes)}; the gears are {listed}. Pass inputs at a gear "
                               f"size or recompile with --gears.")
        return min(fitting, key=lambda g: sum(g["sizes"].values()))

    def run(self, specs, ordered: list[np.ndarray], sizes: dict[str, int]) -> dict:
        from .inputs import concrete_shape

        gear = self.pick(sizes)
        sub = self._loaded.get(gear["path"])
        if sub is None:
            sub = self._loaded[gear["path"]] = self._load(self.artifact.path / gear["path"])
        feed = {spec.name: _pad(arr, concrete_shape(spec, gear["sizes"]), np.zeros)
                for spec, arr in zip(specs, ordered)}
        outputs = sub.run(feed)
        result = {}
        for spec in self.artifact.outputs:
            value = outputs[spec.name]
            try:
                want = concrete_shape(spec, sizes)
            except AnychipError:
                want = value.shape
            result[spec.name] = np.ascontiguousarray(_valid(value, want))
        return result
