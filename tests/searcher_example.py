"""A second adaptive searcher, written as a user would: this one file, and its name in
ecg_ray.config.constraints.ADAPTIVE_SEARCHERS (tests/test_optuna.py registers it for a test).

Local search: the first batch draws at random from the seed; each later batch perturbs the best
draw so far (a step of a tenth of each range), seeded by (seed, batch), so a batch is a pure
function of the seed, the batch number and the results before it, which is what ecg_ray's batched
searcher needs to record, resume and reproduce it.
"""

from __future__ import annotations

import random


def suggest_batch(space, seed: int, batch: int, n: int, history: list[tuple[dict, float | None]]) -> list[dict]:
    rng = random.Random(f"local {seed} {batch}")
    scored = [(value, draw) for draw, value in history if value is not None]
    best = max(scored, key=lambda vd: vd[0])[1] if scored else None
    seen = {tuple(sorted(d.items())) for d, _ in history}
    out = []
    for _ in range(100 * n):
        draw = {}
        for key, name, args in space.distributions:
            if name == "choice":
                draw[key] = rng.choice(args)
            elif best is None:
                draw[key] = round(rng.uniform(args[0], args[1]), 6)
            else:
                step = (args[1] - args[0]) / 10
                draw[key] = round(min(max(best[key] + rng.uniform(-step, step), args[0]), args[1]), 6)
        signature = tuple(sorted(draw.items()))
        if signature not in seen:
            seen.add(signature)
            out.append(draw)
        if len(out) == n:
            break
    return out
