"""Load, validate, override and write `edit.toml`.

Validation is driven by the field metadata in `config.schema`: unknown keys (with the closest valid
key suggested), wrong types, out-of-range values, bad choices and missing input paths each raise a
`ConfigError` whose message names the file and the key.
"""

from __future__ import annotations

import dataclasses
import difflib
import os
from collections.abc import Iterable
from pathlib import Path, PureWindowsPath
from typing import Any

import tomli_w
import tomllib

from config.atomic import write_atomic
from config.errors import ConfigError
from config.schema import Config
from models.registry import family

# The marker prepare.py keeps in a new job folder until the job is complete (datasets.prepare.job).
PREPARE_INCOMPLETE = "PREPARE_INCOMPLETE.txt"

_TYPE_NAMES = {bool: "a boolean", int: "an integer", float: "a number", str: "a string", list: "a list"}


def _fields(obj_or_cls: Any) -> dict[str, dataclasses.Field]:
    return {f.name: f for f in dataclasses.fields(obj_or_cls) if not f.metadata.get("internal")}


def _is_section(f: dataclasses.Field) -> bool:
    return f.default_factory is not dataclasses.MISSING and dataclasses.is_dataclass(f.default_factory)


def _default(f: dataclasses.Field) -> Any:
    return f.default if f.default is not dataclasses.MISSING else f.default_factory()


def _choices(f: dataclasses.Field) -> tuple:
    """A key's valid values; a callable gives them when asked (model.type: the families registered now)."""
    choices = f.metadata["choices"]
    return tuple(choices() if callable(choices) else choices)


def _suggest(key: str, valid: Iterable[str]) -> str:
    close = difflib.get_close_matches(key, list(valid), n=1, cutoff=0.5)
    return f"; did you mean '{close[0]}'?" if close else f"; valid keys: {', '.join(sorted(valid))}"


def _check_value(where: str, f: dataclasses.Field, value: Any) -> Any:
    """Type-check one value against its field; returns it (ints widened to float where a float is due)."""
    meta = f.metadata
    if "words" in meta:  # a count or one of a few words ('off', 'auto'): TOML gives an int or a string
        if isinstance(value, str) and value in meta["words"]:
            return value
        if not isinstance(value, int) or isinstance(value, bool) or not meta["min"] <= value <= meta["max"]:
            words = ", ".join(repr(w) for w in meta["words"])
            raise ConfigError(f"{where} must be {words} or a whole number from {meta['min']} to {meta['max']}, "
                              f"got {value!r}")
        return value
    want = type(_default(f))
    if want is float and isinstance(value, int) and not isinstance(value, bool):
        value = float(value)
    if not isinstance(value, want) or (want is int and isinstance(value, bool)):
        raise ConfigError(f"{where} must be {_TYPE_NAMES[want]}, got {value!r}")
    if want is list:
        if "length" in meta and len(value) != meta["length"]:
            raise ConfigError(f"{where} must have {meta['length']} items, got {len(value)}")
        item = meta.get("item", float)
        value = [float(v) if item is float and isinstance(v, int) and not isinstance(v, bool) else v for v in value]
        for v in value:
            if not isinstance(v, item) or isinstance(v, bool):
                raise ConfigError(f"{where} items must be {_TYPE_NAMES[item]}, got {v!r}")
        items = value
    else:
        items = [value]
    for v in items:
        if "choices" in meta and v not in _choices(f):
            choices = ", ".join(repr(c) for c in _choices(f))
            raise ConfigError(f"{where} = {v!r} is not one of {choices}")
        if "min" in meta and isinstance(v, (int, float)) and v < meta["min"]:
            raise ConfigError(f"{where} = {v!r} is below the minimum {meta['min']}")
        if "max" in meta and isinstance(v, (int, float)) and v > meta["max"]:
            raise ConfigError(f"{where} = {v!r} is above the maximum {meta['max']}")
    return value


def _apply(obj: Any, table: dict, origin: str, prefix: str = "") -> None:
    fields = _fields(obj)
    for key, value in table.items():
        dotted = f"{prefix}{key}"
        if key not in fields:
            raise ConfigError(f"{origin}: unknown key '{dotted}'{_suggest(key, fields)}")
        f = fields[key]
        if _is_section(f):
            if not isinstance(value, dict):
                raise ConfigError(f"{origin}: '{dotted}' must be a [section], got {value!r}")
            _apply(getattr(obj, key), value, origin, f"{dotted}.")
        else:
            setattr(obj, key, _check_value(f"{origin}: {dotted}", f, value))


