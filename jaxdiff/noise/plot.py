"""Draw p(λ) and λ(t) for every registered schedule, like Hang et al. 2024's figures.

python -m jaxdiff.noise.plot --out schedules.png [--schedules cosine laplace ...]
"""

from __future__ import annotations

import sys
from collections.abc import Sequence

import jax
import numpy as np
from absl import flags

from jaxdiff import noise
from jaxdiff.cli import run

# Schedules whose defaults coincide with "cosine" are drawn with illustrative parameters.
PLOT_PARAMS = {
    "cosine_shifted": {"mu": -1.386},  # 2·log(1/2): simple diffusion's shift for 128 px
    "cosine_scaled": {"s": 0.5},
    "cosine_power": {"start": 0.2, "end": 1.0, "tau": 2.0},
}


def _label(name: str, params: dict) -> str:
    return name + (
        " (" + ", ".join(f"{k}={v:g}" for k, v in params.items()) + ")" if params else ""
    )


def schedule_curves(
    names: Sequence[str], num: int = 801, lam_range: float = 15.0
) -> dict[str, dict[str, np.ndarray]]:
    """For each schedule (PLOT_PARAMS or defaults), keyed by label: t, λ(t), λ grid, p(λ)."""
    t = np.linspace(0.0, 1.0, num, dtype=np.float32)
    lam = np.linspace(-lam_range, lam_range, num, dtype=np.float32)
    out = {}
    for name in names:
        params = PLOT_PARAMS.get(name, {})
        s = noise.get_schedule(name, **params)
        logsnr, density = jax.jit(lambda t, lam, s=s: (s.logsnr(t), s.density(lam)))(t, lam)
        out[_label(name, params)] = {
            "t": t,
            "logsnr": np.asarray(logsnr),
            "lam": lam,
            "density": np.asarray(density),
        }
    return out


def plot_schedules(out: str, names: Sequence[str] | None = None) -> None:
    """Write a two-panel PNG: p(λ) over λ (left) and λ(t) over t (right)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = list(names or noise.list_schedules())
    curves = schedule_curves(names)
    fig, (ax_p, ax_l) = plt.subplots(1, 2, figsize=(13, 5))
    cmap = plt.get_cmap("tab20")
    ax_p.set_ylim(0, 1.05)
    for i, (label, c) in enumerate(curves.items()):
        style = dict(color=cmap(i % 20), lw=1.6, ls="-" if i < 10 else "--", label=label)
        ax_p.plot(c["lam"], c["density"], **style)
        ax_l.plot(c["t"], c["logsnr"], **style)
    ax_p.set(xlabel="λ = log SNR", ylabel="p(λ) for t ~ U(0, 1)", title="Noise-level density p(λ)")
    ax_l.set(xlabel="t (0 clean, 1 noise)", ylabel="λ(t)", title="Schedule λ(t)", ylim=(-15, 15))
    for ax in (ax_p, ax_l):
        ax.grid(alpha=0.3)
    ax_p.legend(fontsize=8, loc="upper left")
    fig.suptitle("jaxdiff.noise schedules")
    fig.tight_layout()
    fig.savefig(out, dpi=120)
    plt.close(fig)


USAGE = "python -m jaxdiff.noise.plot [--out=schedules.png] [--schedules=cosine,laplace,...]"


def _define(fv: flags.FlagValues) -> None:
    flags.DEFINE_string("out", "schedules.png", "output PNG path", flag_values=fv)
    flags.DEFINE_list("schedules", None, "schedule names (default: all)", flag_values=fv)


def _plot(fv: flags.FlagValues, args: list[str]) -> None:
    del args
    plot_schedules(fv.out, fv.schedules)
    print(f"wrote {fv.out}")


def cli(argv: Sequence[str]) -> int:
    """The command line (``argv[0]`` is the program); returns the exit status."""
    return run(argv, _define, _plot, USAGE, (0, 0))


if __name__ == "__main__":
    sys.exit(cli(sys.argv))
