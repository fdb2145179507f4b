"""The one settings resolver: which value a per-tensor setting gives each tensor.

A setting is a plain value, or a mapping whose keys are tensor or layer names (`"fc1"`,
`"attn.in_proj_weight"`), patterns (globs such as `"encoder.*.linear?"`, or `"re:<regex>"`,
matched against tensor and layer names) or kinds (`"conv"`, `"linear"`, `"embedding"`, only
where there is a model to tell them). For one tensor: a key equal to its name or its layer's
name wins, else the first matching pattern in the mapping's order, else its kind. A plain
value reaches the tensors a verb compresses by default (`targets.Slot.default`). Every verb
(`prune_`, `quantize_`, `save`, `encode_state_dict`, `deepcompress encode`) resolves its
settings through `plan`, which is strict: a key or exclude pattern that reaches no tensor, or a
kind key where there are no kinds (a state dict), is an error naming it.
"""

from __future__ import annotations

import fnmatch
import math
import numbers
import re
from collections.abc import Iterable, Mapping

import torch

from .coding.codec import dtype_name
from .targets import KINDS, Slot

UNSET = object()


def matches(pattern: str, name: str) -> bool:
    """Whether a tensor name (`features.0.weight`) or its layer (`features.0`) matches a glob
    pattern (`classifier.*`), or a regular expression written as `re:<expr>` (full match)."""
    layer = name.rpartition(".")[0]
    if pattern.startswith("re:"):
        rx = re.compile(pattern[3:])
        return bool(rx.fullmatch(name) or rx.fullmatch(layer))
    return fnmatch.fnmatchcase(name, pattern) or fnmatch.fnmatchcase(layer, pattern)


def lookup(setting, name: str, kind: str | None, default: bool | None = None):
    """The value `setting` gives the tensor `name` (`layer.weight`) of kind `kind`, or `UNSET`.

    A plain value reaches a tensor when `default` is true (None: when it has a kind). In a
    mapping, in this order: a key equal to the tensor's name or to its layer's name; else the
    first key, in the mapping's order, that is a pattern matching it (`matches`); else the
    tensor's kind. Kind keys are never read as patterns. A value of None is returned like any
    other (it says "leave this alone").
    """
    if not isinstance(setting, Mapping):
        reached = kind is not None if default is None else default
        return setting if reached else UNSET
    layer = name.rpartition(".")[0]
    for key in (name, layer):
        if key in setting:
            return setting[key]
    for key, value in setting.items():
        if key not in KINDS and matches(key, name):
            return value
    if kind is not None and kind in setting:
        return setting[kind]
    return UNSET


def resolve(setting, name: str, default, kind: str | None = None):
    """What `setting` gives one tensor `name` (a plain value reaches it), or `default` when
    no key of a mapping does."""
    value = lookup(setting, name, kind, default=True)
    return default if value is UNSET else value


def one_value(found: Mapping[str, object], names: list[str], what: str, default):
    """The single value `found` ({name: value}) gives the names of one tied tensor, or
    `default` if it gives none; ValueError if it gives them different values."""
    distinct = []
    for v in found.values():
        if v not in distinct:
            distinct.append(v)
    if len(distinct) > 1:
        raise ValueError(
            f"{' and '.join(names)} are one tied tensor but {what} give them different values "
            f"{dict(found)}; give them one value (or exclude one name)"
        )
    return distinct[0] if distinct else default


