"""What the training loop takes from the layers above it (docs/architecture.md).

Diagnostics sit above training, so the loop never imports them: the periodic noise-level
diagnosis (``diagnose_every_steps``) is a :data:`DiagnoseHook` the caller hands to
``loop.train`` (``jaxdiff.main`` passes ``jaxdiff.diagnostics.training_hook``).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping
from typing import Any

import numpy as np


@dataclasses.dataclass(frozen=True)
class DiagnosisReport:
    """What the loop logs of one diagnosis: scalars (metrics.jsonl and TensorBoard), images
    (TensorBoard, name -> HWC uint8) and one console line."""

    scalars: Mapping[str, float]
    images: Mapping[str, np.ndarray]
    text: str


# (experiment, sampling params, work dir, step) -> report; writes its own files in the work dir
DiagnoseHook = Callable[[Any, Any, str, int], DiagnosisReport]
