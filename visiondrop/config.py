"""Pruning configs: one YAML file per (method, model, budget), dotted overrides, strict validation.

A config file holds `method`, `model` (a name of visiondrop.models), `budget` (nominal average visual tokens over
the LLM layers; on a model whose token count varies per image, `budget_ratio` instead: that fraction of the nominal
image's tokens, from which `budget` is derived), `derived` (true when the setting is not a published one) and
`note`, the method's own option sections (see each method's `Options`) and an optional `execution` section
(visiondrop.execution: kernels and CUDA graphs, shared by every method; it changes no selection). Every key is
checked: unknown keys, impossible schedules and schedules whose average does not match the stated budget are
errors that name the key.
"""

from __future__ import annotations

import copy
import dataclasses
import types
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Union, get_args, get_origin, get_type_hints

import yaml

from visiondrop.execution import ExecutionOptions
from visiondrop.models import MODELS, Geometry

HEADER_KEYS = ("method", "model", "budget", "budget_ratio", "derived", "note", "allow_budget_mismatch")


class ConfigError(ValueError):
    """A config that cannot run as written; the message names the key and the fix."""


@dataclass
class PruningConfig:
    """A method, the model geometry it targets, its nominal budget and its validated options."""

    method: str = "none"
    model: str = "llava-v1.5-7b"
    budget: float | None = None
    budget_ratio: float | None = None
    derived: bool = False
    note: str = ""
    allow_budget_mismatch: bool = False
    options: Any = None
    execution: ExecutionOptions = dataclasses.field(default_factory=ExecutionOptions)
    source: str = ""

    @property
    def geometry(self) -> Geometry:
        """The nominal token geometry of the config's model (visiondrop.models)."""
        return MODELS[self.model].geometry

    def to_dict(self) -> dict:
        """Plain dict for result files (options flattened to nested dicts, plus the method's variant)."""
        from visiondrop.methods import build_method

        out = {k: getattr(self, k) for k in HEADER_KEYS}
        out["options"] = dataclasses.asdict(self.options) if dataclasses.is_dataclass(self.options) else {}
        out["execution"] = dataclasses.asdict(self.execution)
        out["variant"] = build_method(self).variant() if self.options is not None else ""
        out["source"] = self.source
        return out


def parse_override(text: str) -> tuple[list[str], Any]:
    """'llm.merge=false' -> (['llm', 'merge'], False); the value is read as YAML."""
    if "=" not in text:
        raise ConfigError(f"override {text!r}: expected KEY=VALUE, e.g. llm.merge=false")
    key, value = text.split("=", 1)
    return key.strip().split("."), yaml.safe_load(value)


def apply_overrides(raw: dict, overrides: list[str]) -> dict:
    """Set dotted keys in a raw config dict (copied, not changed). Keys the file leaves at their default may be
    set too; whether a key exists at all is checked once, against the method's options (`build_options`)."""
    raw = copy.deepcopy(raw)
    for text in overrides:
        path, value = parse_override(text)
        node = raw
        for depth, part in enumerate(path[:-1]):
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                raise ConfigError(f"override {text!r}: {'.'.join(path[: depth + 1])!r} is a value, not a section")
        node[path[-1]] = value
    return raw


BASE_NAMES = {bool: ("true or false", "booleans"), int: ("an integer", "integers"), float: ("a number", "numbers"),
              str: ("a string", "strings"), type(None): ("null", "nulls")}


def matches(value: Any, hint: Any) -> bool:
    """Whether a YAML value fits a field's type hint (bool is not an int; an int is a float)."""
    origin, args = get_origin(hint), get_args(hint)
    if origin in (Union, types.UnionType):
        return any(matches(value, a) for a in args)
    if origin is list:
        return isinstance(value, list) and all(matches(v, args[0]) for v in value) if args else isinstance(value, list)
    if hint is bool or hint is str or hint is type(None):
        return isinstance(value, hint)
    if hint is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if hint is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    return True  # Any and other hints are checked by the options' own validation


def describe(hint: Any, plural: bool = False) -> str:
    """A type hint in words: 'an integer or null', 'a list of lists of integers'."""
    origin, args = get_origin(hint), get_args(hint)
    if origin in (Union, types.UnionType):
        return " or ".join(describe(a, plural) for a in args)
    if origin is list:
        return ("lists" if plural else "a list") + (f" of {describe(args[0], True)}" if args else "")
    names = BASE_NAMES.get(hint)
    return (names[1] if plural else names[0]) if names else str(hint)


def check_type(value: Any, hint: Any, key: str) -> None:
    """ConfigError naming the key, what it needs and the value it got, when the value does not fit the hint."""
    if not matches(value, hint):
        raise ConfigError(f"{key}: expected {describe(hint)}, got {value!r}")


def build_options(cls: type, data: dict | None, where: str = "") -> Any:
    """Instantiate a (nested) options dataclass from a dict, rejecting unknown keys by their dotted name and
    values whose type does not fit the field."""
    if data is not None and not isinstance(data, dict):
        raise ConfigError(f"{where.rstrip('.') or 'options'}: expected a section of keys, got {data!r}")
    data = dict(data or {})
    hints = get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - names)
    if unknown:
        raise ConfigError(f"unknown key {where + unknown[0]!r} (valid keys here: {', '.join(sorted(names))})")
    kwargs = {}
    for name, value in data.items():
        hint = hints[name]
        if dataclasses.is_dataclass(hint):
            kwargs[name] = build_options(hint, value, f"{where}{name}.")
        else:
            check_type(value, hint, where + name)
            kwargs[name] = value
    try:
        return cls(**kwargs)
    except (TypeError, ValueError) as err:
        raise ConfigError(f"{where.rstrip('.') or 'options'}: {err}") from err


