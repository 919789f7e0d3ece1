from dataclasses import replace
from pathlib import Path

import pytest

from coolchic_pl.config import (
    PRESETS, FitConfig, Preset, TrainerPhase, Warmup, WarmupPhase, make_inter_preset, make_preset,
)
from coolchic_pl.config import arch_label, dump_config, parse_config
from coolchic_pl.fit import main
from coolchic_pl.model.architecture import ARCHITECTURES

CONFIGS = Path(__file__).resolve().parents[1] / "configs"


def test_trainer_phase_defaults_are_the_reference_ones() -> None:
    phase = TrainerPhase()
    assert (phase.lr, phase.max_itr, phase.freq_valid, phase.patience) == (1e-2, 5000, 100, 10000)
    assert (phase.quantize_model, phase.schedule_lr) == (False, False)
    assert phase.softround_temperature == (0.3, 0.3) and phase.noise_parameter == (1.0, 1.0)
    assert (phase.quantizer_noise_type, phase.quantizer_type, phase.optimized_module) == (
        "kumaraswamy", "softround", ["all"])


@pytest.mark.parametrize("kwargs, message", [
    ({"lr": 0}, "lr must be > 0"),
    ({"max_itr": 0}, "max_itr must be >= 1"),
    ({"softround_temperature": (0.3, 0.0)}, "softround_temperature"),
    ({"quantizer_type": "round"}, "quantizer_type must be one of"),
    ({"optimized_module": ["warper"]}, "optimized_module"),
])
def test_trainer_phase_rejects_impossible_values(kwargs, message) -> None:
    with pytest.raises(ValueError, match=message):
        TrainerPhase(**kwargs)


def test_preset_needs_a_quantising_phase_and_counts_iterations() -> None:
    with pytest.raises(ValueError, match="never quantizes"):
        Preset("bad", [TrainerPhase()])
    with pytest.raises(ValueError, match="cannot grow"):
        Warmup([WarmupPhase(2, TrainerPhase()), WarmupPhase(3, TrainerPhase())])
    intra = make_preset("c3x_intra", n_itr=1000)
    assert intra.warmup.total_iterations == 2800 and intra.total_iterations == 5300
    assert make_preset("debug").warmup.total_iterations == 50


def test_named_presets_follow_the_reference_schedules() -> None:
    c3x = make_preset("c3x", n_itr=3000, start_lr=5e-3)
    main_phase, ste, retune = c3x.all_phases
    assert (main_phase.lr, main_phase.max_itr, main_phase.patience, main_phase.schedule_lr) == (5e-3, 3000, 5000, True)
    assert main_phase.softround_temperature == (0.3, 0.1) and main_phase.noise_parameter == (0.25, 0.1)
    assert main_phase.quantizer_noise_type == "gaussian"
    assert (ste.quantizer_type, ste.lr, ste.max_itr, ste.quantize_model) == ("ste", 1e-4, 1500, True)
    assert (retune.optimized_module, retune.patience, retune.freq_valid, retune.schedule_lr) == (
        ["latent"], 50, 10, False)
    assert [w.candidates for w in c3x.warmup.phases] == [5, 2]
    assert c3x.warmup.phases[0].training_phase.freq_valid == 400
    assert make_preset("c3x_intra").warmup.phases[0].training_phase.freq_valid == 100
    assert set(PRESETS) == {"c3x", "c3x_intra", "fast", "debug", "measure_speed"}
    with pytest.raises(ValueError, match="unknown preset 'slow'"):
        make_preset("slow")


def test_preset_table_lists_every_stage() -> None:
    table = make_preset("c3x", n_itr=1000).table()
    lines = table.splitlines()
    assert lines[0] == "preset c3x: warm-up 2800 iterations, at most 6300 in all"
    assert [line.split("|")[0].strip() for line in lines[3:]] == [
        "warm-up 0", "warm-up 1", "phase 0", "phase 1", "phase 2"]
    assert "0.3->0.1" in table and "latent" in table


