"""TensorSpec: one graph input or output as the compiler and the runners see it.

Its own module because the frontend (which makes them) and inputs.py (which fills them with
values) both need it, and the frontend uses inputs.py: the type in frontend.py made a cycle.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class TensorSpec:
    """One graph input or output: the user's name, the name code generators see, shape, dtype."""

    name: str
    safe_name: str
    shape: tuple            # ints, or strings for symbolic dims
    dtype: str
    value_range: tuple[float, float] | None = None   # for integer inputs such as token ids

    @property
    def is_static(self) -> bool:
        return all(isinstance(d, int) and d >= 0 for d in self.shape)

    def as_dict(self) -> dict:
        d = {"name": self.name, "safe_name": self.safe_name, "shape": list(self.shape),
             "dtype": self.dtype}
        if self.value_range is not None:
            d["value_range"] = list(self.value_range)
        return d

    @staticmethod
    def from_dict(d: dict) -> "TensorSpec":
        vr = tuple(d["value_range"]) if d.get("value_range") else None
        return TensorSpec(d["name"], d["safe_name"], tuple(d["shape"]), d["dtype"], vr)
