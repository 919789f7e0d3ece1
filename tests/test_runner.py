"""PhaseRunner: warm-up selection, resume from saved state and restarts, with the
training itself replaced by a script so that the selection logic is what is tested."""

from __future__ import annotations

import signal

import lightning.pytorch as pl
import pytest
import torch

from coolchic_pl.config import Preset, TrainerPhase, Warmup, WarmupPhase
from coolchic_pl.io import FrameData, read_frame
from coolchic_pl.model.architecture import ARCHITECTURES
from coolchic_pl.training.checkpoint import CHECKPOINT_KEY, CheckpointError, Checkpointer, EncodeStopped, StopReason
from coolchic_pl.training.rng import derive_seed
from coolchic_pl.training.datamodule import SingleFrameDataModule
from coolchic_pl.training.runner import PhaseRunner, make_trainer

WARM = TrainerPhase(max_itr=4, freq_valid=2)
MAIN = TrainerPhase(max_itr=6, freq_valid=3, quantize_model=True)
PRESET = Preset("test", [MAIN, TrainerPhase(max_itr=2, freq_valid=2)],
                Warmup([WarmupPhase(4, WARM), WarmupPhase(2, WARM), WarmupPhase(1, WARM)]))


@pytest.fixture(scope="module")
def tiny_frame(kodim15) -> FrameData:
    frame = read_frame(kodim15)
    return FrameData((frame.planes[0][..., :16, :24].contiguous(),), 8, "rgb")


class ScriptedRunner(PhaseRunner):
    """Each fit adds a scripted amount to a candidate's score instead of training; the
    score (stored in a latent, so it survives save and resume) is its test loss."""

    def __init__(self, *args, gains: dict[tuple[str, int], float], fail_at: str | None = None, **kwargs):
        super().__init__(*args, **kwargs)
        self.gains, self.fail_at, self.fitted = gains, fail_at, []

    def _new_module(self, codec_state=None, candidate=0):
        module = super()._new_module(codec_state, candidate)
        if codec_state is None:
            with torch.no_grad():
                module.coolchic.latent.grids[0].fill_(float(candidate))  # candidate identity
        module.evaluate = lambda m=module: {"loss": m.coolchic.latent.grids[0][0, 0, 0, 1].item()}
        return module

    def _train(self, module, phase, stage, resume):
        if stage == self.fail_at:
            raise EncodeStopped(StopReason.INTERRUPT)
        identity = int(module.coolchic.latent.grids[0][0, 0, 0, 0].item())
        self.fitted.append((stage, identity))
        with torch.no_grad():
            module.coolchic.latent.grids[0][0, 0, 0, 1] = self.gains.get((stage.split("/")[0], identity), 0.0)
        self.state["global_iteration"] += phase.max_itr
        return 0.0


# Warm-up 0 ranks candidates 2 < 0 < 3 < 1; warm-up 1 re-ranks the survivors 2, 0 as 0 < 2.
GAINS = {("warmup0", 0): 2.0, ("warmup0", 1): 4.0, ("warmup0", 2): 1.0, ("warmup0", 3): 3.0,
         ("warmup1", 0): 0.5, ("warmup1", 2): 0.7, ("warmup2", 0): 0.1}


def test_warmup_keeps_the_best_candidates_in_order(tiny_frame) -> None:
    runner = ScriptedRunner(tiny_frame, ARCHITECTURES["vlop"], PRESET, 1e-3, gains=GAINS)
    runner.run()
    assert runner.fitted == [
        ("warmup0/c0", 0), ("warmup0/c1", 1), ("warmup0/c2", 2), ("warmup0/c3", 3),
        ("warmup1/c0", 2), ("warmup1/c1", 0),  # best two of warm-up 0, best first
        ("warmup2/c0", 0),                       # best of warm-up 1
        ("phase0", 0), ("phase1", 0),
    ]
    assert runner.global_iteration == 4 * 4 + 2 * 4 + 4 + 6 + 2


