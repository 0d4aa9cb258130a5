"""How a stateful timestep sampler's density over λ evolves during training.

At each log step the trainer records the sampler's current density p(λ) on a fixed λ grid
(for the adaptive policy, averaged over the rows of the current batch, since π(t | x0)
depends on the example), writes it to TensorBoard as an image, and keeps a PNG in the work
dir (``sampler_density.png``) showing every recorded density against step as a heat map
next to the latest curve and the training schedule's own p(λ).
"""

from __future__ import annotations

import os

import jax
import jax.numpy as jnp
import matplotlib
import numpy as np

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

GRID = np.linspace(-19.75, 19.75, 159)  # λ grid of the plots (inside the ±20 clip points)
FILE = "sampler_density.png"


def has_density(sampler) -> bool:
    """Whether the sampler has a state-dependent density to track."""
    return bool(getattr(sampler, "stateful", False)) and hasattr(sampler, "density")


class SamplerDensityLog:
    """Densities of ``spec.timestep_sampler`` recorded at log steps (process 0 draws them)."""

    def __init__(self, spec, workdir: str):
        self.sampler = spec.timestep_sampler
        self.enabled = has_density(self.sampler)
        self.path = os.path.join(workdir, FILE)
        self.steps: list[int] = []
        self.rows: list[np.ndarray] = []
        if self.enabled:
            grid = jnp.asarray(GRID, jnp.float32)
            self._density = jax.jit(lambda state, x0: self.sampler.density(state, grid, x0))
            self._schedule = np.asarray(spec.schedule.density(grid))

    def dispatch(self, sampler_state, x0):
        """Starts computing the density on the device (no wait); None if not tracked."""
        return self._density(sampler_state, x0) if self.enabled else None

    def finish(self, step: int, density) -> np.ndarray | None:
        """Records a :meth:`dispatch` result at ``step``; the latest curve as an HWC uint8
        image (on process 0; None elsewhere or if not tracked)."""
        if density is None:
            return None
        row = np.asarray(jax.device_get(density), np.float64)
        if jax.process_index() != 0:
            return None
        self.steps.append(int(step))
        self.rows.append(row)
        return self._figure(evolution=False)

    def record(self, step: int, sampler_state, x0) -> np.ndarray | None:
        """The density at ``step`` (recorded) as an HWC uint8 image, or None if not tracked."""
        return self.finish(step, self.dispatch(sampler_state, x0))

    def save(self) -> str | None:
        """Writes the evolution PNG; returns its path (None if nothing was recorded)."""
        if not self.rows:
            return None
        image = self._figure(evolution=True)
        plt.imsave(self.path, image)
        return self.path

    def _figure(self, evolution: bool) -> np.ndarray:
        fig = plt.figure(figsize=(9 if evolution else 5, 3.2), dpi=90)
        if evolution:
            ax_map = fig.add_subplot(1, 2, 1)
            ax_map.imshow(
                np.stack(self.rows), aspect="auto", origin="lower", cmap="viridis",
                extent=(GRID[0], GRID[-1], 0, len(self.rows)),
            )  # fmt: skip
            ticks = np.linspace(0, len(self.rows) - 1, min(5, len(self.rows))).astype(int)
            ax_map.set_yticks(ticks + 0.5, [str(self.steps[i]) for i in ticks])
            ax_map.set(xlabel="λ = log SNR", ylabel="step", title="sampler p(λ) over training")
            ax = fig.add_subplot(1, 2, 2)
        else:
            ax = fig.add_subplot(1, 1, 1)
        ax.plot(GRID, self.rows[-1], label=f"sampler, step {self.steps[-1]}")
        ax.plot(GRID, self._schedule, "--", label="schedule p(λ)")
        ax.set(xlabel="λ = log SNR", ylabel="p(λ)", title="noise-level density")
        ax.legend(fontsize=7)
        fig.tight_layout()
        fig.canvas.draw()
        image = np.asarray(fig.canvas.buffer_rgba())[..., :3].copy()
        plt.close(fig)
        return image