def _resolve_paths(obj: Any, base: Path, only: set[str] | None, prefix: str = "") -> None:
    """Make relative paths absolute against `base` (the config file's folder)."""
    for name, f in _fields(obj).items():
        dotted = f"{prefix}{name}"
        if _is_section(f):
            _resolve_paths(getattr(obj, name), base, only, f"{dotted}.")
        elif f.metadata.get("path") and getattr(obj, name) and (only is None or dotted in only):
            p = Path(os.path.expanduser(getattr(obj, name)))
            setattr(obj, name, str(p if p.is_absolute() else (base / p).resolve()))


def _hint(dotted: str, obj: Any, name: str) -> str:
    """How to make what is missing, where the project can: a model folder named like a tiny model (examples/tiny.toml's
    runs/tiny-wan) is made by the family's tiny-model command."""
    if dotted != "model.ckpt_path" or "tiny" not in Path(getattr(obj, name)).name.lower():
        return ""
    command = family(obj.type).tiny_command
    if not command:
        return ""
    return f"; make this tiny random model with: {command.replace('OUT', str(getattr(obj, name)))}"


def _check_inputs_exist(obj: Any, origin: str, overridden: set[str], prefix: str = "") -> None:
    for name, f in _fields(obj).items():
        dotted = f"{prefix}{name}"
        if _is_section(f):
            _check_inputs_exist(getattr(obj, name), origin, overridden, f"{dotted}.")
        elif f.metadata.get("path") == "in" and getattr(obj, name) and not Path(getattr(obj, name)).exists():
            where = "--set" if dotted in overridden else origin
            raise ConfigError(f"{where}: {dotted} = '{getattr(obj, name)}' does not exist{_hint(dotted, obj, name)}")


MAX_WINDOW = 81  # frames the released image-to-video models make in one pass


def _check_consistency(cfg: Config, origin: str) -> None:
    """Rules that involve more than one key or a rule a range cannot express."""
    d, t = cfg.data, cfg.training
    _check_run_name(cfg.name, origin)
    _check_window(cfg, origin)
    for key in ("width", "height"):
        v = getattr(d, key)
        if v % 16:
            raise ConfigError(f"{origin}: data.{key} = {v} is not a multiple of 16; use {v // 16 * 16 or 16}")
    if (d.width == 0) != (d.height == 0):
        raise ConfigError(f"{origin}: set both data.width and data.height, or neither (automatic size)")
    if 0 < d.fps < 1:
        raise ConfigError(f"{origin}: data.fps = {d.fps} is below 1; use 0 for the model's rate")
    if t.min_t >= t.max_t:
        raise ConfigError(f"{origin}: training.min_t ({t.min_t}) must be below training.max_t ({t.max_t})")
    if (t.clip_frames - 1) % 4:
        raise ConfigError(f"{origin}: training.clip_frames = {t.clip_frames} is not 4k+1")
    if t.low_cost and t.clip_overlap >= t.clip_frames:
        raise ConfigError(f"{origin}: training.clip_overlap must be below training.clip_frames")
    most = ("data.window", d.window) if d.window and d.frames > d.window else ("data.frames", d.frames)
    if t.preview_frames and ((t.preview_frames - 1) % 4 or t.preview_frames > most[1]):
        raise ConfigError(f"{origin}: training.preview_frames = {t.preview_frames} must be 4k+1 and at most "
                          f"{most[0]} ({most[1]}); 0 previews all of them")


