"""The per-frame coding policy of a video: named policies, rules, config keys, errors."""

from __future__ import annotations

import subprocess
import sys

import pytest
from test_interrupts import REPO

from coolchic_pl.config import parse_config
from coolchic_pl.video.encoder import frame_table
from coolchic_pl.video.policy import POLICIES, FrameRule, resolve_settings
from coolchic_pl.video.structure import build_coding_structure

RANDOM_ACCESS = build_coding_structure(5, "0", "-1")  # I0 P4 B2 B1 B3 in coding order
VIDEO = ["--input", "clip_224x128_yuv420_8b.yuv", "--n_frames", "5", "--p_pos", "-1"]


def _lambdas(rules: list[FrameRule] | tuple[FrameRule, ...], lmbda: float = 1e-3) -> dict[int, float]:
    return {f.display: resolve_settings(f, rules).lmbda(lmbda, f.depth) for f in RANDOM_ACCESS}


def test_named_policies_set_each_frames_lambda() -> None:
    """v3.4: lambda x 1.5^depth for every frame; v4.2: P frames at lambda, B frames x 1.5^depth."""
    assert _lambdas(POLICIES["v3.4"]) == pytest.approx({0: 1e-3, 4: 1.5e-3, 2: 2.25e-3, 1: 3.375e-3, 3: 3.375e-3})
    assert _lambdas(POLICIES["v4.2"]) == pytest.approx({0: 1e-3, 4: 1e-3, 2: 2.25e-3, 1: 3.375e-3, 3: 3.375e-3})
    assert _lambdas(POLICIES["default"]) == pytest.approx({0: 0.33e-3, 4: 1.5e-3, 2: 2.25e-3, 1: 3.375e-3, 3: 3.375e-3})
    low_delay = build_coding_structure(5, "0", "1-4")
    assert {resolve_settings(f, POLICIES["default"]).lmbda(1e-3, f.depth) for f in low_delay[1:]} == {1.5e-3}
    v42 = {f.display: resolve_settings(f, POLICIES["v4.2"]) for f in RANDOM_ACCESS}
    assert (v42[4].lr, v42[4].arch, v42[2].arch, v42[2].lr) == (5e-3, "mop", "lop", None)
    assert v42[4].warp_filter_size == 8 and resolve_settings(RANDOM_ACCESS[1], POLICIES["default"]).warp_filter_size == 4


def test_later_rules_override_only_the_fields_they_set() -> None:
    config = parse_config([*VIDEO, "--coding_policy", "v3.4", "--frame_rules",
                           '[{"frames": "B", "depth": 2, "lmbda_factor": 2.0, "n_itr": 300}, '
                           '{"frames": "inter", "reuse_networks": "compete"}]'])
    settings = {f.display: resolve_settings(f, config.frame_policy()) for f in RANDOM_ACCESS}
    assert settings[2].lmbda(1e-3, 2) == pytest.approx(2.0 * 2.25e-3) and settings[2].n_itr == 300
    assert settings[1].lmbda(1e-3, 3) == pytest.approx(3.375e-3) and settings[1].n_itr is None
    assert settings[2].arch == "lop" and settings[4].arch == "mop"  # kept from the policy
    assert [settings[d].reuse_networks for d in (0, 4, 2, 1, 3)] == ["never"] + ["compete"] * 4


def test_inter_frame_keys_sit_between_the_policy_and_the_rules() -> None:
    config = parse_config([*VIDEO, "--inter_arch", "lop", "--warp_filter_size", "8", "--motion_init", "none",
                           "--frame_rules", '[{"frames": "P", "arch": "vlop"}]'])
    p_frame, b_frame = (resolve_settings(f, config.frame_policy()) for f in RANDOM_ACCESS[1:3])
    assert (p_frame.arch, p_frame.motion_arch, b_frame.arch) == ("vlop", "lop", "lop")
    assert p_frame.warp_filter_size == 8 and p_frame.motion_init == "none"
    assert resolve_settings(RANDOM_ACCESS[0], config.frame_policy()).arch is None  # the I frame keeps arch


