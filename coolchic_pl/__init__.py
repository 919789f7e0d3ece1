"""coolchic_pl: the Cool-Chic overfitted image and video codec on PyTorch Lightning.

The Python API (:mod:`coolchic_pl.api`): ``compress``, ``decompress``, ``decompress_frames``,
``load_config``, ``CompressResult``, ``FitConfig``. They are imported on first use, so that
``coolchic-decode`` does not pay for the encoder's imports.
"""

from __future__ import annotations

from typing import Any

__all__ = ["CompressResult", "FitConfig", "compress", "decompress", "decompress_frames", "load_config"]


def __getattr__(name: str) -> Any:
    if name in __all__:
        from coolchic_pl import api

        return getattr(api, name)
    raise AttributeError(f"module 'coolchic_pl' has no attribute {name!r}")
