"""What ``jaxdiff.main`` runs for the modes of training: train, sample, evaluate (diagnose
belongs to ``jaxdiff.diagnostics``, above training)."""

from __future__ import annotations

import json
import os

import jax
import numpy as np

from jaxdiff.errors import ConfigError
from jaxdiff.evaluation import fid
from jaxdiff.evaluation.precision_recall import precision_recall
from jaxdiff.training import generate, loop, outputs
from jaxdiff.training.workdir import MetricsLog


def run(
    config,
    workdir: str,
    *,
    mode: str = "train",
    num_samples=None,
    fid_stats=None,
    inception_weights=None,
    diagnose=None,
):
    """Runs ``mode``; ``diagnose`` is the training loop's periodic-diagnosis hook."""
    if mode == "train":
        summary = loop.train(config, workdir, diagnose=diagnose)
        _print_locations(summary["workdir"], summary)
        return summary
    if mode == "sample":
        return sample(config, workdir, num_samples or int(config.sampling.num_grid))
    if mode == "evaluate":
        return evaluate(config, workdir, num_samples, fid_stats, inception_weights)
    raise ConfigError("--mode", f"unknown {mode!r}", "train, sample, evaluate")


def _print_locations(workdir: str, summary: dict | None = None):
    if jax.process_index() != 0:
        return
    lines = [
        "",
        f"Work dir:     {workdir}",
        f"Checkpoints:  {os.path.join(workdir, 'checkpoints')}",
        f"Metrics:      {os.path.join(workdir, 'metrics.jsonl')}",
        f"TensorBoard:  tensorboard --logdir {workdir}",
        f"Samples:      {os.path.join(workdir, 'samples')}",
    ]
    if summary:
        lines.insert(1, _summary_line(summary))
    print("\n".join(lines), flush=True)


def _summary_line(summary: dict) -> str:
    """``Finished at step N: loss L, digits_fd F, ...`` or, after a stop signal, how to resume."""
    m = summary.get("metrics") or {}
    scores = [f"loss {m['train/loss']:.4f}"] if m.get("train/loss") is not None else []
    scores += [f"{k.removeprefix('eval/')} {v:.4g}" for k, v in summary.get("eval", {}).items()]
    text = f": {', '.join(scores)}" if scores else ""
    if summary.get("stopped"):
        return (
            f"Stopped by {summary['stopped']} at step {summary['step']}{text}. "
            "Run the same command again to resume."
        )
    return f"Finished at step {summary['step']}{text}"


def _progress(total: int, desc: str):
    from tqdm.auto import tqdm

    return tqdm(total=total, desc=desc, unit="img", disable=jax.process_index() != 0)


def sample(config, workdir: str, num_samples: int) -> dict:
    """Writes ``samples/sample_<step>_<settings>.png`` and ``.npz`` (uint8 ``images``,
    ``labels``), e.g. ``sample_0001000_ddim50_cfg1.5.png``; never overwrites a file (a
    ``_2``, ``_3``, ... suffix is added)."""
    exp, state, step = outputs.restore_for_inference(config, workdir)
    key = jax.random.fold_in(jax.random.key(config.seed), 0x5A3E)
    with _progress(num_samples, "sample") as bar:
        images, labels = generate.sample_many(
            exp, generate.sampling_params(state), key, num_samples, progress=bar, uint8=True
        )
    out = os.path.join(os.path.abspath(workdir), "samples")
    paths = {}
    if jax.process_index() == 0:
        os.makedirs(out, exist_ok=True)
        tag = outputs.settings_tag(config)
        stem = outputs.free_stem(os.path.join(out, f"sample_{step:07d}_{tag}"))
        paths["png"] = generate.save_grid(images[:256], stem + ".png")
        paths["npz"] = stem + ".npz"
        np.savez(paths["npz"], images=images, labels=labels)
        print(f"Wrote {num_samples} samples: {paths['png']} and {paths['npz']}", flush=True)
    return {"step": step, **paths}


