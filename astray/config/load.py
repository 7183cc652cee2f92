"""Loading a run config: YAML file, ``--set`` overrides, type checks, then the dataclasses.

``--set dotted.key=value`` overrides are applied before validation; values are parsed as
YAML, so ``0.3``, ``true`` and ``[1, 2]`` mean what they look like. Every error names the
dotted key, the bad value and what is allowed, in one line.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from pathlib import Path
from typing import Any

import yaml

from astray.config.checks import unknown_key
from astray.config.dotted import assign
from astray.config.run import ASTConfig, RunConfig
from astray.errors import ConfigError
from astray.io import write_text
from astray.sparse.method import resolve_methods, upgrade_saved

# Sections the sweep runner reads (``astray.config.sweep``); the training run ignores them.
FOREIGN_SECTIONS = ("search", "sweep", "resources")


def _type_ok(value: Any, hint: Any) -> tuple[bool, Any]:
    """Check ``value`` against a simple type hint; return (ok, coerced value)."""
    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        for arg in typing.get_args(hint):
            ok, coerced = _type_ok(value, arg)
            if ok:
                return True, coerced
        return False, value
    if hint is type(None):
        return value is None, value
    if hint is bool:
        return isinstance(value, bool), value
    if hint is int:
        return isinstance(value, int) and not isinstance(value, bool), value
    if hint is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return True, float(value)
        if isinstance(value, str):  # PyYAML reads 1e-3 (no dot) as a string
            try:
                return True, float(value)
            except ValueError:
                pass
        return False, value
    if hint is str:
        return isinstance(value, str), value
    return True, value


def _type_name(hint: Any) -> str:
    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        return " or ".join(_type_name(a) for a in typing.get_args(hint))
    return "null" if hint is type(None) else getattr(hint, "__name__", str(hint))


def build_section(cls: type, section: str, raw: Any) -> Any:
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise ConfigError(f"{section} must be a mapping of keys, got {raw!r}")
    hints = typing.get_type_hints(cls)
    names = [f.name for f in dataclasses.fields(cls)]
    kwargs = {}
    for key, value in raw.items():
        if key not in names:
            raise unknown_key(f"{section}.{key}", str(key), names)
        if dataclasses.is_dataclass(hints[key]):  # a section inside the section (dataset.label_noise)
            kwargs[key] = value if isinstance(value, hints[key]) else build_section(hints[key], f"{section}.{key}", value)
            continue
        ok, coerced = _type_ok(value, hints[key])
        if not ok:
            raise ConfigError(
                f"{section}.{key}={value!r} has the wrong type; expected {_type_name(hints[key])}")
        kwargs[key] = coerced
    return cls(**kwargs)


def _parse_override(item: str) -> tuple[list[str], Any]:
    if "=" not in item:
        raise ConfigError(f"--set {item!r} is not KEY=VALUE (e.g. ast.target_activation=0.3)")
    key, text = item.split("=", 1)
    parts = key.strip().split(".")
    if len(parts) < 2 or not all(parts):
        raise ConfigError(f"--set key {key!r} is not a dotted section.key (e.g. training.lr=0.01)")
    try:
        value = yaml.safe_load(text) if text.strip() else ""
    except yaml.YAMLError:
        value = text
    return parts, value


def apply_overrides(raw: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    """Set each ``dotted.key=value`` in a nested dict (values parsed as YAML)."""
    for item in overrides:
        parts, value = _parse_override(item)
        try:
            assign(raw, ".".join(parts), value)
        except ConfigError as exc:
            raise ConfigError(f"--set {item!r}: {str(exc).split(': ', 1)[1]}") from None
    return raw


PACKAGED_CONFIGS = Path(__file__).resolve().parent.parent / "configs"  # shipped in the wheel


def packaged_configs() -> list[str]:
    return sorted(p.stem for p in PACKAGED_CONFIGS.glob("*.yaml"))


def resolve_config_path(path: str | Path) -> Path:
    """A config file's path; a bare name (``quickstart``) that is no file here is one of
    the configs that come with astray (``astray/configs/``)."""
    p = Path(path)
    if p.is_file():
        return p
    packaged = PACKAGED_CONFIGS / f"{p.stem}.yaml"
    if p.parent == Path(".") and p.suffix in ("", ".yaml", ".yml") and packaged.is_file():
        return packaged
    raise ConfigError(f"config file {str(p)!r}: no such file; give a path, or the name of a config that comes "
                      f"with astray: {', '.join(packaged_configs())}")


def load_raw(path: str | Path) -> dict[str, Any]:
    """Read a YAML config file into a dict, with one-line errors."""
    p = resolve_config_path(path)
    try:
        raw = yaml.safe_load(p.read_text())
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" line {mark.line + 1}" if mark else ""
        raise ConfigError(f"config file {str(p)!r}{where}: not valid YAML") from None
    if raw is None:
        return {}
    if not isinstance(raw, dict):
        raise ConfigError(f"config file {str(p)!r}: top level must be a mapping of sections")
    return raw


SECTIONS: dict[str, type] = {
    f.name: f.default_factory  # type: ignore[misc]
    for f in dataclasses.fields(RunConfig)
}


def build_ast(raw: Any) -> ASTConfig:
    """The ``ast`` section: its shared keys typed here, the rest (``ast.<method>``
    sections) handed to the methods' registry (``astray.sparse.method.resolve_methods``),
    which owns the method names and their settings."""
    raw = {} if raw is None else raw
    if not isinstance(raw, dict):
        raise ConfigError(f"ast must be a mapping of keys, got {raw!r}")
    shared = {f.name for f in dataclasses.fields(ASTConfig)} - {"methods"}
    ast = build_section(ASTConfig, "ast", {k: v for k, v in raw.items() if k in shared})
    ast.methods = {k: v for k, v in raw.items() if k not in shared}
    resolve_methods(ast, build_section)
    return ast


def build_config(raw: dict[str, Any]) -> RunConfig:
    """Validate a nested dict into a :class:`RunConfig`; foreign sections are skipped."""
    allowed = sorted(SECTIONS) + sorted(FOREIGN_SECTIONS)
    for name in raw:
        if name not in SECTIONS and name not in FOREIGN_SECTIONS:
            raise unknown_key(str(name), str(name), allowed)
    sections = {name: build_ast(raw.get(name)) if name == "ast" else build_section(cls, name, raw.get(name))
                for name, cls in SECTIONS.items()}
    return RunConfig(**sections)


def build_saved_config(raw: dict[str, Any]) -> RunConfig:
    """A config astray wrote (a run's config.yaml, a store's ``config_json``), from any
    version: keys since renamed are read under their new names."""
    if isinstance(raw.get("ast"), dict):
        raw = {**raw, "ast": upgrade_saved(raw["ast"])}
    return build_config(raw)


def load_saved_config(path: str | Path) -> RunConfig:
    return build_saved_config(load_raw(path))


def load_config(path: str | Path | None, overrides: list[str] | None = None) -> RunConfig:
    """Load a YAML file (or defaults when ``path`` is None), apply overrides, validate."""
    raw = load_raw(path) if path is not None else {}
    raw = apply_overrides(raw, list(overrides or []))
    return build_config(raw)


def save_config(cfg: RunConfig, path: str | Path) -> None:
    write_text(path, yaml.safe_dump(cfg.to_dict(), sort_keys=False))
