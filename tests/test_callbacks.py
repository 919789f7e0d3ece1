"""Callbacks on a tiny real Trainer whose validation losses are scripted."""

from __future__ import annotations

import copy
import math
from pathlib import Path

import lightning.pytorch as pl
import pytest
import torch
from lightning.pytorch.strategies import SingleDeviceStrategy

from coolchic_pl.callbacks import CosineLR, LinearSchedule, PatienceWithReload, PostPhaseQuantization
from coolchic_pl.callbacks.checkpoint import StageCheckpoint
from coolchic_pl.callbacks.cosine_lr import ETA_MIN
from coolchic_pl.config import TrainerPhase
from coolchic_pl.io import FrameData, read_frame
from coolchic_pl.model.architecture import ARCHITECTURES
from coolchic_pl.nnquant import Q_STEPS
from coolchic_pl.nnquant.expgolomb import best_expgolomb_order
from coolchic_pl.nnquant.quantize import QStepSearch, quantize_networks, quantized_integers, split_weights_and_biases
from coolchic_pl.training.checkpoint import CHECKPOINT_KEY, Checkpointer, EncodeStopped, StopReason
from coolchic_pl.training.datamodule import SingleFrameDataModule
from coolchic_pl.training.module import CoolChicModule
from coolchic_pl.training.runner import make_trainer


class ScriptedModule(CoolChicModule):
    """A CoolChicModule (its phase-ending hooks are the ones under test) whose validation
    losses come from a script and whose single parameter counts the training steps, so
    'which parameters are loaded' is readable."""

    def __init__(self, phase: TrainerPhase, losses: list[float]):
        pl.LightningModule.__init__(self)
        self.coolchic = torch.nn.Linear(1, 1, bias=False)
        with torch.no_grad():
            self.coolchic.weight.zero_()
        self.register_buffer("temperature", torch.tensor(-1.0))
        self.register_buffer("noise_parameter", torch.tensor(-1.0))
        self.phase, self.losses = phase, losses
        self.initial_loss = 100.0
        self.n_validations = 0
        self.last_metrics: dict[str, float] = {}
        self.seen: list[tuple[int, float, float, float, float]] = []
        self._phase_end_requested = False
        self.automatic_optimization = False

    def evaluate(self) -> dict[str, float]:
        return {"loss": self.initial_loss}

    def configure_optimizers(self):
        return torch.optim.SGD(self.coolchic.parameters(), lr=self.phase.lr)

    def training_step(self, batch, batch_idx):
        optimizer = self.optimizers()
        self.seen.append((self.trainer.global_step, self.temperature.item(), self.noise_parameter.item(),
                          self.coolchic.weight.item(), optimizer.param_groups[0]["lr"]))
        with torch.no_grad():
            self.coolchic.weight.add_(1.0)
        optimizer.step()

    def validation_step(self, batch, batch_idx):
        self.last_metrics = {"loss": self.losses[min(self.n_validations, len(self.losses) - 1)]}
        self.n_validations += 1


def _fit(module: pl.LightningModule, phase: TrainerPhase, callbacks: list[pl.Callback],
         ckpt_path: Path | None = None) -> pl.Trainer:
    trainer = make_trainer(phase, callbacks)
    trainer.fit(module, datamodule=SingleFrameDataModule(), ckpt_path=ckpt_path, weights_only=True)
    return trainer