@pytest.mark.parametrize("name", sorted(p.name for p in CONFIGS.glob("*.yaml")))
def test_every_shipped_config_parses(name: str) -> None:
    argv = ["--config", str(CONFIGS / name)]
    if name in ("vlop.yaml", "lop.yaml", "mop.yaml", "hop.yaml"):
        argv = ["--config", str(CONFIGS / "debug.yaml")] + argv
    config = parse_config(argv)
    assert isinstance(config, FitConfig)
    config.preset_object()


def test_command_line_overrides_the_yaml() -> None:
    config = parse_config(["--config", str(CONFIGS / "fast.yaml"), "--lmbda", "0.02", "--n_itr", "77",
                           "--arch", "lop", "--input", "x.png", "--output_dir", "elsewhere", "--preset", "c3x"])
    assert (config.lmbda, config.n_itr, config.arch, config.input, config.output_dir, config.preset) == (
        0.02, 77, "lop", "x.png", "elsewhere", "c3x")
    assert config.resolved_architecture().dim_arm == 8
    lop_file = parse_config(["--config", str(CONFIGS / "fast.yaml"), "--config", str(CONFIGS / "lop.yaml")])
    assert lop_file.resolved_architecture() == config.resolved_architecture()


@pytest.mark.parametrize("argv, message", [
    (["--lmbda", "abc"], 'Parser key "lmbda"'),
    (["--colour", "red"], "unrecognized arguments: --colour"),
    (["--preset", "slow"], "unknown preset 'slow'"),
    (["--lmbda", "-1"], "lmbda must be > 0"),
    (["--n_itr", "0"], "n_itr must be >= 1"),
    (["--arch", "huge"], 'Parser key "arch"'),
    (["--checkpoint_interval_s", "-1"], "checkpoint_interval_s must be >= 0"),
    (["--job_duration_min", "0"], "job_duration_min must be > 0"),
])
def test_bad_options_give_one_clear_line(capsys, argv, message) -> None:
    assert main(["--input", "x.png"] + argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and message in err and err.count("\n") == 1


def test_missing_input_and_bad_architecture_are_reported(capsys, tmp_path) -> None:
    assert main(["--input", str(tmp_path / "missing.png"), "--output_dir", str(tmp_path)]) == 2
    assert "missing.png" in capsys.readouterr().err
    for arch in ("null", "vlop"):
        assert main(["--config", str(CONFIGS / "debug.yaml"), "--arch", arch, "--architecture.dim_arm", "12",
                     "--output_dir", str(tmp_path)]) == 2
        err = capsys.readouterr().err
        assert err.startswith("error: ") and "ARM context size" in err and err.count("\n") == 1


def test_explicit_architecture_keys_change_the_named_decoder(tmp_path: Path) -> None:
    """An architecture.* key is never silently dropped: it replaces that field of ``arch``."""
    config = parse_config(["--config", str(CONFIGS / "fast.yaml"), "--architecture.dim_arm", "8"])
    assert config.arch == "hop" and config.resolved_architecture() == replace(ARCHITECTURES["hop"], dim_arm=8)
    assert arch_label(config.resolved_architecture()) == "custom"
    assert arch_label(parse_config(["--config", str(CONFIGS / "fast.yaml")]).resolved_architecture()) == "hop"
    # lop with the ARM of mop is mop, and is reported as such.
    mop = parse_config(["--config", str(CONFIGS / "fast.yaml"), "--arch", "lop", "--architecture.dim_arm", "16"])
    assert mop.resolved_architecture() == ARCHITECTURES["mop"] and arch_label(mop.resolved_architecture()) == "mop"
    saved = tmp_path / "config.yaml"
    saved.write_text(dump_config(config))
    assert parse_config(["--config", str(saved)]).resolved_architecture() == config.resolved_architecture()


def test_inter_presets_shrink_b_frame_budgets_with_depth() -> None:
    """Spec 14.2: P frames n_itr, B frames max(n_itr - n_itr d / 5, n_itr / 10); motion
    pre-training max(p - p d / 5, p / 5)."""
    p_frame = make_inter_preset("c3x_inter", 3, is_b_frame=False)
    assert p_frame.all_phases[0].max_itr == 10000 and p_frame.motion_pretrain.max_itr == 1000
    assert p_frame.all_phases[0].quantize_model and p_frame.warmup.phases[0].candidates == 2
    budgets = [(make_inter_preset("c3x_inter", d, True, n_itr_pretrain_motion=5000).all_phases[0].max_itr,
                make_inter_preset("c3x_inter", d, True, n_itr_pretrain_motion=5000).motion_pretrain.max_itr)
               for d in (1, 2, 4, 6)]
    assert budgets == [(8000, 4000), (6000, 3000), (2000, 1000), (1000, 1000)]
    assert make_inter_preset("fast_inter", 1, False, n_itr=300).all_phases[0].max_itr == 300
    with pytest.raises(ValueError, match="unknown inter preset"):
        make_inter_preset("fast", 1, False)


def test_video_options() -> None:
    config = parse_config(["--input", "clip.yuv", "--n_frames", "3", "--p_pos", "-1", "--inter_arch", "lop"])
    assert config.is_video and config.p_pos == "-1" and config.intra_pos == "0"
    assert config.inter_preset_name == "fast_inter"  # the preset that goes with fast
    with pytest.raises(ValueError, match="warp_filter_size must be even"):
        parse_config(["--input", "clip.yuv", "--warp_filter_size", "5"])
    with pytest.raises(ValueError, match="optimized_module: unknown module 'motion.flow'"):
        TrainerPhase(optimized_module=["motion.flow"])


@pytest.mark.parametrize(("n_itr", "warmup_itr"), [(1000, 50), (3000, 50), (5000, 100), (10000, 200), (20000, 400)])
def test_intra5_spends_exactly_its_budget(n_itr: int, warmup_itr: int) -> None:
    preset = make_preset("intra5", n_itr=n_itr, lmbda=1e-3)
    assert [w.training_phase.max_itr for w in preset.warmup.phases] == [warmup_itr, warmup_itr]
    assert preset.total_iterations == n_itr
    assert preset.gain_from_lambda and all(p.optimizer == "soap" for p in preset.all_phases)
    assert preset.all_phases[-1].quantizer_type == "hardround" and preset.all_phases[-1].quantize_model
    # Gaussian warm-up noise falls with lambda: sigma = (-0.432 log10(lambda) + 0.747) / 10.
    noise = preset.warmup.phases[0].training_phase.noise_parameter[0]
    assert noise == pytest.approx((0.432 * 3 + 0.747) / 10)
    assert make_preset("intra5", n_itr=n_itr, lmbda=1e-2).warmup.phases[0].training_phase.noise_parameter[0] < noise


def test_intra5_refuses_a_budget_below_its_fixed_phases() -> None:
    with pytest.raises(ValueError, match="intra5 needs n_itr >= 1000"):
        make_preset("intra5", n_itr=999)


def test_arch_auto_names_the_competing_decoders(tmp_path: Path) -> None:
    config = parse_config(["--config", str(CONFIGS / "fast.yaml"), "--arch", "auto5",
                           "--architecture.n_hidden_layers_arm", "1"])
    assert config.resolved_architectures() == [replace(ARCHITECTURES[n], n_hidden_layers_arm=1)
                                               for n in ("lop5", "mop5", "hop5")]
    with pytest.raises(ValueError, match="several decoders"):
        config.resolved_architecture()
    saved = tmp_path / "config.yaml"
    saved.write_text(dump_config(config))
    assert parse_config(["--config", str(saved)]).resolved_architectures() == config.resolved_architectures()
    video = FitConfig(input="x.yuv", arch="auto5", n_frames=3)  # its I frame picks a Cool-Chic 5 decoder
    assert len(video.resolved_architectures()) == 3