def load_config(path: str | Path | None = None, overrides: list[str] = (), raw: dict | None = None) -> PruningConfig:
    """Read a YAML config (or a raw dict), apply overrides, validate options and the budget."""
    try:
        return _load_config(path, overrides, raw)
    except ConfigError as err:
        if path is None or str(path) in str(err):
            raise
        raise ConfigError(f"config {path}: {err}") from err


def _load_config(path: str | Path | None, overrides: list[str], raw: dict | None) -> PruningConfig:
    """load_config without the file name in its errors."""
    from visiondrop.methods import get_method_class

    if raw is None:
        if path is None:
            raw = {"method": "none"}
        else:
            p = Path(path)
            if not p.is_file():
                raise ConfigError(f"config file {p} not found (configs live in configs/<method>/<model>_<budget>.yaml)")
            raw = yaml.safe_load(p.read_text()) or {}
            if not isinstance(raw, dict):
                raise ConfigError(f"config file {p}: expected a mapping at the top level")
    raw = apply_overrides(raw, list(overrides))
    header = {k: raw.pop(k) for k in HEADER_KEYS if k in raw}
    hints = get_type_hints(PruningConfig)
    for key, value in header.items():
        check_type(value, hints[key], key)
    execution = build_options(ExecutionOptions, raw.pop("execution", None), "execution.")
    cfg = PruningConfig(**header, execution=execution, source=str(path or ""))
    if cfg.model not in MODELS:
        raise ConfigError(f"model: {cfg.model!r} is not one of {', '.join(MODELS)}")
    ratio_budget(cfg)
    method_cls = get_method_class(cfg.method)
    cfg.options = build_options(method_cls.Options, raw)
    resolve_budget(cfg)
    validate_budget(cfg)
    return cfg


def ratio_budget(cfg: PruningConfig) -> None:
    """Derive `budget` from `budget_ratio` (a fraction of the nominal image's visual tokens), which only a model
    whose token count varies per image takes, and never together with `budget`."""
    if cfg.budget_ratio is None:
        return
    geometry = cfg.geometry
    if not geometry.variable:
        raise ConfigError(f"budget_ratio: {cfg.model} has a fixed {geometry.visual_tokens} visual tokens per sample: "
                          "give `budget` in tokens")
    if cfg.budget is not None:
        raise ConfigError("budget_ratio: give `budget` (tokens) or `budget_ratio` (a fraction), not both")
    if not 0 < cfg.budget_ratio <= 1:
        raise ConfigError(f"budget_ratio: {cfg.budget_ratio} is not a fraction in (0, 1]")
    cfg.budget = cfg.budget_ratio * geometry.visual_tokens


def check_feasible(cfg: PruningConfig, method) -> None:
    """Reject a budget below what the method can reach (layers before its first boundary keep every token)."""
    geometry = cfg.geometry
    n_visual, n_layers = geometry.visual_tokens, geometry.layers
    minimum = method.min_budget(geometry)
    if cfg.budget is None or cfg.budget >= minimum:
        return
    first = min(method.boundaries, default=n_layers)
    raise ConfigError(
        f"budget: {cfg.budget} is infeasible for {cfg.method} on {cfg.model}: decoder layers 0-{first - 1} run "
        f"before its first pruning point and process all {n_visual} visual tokens, so the average over "
        f"{n_layers} layers is at least {first}*{n_visual}/{n_layers} = {minimum:.1f} (docs/methods.md, 'Accounting'); "
        "choose a budget at or above that minimum, or a method with an encoder stage (visionzip, vispruner, "
        "visiondrop)")


def resolve_budget(cfg: PruningConfig) -> None:
    """Check feasibility, then let the method derive counts left unset from the budget (e.g. FastV's keep)."""
    from visiondrop.methods import build_method

    if cfg.budget is None:
        return
    method = build_method(cfg)
    check_feasible(cfg, method)
    try:
        cfg.options = method.options_for_budget(cfg.budget, cfg.geometry)
    except ValueError as err:
        raise ConfigError(f"budget: {err}") from err


def validate_budget(cfg: PruningConfig) -> list[int]:
    """Check the method's schedule on the model geometry; return the expected per-layer visual counts."""
    from visiondrop.methods import build_method

    method = build_method(cfg)
    check_feasible(cfg, method)
    try:
        counts = method.layer_counts(cfg.geometry)
    except ValueError as err:
        raise ConfigError(f"{cfg.source or cfg.method}: {err}") from err
    average = sum(counts) / len(counts)
    if cfg.budget is not None and not cfg.allow_budget_mismatch:
        tolerance = max(1.0, 0.01 * cfg.budget)
        if abs(average - cfg.budget) > tolerance:
            raise ConfigError(
                f"budget: the schedule averages {average:.2f} visual tokens over {len(counts)} layers of {cfg.model}, "
                f"not the stated {cfg.budget}; fix the counts or the budget (or set allow_budget_mismatch: true "
                "for a published setting that does not meet its nominal budget)")
    return counts

