"""Presets as YAML: ``coolchic-fit --preset_file my_preset.yaml``, and ``--print_preset``.

A preset file holds every field of :class:`~coolchic_pl.config.Preset`: its ``name``, the
``warmup`` (a list of ``phases``, each ``candidates`` and a ``training_phase``), the main
``all_phases``, optionally a ``motion_pretrain`` phase, ``transmitted`` and
``gain_from_lambda``; a phase holds any field of :class:`~coolchic_pl.config.TrainerPhase`
(the ones left out take its defaults). ``coolchic-fit --config ... --print_preset`` prints
the preset a config resolves to (its iterations and learning rate applied) in this form,
so a new schedule starts from a copy of a shipped one. Validation is the dataclasses' own:
the same one-line errors as for the built-in presets.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import yaml

from coolchic_pl.config import Preset, TrainerPhase, Warmup, WarmupPhase


def _plain(value: Any) -> Any:
    """Tuples as lists, recursively: what YAML writes."""
    if isinstance(value, dict):
        return {key: _plain(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(item) for item in value]
    return value


def preset_to_yaml(preset: Preset) -> str:
    return yaml.safe_dump(_plain(dataclasses.asdict(preset)), sort_keys=False, default_flow_style=None)


def _fields(cls: type, mapping: Any, where: str) -> dict[str, Any]:
    if not isinstance(mapping, dict):
        raise ValueError(f"{where} must be a mapping, got {type(mapping).__name__}")
    unknown = sorted(set(mapping) - {field.name for field in dataclasses.fields(cls)})
    if unknown:
        raise ValueError(f"{where}: unknown key(s) {', '.join(unknown)}")
    return mapping


def _phase(mapping: Any, where: str) -> TrainerPhase:
    return TrainerPhase(**_fields(TrainerPhase, mapping, where))


def preset_from_mapping(mapping: Any) -> Preset:
    """A Preset from the mapping a preset file holds; ValueError (one line) if it is not one."""
    try:
        return _preset(mapping)
    except TypeError as error:  # a required field missing in a warm-up stage
        raise ValueError(f"preset: {error}") from None


def _preset(mapping: Any) -> Preset:
    values = dict(_fields(Preset, mapping, "preset"))
    if "name" not in values or "all_phases" not in values:
        raise ValueError("preset: a preset needs a name and all_phases")
    phases = values["all_phases"]
    if not isinstance(phases, list):
        raise ValueError("preset: all_phases must be a list of phases")
    values["all_phases"] = [_phase(phase, f"all_phases[{i}]") for i, phase in enumerate(phases)]
    warmup = _fields(Warmup, values.get("warmup") or {}, "warmup")
    values["warmup"] = Warmup([
        WarmupPhase(**{**_fields(WarmupPhase, stage, f"warmup.phases[{i}]"),
                       "training_phase": _phase(stage.get("training_phase", {}),
                                                f"warmup.phases[{i}].training_phase")})
        for i, stage in enumerate(warmup.get("phases") or [])])
    if values.get("motion_pretrain") is not None:
        values["motion_pretrain"] = _phase(values["motion_pretrain"], "motion_pretrain")
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