def _check_window(cfg: Config, origin: str) -> None:
    """One pass: data.frames is the window (4k+1, at most 81). A long job (data.window): the window is 4k+1 and
    the job at least one window long, of any length; the overlap leaves each window something new to make."""
    d, inf = cfg.data, cfg.inference
    key, n = ("data.window", d.window) if d.window else ("data.frames", d.frames)
    if (n - 1) % 4:
        lo = (n - 1) // 4 * 4 + 1
        raise ConfigError(f"{origin}: {key} = {n} is not 4k+1 (the VAE needs it); use {lo} or {lo + 4}")
    if not d.window and d.frames > MAX_WINDOW:
        raise ConfigError(f"{origin}: data.frames = {d.frames} is longer than one model window ({MAX_WINDOW} at "
                          "most): set data.window (4k+1, e.g. 81) to edit it window by window")
    if d.window and d.frames < d.window:
        raise ConfigError(f"{origin}: data.frames = {d.frames} is shorter than data.window = {d.window}")
    if d.window and cfg.training.low_cost and cfg.training.clip_frames > d.window:
        raise ConfigError(f"{origin}: training.clip_frames = {cfg.training.clip_frames} is longer than data.window = "
                          f"{d.window}")
    if d.window and ((inf.window_overlap - 1) % 4 or inf.window_overlap >= d.window):
        raise ConfigError(f"{origin}: inference.window_overlap = {inf.window_overlap} must be 1+4k and below "
                          f"data.window = {d.window}")


def _check_run_name(name: str, origin: str) -> None:
    """The run folder is output_dir/name/<timestamp>/: a name must stay inside output_dir (no absolute path, no
    '..' part), or a run (and --resume's search) would write or read somewhere else on the disk."""
    parts = name.replace("\\", "/").split("/")
    if not name.strip() or Path(name).is_absolute() or PureWindowsPath(name).drive or name.startswith(("/", "\\")):
        why = "is empty" if not name.strip() else "is an absolute path"
    elif ".." in parts:
        why = "contains '..'"
    elif any(p in ("", ".") for p in parts):
        why = "has an empty or '.' part"
    else:
        return
    raise ConfigError(f"{origin}: name = {name!r} {why}; a run name must stay inside output_dir "
                      "(e.g. name = 'jacket' or 'tests/jacket')")


def parse_override(text: str) -> tuple[list[str], Any]:
    """`section.key=value` -> (["section", "key"], value). The value is read as TOML, else as a string."""
    if "=" not in text:
        raise ConfigError(f"--set {text!r}: expected section.key=value")
    key, raw = text.split("=", 1)
    try:
        value = tomllib.loads(f"v = {raw}")["v"]
    except tomllib.TOMLDecodeError:
        value = raw
    return key.strip().split("."), value


def load_config(path: str | os.PathLike | None, overrides: Iterable[str] = (), check_paths: bool = True) -> Config:
    """Read a TOML config (or the defaults when `path` is None), apply `--set` overrides, validate."""
    cfg = Config()
    origin = "defaults"
    if path is not None:
        path = Path(path)
        origin = str(path)
        try:
            table = tomllib.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            if (path.parent / PREPARE_INCOMPLETE).is_file():
                raise ConfigError(f"config file '{path}' does not exist: prepare.py did not finish this job (see "
                                  f"{path.parent / PREPARE_INCOMPLETE}); run the same prepare.py command again to "
                                  "finish it") from None
            raise ConfigError(f"config file '{path}' does not exist") from None
        except (OSError, UnicodeDecodeError) as e:
            raise ConfigError(f"cannot read config file '{path}': {e}") from None
        except tomllib.TOMLDecodeError as e:
            raise ConfigError(f"{path}: not valid TOML: {e}") from None
        _apply(cfg, table, origin)
        _resolve_paths(cfg, path.resolve().parent, None)
        cfg.source = str(path.resolve())
    overridden: set[str] = set()
    for text in overrides:
        keys, value = parse_override(text)
        table: dict = {}
        node = table
        for k in keys[:-1]:
            node = node.setdefault(k, {})
        node[keys[-1]] = value
        _apply(cfg, table, "--set")
        overridden.add(".".join(keys))
    _resolve_paths(cfg, Path.cwd(), overridden)
    if path is None:
        _resolve_paths(cfg, Path.cwd(), None)
    if check_paths:
        _check_inputs_exist(cfg, origin, overridden)
    _check_consistency(cfg, origin)
    _check_experts(cfg, origin)
    _resolve_family_defaults(cfg)
    return cfg


