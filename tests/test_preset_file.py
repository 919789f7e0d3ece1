"""Presets written as YAML (a preset: mapping, --preset_file) and printed as YAML
(--print_config, --print_preset)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from coolchic_pl.config import DEFAULT_N_ITR, make_preset, read_config
from coolchic_pl.fit import main
from coolchic_pl.preset_file import load_preset, preset_from_mapping, preset_to_yaml

REPO = Path(__file__).resolve().parents[1]
DEBUG = ["--config", str(REPO / "configs" / "debug.yaml"), "--checkpoint_interval_s", "0"]

NEW_PRESET = """
name: two_stage_cosine
warmup:
  phases:
    - candidates: 3
      training_phase: {lr: 0.01, max_itr: 8, patience: 8}
    - candidates: 2
      training_phase: {lr: 0.01, max_itr: 12, patience: 12}
all_phases:
  - {lr: 0.02, max_itr: 40, schedule_lr: true, softround_temperature: [0.5, 0.05],
     noise_parameter: [0.3, 0.05], quantizer_noise_type: gaussian}
  - {lr: 0.0001, max_itr: 10, patience: 10, quantizer_type: ste, quantizer_noise_type: none,
     softround_temperature: [0.0001, 0.0001], quantize_model: true}
"""


@pytest.mark.parametrize("name", sorted(DEFAULT_N_ITR))
def test_every_shipped_preset_reads_back_from_its_yaml_as_itself(name: str) -> None:
    preset = make_preset(name, 2000, 0.02, 0.004)
    assert preset_from_mapping(yaml.safe_load(preset_to_yaml(preset))) == preset


def test_a_printed_config_or_preset_encodes_to_the_same_file(tmp_path: Path, capsys) -> None:
    assert main([*DEBUG, "--print_config"]) == 0
    printed_config = capsys.readouterr().out
    assert yaml.safe_load(printed_config)["preset"]["name"] == "debug"  # written out, not named
    (tmp_path / "config.yaml").write_text(printed_config)
    assert main([*DEBUG, "--print_preset"]) == 0
    (tmp_path / "preset.yaml").write_text(capsys.readouterr().out)
    assert main([*DEBUG, "--output_dir", str(tmp_path / "named")]) == 0
    assert main(["--config", str(tmp_path / "config.yaml"), "--checkpoint_interval_s", "0",
                 "--output_dir", str(tmp_path / "config")]) == 0
    assert main([*DEBUG, "--preset_file", str(tmp_path / "preset.yaml"), "--output_dir", str(tmp_path / "file")]) == 0
    named, from_config, from_file = (next((tmp_path / d).glob("*/*.cool")).read_bytes()
                                     for d in ("named", "config", "file"))
    assert named == from_config == from_file


def test_a_preset_file_and_the_same_mapping_in_a_config_are_one_preset(tmp_path: Path) -> None:
    (tmp_path / "preset.yaml").write_text(NEW_PRESET)
    (tmp_path / "config.yaml").write_text(yaml.safe_dump({"preset": yaml.safe_load(NEW_PRESET)}))
    from_file = read_config(["--preset_file", str(tmp_path / "preset.yaml")]).preset_object()
    assert read_config(["--config", str(tmp_path / "config.yaml")]).preset_object() == from_file
    assert from_file.name == "two_stage_cosine" and len(from_file.warmup.phases) == 2


def test_a_new_preset_in_the_config_drives_the_encode(tmp_path: Path) -> None:
    config = tmp_path / "two_stage_cosine.yaml"
    config.write_text("preset:" + NEW_PRESET.replace("\n", "\n  "))
    result = subprocess.run([sys.executable, "-m", "coolchic_pl.fit", *DEBUG, "--config", str(config),
                             "--output_dir", str(tmp_path)], capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr
    run_dir = next(tmp_path.glob("*_l0.001"))
    table = (run_dir / "preset.txt").read_text()
    assert table.startswith("preset two_stage_cosine: warm-up 48 iterations, at most 98 in all")
    rows = {line.split("|")[0].strip(): [cell.strip() for cell in line.split("|")[1:]] for line in table.splitlines()[1:]}
    assert rows["warm-up 0"][:4] == ["3", "adam", "0.01", "8"] and rows["warm-up 1"][:4] == ["2", "adam", "0.01", "12"]
    assert rows["phase 0"][6] == "yes" and rows["phase 0"][8] == "0.5->0.05" and rows["phase 1"][-1] == "yes"
    results = json.loads((run_dir / "results.json").read_text())
    assert results["preset"] == "two_stage_cosine" and results["n_iterations"] <= 98 and results["bitstream"]


@pytest.mark.parametrize("content, message", [
    ("name: x\nall_phases: [{lr: 0.01, max_itr: 5, tempo: 3}]", "all_phases[0]: unknown key(s) tempo"),
    ("name: x\nall_phases: [{lr: 0.01, max_itr: 5}]", "never quantizes the networks"),
    ("name: x\nall_phases: [{lr: 0.01, max_itr: 5, rdoq: true}]", "rdoq refines a quantisation"),
    ("name: x\nwarmup: {phases: [{training_phase: {}}]}\nall_phases: []", "candidates"),
    ("[unclosed", "not YAML"),
])
def test_a_bad_preset_file_is_one_line(tmp_path: Path, capsys, content: str, message: str) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text(content)
    with pytest.raises(ValueError, match="preset_file"):
        load_preset(path)
    assert main([*DEBUG, "--preset_file", str(path), "--output_dir", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: preset_file ") and message in err and err.count("\n") == 1, err


@pytest.mark.parametrize("preset, message", [
    ("{name: x, all_phases: [{max_itr: abc}]}", "preset: all_phases[0]: max_itr must be an integer, got 'abc'"),
    ("{name: x, all_phases: [{softround_temperature: 3}]}", "softround_temperature must be a list of numbers"),
    ("{name: x, all_phases: [{quantizer_type: stee}]}", "quantizer_type must be one of softround"),
    ("{name: x, warmup: {phases: {a: 1}}, all_phases: []}", "preset: warmup: phases must be a list"),
    ("{all_phases: []}", "preset: missing key(s) name"),
    ("slow", "unknown preset 'slow'"),
])
def test_a_bad_preset_mapping_is_one_line(tmp_path: Path, capsys, preset: str, message: str) -> None:
    assert main([*DEBUG, "--preset", preset, "--output_dir", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and message in err and err.count("\n") == 1, err
    assert not any(tmp_path.iterdir())


def test_a_video_with_a_new_preset_needs_its_inter_preset(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="preset two_stage_cosine has no inter preset that goes with it"):
        read_config([*DEBUG, "--preset", NEW_PRESET, "--n_frames", "2"]).inter_preset_name
    assert read_config([*DEBUG, "--preset", NEW_PRESET, "--inter_preset", "debug"]).inter_preset_name == "debug"


def test_print_config_leaves_a_video_preset_named(capsys) -> None:
    """A video's I frames take the named preset at their own lambda and iterations."""
    assert main(["--config", str(REPO / "configs" / "video_ra.yaml"), "--print_config"]) == 0
    printed = yaml.safe_load(capsys.readouterr().out)
    assert printed["preset"] == "intra5" and printed["n_frames"] == 5