def test_linear_schedules_change_only_after_validations() -> None:
    phase = TrainerPhase(max_itr=50, freq_valid=10)
    module = ScriptedModule(phase, [1.0])
    _fit(module, phase, [LinearSchedule("temperature", 0.3, 0.1, 50), LinearSchedule("noise_parameter", 2.0, 1.0, 50)])
    for step, temperature, noise, _, _ in module.seen:
        last_validated = (step // 10) * 10 - 1  # 0-based iteration of the last validation
        c = max(last_validated, 0)
        assert temperature == pytest.approx(0.3 - 0.2 * c / 50)
        assert noise == pytest.approx(2.0 - 1.0 * c / 50)
    assert module.seen[9][1] == pytest.approx(0.3) and module.seen[10][1] == pytest.approx(0.3 - 0.2 * 9 / 50)


def test_cosine_lr_is_stepped_once_per_validation() -> None:
    phase = TrainerPhase(lr=1e-2, max_itr=60, freq_valid=10, schedule_lr=True)
    module = ScriptedModule(phase, [1.0])
    _fit(module, phase, [CosineLR(60, 10)])
    t_max = 6
    for step, _, _, _, lr in module.seen:
        k = step // 10
        assert lr == pytest.approx(ETA_MIN + (1e-2 - ETA_MIN) * (1 + math.cos(math.pi * k / t_max)) / 2)


def test_patience_stops_without_cosine_and_restores_the_best() -> None:
    phase = TrainerPhase(max_itr=200, freq_valid=10, patience=25)
    # Validations at iterations 9, 19, 29, ...: the best is the third (iteration 29).
    module = ScriptedModule(phase, [5.0, 4.0, 3.0, 3.5])
    patience = PatienceWithReload(25, reload_and_continue=False, max_itr=200)
    trainer = _fit(module, phase, [patience])
    # Iteration 55 is the first with 55 - 29 > 25: the phase stops before it runs, and
    # without validating again (the last validation was the fifth, at iteration 49).
    assert trainer.global_step == 55 and module.n_validations == 5
    assert patience.best_iteration == 29 and patience.best_loss == 3.0
    # The weight counts steps: after iteration 29 it held 30.
    assert module.coolchic.weight.item() == 30.0


def test_patience_reloads_with_cosine_and_keeps_training() -> None:
    phase = TrainerPhase(max_itr=100, freq_valid=10, patience=15, schedule_lr=True)
    module = ScriptedModule(phase, [5.0, 4.0, 6.0])
    patience = PatienceWithReload(15, reload_and_continue=True, max_itr=100)
    trainer = _fit(module, phase, [patience])
    assert trainer.global_step == 100
    assert patience.n_reloads >= 1
    # First reload at the top of iteration 35 (35 - 19 > 15): the weight went back to 20.
    weights = {step: weight for step, _, _, weight, _ in module.seen}
    assert weights[35] == 20.0 and weights[34] == 34.0
    assert module.coolchic.weight.item() == 20.0


def test_initial_state_counts_as_best() -> None:
    phase = TrainerPhase(max_itr=30, freq_valid=10, patience=1000)
    module = ScriptedModule(phase, [200.0])
    module.initial_loss = 100.0
    _fit(module, phase, [PatienceWithReload(1000, False, 30)])
    assert module.coolchic.weight.item() == 0.0  # never beaten: back to the initial parameters


def test_callback_state_dicts_round_trip() -> None:
    schedule = LinearSchedule("temperature", 0.3, 0.1, 100)
    schedule.value = 0.2
    restored = LinearSchedule("temperature", 0.3, 0.1, 100)
    restored.load_state_dict(schedule.state_dict())
    assert restored.value == 0.2 and schedule.state_key != LinearSchedule("noise_parameter", 1, 1, 1).state_key

    patience = PatienceWithReload(10, True, 100)
    patience.best_loss, patience.best_iteration, patience.n_reloads = 0.5, 42, 3
    patience.best_parameters = {"w": torch.tensor([1.0])}
    copy = PatienceWithReload(10, True, 100)
    copy.load_state_dict(patience.state_dict())
    assert (copy.best_loss, copy.best_iteration, copy.n_reloads) == (0.5, 42, 3)
    assert torch.equal(copy.best_parameters["w"], torch.tensor([1.0]))


def _stage_callbacks(phase: TrainerPhase) -> list[pl.Callback]:
    return [PatienceWithReload(phase.patience, phase.schedule_lr, phase.max_itr),
            LinearSchedule("temperature", 0.3, 0.1, phase.max_itr),
            LinearSchedule("noise_parameter", 2.0, 1.0, phase.max_itr), CosineLR(phase.max_itr, phase.freq_valid)]


@pytest.mark.parametrize("stop_at", [27, 30])  # after a plain iteration, and after a validation
def test_callbacks_restored_from_a_checkpoint_continue_where_they_stopped(tmp_path: Path, stop_at: int) -> None:
    """A stage stopped by a request mid-way and resumed from its Lightning checkpoint with
    fresh callbacks sees the same schedules, learning rates, reloads and parameters at
    every later step as a stage that was never stopped."""
    phase = TrainerPhase(lr=1e-2, max_itr=60, freq_valid=10, patience=15, schedule_lr=True)
    losses = [5.0, 4.0, 6.0, 6.0, 3.0, 7.0]
    whole = ScriptedModule(phase, losses)
    whole_callbacks = _stage_callbacks(phase)
    _fit(whole, phase, whole_callbacks)

    path = tmp_path / "stage.ckpt"
    first = ScriptedModule(phase, losses)
    checkpointer = Checkpointer(path, interval_s=0, signal_reason=lambda: (
        StopReason.INTERRUPT if first.trainer.global_step >= stop_at else None))
    extras = {CHECKPOINT_KEY: "runner state"}
    with pytest.raises(EncodeStopped):
        _fit(first, phase, [*_stage_callbacks(phase), StageCheckpoint(checkpointer, phase, lambda: extras)])
    assert torch.load(path, weights_only=True)[CHECKPOINT_KEY] == extras

    resumed = ScriptedModule(phase, losses)
    resumed.n_validations = first.n_validations  # the script's position is not part of the module
    callbacks = _stage_callbacks(phase)
    _fit(resumed, phase, callbacks, ckpt_path=path)
    assert resumed.seen == whole.seen[stop_at:]
    # The reload at iteration 35 (35 - 19 > 15) happens after the resume.
    assert callbacks[0].n_reloads == whole_callbacks[0].n_reloads == 1
    assert resumed.coolchic.weight.item() == whole.coolchic.weight.item()


@pytest.fixture(scope="module")
def crop_frame(kodim15) -> FrameData:
    frame = read_frame(kodim15)
    return FrameData((frame.planes[0][..., 40:72, 64:112].contiguous(),), 8, "rgb")


def _trained(frame: FrameData, arch: str, lmbda: float, seed: int, steps: int) -> CoolChicModule:
    torch.manual_seed(seed)
    module = CoolChicModule(frame, ARCHITECTURES[arch], lmbda=lmbda)
    phase = TrainerPhase(max_itr=steps, freq_valid=steps // 2, noise_parameter=(2.0, 2.0))
    module.phase = phase
    _fit(module, phase, [])
    return module


def test_quantisation_picks_the_steps_that_minimise_the_loss(crop_frame) -> None:
    module = _trained(crop_frame, "vlop", 1e-3, seed=0, steps=40)
    arm = module.coolchic.arm
    full_precision = {k: v.clone() for k, v in arm.state_dict().items()}
    # Brute force over the ARM's pairs, the first module searched.
    losses = {}
    for qw in Q_STEPS["arm"][0]:
        for qb in Q_STEPS["arm"][1]:
            with torch.no_grad():
                for name, p in arm.named_parameters():
                    step = qb if name.endswith("bias") else qw
                    p.copy_(torch.round(full_precision[name] / step) * step)
            weights, biases = split_weights_and_biases(arm)
            bits = (best_expgolomb_order(quantized_integers(weights, qw))[1]
                    + best_expgolomb_order(quantized_integers(biases, qb))[1])
            losses[qw, qb] = module.evaluate_loss(bits)
    arm.load_state_dict(full_precision)
    quantization = quantize_networks(module.coolchic, module.evaluate_loss)
    chosen = (quantization["arm"].weight_step, quantization["arm"].bias_step)
    assert losses[chosen] == min(losses.values())
    for name, p in arm.named_parameters():
        step = chosen[1] if name.endswith("bias") else chosen[0]
        assert torch.equal(p, torch.round(p / step) * step)
    assert set(quantization) == {"arm", "synthesis", "upsampling"}


class StopSearch(Exception):
    pass


@pytest.mark.parametrize("stop_after", [40, 300, 520])  # ARM, synthesis in pass 0, synthesis in pass 1
def test_a_stopped_quantisation_search_resumes_to_the_same_result(crop_frame, stop_after: int) -> None:
    module = _trained(crop_frame, "lop", 2e-3, seed=3, steps=60)
    trained = copy.deepcopy(module.coolchic.state_dict())
    whole = quantize_networks(module.coolchic, module.evaluate_loss)
    quantized = copy.deepcopy(module.coolchic.state_dict())

    module.coolchic.load_state_dict(trained)
    first = PostPhaseQuantization()
    calls = []

    def stop(callback: PostPhaseQuantization) -> None:
        calls.append(None)
        if len(calls) == stop_after:
            raise StopSearch(copy.deepcopy(callback.state_dict()))

    first.progress = stop
    with pytest.raises(StopSearch) as stopped:
        first.quantize(module)
    state = stopped.value.args[0]
    assert state["search"]["position"]["pass_index"] == (1 if stop_after > 491 else 0)

    module.coolchic.load_state_dict(trained)  # whatever the module holds, the search state rules
    resumed = PostPhaseQuantization()
    resumed.load_state_dict(state)
    resumed.quantize(module)
    assert module.quantization == whole
    assert all(torch.equal(module.coolchic.state_dict()[k], v) for k, v in quantized.items())


def test_quantisation_runs_on_the_training_device_before_teardown(crop_frame, monkeypatch) -> None:
    """Lightning's teardown moves the module to the CPU; the search must run before it."""
    events = []
    real_run, real_teardown = QStepSearch.run, SingleDeviceStrategy.teardown

    def run(search, *args, **kwargs):
        events.append(("quantize", module.device, module.trainer.strategy.root_device))
        return real_run(search, *args, **kwargs)

    def teardown(strategy):
        events.append(("teardown",))
        return real_teardown(strategy)

    monkeypatch.setattr(QStepSearch, "run", run)
    monkeypatch.setattr(SingleDeviceStrategy, "teardown", teardown)
    module = CoolChicModule(crop_frame, ARCHITECTURES["vlop"], lmbda=1e-3)
    phase = TrainerPhase(max_itr=3, freq_valid=3, quantize_model=True)
    module.phase = phase
    _fit(module, phase, [PatienceWithReload(10, False, 3), PostPhaseQuantization()])
    assert events[0][0] == "quantize" and events[0][1] == events[0][2] and events[1] == ("teardown",)
    assert set(module.quantization) == {"arm", "synthesis", "upsampling"}


def test_quantisation_and_rdoq_evaluate_a_decoder_switched_to_eval_once(crop_frame, monkeypatch) -> None:
    """After the phase, Lightning leaves the decoder training: the search and RDOQ switch it to
    eval mode once for all their tries, and give it back training for the next phase."""
    modes = []
    real_evaluate_loss = CoolChicModule.evaluate_loss

    def evaluate_loss(module, network_bits):
        modes.append(module.coolchic.training)
        return real_evaluate_loss(module, network_bits)

    monkeypatch.setattr(CoolChicModule, "evaluate_loss", evaluate_loss)
    module = CoolChicModule(crop_frame, ARCHITECTURES["vlop"], lmbda=1e-3)
    phase = TrainerPhase(max_itr=3, freq_valid=3, quantize_model=True, rdoq=True)
    module.phase = phase
    switches = []
    real_train = type(module.coolchic).train
    monkeypatch.setattr(type(module.coolchic), "train",
                        lambda decoder, mode=True: switches.append(mode) or real_train(decoder, mode))
    _fit(module, phase, [PatienceWithReload(10, False, 3), PostPhaseQuantization(rdoq=True)])
    assert len(modes) > 100 and not any(modes)
    assert switches.count(False) <= 3 and module.coolchic.training


def test_quantisation_skips_steps_that_overflow(crop_frame) -> None:
    module = CoolChicModule(crop_frame, ARCHITECTURES["vlop"], lmbda=1e-3)
    with torch.no_grad():
        module.coolchic.synthesis.layers[0].weight[0, 0, 0, 0] = 300.0  # / 2^-8 > 65535
    quantization = quantize_networks(module.coolchic, module.evaluate_loss)
    assert quantization["synthesis"].weight_step >= 2.0**-7


def test_further_quantisation_passes_never_raise_the_loss(crop_frame) -> None:
    module = _trained(crop_frame, "lop", 2e-3, seed=3, steps=60)
    trained = {k: v.clone() for k, v in module.coolchic.state_dict().items()}
    module.quantization = quantize_networks(module.coolchic, module.evaluate_loss, max_passes=1)
    one_pass = module.evaluate()["loss"]
    module.coolchic.load_state_dict(trained)
    module.quantization = quantize_networks(module.coolchic, module.evaluate_loss, max_passes=3)
    assert module.evaluate()["loss"] <= one_pass