def _check_experts(cfg: Config, origin: str) -> None:
    """model.experts names experts of model.type; transformer_2_path only for a model with a second expert."""
    spec = family(cfg.model.type)
    names = [e.name for e in spec.experts]
    unknown = [n for n in cfg.model.experts if n not in names]
    if unknown:
        raise ConfigError(f"{origin}: model.experts = {cfg.model.experts!r}: {spec.title} has no expert "
                          f"{unknown[0]!r}; its experts: {', '.join(names)}")
    if len(set(cfg.model.experts)) != len(cfg.model.experts):
        raise ConfigError(f"{origin}: model.experts = {cfg.model.experts!r} names an expert twice")
    if len(names) < 2 and cfg.model.transformer_2_path:
        raise ConfigError(f"{origin}: model.transformer_2_path is the second expert's file, and {spec.title} has one "
                          "transformer: use model.transformer_path")
    if len(names) < 2 and cfg.inference.guidance_2:
        raise ConfigError(f"{origin}: inference.guidance_2 is the second expert's guidance, and {spec.title} has one "
                          "transformer: use inference.guidance")
    if 0 < cfg.training.shift < 0.01:
        raise ConfigError(f"{origin}: training.shift = {cfg.training.shift} is below 0.01; 0 is the model's default")


def _resolve_family_defaults(cfg: Config) -> None:
    """0 = "the model's": replaced here by the family's value, so every reader (and the saved run config) sees the
    value used. A second expert's guidance follows inference.guidance when only that is set (as diffusers'
    guidance_scale_2 follows guidance_scale)."""
    spec = family(cfg.model.type)
    inf = cfg.inference
    if cfg.data.fps == 0:
        cfg.data.fps = spec.default_fps
    if cfg.training.shift == 0:
        cfg.training.shift = spec.default_train_shift
    if inf.steps == 0:
        inf.steps = spec.default_steps
    if len(spec.experts) > 1 and inf.guidance_2 == 0:
        inf.guidance_2 = inf.guidance or spec.guidance_of(spec.experts[1])
    if inf.guidance == 0:
        inf.guidance = spec.guidance_of(spec.experts[0])


def require(cfg: Config, *dotted: str) -> None:
    """Fail with one message naming every required key that is empty (e.g. 'model.ckpt_path')."""
    missing = [k for k in dotted if not _get(cfg, k)]
    if missing:
        where = cfg.source or "the config"
        raise ConfigError(f"{where}: required key(s) not set: {', '.join(missing)}")


def _get(cfg: Config, dotted: str) -> Any:
    node: Any = cfg
    for part in dotted.split("."):
        node = getattr(node, part)
    return node


def to_dict(cfg: Config) -> dict:
    """The config as plain nested dicts (TOML-ready, no internal fields)."""
    out: dict = {}
    for name, f in _fields(cfg).items():
        v = getattr(cfg, name)
        out[name] = to_dict(v) if _is_section(f) else (list(v) if isinstance(v, list) else v)
    return out


def render_toml(cfg: Config | None = None, docs: bool = True) -> str:
    """TOML text of `cfg` (defaults when None); with `docs`, each key carries its doc comment."""
    cfg = cfg or Config()
    if not docs:
        return tomli_w.dumps(to_dict(cfg))
    lines: list[str] = []
    sections = []
    for name, f in _fields(cfg).items():
        if _is_section(f):
            sections.append((name, f))
        else:
            lines.append(_doc_line(name, f, getattr(cfg, name)))
    for name, f in sections:
        lines += ["", f"# {f.metadata['doc']}", f"[{name}]"]
        sub = getattr(cfg, name)
        lines += [_doc_line(k, sf, getattr(sub, k)) for k, sf in _fields(sub).items()]
    return "\n".join(lines) + "\n"


def _toml_value(value: Any) -> str:
    """One TOML value on one line (tomli_w would spread lists over several lines)."""
    if isinstance(value, list):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    return tomli_w.dumps({"v": value}).strip()[4:]


def _doc_line(name: str, f: dataclasses.Field, value: Any) -> str:
    doc = f.metadata["doc"]
    if "choices" in f.metadata:
        doc += " One of: " + ", ".join(_toml_value(c) for c in _choices(f)) + "."
    return f"{name} = {_toml_value(value)}  # {doc} Default: {_toml_value(_default(f))}."


def save_config(cfg: Config, path: str | os.PathLike) -> Path:
    """Write the resolved config atomically (temp file in the same folder, then rename)."""
    return write_atomic(path, render_toml(cfg))