def test_resume_continues_at_the_interrupted_stage(tiny_frame, tmp_path) -> None:
    checkpointer = Checkpointer(tmp_path / "encode.ckpt", interval_s=0)
    first = ScriptedRunner(tiny_frame, ARCHITECTURES["vlop"], PRESET, 1e-3, gains=GAINS, fail_at="warmup1/c1",
                           checkpointer=checkpointer)
    with pytest.raises(EncodeStopped):
        first.run()
    checkpoint = checkpointer.load()
    saved = checkpoint[CHECKPOINT_KEY]["runner"]
    assert saved["stage"] == 5 and saved["global_iteration"] == 4 * 4 + 4
    resumed = ScriptedRunner(tiny_frame, ARCHITECTURES["vlop"], PRESET, 1e-3, gains=GAINS)
    assert resumed.describe(checkpoint) == "the start of warmup1/c1"
    resumed.run(checkpoint)
    assert resumed.fitted == [("warmup1/c1", 0), ("warmup2/c0", 0), ("phase0", 0), ("phase1", 0)]
    assert resumed.global_iteration == 4 * 4 + 2 * 4 + 4 + 6 + 2


def test_derived_seeds_do_not_collide() -> None:
    # seed * 1000 + loop * 100 + candidate gave (1, 0, 0) and (0, 10, 0) the same seed.
    keys = [(seed, loop, candidate) for seed in range(3) for loop in range(12) for candidate in range(12)]
    assert len({derive_seed(*key) for key in keys}) == len(keys)


def test_candidates_get_distinct_initialisations_that_leave_the_encode_rng_alone(tiny_frame) -> None:
    runner = PhaseRunner(tiny_frame, ARCHITECTURES["vlop"], PRESET, 1e-3, seed=5)
    state = torch.get_rng_state()
    first, again = runner._new_module(candidate=1), runner._new_module(candidate=1)
    other = runner._new_module(candidate=2)
    assert torch.equal(torch.get_rng_state(), state)
    weights = [m.coolchic.synthesis.layers[0].weight for m in (first, again, other)]
    assert torch.equal(weights[0], weights[1]) and not torch.equal(weights[0], weights[2])


def test_restarts_keep_the_best_loop(tiny_frame) -> None:
    preset = Preset("one", [MAIN], Warmup([WarmupPhase(2, WARM)]))
    # Each loop draws candidates 0 and 1 afresh (identities 0 and 1 again).
    gains = {("loop0", 0): 9.0, ("loop0", 1): 8.0, ("loop1", 0): 10.0, ("loop1", 1): 12.0}
    runner = ScriptedRunner(tiny_frame, ARCHITECTURES["vlop"], preset, 1e-3, gains=gains, n_loops=2)
    module, metrics = runner.run()
    assert runner.fitted == [
        ("loop0/warmup0/c0", 0), ("loop0/warmup0/c1", 1), ("loop0/phase0", 1),
        ("loop1/warmup0/c0", 0), ("loop1/warmup0/c1", 1), ("loop1/phase0", 0)]
    assert metrics["loss"] == 8.0  # loop 0's winner beats loop 1's (10)
    assert module.coolchic.latent.grids[0][0, 0, 0, 0].item() == 1.0


def test_lightning_does_not_take_sigusr1_under_slurm(tiny_frame, monkeypatch) -> None:
    """Under SLURM, Lightning's auto-requeue would answer SIGUSR1 itself (save an hpc
    checkpoint, call scontrol requeue); the encode's own requeue must be the only one."""
    for name, value in {"SLURM_NTASKS": "1", "SLURM_JOB_NAME": "encode", "SLURM_NODELIST": "node1",
                        "SLURM_JOB_ID": "7", "SLURM_PROCID": "0", "SLURM_LOCALID": "0", "SLURM_NODEID": "0"}.items():
        monkeypatch.setenv(name, value)
    handlers = []

    class Spy(pl.Callback):
        def on_train_start(self, trainer, pl_module):
            handlers.append(signal.getsignal(signal.SIGUSR1))

    module = PhaseRunner(tiny_frame, ARCHITECTURES["vlop"], PRESET, 1e-3)._new_module()
    module.phase = WARM
    trainer = make_trainer(WARM, [Spy()])
    trainer.fit(module, datamodule=SingleFrameDataModule())
    assert handlers == [signal.SIG_DFL]


def test_foreign_checkpoints_are_refused(tmp_path) -> None:
    checkpointer = Checkpointer(tmp_path / "encode.ckpt")
    assert checkpointer.load() is None
    for content, problem in (({"state_dict": {}}, "not a coolchic_pl checkpoint"),
                             ({CHECKPOINT_KEY: {"version": 0}}, "written by another version")):
        torch.save(content, checkpointer.path)
        with pytest.raises(CheckpointError, match=problem):
            checkpointer.load()
