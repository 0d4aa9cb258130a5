"""A study's claims, declared before it runs, and their evaluation on the learning curves.

A :class:`Claim` names the paper's statement as a comparison between two cells (arms) of a
study's grid; the Holm correction of :func:`evaluate` covers exactly the list a study declares
(``Study.claims``), whatever subset a grid can evaluate. Every claim says the arm is better
than the baseline in the paper; ``direction`` says which way is better for its metric.

Kinds (what is compared, per seed, then tested over seeds by :func:`stats.paired_test`):
- ``final``: the metric at the last step that every run of the two arms evaluated;
- ``at_step``: the metric at ``step``;
- ``equal_wallclock``: both runs' metric at the same training wall-clock w* = the smaller of the
  two runs' final wall-clocks, each interpolated linearly in log(wall-clock) between its
  evaluations — the equal-compute comparison of arms that cost differently per step;
- ``steps_to_target``: the steps each run needs to reach ``target`` (:func:`stats.steps_to_target`),
  the effect the speed-up baseline/arm (:func:`stats.speedup`);
- ``trend``: ``arm`` and ``baseline`` are parameter settings ("b=0.35"), ``across`` a cell
  parameter ("size"); per seed, the least-squares slope of log(metric(arm) / metric(baseline))
  against log2(across); direction "lower" says the arm gains on the baseline as ``across`` grows
  (e.g. small input scales b gain on large ones as the resolution grows).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence

import numpy as np

from experiments import stats

KINDS = ("final", "at_step", "equal_wallclock", "steps_to_target", "trend")
DIRECTIONS = ("lower", "higher")


@dataclasses.dataclass(frozen=True)
class Claim:
    """A paper's claim: ``arm`` beats ``baseline`` on ``metric`` (cell names, or for a trend
    parameter settings), the better way being ``direction``."""

    name: str  # short, unique within a study, e.g. "laplace<cosine fd"
    paper: str  # the paper's statement and number, e.g. "Hang et al. 2024 Tab. 2: 7.96 vs 10.85"
    metric: str  # a metrics.jsonl key, e.g. "eval/digits_fd"
    arm: str
    baseline: str
    direction: str = "lower"  # "lower" | "higher": the better direction of the metric
    kind: str = "final"
    target: float | None = None  # steps_to_target: the quality to reach
    step: int | None = None  # at_step: the step compared
    across: str | None = None  # trend: the cell parameter the effect trends over

    def __post_init__(self):
        if self.kind not in KINDS:
            raise ValueError(f"claim {self.name!r}: kind must be one of {KINDS}, got {self.kind!r}")
        if self.direction not in DIRECTIONS:
            raise ValueError(f"claim {self.name!r}: direction must be one of {DIRECTIONS}")
        needs = {"steps_to_target": "target", "at_step": "step", "trend": "across"}
        if self.kind in needs and getattr(self, needs[self.kind]) is None:
            raise ValueError(f"claim {self.name!r}: kind {self.kind!r} needs {needs[self.kind]}")

    @property
    def sign(self) -> int:
        """The sign of arm − baseline that the paper predicts (+1 for a speed-up > 1)."""
        if self.kind == "steps_to_target":
            return 1
        return -1 if self.direction == "lower" else 1


# ------------------------------------------------------------------------ curve access
def series(curves: Sequence[dict], cell: str, seed: int, metric: str) -> dict:
    """step -> (wall_s, value) of one run's evaluations of ``metric`` (curves.csv rows)."""
    return {
        int(c["step"]): (c.get("wall_s"), float(c["value"]))
        for c in curves
        if c["cell"] == cell and int(c["seed"]) == seed and c["metric"] == metric
    }


def _seeds(curves: Sequence[dict], cells: Sequence[str], metric: str) -> list[int]:
    """Seeds at which every one of ``cells`` has an evaluation of ``metric``."""
    have = [
        {int(c["seed"]) for c in curves if c["cell"] == x and c["metric"] == metric} for x in cells
    ]
    return sorted(set.intersection(*have)) if have else []