def check_keys(
    groups: list[list[Slot]],
    setting,
    exclude: Iterable[str] = (),
    *,
    what: str = "tensor",
    others: Iterable[str] = (),
) -> None:
    """Refuse a mapping key or exclude pattern that reaches no tensor of `groups`, and a kind
    key where there are no kinds (a state dict's tensors); the message names the key and
    lists the candidates. A kind that the model has no layer of is accepted, so that one
    setting such as `{"conv": 8, "linear": 5}` serves every model. An exclude pattern may
    also reach `others` (tensors that are never compressed anyway, such as a state dict's
    norms)."""
    slots = [s for g in groups for s in g]
    names = [n for s in slots for n in s.names]
    kinds = {s.kind for s in slots}
    keys = list(setting) if isinstance(setting, Mapping) else []
    kind_keys = [k for k in keys if k in KINDS]
    if kind_keys and not any(kinds - {None}):
        # (a model's kind absent from it is fine: {"conv": 8, "linear": 5} suits any model)
        raise ValueError(
            f"kind keys {kind_keys} need a model to tell layer kinds; name the tensors or use "
            f"patterns (such as 'features.*') instead"
        )
    others = list(others)
    for label, items, reach in (
        ("key", [k for k in keys if k not in KINDS], names),
        ("exclude pattern", exclude, names + others),
    ):
        unknown = [k for k in items if not any(k == n or matches(k, n) for n in reach)]
        if unknown:
            known = sorted({n.rpartition(".")[0] or n for n in names})
            raise ValueError(
                f"no {what} matches {label} {unknown}; the candidates are {known}"
                + (f" (kinds: {', '.join(KINDS)})" if any(kinds - {None}) else "")
            )


def assign(
    groups: list[list[Slot]],
    setting,
    exclude: Iterable[str] = (),
    *,
    default=UNSET,
    what: str = "tensor",
    strict: bool = True,
    others: Iterable[str] = (),
) -> list[tuple[list[Slot], object]]:
    """`(group, value)` for every tie group that no `exclude` pattern reaches: the value
    `setting` gives it (None included), or `default` where no key does.

    Each name of a group is resolved by `lookup`; names it does not reach do not count, and a
    group whose names resolve to different values is refused (they are one tensor). The
    exclude patterns are checked first, and with `strict` (for every setting a user gives; a
    library default is not) the setting's keys too (`check_keys`).

    Raises:
        ValueError: see `check_keys`; different values for the names of one tied tensor.
    """
    exclude = [exclude] if isinstance(exclude, str) else list(exclude)
    check_keys(groups, setting if strict else None, exclude, what=what, others=others)
    out = []
    for group in groups:
        group_names = [n for slot in group for n in slot.names]
        if any(matches(p, n) for p in exclude for n in group_names):
            continue
        found = {}
        for slot in group:
            for n in slot.names:
                value = lookup(setting, n, slot.kind, slot.default)
                if value is not UNSET:
                    found.setdefault(n, value)
        out.append((group, one_value(found, group_names, "the settings", default)))
    return out


def plan(
    groups: list[list[Slot]],
    setting,
    exclude: Iterable[str] = (),
    *,
    what: str = "tensor",
    strict: bool = True,
) -> list[tuple[list[Slot], object]]:
    """`assign`'s groups that `setting` gives a value other than None (None, or no key
    reaching it, leaves a tensor alone)."""
    pairs = assign(groups, setting, exclude, default=None, what=what, strict=strict)
    return [(g, v) for g, v in pairs if v is not None]


def item(v):
    """A one-element tensor as its Python number; anything else as it is."""
    return v.item() if isinstance(v, torch.Tensor) and v.numel() == 1 else v


def is_number(v) -> bool:
    """Whether `v` is a finite real number (not a bool, a string, NaN or an infinity)."""
    return isinstance(v, numbers.Real) and not isinstance(v, bool) and math.isfinite(v)


def check_raw_dtype(raw_dtype) -> None:
    """None, or a floating-point dtype the file can hold; else ValueError (before any work)."""
    if raw_dtype is None:
        return
    if not isinstance(raw_dtype, torch.dtype) or not raw_dtype.is_floating_point:
        raise ValueError(
            f"raw_dtype must be a floating-point dtype (such as torch.float16), got {raw_dtype!r}"
        )
    dtype_name(raw_dtype)  # ValueError for one the format cannot hold
