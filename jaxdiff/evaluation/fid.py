"""Fréchet Inception Distance with the JAX Inception port (Heusel et al. 2017, arXiv:1706.08500).

FID = ‖μ₁ − μ₂‖² + Tr(Σ₁ + Σ₂ − 2·(Σ₁Σ₂)^{1/2}) between Gaussians fitted to the 2048-d
pool features of two image sets. Statistics files are `.npz` with `mu` (D,) and `sigma`
(D, D), as written by pytorch-fid (`--save-stats`) and found in ADM's reference batches.

    python -m jaxdiff.evaluation.fid stats --weights PT_INCEPTION.pth --images IMAGES.npz \
        --out STATS.npz
    python -m jaxdiff.evaluation.fid distance A.npz B.npz     # prints the FID as the last line
    python -m jaxdiff.evaluation.fid precision_recall --weights W REAL.npz FAKE.npz
"""

from __future__ import annotations

import functools
import os
import sys
import warnings
from collections.abc import Iterable, Iterator, Mapping

import jax
import jax.numpy as jnp
import numpy as np
import scipy.linalg
import scipy.special
from absl import flags
from tqdm import tqdm

from jaxdiff.cli import run
from jaxdiff.evaluation import inception, inception_convert
from jaxdiff.evaluation.precision_recall import precision_recall


class InceptionFeatures:
    """Jitted, batched FID Inception feature extractor.

    Call it on NHWC images, uint8 or float in [0, 255] (any H, W; 1 or 3 channels), to get
    float32 pool features (B, 2048); `features_and_logits` also returns the 1008 logits.
    `weights_path` is pytorch-fid's `.pth` or the port's `.npz` (see `inception_convert`).
    The params are left uncommitted, so a batch that is already a sharded `jax.Array` (e.g.
    samples sharded over a mesh) is processed where it lies.
    """

    def __init__(
        self,
        weights_path: str | os.PathLike | None = None,
        *,
        params: Mapping | None = None,
        precision: inception.PrecisionLike = "highest",
    ):
        if (weights_path is None) == (params is None):
            raise ValueError("give exactly one of weights_path or params")
        params = inception_convert.load_params(weights_path) if params is None else params
        self.precision = precision
        self.params = jax.device_put(params)

    def features_and_logits(self, images: np.ndarray | jax.Array) -> tuple[np.ndarray, np.ndarray]:
        """Pool features (B, 2048) and logits (B, 1008) as float32 NumPy arrays."""
        images = jnp.asarray(images)
        if images.ndim != 4 or images.shape[-1] not in (1, 3):
            raise ValueError(f"images must be NHWC with 1 or 3 channels, got {images.shape}")
        pool, logits = _inception_forward(self.params, images, self.precision)
        return np.asarray(pool), np.asarray(logits)

    def __call__(self, images: np.ndarray | jax.Array) -> np.ndarray:
        """Pool features (B, 2048), float32."""
        return self.features_and_logits(images)[0]

    def unbiased_logits(self, logits: np.ndarray) -> np.ndarray:
        """Logits without the fc bias: the original Inception Score code's `pool @ W`."""
        return np.asarray(logits) - np.asarray(self.params["fc"]["bias"])

    def iterate(
        self, images: np.ndarray, batch_size: int = 50, progress: bool = False
    ) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        """Yield (features, logits) over `images` (N, H, W, C) in batches of `batch_size`.

        The last batch is padded to `batch_size` (and cut back), so only one shape compiles.
        """
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        starts = range(0, len(images), batch_size)
        if progress:
            starts = tqdm(starts, desc="Inception features", unit="batch")
        for start in starts:
            batch = np.asarray(images[start : start + batch_size])
            n = len(batch)
            if n < batch_size:
                batch = np.concatenate([batch, np.repeat(batch[-1:], batch_size - n, axis=0)])
            pool, logits = self.features_and_logits(batch)
            yield pool[:n], logits[:n]


@functools.partial(jax.jit, static_argnames="precision")
def _inception_forward(
    params: Mapping, images: jax.Array, precision: inception.PrecisionLike
) -> tuple[jax.Array, jax.Array]:
    """[0, 255] NHWC → (pool (B, 2048), logits (B, 1008)); grey images are repeated to RGB.

    Module-level so that every extractor shares one compilation cache.
    """
    x = images.astype(jnp.float32) / 255.0
    if x.shape[-1] == 1:
        x = jnp.repeat(x, 3, axis=-1)
    return inception.FIDInceptionV3(precision=precision).apply({"params": params}, x)