def _interp_log(x: float, xs: Sequence[float], ys: Sequence[float]) -> float:
    return float(np.interp(math.log(x), np.log(np.asarray(xs, np.float64)), ys))


# ------------------------------------------------------------------------- evaluation
def _paired_values(claim: Claim, curves: Sequence[dict]) -> tuple[list[int], np.ndarray, str]:
    """(seeds, seeds × [arm, baseline] values, note) for the kinds compared at one point."""
    seeds = _seeds(curves, (claim.arm, claim.baseline), claim.metric)
    runs = [
        [series(curves, c, s, claim.metric) for c in (claim.arm, claim.baseline)] for s in seeds
    ]
    if claim.kind in ("final", "at_step"):
        if claim.kind == "final":
            common = set.intersection(*(set(r) for pair in runs for r in pair)) if runs else set()
            step = max(common) if common else None
        else:
            step = claim.step
        keep = [i for i, pair in enumerate(runs) if all(step in r for r in pair)]
        values = np.array([[runs[i][j][step][1] for j in (0, 1)] for i in keep]).reshape(-1, 2)
        return [seeds[i] for i in keep], values, f"at step {step}" if step else "no common step"
    # equal_wallclock
    out, walls = [], []
    for pair in runs:
        curves_w = [sorted((w, v) for w, v in r.values() if w) for r in pair]
        if not all(curves_w):
            out.append(None)
            continue
        w = min(c[-1][0] for c in curves_w)
        if any(w < c[0][0] for c in curves_w):
            out.append(None)  # one run's first evaluation comes after the other's last
            continue
        walls.append(w)
        out.append([_interp_log(w, [p[0] for p in c], [p[1] for p in c]) for c in curves_w])
    keep = [i for i, v in enumerate(out) if v is not None]
    values = np.array([out[i] for i in keep], np.float64).reshape(-1, 2)
    note = f"at equal wall-clock (mean {np.mean(walls):.0f} s)" if walls else "no wall-clock"
    return [seeds[i] for i in keep], values, note


def _steps_to_target(claim: Claim, curves: Sequence[dict]) -> tuple[list[int], list, dict]:
    seeds = _seeds(curves, (claim.arm, claim.baseline), claim.metric)
    hits = []
    for s in seeds:
        pair = []
        for cell in (claim.arm, claim.baseline):
            r = series(curves, cell, s, claim.metric)
            steps = sorted(r)
            pair.append(
                stats.steps_to_target(
                    steps,
                    [r[k][1] for k in steps],
                    claim.target,
                    lower_is_better=claim.direction == "lower",
                )
            )
        hits.append(pair)
    sp = stats.speedup([h[1] for h in hits], [h[0] for h in hits])
    return seeds, hits, sp


def _trend_rows(claim: Claim, curves: Sequence[dict]) -> tuple[list[int], list[float], np.ndarray]:
    """(seeds, across values, seeds × across values of log(metric(arm) / metric(baseline)))."""
    cells = sorted({c["cell"] for c in curves})
    parse = lambda name: dict(p.split("=", 1) for p in name.split(","))  # noqa: E731
    want = {side: parse(getattr(claim, side)) for side in ("arm", "baseline")}
    matches: dict = {}
    for cell in cells:
        params = parse(cell)
        for side, kv in want.items():
            if all(params.get(k) == v for k, v in kv.items()) and claim.across in params:
                key = (params[claim.across], side)
                if key in matches:
                    raise ValueError(
                        f"claim {claim.name!r}: {matches[key]} and {cell} both match "
                        f"{getattr(claim, side)!r}; name the other parameters too"
                    )
                matches[key] = cell
    levels = sorted(
        {a for a, side in matches if (a, "arm") in matches and (a, "baseline") in matches},
        key=float,
    )
    pairs = [(matches[(a, "arm")], matches[(a, "baseline")]) for a in levels]
    seeds = _seeds(curves, [c for p in pairs for c in p], claim.metric) if pairs else []
    rows = []
    for s in seeds:
        row = []
        for arm, base in pairs:
            ra, rb = series(curves, arm, s, claim.metric), series(curves, base, s, claim.metric)
            step = max(set(ra) & set(rb))
            row.append(math.log(ra[step][1] / rb[step][1]))
        rows.append(row)
    return seeds, [float(a) for a in levels], np.array(rows, np.float64)


