"""Diagnostics outputs: WORKDIR/diagnostics/step_<N>.json and .png, TensorBoard scalars/images.

The JSON holds exactly: step, elbo_bpd, elbo_nats_per_dim, elbo_terms, loss_per_lambda,
grad_var_per_lambda, settings. The PNG draws the held-out losses and the gradient variance
against λ (per-bin values at the bin centres), overlaid with the training schedule's p(λ) and
the objective's weight w(λ) (`diffusion.loss_weight`: w/p in "density" mode), each divided by
its maximum over the plotted range.
"""

from __future__ import annotations

import json
import os
from typing import Any

import jax
import numpy as np

from jaxdiff import noise
from jaxdiff.diffusion import NoiseSpec, loss_weight

JSON_KEYS = (
    "step",
    "elbo_bpd",
    "elbo_nats_per_dim",
    "elbo_terms",
    "loss_per_lambda",
    "grad_var_per_lambda",
    "settings",
)


def output_path(workdir: str, step: int, ext: str, stem: str | None = None) -> str:
    """WORKDIR/diagnostics/<stem>.<ext>, the stem step_<N> by default."""
    stem = f"step_{int(step)}" if stem is None else stem
    return os.path.join(os.path.abspath(workdir), "diagnostics", f"{stem}.{ext}")


def free_stem(workdir: str, step: int) -> str:
    """The file stem for a new diagnosis of `step`: step_<N>, or step_<N>_<k> (k = 1, 2, …)
    when an earlier diagnosis of the same step is there (training's periodic one, then
    `--mode=diagnose` with other settings), so no result is ever overwritten."""
    stem, k = f"step_{int(step)}", 0
    while any(os.path.exists(output_path(workdir, step, e, stem)) for e in ("json", "png")):
        k += 1
        stem = f"step_{int(step)}_{k}"
    return stem


def write_json(result: dict[str, Any], workdir: str, step: int, stem: str | None = None) -> str:
    """Writes the result (keys JSON_KEYS) to `output_path` and returns the path."""
    missing = [k for k in JSON_KEYS if k not in result]
    if missing or set(result) != set(JSON_KEYS):
        raise ValueError(
            f"diagnostics result must have exactly {list(JSON_KEYS)}; got {sorted(result)}"
        )
    path = output_path(workdir, step, "json", stem)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w") as f:
        json.dump({k: result[k] for k in JSON_KEYS}, f, indent=1)
    return path


def schedule_overlay(
    spec: NoiseSpec, lo: float, hi: float, num: int = 400
) -> dict[str, np.ndarray]:
    """λ_eff grid on [lo, hi] with p(λ) of the (input-scaled) training schedule and the
    objective's weight w(λ), both divided by their maximum on the grid."""
    lam = np.linspace(lo, hi, num)
    lam_u = lam - noise.logsnr_shift(spec.input_scale)

    def curves(lam_eff, lam_u):
        return spec.effective_schedule.density(lam_eff), loss_weight(spec, lam_u, lam_eff)

    p, w = (np.asarray(a, np.float64) for a in jax.jit(curves)(lam, lam_u))
    norm = lambda a: a / a.max() if np.isfinite(a).all() and a.max() > 0 else a  # noqa: E731
    return {"lam": lam, "p": norm(p), "w": norm(w)}


def _overlay(ax, overlay: dict[str, np.ndarray], spec: NoiseSpec) -> None:
    twin = ax.twinx()
    twin.plot(overlay["lam"], overlay["p"], color="0.45", ls="--", lw=1.2, label="p(λ) ÷ max")
    mode = "w/p" if spec.weight_mode == "density" else "w"
    twin.plot(overlay["lam"], overlay["w"], color="tab:purple", ls=":", lw=1.5,
              label=f"{mode}(λ) {spec.weighting.name} ({spec.target}) ÷ max")  # fmt: skip
    twin.set_yscale("log")
    twin.set_ylim(1e-4, 2.0)
    twin.set_ylabel("schedule / weight (relative)")
    twin.legend(fontsize=7, loc="lower right")


def figure_image(result: dict[str, Any], spec: NoiseSpec) -> np.ndarray:
    """The two-panel plot (loss per λ, gradient variance per λ) as an HWC uint8 image."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = result["loss_per_lambda"]
    lam = np.array([(r["lam_lo"] + r["lam_hi"]) / 2 for r in rows])
    overlay = schedule_overlay(spec, rows[0]["lam_lo"], rows[-1]["lam_hi"])
    fig, (ax_l, ax_g) = plt.subplots(1, 2, figsize=(12, 4.2), dpi=90)
    styles = {
        "mse_eps": dict(color="tab:blue", marker="."),
        "mse_x0": dict(color="tab:orange", marker="."),
        "mse_v": dict(color="tab:green", marker="."),
        "weighted": dict(color="tab:red", marker="o", ls="--", mfc="none", ms=4),
    }
    for key, style in styles.items():
        ax_l.plot(lam, [r[key] for r in rows], label=key, **style)
    ax_l.set(xlabel="λ = log SNR (as the network sees it)", ylabel="held-out loss", yscale="log")
    ax_l.set_title(f"held-out loss per λ — ELBO {result['elbo_bpd']:.4f} bits/dim", fontsize=10)
    ax_l.legend(fontsize=7, loc="upper left")
    _overlay(ax_l, overlay, spec)
    grad = result["grad_var_per_lambda"]
    if grad:
        g_lam = [(r["lam_lo"] + r["lam_hi"]) / 2 for r in grad]
        ax_g.plot(g_lam, [r["grad_var"] for r in grad], marker=".", color="tab:red")
        ax_g.set_yscale("log")
    ax_g.set(xlabel="λ = log SNR", ylabel="tr Cov of per-example gradients")
    ax_g.set_title("gradient variance per λ", fontsize=10)
    _overlay(ax_g, overlay, spec)
    fig.suptitle(f"step {result['step']}", fontsize=10)
    fig.tight_layout()
    fig.canvas.draw()
    image = np.asarray(fig.canvas.buffer_rgba())[..., :3].copy()
    plt.close(fig)
    return image


def write_png(image: np.ndarray, workdir: str, step: int, stem: str | None = None) -> str:
    """Writes the figure image to `output_path` (step_<N>.png by default), returns the path."""
    from PIL import Image

    path = output_path(workdir, step, "png", stem)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    Image.fromarray(image).save(path)
    return path


def tensorboard_scalars(result: dict[str, Any]) -> dict[str, float]:
    """diagnostics/elbo_bpd, diagnostics/elbo_nats_per_dim and diagnostics/elbo_<term>."""
    out = {
        "diagnostics/elbo_bpd": result["elbo_bpd"],
        "diagnostics/elbo_nats_per_dim": result["elbo_nats_per_dim"],
    }
    out.update({f"diagnostics/elbo_{k}": v for k, v in result["elbo_terms"].items()})
    return {k: float(v) for k, v in out.items()}


def write_tensorboard(writer: Any, step: int, result: dict[str, Any], image: np.ndarray) -> None:
    """Scalars and the figure through a metric writer (`jaxdiff.training.tensorboard`)."""
    writer.write_scalars(int(step), tensorboard_scalars(result))
    writer.write_images(int(step), {"diagnostics/per_lambda": image[None]})
    writer.flush()
