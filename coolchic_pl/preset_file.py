"""Presets as YAML: a ``preset:`` mapping in a config, ``--preset_file my_preset.yaml``,
``--print_config`` and ``--print_preset``.

A preset mapping holds every field of :class:`~coolchic_pl.config.Preset`: its ``name``, the
``warmup`` (a list of ``phases``, each ``candidates`` and a ``training_phase``), the main
``all_phases``, optionally a ``motion_pretrain`` phase, ``transmitted`` and
``gain_from_lambda``; a phase holds any field of :class:`~coolchic_pl.config.TrainerPhase`
(the ones left out take its defaults). ``coolchic-fit --config ... --print_config`` prints
the config with the preset it resolves to (its iterations, learning rate and lambda
applied) written out in this form, ``--print_preset`` the preset alone, so a new schedule
starts from a copy of a shipped one. Validation is the dataclasses' own: the same one-line
errors as for the built-in presets.
"""

from __future__ import annotations

import dataclasses
import typing
from pathlib import Path
from typing import Any

import yaml

from coolchic_pl.config import FitConfig, Preset, TrainerPhase, Warmup, WarmupPhase


def _plain(value: Any) -> Any:
    """Tuples as lists, recursively: what YAML writes."""
    if isinstance(value, dict):
        return {key: _plain(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(item) for item in value]
    return value


def preset_mapping(preset: Preset) -> dict[str, Any]:
    """What a ``preset:`` mapping or a preset file holds for ``preset``."""
    return _plain(dataclasses.asdict(preset))


def preset_to_yaml(preset: Preset) -> str:
    return yaml.safe_dump(preset_mapping(preset), sort_keys=False, default_flow_style=None)


def with_preset_written_out(config: FitConfig) -> FitConfig:
    """An image ``config`` with its preset as a mapping: the same encode, whatever the named
    preset's defaults become later. A video's stays as it is: its I frames take a named
    preset at their own lambda and iterations, which a written-out preset would freeze."""
    if config.is_video:
        return config
    return dataclasses.replace(config, preset=preset_mapping(config.preset_object()), n_itr=None, preset_file=None)


def _fields(cls: type, mapping: Any, where: str) -> dict[str, Any]:
    if not isinstance(mapping, dict):
        raise ValueError(f"{where} must be a mapping, got {type(mapping).__name__}".lstrip())
    fields = dataclasses.fields(cls)
    unknown = sorted(set(mapping) - {field.name for field in fields})
    if unknown:
        raise ValueError(f"{where} unknown key(s) {', '.join(unknown)}".lstrip())
    missing = [field.name for field in fields if field.name not in mapping
               and field.default is dataclasses.MISSING and field.default_factory is dataclasses.MISSING]
    if missing:
        raise ValueError(f"{where} missing key(s) {', '.join(missing)}".lstrip())
    hints = typing.get_type_hints(cls)
    for key, value in mapping.items():
        if not _has_type(value, hints[key]):
            raise ValueError(f"{where} {key} must be {_type_name(hints[key])}, got {value!r}".lstrip())
    return mapping


# How an error names a scalar type, alone and in a list.
SCALAR_NAMES = {int: ("an integer", "integers"), float: ("a number", "numbers"), bool: ("true or false", "booleans"),
                str: ("a string", "strings")}


def _has_type(value: Any, hint: Any) -> bool:
    """Whether YAML's ``value`` fits a scalar field of type ``hint`` (an int is a float, a
    bool is not a number); the nested dataclasses are checked by their own parsing."""
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if hint is bool:
        return isinstance(value, bool)
    if hint in (int, float):
        return isinstance(value, (int, float) if hint is float else int) and not isinstance(value, bool)
    if hint is str:
        return isinstance(value, str)
    if origin is typing.Literal:
        return value in args
    if origin in (tuple, list):
        return isinstance(value, (list, tuple)) and (args[0] not in SCALAR_NAMES
                                                     or all(_has_type(item, args[0]) for item in value))
    return True


def _type_name(hint: Any) -> str:
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin is typing.Literal:
        return "one of " + ", ".join(map(str, args))
    if origin in (tuple, list):
        return "a list" + (f" of {SCALAR_NAMES[args[0]][1]}" if args[0] in SCALAR_NAMES else "")
    return SCALAR_NAMES[hint][0] if hint in SCALAR_NAMES else str(hint)


def _phase(mapping: Any, where: str) -> TrainerPhase:
    return TrainerPhase(**_fields(TrainerPhase, mapping, where))


def preset_from_mapping(mapping: Any) -> Preset:
    """A Preset from a ``preset:`` mapping or the mapping a preset file holds; ValueError
    (one line, without the prefix naming where the mapping came from) if it is not one."""
    values = dict(_fields(Preset, mapping, ""))
    values["all_phases"] = [_phase(phase, f"all_phases[{i}]:") for i, phase in enumerate(values["all_phases"])]
    warmup = _fields(Warmup, values.get("warmup") or {}, "warmup:")
    values["warmup"] = Warmup([
        WarmupPhase(**{**_fields(WarmupPhase, stage, f"warmup.phases[{i}]:"),
                       "training_phase": _phase(stage["training_phase"],
                                                f"warmup.phases[{i}].training_phase:")})
        for i, stage in enumerate(warmup.get("phases") or [])])
    if values.get("motion_pretrain") is not None:
        values["motion_pretrain"] = _phase(values["motion_pretrain"], "motion_pretrain:")
    return Preset(**values)


def load_preset(path: str | Path) -> Preset:
    """The preset a YAML file describes; ValueError naming the file and the problem."""
    try:
        mapping = yaml.safe_load(Path(path).read_text())
    except OSError as error:
        raise ValueError(f"preset_file {path}: {error.strerror}") from None
    except yaml.YAMLError as error:
        raise ValueError(f"preset_file {path}: not YAML ({' '.join(str(error).split())})") from None
    try:
        return preset_from_mapping(mapping)
    except ValueError as error:
        raise ValueError(f"preset_file {path}: {error}") from None
