"""One Lightning Callback per training concern; each keeps its state in state_dict()."""

from coolchic_pl.callbacks.cosine_lr import CosineLR
from coolchic_pl.callbacks.patience import PatienceWithReload
from coolchic_pl.callbacks.quantize import PostPhaseQuantization
from coolchic_pl.callbacks.report import ValidationReport
from coolchic_pl.callbacks.schedules import LinearSchedule

__all__ = ["CosineLR", "LinearSchedule", "PatienceWithReload", "PostPhaseQuantization", "ValidationReport"]