def load_inception(weights_path: str | os.PathLike, **kwargs) -> InceptionFeatures:
    """`InceptionFeatures(weights_path, **kwargs)`."""
    return InceptionFeatures(weights_path, **kwargs)


class RunningStatistics:
    """Mean and covariance of feature batches, accumulated in float64.

    Batches are merged with Chan et al.'s pairwise update: for a batch with n_b rows,
    mean m_b and scatter M_b = Σ(x − m_b)(x − m_b)ᵀ, δ = m_b − m,
    m ← m + δ·n_b/n,  M ← M + M_b + δδᵀ·n_a·n_b/n. Covariance = M / (n − 1) (like np.cov).
    """

    def __init__(self) -> None:
        self.count = 0
        self.mean: np.ndarray | None = None
        self.scatter: np.ndarray | None = None

    def update(self, features: np.ndarray) -> None:
        """Add a batch (B, D) of features."""
        x = np.asarray(features, np.float64)
        if x.ndim != 2:
            raise ValueError(f"features must be (batch, dim), got shape {x.shape}")
        if len(x) == 0:
            return
        mean_b = x.mean(axis=0)
        centred = x - mean_b
        scatter_b = centred.T @ centred
        if self.mean is None:
            self.count, self.mean, self.scatter = len(x), mean_b, scatter_b
            return
        if x.shape[1] != self.mean.shape[0]:
            raise ValueError(f"feature dim {x.shape[1]} != {self.mean.shape[0]} seen before")
        n_a, n_b = self.count, len(x)
        n = n_a + n_b
        delta = mean_b - self.mean
        self.mean = self.mean + delta * (n_b / n)
        self.scatter = self.scatter + scatter_b + np.outer(delta, delta) * (n_a * n_b / n)
        self.count = n

    def finalize(self) -> tuple[np.ndarray, np.ndarray]:
        """(mu (D,), sigma (D, D)) in float64; needs at least 2 rows."""
        if self.count < 2:
            raise ValueError(f"need at least 2 feature rows for a covariance, got {self.count}")
        return self.mean.copy(), self.scatter / (self.count - 1)


def compute_statistics(
    features: np.ndarray | Iterable[np.ndarray],
) -> tuple[np.ndarray, np.ndarray]:
    """(mu, sigma) float64 of features (N, D) or of an iterable of (B, D) batches."""
    stats = RunningStatistics()
    if isinstance(features, np.ndarray | jax.Array):
        features = [features]
    for batch in features:
        stats.update(batch)
    return stats.finalize()


FD_METHODS = ("sqrtm", "eigh")


def frechet_distance(
    mu1: np.ndarray,
    sigma1: np.ndarray,
    mu2: np.ndarray,
    sigma2: np.ndarray,
    eps: float = 1e-6,
    method: str = "sqrtm",
) -> float:
    """Fréchet distance ‖μ₁−μ₂‖² + Tr Σ₁ + Tr Σ₂ − 2·Tr (Σ₁Σ₂)^{1/2} between two Gaussians.

    method "sqrtm" (default, the number pytorch-fid and ADM's evaluator report): `scipy.linalg.
    sqrtm` of Σ₁Σ₂ in float64; if the root is not finite (singular product), `eps·I` is added
    to both covariances; a complex root whose diagonal has an imaginary part above 1e-3
    raises ValueError, otherwise the real part is kept. method "eigh": Tr (Σ₁Σ₂)^{1/2} =
    Σᵢ √λᵢ(Σ₁^{1/2} Σ₂ Σ₁^{1/2}) with symmetric eigendecompositions (faster, exact for
    singular covariances, negative round-off eigenvalues clipped to 0).
    """
    if method not in FD_METHODS:
        raise ValueError(f"method must be one of {FD_METHODS}, got {method!r}")
    mu1, mu2 = (np.atleast_1d(np.asarray(m, np.float64)) for m in (mu1, mu2))
    s1, s2 = (np.atleast_2d(np.asarray(s, np.float64)) for s in (sigma1, sigma2))
    if mu1.shape != mu2.shape or s1.shape != s2.shape or s1.shape != mu1.shape * 2:
        raise ValueError(f"shape mismatch: mu {mu1.shape}/{mu2.shape}, sigma {s1.shape}/{s2.shape}")
    diff = mu1 - mu2
    if method == "eigh":
        tr_covmean = _trace_sqrt_product_eigh(s1, s2)
    else:
        tr_covmean = _trace_sqrt_product_sqrtm(s1, s2, eps)
    return float(diff @ diff + np.trace(s1) + np.trace(s2) - 2.0 * tr_covmean)


