"""Respaced grids of the discrete 1000-step linear-β DDPM (the official DiT / ADM protocol).

The official DiT (Peebles & Xie 2023) and ADM (Dhariwal & Nichol 2021) sample with a subset
of the training process's integer steps ("respacing", Nichol & Dhariwal 2021 §4): with
``section_counts = "250"`` the 1000 steps are thinned to 250 evenly spread ones, the step
``k → k'`` between two kept steps uses ``β = 1 − ᾱ_k / ᾱ_k'``, and the network is evaluated
at the *original* integer step ``k``. In λ-parameterisation such a step is exactly one step of
our samplers between ``λ_k = log(ᾱ_k / (1 − ᾱ_k))`` and ``λ_k'`` (``1 − γ/γ_next`` is that
β, the "small" variance the posterior one), so the protocol is ``sample(..., lams=grid)``
with ``grid = respaced_logsnr("250")``; an official DiT's conditioning map
(``models.conditioning.ddpm_timestep_from_logsnr``) turns each λ back into its integer step
exactly. The table is ``jaxdiff.noise.ddpm_linear_logsnr_table``, the continuous schedule
``noise.get_schedule("ddpm_linear")`` (usable for training); this module needs only ``noise``.

``section_counts`` follows the convention of the official code: a comma-separated list of
step counts, one per equal section of the 1000 steps (``"250"``, ``"10,15,20"``), or
``"ddimN"`` for the stride that gives exactly N steps starting at 0 (DDIM's spacing).
"""

from __future__ import annotations

import numpy as np

from jaxdiff.noise import ddpm_linear_alphas_cumprod, ddpm_linear_logsnr_table

NUM_TRAIN_STEPS = 1000
# `sampling.schedule` value naming the respaced grid of this module (the official DiT grid).
DDPM_LINEAR_GRID = "ddpm_linear"


def space_timesteps(num_timesteps: int, section_counts: str | int | list[int]) -> list[int]:
    """The kept integer steps (sorted ascending) of a ``num_timesteps``-step process.

    Each of ``len(section_counts)`` equal sections (the first ``num_timesteps % len`` one
    step longer) keeps ``count`` steps at ``round(j·(size − 1)/(count − 1))`` from its start
    (Python's rounding, the positions accumulated as the official code does); ``"ddimN"``
    keeps ``range(0, num_timesteps, stride)`` for the stride giving exactly N steps.
    Invalid counts raise ``ValueError`` naming ``section_counts``.
    """
    if isinstance(section_counts, str):
        text = section_counts.strip()
        if text.startswith("ddim"):
            try:
                want = int(text[4:])
            except ValueError:
                raise ValueError(f"section_counts: cannot parse {section_counts!r}") from None
            for stride in range(1, num_timesteps):
                if len(range(0, num_timesteps, stride)) == want:
                    return list(range(0, num_timesteps, stride))
            raise ValueError(
                f"section_counts={section_counts!r}: no integer stride gives exactly {want} "
                f"steps out of {num_timesteps}"
            )
        try:
            counts = [int(x) for x in text.split(",")]
        except ValueError:
            raise ValueError(
                f"section_counts: expected 'N', 'N1,N2,...' or 'ddimN', got {section_counts!r}"
            ) from None
    elif isinstance(section_counts, int):
        counts = [section_counts]
    else:
        counts = [int(x) for x in section_counts]
    if not counts or any(c < 1 for c in counts):
        raise ValueError(f"section_counts must be positive step counts, got {section_counts!r}")
    size_per, extra = divmod(num_timesteps, len(counts))
    kept, start = [], 0
    for i, count in enumerate(counts):
        size = size_per + (1 if i < extra else 0)
        if size < count:
            raise ValueError(
                f"section_counts={section_counts!r}: section {i} has {size} steps, "
                f"cannot keep {count}"
            )
        stride = 1.0 if count <= 1 else (size - 1) / (count - 1)
        position = 0.0
        for _ in range(count):
            kept.append(start + round(position))
            position += stride
        start += size
    return sorted(set(kept))


def respaced_timesteps(
    section_counts: str | int | list[int], num_timesteps: int = NUM_TRAIN_STEPS
) -> np.ndarray:
    """The kept integer steps in sampling order (noisiest first), int32 (steps,)."""
    return np.asarray(space_timesteps(num_timesteps, section_counts)[::-1], np.int32)


def respaced_betas(
    section_counts: str | int | list[int],
    num_timesteps: int = NUM_TRAIN_STEPS,
    beta_start: float = 1e-4,
    beta_end: float = 0.02,
) -> np.ndarray:
    """β of the respaced process in ascending step order: ``1 − ᾱ_k / ᾱ_prev`` (float64)."""
    alphas_cumprod = ddpm_linear_alphas_cumprod(num_timesteps, beta_start, beta_end)
    kept = space_timesteps(num_timesteps, section_counts)
    prev = np.concatenate([[1.0], alphas_cumprod[kept][:-1]])
    return 1.0 - alphas_cumprod[kept] / prev


def respaced_logsnr(
    section_counts: str | int | list[int],
    num_timesteps: int = NUM_TRAIN_STEPS,
    beta_start: float = 1e-4,
    beta_end: float = 0.02,
) -> np.ndarray:
    """λ at the kept steps in sampling order (increasing λ): the ``lams`` grid of ``sample``.

    float64 (steps,); ``respaced_logsnr("250")`` is the official DiT's 250-step grid.
    """
    table = ddpm_linear_logsnr_table(num_timesteps, beta_start, beta_end)
    return table[respaced_timesteps(section_counts, num_timesteps)]