def evaluate(
    config, workdir: str, num_samples=None, fid_stats=None, inception_weights=None
) -> dict:
    """FID / Inception Score against ``fid_stats`` and the dataset's quality metric (digits,
    photo_crops: ``jaxdiff.evaluation.quality``), with a progress bar.

    Appends one ``metrics.jsonl`` row at the checkpoint's step: the scores under ``eval/...``
    and the sampler settings under ``settings`` (``mode: "evaluate"``, method, steps,
    guidance, ...), so it is told apart from training-time evaluations and other settings.
    """
    fid_stats = fid_stats or config.eval.fid_stats
    if not outputs.has_quality_metric(config) and not fid_stats:
        raise ConfigError(
            "--fid_stats",
            f"data {config.data.name!r} has no built-in quality metric",
            "a reference statistics file REF.npz (with --inception_weights) for FID",
        )
    exp, state, step = outputs.restore_for_inference(config, workdir)
    results = {}
    num_quality = int(num_samples or config.eval.quality_num_samples)
    num_fid = int(num_samples or config.eval.num_samples)
    if outputs.has_quality_metric(config):
        with _progress(num_quality, f"evaluate {config.data.name}") as bar:
            results.update(outputs.evaluate_quality(exp, state, workdir, num_quality, bar))
    if fid_stats:
        weights = inception_weights or config.eval.inception_weights
        results.update(_fid(exp, state, num_fid, fid_stats, weights))
    settings = outputs.sampling_settings(config, num_fid if fid_stats else num_quality, "evaluate")
    if fid_stats and outputs.has_quality_metric(config):
        settings["quality_num_samples"] = num_quality
    logs = MetricsLog(os.path.abspath(workdir), primary=jax.process_index() == 0, tensorboard=False)
    logs.write(step, results, settings=settings)
    if jax.process_index() == 0:
        row = {"step": step, **{k: float(v) for k, v in results.items()}, "settings": settings}
        print(json.dumps(row, indent=1), flush=True)
    return results


def _fid(exp, state, num: int, stats_path: str, weights: str) -> dict:
    if not weights:
        raise ConfigError(
            "eval.inception_weights",
            "the pytorch-fid Inception weights are required for FID",
            "a path (python -m jaxdiff.evaluation.inception_convert writes one)",
        )
    key = jax.random.fold_in(jax.random.key(exp.config.seed), 0xF1D)
    extractor = fid.load_inception(weights)
    running, logits, pools = fid.RunningStatistics(), [], []
    params = generate.sampling_params(state)
    # Streamed: each batch of samples goes through Inception and is dropped (50K ImageNet-256
    # samples would take 39 GB as floats). FID uses uint8 images, as pytorch-fid / ADM do.
    with _progress(num, "evaluate") as bar:
        width = None  # one Inception batch shape: the first sample batch's
        for images, _ in generate.iter_samples(exp, params, key, num):
            width = width or len(images)
            for pool, batch_logits in extractor.iterate(generate.to_uint8(images), width):
                running.update(pool)
                pools.append(pool)
                logits.append(extractor.unbiased_logits(batch_logits))
            bar.update(len(images))
    mu_gen, sigma_gen = running.finalize()
    mu, sigma = fid.load_stats(stats_path)
    is_mean, _ = fid.inception_score(np.concatenate(logits), splits=min(10, running.count))
    out = {
        "eval/fid": fid.frechet_distance(mu_gen, sigma_gen, mu, sigma),
        "eval/inception_score": is_mean,
    }
    reference = fid.load_images(stats_path) if fid.has_images(stats_path) else None
    if reference is not None:  # an ADM reference batch carries its images: precision/recall
        batches = extractor.iterate(reference, width or 50, progress=True)
        real = np.concatenate([f for f, _ in batches])
        out["eval/precision"], out["eval/recall"] = precision_recall(real, np.concatenate(pools))
    return out