def _trace_sqrt_product_sqrtm(s1: np.ndarray, s2: np.ndarray, eps: float) -> float:
    """Tr sqrtm(Σ₁Σ₂) with the eps·I fallback and the imaginary-part check (see above)."""
    covmean = _sqrtm(s1 @ s2)
    if not np.isfinite(covmean).all():
        warnings.warn(f"singular covariance product; adding {eps} to the diagonals", stacklevel=3)
        offset = np.eye(s1.shape[0]) * eps
        covmean = _sqrtm((s1 + offset) @ (s2 + offset))
    if np.iscomplexobj(covmean):
        if not np.allclose(np.diagonal(covmean).imag, 0.0, atol=1e-3):
            raise ValueError(f"imaginary component {np.max(np.abs(covmean.imag))} in sqrtm")
        covmean = covmean.real
    return float(np.trace(covmean))


def _sqrtm(matrix: np.ndarray) -> np.ndarray:
    """scipy's principal matrix square root, quietly (its singularity warnings are handled)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return scipy.linalg.sqrtm(matrix)


def _trace_sqrt_product_eigh(s1: np.ndarray, s2: np.ndarray) -> float:
    """Tr (Σ₁Σ₂)^{1/2} = Σ √λ(Σ₁^{1/2} Σ₂ Σ₁^{1/2}): Σ₁Σ₂ is similar to that PSD matrix."""
    w, v = np.linalg.eigh((s1 + s1.T) / 2)
    root1 = (v * np.sqrt(np.clip(w, 0.0, None))) @ v.T
    inner = root1 @ s2 @ root1
    lam = np.linalg.eigvalsh((inner + inner.T) / 2)
    return float(np.sum(np.sqrt(np.clip(lam, 0.0, None))))


def inception_score(logits: np.ndarray, splits: int = 10) -> tuple[float, float]:
    """Inception Score exp(E_x KL(p(y|x) ‖ p(y))): mean and std over `splits` chunks.

    p(y|x) = softmax(logits) over the 1008 classes (Salimans et al. 2016, arXiv:1606.03498);
    the original code uses logits without the fc bias (`InceptionFeatures.unbiased_logits`).
    """
    logits = np.asarray(logits, np.float64)
    if splits < 1 or len(logits) < splits:
        raise ValueError(f"splits must be in [1, {len(logits)}], got {splits}")
    log_p = logits - scipy.special.logsumexp(logits, axis=1, keepdims=True)
    scores = []
    for chunk in np.array_split(log_p, splits):
        log_py = scipy.special.logsumexp(chunk, axis=0) - np.log(len(chunk))
        kl = np.sum(np.exp(chunk) * (chunk - log_py), axis=1)
        scores.append(np.exp(kl.mean()))
    return float(np.mean(scores)), float(np.std(scores))


def save_stats(path: str | os.PathLike, mu: np.ndarray, sigma: np.ndarray, **extra) -> None:
    """Write `mu`, `sigma` (and any `extra` arrays) to an `.npz` readable by pytorch-fid."""
    np.savez(os.fspath(path), mu=np.asarray(mu), sigma=np.asarray(sigma), **extra)


def load_stats(path: str | os.PathLike) -> tuple[np.ndarray, np.ndarray]:
    """(mu, sigma) float64 from a pytorch-fid stats file or an ADM reference batch `.npz`."""
    with np.load(os.fspath(path), allow_pickle=False) as f:
        if "mu" not in f.files or "sigma" not in f.files:
            raise ValueError(f"{path} has no 'mu'/'sigma' arrays (keys: {sorted(f.files)})")
        return np.asarray(f["mu"], np.float64), np.asarray(f["sigma"], np.float64)


def has_images(path: str | os.PathLike) -> bool:
    """Whether an `.npz` holds images under `images` or `arr_0` (ADM reference batches do)."""
    with np.load(os.fspath(path), allow_pickle=False) as f:
        return any(k in f.files for k in ("images", "arr_0"))


def load_images(path: str | os.PathLike) -> np.ndarray:
    """uint8 images N×H×W×C from an `.npz` under the key `images` (or `arr_0`)."""
    with np.load(os.fspath(path), allow_pickle=False) as f:
        key = next((k for k in ("images", "arr_0") if k in f.files), None)
        if key is None:
            raise ValueError(f"{path} has no 'images' or 'arr_0' array (keys: {sorted(f.files)})")
        images = f[key]
    if images.ndim != 4 or images.shape[-1] not in (1, 3):
        raise ValueError(f"{path}: images must be N×H×W×3 (or ×1), got {images.shape}")
    return images


def image_statistics(
    extractor: InceptionFeatures, images: np.ndarray, batch_size: int = 50, progress: bool = False
) -> dict[str, np.ndarray | float]:
    """FID statistics of uint8 NHWC `images`: {"mu", "sigma", "is_mean", "is_std"}."""
    stats = RunningStatistics()
    logits = []
    for pool, batch_logits in extractor.iterate(images, batch_size, progress):
        stats.update(pool)
        logits.append(extractor.unbiased_logits(batch_logits))
    mu, sigma = stats.finalize()
    is_mean, is_std = inception_score(np.concatenate(logits), splits=min(10, stats.count))
    return {"mu": mu, "sigma": sigma, "is_mean": is_mean, "is_std": is_std}


USAGE = """python -m jaxdiff.evaluation.fid COMMAND ...
  stats --weights=PTH --images=IMAGES.npz --out=STATS.npz [--batch_size=50]
  distance A.npz B.npz                       (prints the FID as the last line)
  precision_recall --weights=PTH REAL.npz FAKE.npz [--k=3] [--batch_size=50]"""
_POSITIONAL = {"stats": 0, "distance": 2, "precision_recall": 2}


def _define(fv: flags.FlagValues) -> None:
    f = dict(flag_values=fv)
    flags.DEFINE_string("weights", None, "pytorch-fid .pth or the port's .npz", **f)
    flags.DEFINE_string("images", None, "stats: .npz with uint8 N×H×W×3 images", **f)
    flags.DEFINE_string("out", None, "stats: output .npz with mu and sigma", **f)
    flags.DEFINE_integer("batch_size", 50, "Inception batch size", **f)
    flags.DEFINE_integer("k", 3, "precision_recall: neighbourhood size", **f)


def _command(fv: flags.FlagValues, args: list[str]) -> None:
    command, rest = (args[0], args[1:]) if args else ("", [])
    if command not in _POSITIONAL or len(rest) != _POSITIONAL[command]:
        raise flags.Error(f"unknown command or wrong arguments {args}")
    if command == "distance":
        print(f"{frechet_distance(*load_stats(rest[0]), *load_stats(rest[1])):.6f}")
        return
    if not fv.weights or (command == "stats" and not (fv.images and fv.out)):
        raise flags.Error(
            f"{command} needs --weights" + (", --images and --out" * (command == "stats"))
        )
    extractor = InceptionFeatures(fv.weights)
    if command == "precision_recall":
        feats = [
            np.concatenate([f for f, _ in extractor.iterate(load_images(p), fv.batch_size)])
            for p in rest
        ]
        precision, recall = precision_recall(*feats, k=fv.k)
        print(f"precision {precision:.6f}\nrecall {recall:.6f}")
        return
    images = load_images(fv.images)
    result = image_statistics(extractor, images, fv.batch_size, progress=True)
    save_stats(fv.out, result["mu"], result["sigma"])
    print(f"wrote {fv.out}: {len(images)} images, Inception Score {result['is_mean']:.4f}")


def cli(argv: list[str]) -> int:
    """The command line (``argv[0]`` is the program); returns the exit status."""
    return run(argv, _define, _command, USAGE, (1, 3))


if __name__ == "__main__":
    sys.exit(cli(sys.argv))
