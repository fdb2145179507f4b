"""Settings files for `deepcompress encode --config` (JSON, or YAML with the `config` extra),
and how the command line merges them with its flags."""

from __future__ import annotations

import json
import os
from pathlib import Path

from .._optional import require

#: Keys a configuration file may hold (each as for `encode_state_dict`).
CONFIG_KEYS = (
    "quality",
    "size",
    "rd",
    "sparsity",
    "bits",
    "index_bits",
    "exclude",
    "entropy",
    "init",
)


def load_config(path: str | os.PathLike) -> dict:
    """Settings for `encode_state_dict` from a JSON (`.json`) or YAML (`.yaml`, `.yml`) file.

    Example (YAML)::

        sparsity: {"classifier.*": 0.9, "features.*": 0.5}
        bits: {"classifier.*": 5, "*": 8}
        exclude: ["features.0"]
        entropy: auto

    Raises:
        FileNotFoundError: no such file.
        ValueError: not JSON/YAML, not a mapping, or an unknown key.
        MissingExtra: a YAML file without pyyaml installed.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no such file: {str(path)!r}")
    text = path.read_text()
    yaml_file = path.suffix.lower() in (".yaml", ".yml")
    yaml = require("yaml", "config") if yaml_file else None
    try:
        cfg = yaml.safe_load(text) if yaml_file else json.loads(text)
    except Exception as e:  # json's and yaml's own errors
        raise ValueError(f"{str(path)!r} is not a valid configuration file: {e}") from None
    if not isinstance(cfg, dict):
        raise ValueError(f"{str(path)!r} must hold a mapping of settings")
    unknown = sorted(set(cfg) - set(CONFIG_KEYS))
    if unknown:
        raise ValueError(f"{str(path)!r}: unknown settings {unknown}; known: {list(CONFIG_KEYS)}")
    if isinstance(cfg.get("exclude"), str):  # one pattern: not its characters
        cfg["exclude"] = [cfg["exclude"]]
    return cfg


def pairs(items: list[str], cast, what: str) -> dict:
    """`{pattern: cast(value)}` from command-line items `PATTERN=VALUE`."""
    out = {}
    for item in items:
        pattern, sep, value = item.rpartition("=")
        try:
            if not sep or not pattern:
                raise ValueError
            out[pattern] = cast(value)
        except ValueError:
            raise ValueError(f"{what} wants PATTERN=VALUE, got {item!r}") from None
    return out


def merged(cfg_value, flag, per_layer: dict):
    """One setting from the command line: the per-layer flags' patterns first, then the
    config file's (a mapping) without its catch-all "*", then the catch-all: the scalar flag
    if given, else the file's "*" or its plain value. None when nothing was given (the API's
    default applies); a plain value when there are no patterns."""
    spec = dict(per_layer)
    catch_all, star = flag, flag is not None
    if isinstance(cfg_value, dict):
        spec.update({k: v for k, v in cfg_value.items() if k not in spec and k != "*"})
        if catch_all is None:
            catch_all, star = cfg_value.get("*"), "*" in cfg_value  # "*": null counts
    elif catch_all is None:
        catch_all = cfg_value
    if not spec:
        return catch_all
    if star:
        spec["*"] = catch_all  # last: an earlier pattern wins over it
    return spec