def test_the_frame_table_shows_each_frames_settings() -> None:
    config = parse_config([*VIDEO, "--preset", "fast", "--n_itr", "400", "--n_itr_inter", "500",
                           "--frame_rules", '[{"frames": "B", "depth": 3, "n_itr_warmup": 20, "lr": 0.005}]'])
    lines = frame_table(RANDOM_ACCESS, config).splitlines()
    rows = [[cell.strip() for cell in line.split("|")] for line in lines[2:]]
    header = [cell.strip() for cell in lines[0].split("|")]
    assert header[:7] == ["coding", "display", "type", "depth", "refs", "lambda", "decoders"]
    by_display = {int(row[1]): dict(zip(header, row)) for row in rows}
    assert by_display[0]["itr main/warm/motion"] == "400/100/0" and by_display[0]["decoders"] == "hop"
    assert by_display[0]["lambda"] == "0.00033" and by_display[4]["lambda"] == "0.0015"
    assert by_display[4]["decoders"] == by_display[1]["decoders"] == "lop5/vlop"
    assert by_display[4]["itr main/warm/motion"] == "500/100/200"
    assert by_display[2]["itr main/warm/motion"] == "300/100/120"  # B frames: 20 % fewer per level
    assert by_display[1]["itr main/warm/motion"] == "200/20/80" and by_display[1]["lr"] == "0.005"
    assert by_display[1]["lambda"] == "0.003375" and by_display[1]["tools"] == "flow,warm,predict"
    assert by_display[1]["modes"] == "prediction,residue,motion,motion+residue"
    assert by_display[1]["motion models"] == "translation,affine,derived" and by_display[0]["modes"] == "-"


@pytest.mark.parametrize(("args", "message"), [
    (["--frame_rules", '[{"frames": "X"}]'], "frames"),
    (["--frame_rules", '[{"frames": "B", "lr": -1}]'], "invalid frame rule: lr must be > 0"),
    (["--frame_rules", '[{"frames": "B", "warp_filter_size": 3}]'], "warp_filter_size must be even"),
    (["--frame_rules", '[{"frames": "B", "depth": -1}]'], "depth must be >= 0"),
    (["--frame_rules", '[{"frame": "B"}]'], "frame"),
    (["--frame_rules", '[{"frames": "B", "reuse_networks": "sometimes"}]'], "reuse_networks"),
    (["--coding_policy", "v9"], "coding_policy"),
    (["--warp_filter_size", "5"], "warp_filter_size must be even"),
    (["--frame_rules", '[{"frames": "B", "modes": ["residue", "skip"]}]'],
     "modes must be a non-empty list of prediction, residue, motion, motion\\+residue, got \\['residue', 'skip'\\]"),
    (["--frame_rules", '[{"frames": "P", "motion_models": []}]'],
     "motion_models must be a non-empty list of translation, affine, derived"),
])
def test_impossible_policies_fail_in_one_line(args: list[str], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        parse_config([*VIDEO, *args])


def test_an_unknown_decoder_in_a_rule_stops_the_encode_before_any_work(data_dir, tmp_path) -> None:
    clip = data_dir / "video" / "BQSquare_224x128_60p_5frames_yuv420_8b.yuv"
    done = subprocess.run([sys.executable, "-m", "coolchic_pl.fit", "--config", "configs/debug.yaml",
                           "--input", str(clip), "--n_frames", "3", "--p_pos", "-1", "--output_dir", str(tmp_path),
                           "--frame_rules", '[{"frames": "B", "motion_arch": "hop5"}]'],
                          capture_output=True, text=True, cwd=REPO)
    assert done.returncode == 2
    assert done.stderr.strip().splitlines() == [
        "error: unknown motion decoder 'hop5', expected one of vlop, lop, mop or auto"]
    assert not any(tmp_path.iterdir())


def test_a_bad_mode_setting_is_one_error_line_before_any_work(data_dir, tmp_path) -> None:
    clip = data_dir / "video" / "BQSquare_224x128_60p_5frames_yuv420_8b.yuv"
    done = subprocess.run([sys.executable, "-m", "coolchic_pl.fit", "--config", "configs/debug.yaml",
                           "--input", str(clip), "--n_frames", "3", "--p_pos", "-1", "--output_dir", str(tmp_path),
                           "--frame_rules", '[{"frames": "inter", "modes": ["skip"]}]'],
                          capture_output=True, text=True, cwd=REPO)
    assert done.returncode == 2 and len(done.stderr.strip().splitlines()) == 1
    assert done.stderr.startswith("error:") and "modes must be a non-empty list of prediction" in done.stderr
    assert not any(tmp_path.iterdir())
