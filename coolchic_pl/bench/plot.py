"""Rate-distortion figures of the benchmarks (needs matplotlib, in the ``bench`` extra)."""

from __future__ import annotations

from pathlib import Path


def plot_rd(curves: dict[str, list[dict]], path: Path, title: str, quality: str, quality_label: str,
            highlight: str, published: dict[str, list[dict]] | None = None, max_bpp: float | None = None) -> bool:
    """One line per codec of ``quality`` against bpp, ``highlight`` drawn boldest and
    ``published`` curves dashed. Returns False, drawing nothing, without matplotlib: the
    figure is a convenience beside the JSON results, never a reason to fail a benchmark."""
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    figure, axis = plt.subplots(figsize=(8, 6))
    for name, points in curves.items():
        points = sorted(points, key=lambda p: p["bpp"])
        axis.plot([p["bpp"] for p in points], [p[quality] for p in points], "o-" if name == highlight else ".-",
                  label=name, linewidth=2.5 if name == highlight else 1.2)
    for name, points in (published or {}).items():
        points = sorted(points, key=lambda p: p["bpp"])
        axis.plot([p["bpp"] for p in points], [p[quality] for p in points], "--", alpha=0.6,
                  label=f"{name} (published, full Kodak)")
    axis.set(xlabel="rate (bpp)", ylabel=quality_label, title=title)
    if max_bpp is not None:
        axis.set_xlim(0, max_bpp)
    axis.grid(alpha=0.3)
    axis.legend(fontsize=7)
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    plt.close(figure)
    return True