def evaluate_one(claim: Claim, curves: Sequence[dict]) -> dict:
    """One claim's evaluation, before the correction: a JSON-ready dict with name, paper,
    kind, metric, arm, baseline, n, seeds, effect, lo, hi, interval ("t" or "bootstrap" or
    "bounds"), p, p_t, test, note and, for steps_to_target, per-seed steps and censoring."""
    out = {
        "name": claim.name,
        "paper": claim.paper,
        "kind": claim.kind,
        "metric": claim.metric,
        "arm": claim.arm,
        "baseline": claim.baseline,
        "direction": claim.direction,
        "sign": claim.sign,
    }
    if claim.kind == "steps_to_target":
        seeds, hits, sp = _steps_to_target(claim, curves)
        out.update(
            n=sp["n"],
            seeds=seeds,
            effect=sp["estimate"],
            lo=sp["lo"],
            hi=sp["hi"],
            interval="bootstrap" if sp["resolved"] else "bounds",
            p=sp["p"],
            p_t=math.nan,
            p_exact=sp.get("p_exact", math.nan),
            test=sp["test"],
            resolved=sp["resolved"],
            target=claim.target,
            arm_steps=[h[0] for h in hits],
            baseline_steps=[h[1] for h in hits],
            note=f"speed-up baseline/arm to {claim.metric} "
            f"{'≤' if claim.direction == 'lower' else '≥'} {claim.target:g}",
        )
        # the verdict's sign: log speed-up (bounds: the sign they imply, if any)
        out["log_effect"] = (
            math.log(sp["estimate"])
            if sp["resolved"]
            else 1.0
            if sp["lo"] > 1
            else -1.0
            if sp["hi"] < 1
            else 0.0
        )
        return out
    if claim.kind == "trend":
        seeds, levels, rows = _trend_rows(claim, curves)
        d = stats.slopes(rows, np.log2(levels)) if len(levels) >= 2 and len(rows) else []
        note = (
            f"slope of log({claim.metric}: {claim.arm} / {claim.baseline}) per doubling of "
            f"{claim.across}, over {claim.across} = {', '.join(f'{a:g}' for a in levels)}"
        )
    else:
        seeds, values, note = _paired_values(claim, curves)
        d = values[:, 0] - values[:, 1]
        out["arm_values"], out["baseline_values"] = values[:, 0].tolist(), values[:, 1].tolist()
    test = stats.paired_test(d)
    out.update(
        n=test["n"],
        seeds=list(seeds),
        effect=test["mean"],
        lo=test["lo"],
        hi=test["hi"],
        interval="t",
        p=test["p"],
        p_t=test["p_t"],
        p_exact=test["p_exact"],
        test=test["test"],
        note=note,
        differences=list(map(float, d)),
    )
    out["log_effect"] = test["mean"]
    return out


def evaluate(claims: Sequence[Claim], curves: Sequence[dict]) -> list[dict]:
    """Every declared claim evaluated, with the Holm-adjusted p over all of them (a claim the
    grid cannot evaluate counts as p = 1) and its verdict."""
    names = [c.name for c in claims]
    if len(set(names)) != len(names):
        raise ValueError(f"claim names must be unique, got {names}")
    results = [evaluate_one(c, curves) for c in claims]
    adjusted = stats.holm([r["p"] for r in results])
    for r, adj in zip(results, adjusted, strict=True):
        r["p_holm"] = float(adj) if r["n"] else math.nan
        r["m"] = len(claims)
        r["verdict"] = stats.verdict(r["log_effect"], adj, r["sign"]) if r["n"] else "not run yet"
    return results
