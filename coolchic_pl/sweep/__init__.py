"""Many encodes at once: inputs x lambdas x configs on a local worker pool or on SLURM
(``python -m coolchic_pl.sweep``)."""
