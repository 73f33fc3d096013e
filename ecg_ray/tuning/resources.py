"""What each trial holds and how many run at once: GPUs (whole or packed), CPUs, the Tune driver's
share, trials started ahead of a free slot, and requests no node can ever hold.

    ecg-ray tune experiments/seed_grid.yaml --gpu     # "[ecg-ray] 0.25 GPU per trial (auto: 4 trial(s) per GPU ...)"
"""

from __future__ import annotations

import ray

from ecg_ray.config import ExperimentConfig, RunSettings
from ecg_ray.data.prepare import PreparedData
from ecg_ray.errors import ConfigError
from ecg_ray.tuning import fast_path
from ecg_ray.tuning.trial import train_env

def resolve_use_gpu(cfg: ExperimentConfig) -> bool:
    """resources.use_gpu: 'auto' means a GPU per worker when the cluster has GPUs right now."""
    if cfg.resources.use_gpu == "auto":
        return ray.cluster_resources().get("GPU", 0) > 0
    return bool(cfg.resources.use_gpu)


def _worker_resources(cfg: ExperimentConfig, use_gpu: bool, gpus: float = 1.0) -> dict:
    res = {"CPU": cfg.resources.cpus_per_worker, **cfg.resources.custom_resources_per_worker}
    if use_gpu:
        res["GPU"] = gpus
    return res


# The trial keys whose largest value sizes a trial's memory, for every model (each model reads its own).
SIZE_KEYS = ("hidden_size", "batch_size", "gru_layers", "bidirectional", "conv_channels", "n_fft")


def largest_trials(cfg: ExperimentConfig) -> list:
    """For each model (and model_args) the space tries, its trial at the largest value of each size key
    any trial takes: the trials GPU packing sizes (a grid may compare architectures)."""
    from dataclasses import replace

    space = cfg.search_space
    models = {(t.model, t.model_args): t for t in space.grid(cfg.seed, [{}] if space.adaptive else None)}
    return [replace(t, **{k: space.largest(k) for k in SIZE_KEYS}) for t in models.values()]


def gpu_share(cfg: ExperimentConfig, data: PreparedData) -> tuple[float, str]:
    """(resources.gpus_per_worker, why): the number set, or for 'auto' the packing that fits
    this experiment's trials on the cluster's GPUs (ecg_ray.tuning.packing)."""
    if cfg.resources.gpus_per_worker != "auto":
        return float(cfg.resources.gpus_per_worker), "resources.gpus_per_worker"
    from ecg_ray.tuning.packing import gpu_fraction, gpu_memory_gib, trial_memory_gib, trials_per_gpu

    gib, source = gpu_memory_gib(ray.cluster_resources())
    whole = data.whole["train"].nbytes if data.whole is not None else 0  # a random-crop trial holds it too
    per_trial = max(
        trial_memory_gib(data.x["train"].nbytes + data.y["train"].nbytes + whole, data.x["val"].nbytes + data.y["val"].nbytes,
                         trial, target_length=max(cfg.data.target_length, cfg.search_space.largest("target_length")))
        for trial in largest_trials(cfg)
    )
    n = trials_per_gpu(gib, per_trial)
    return gpu_fraction(n), f"auto: {n} trial(s) per GPU ({gib:.0f} GiB from {source}; about {per_trial:.1f} GiB per trial)"


# What a trial's Tune driver holds instead of a CPU when resources.cpus_per_trial_driver is 0: it
# only waits on its Train run, and Tune refuses a trial that asks for nothing at all.
DRIVER_MEMORY = 256 * 2**20


def driver_resources(cfg: ExperimentConfig) -> dict:
    return {"CPU": cfg.resources.cpus_per_trial_driver, "memory": DRIVER_MEMORY}


def run_settings(cfg: ExperimentConfig, data: PreparedData, local: bool, fast: bool) -> RunSettings:
    """How each trial runs on the cluster Ray is connected to (`local`: a Ray this run started;
    `fast`: on the fast path, ecg_ray.tuning.fast_path)."""
    use_gpu = resolve_use_gpu(cfg)
    gpus = 0.0
    if use_gpu:
        gpus, why = gpu_share(cfg, data)
        print(f"[ecg-ray] {gpus:g} GPU per trial ({why})", flush=True)
    settings = RunSettings(
        use_gpu=use_gpu,
        resources_per_worker=_worker_resources(cfg, use_gpu, gpus),
        threads=cfg.resources.cpus_per_worker,
        data_hash=data.data_hash,
        max_failures=cfg.max_failures,
        worker_start_timeout_s=cfg.resources.worker_start_timeout_s,
        train_env=train_env(cfg, False, local),  # tune() sets it again when trials start ahead
        autoscaler=not local,
        # tune() turns it off when trials start ahead; only the fast path can keep a worker
        reuse_workers=local and fast and cfg.resources.reuse_workers,
        fast_path=fast,
    )
    check_placeable(settings.resources_per_worker, driver_resources(cfg), local)
    return settings


def concurrency(cfg: ExperimentConfig, settings: RunSettings, local: bool) -> int:
    """How many trials run at once: resources.max_concurrent_trials, or on a local Ray as many as fit whole.

    Tune starts a trial's driver whenever its resources are free; with drivers that hold CPUs
    (resources.cpus_per_trial_driver > 0) it could start so many that no Train worker can ever
    start (a deadlock). Counting the driver and the worker together prevents that, and trials
    beyond what fits would only wait. 0 means no limit (clusters: the autoscaler adds nodes).
    """
    if cfg.resources.max_concurrent_trials or not local:
        return cfg.resources.max_concurrent_trials
    total = ray.cluster_resources()
    per_trial = {k: v for k, v in settings.resources_per_worker.items()}
    per_trial["CPU"] = per_trial.get("CPU", 0) + driver_resources(cfg)["CPU"]
    return max(1, int(min(total.get(k, 0) / v for k, v in per_trial.items() if v > 0)))


def plan_concurrency(cfg: ExperimentConfig, settings: RunSettings, local: bool) -> tuple[int, int]:
    """(how many trials train at once, how many more start ahead of a free slot), said on the console."""
    slots = concurrency(cfg, settings, local)
    spare = ray.cluster_resources().get("CPU", 0) - slots * settings.resources_per_worker.get("CPU", 0) if local else 0
    ahead = trials_ahead(cfg, slots, local, spare)
    if slots:
        more = f"; {ahead} more start ahead and take the next free slot" if ahead else ""
        print(f"[ecg-ray] {slots} trial(s) train at once{more}", flush=True)
    return slots, ahead


def trials_ahead(cfg: ExperimentConfig, slots: int, local: bool, spare_cpus: float) -> int:
    """How many trials Tune starts beyond the `slots` that train at once (resources.trials_ahead).

    A trial's start-up is a chain (its Tune actor, which runs Train's controller, then its worker);
    a trial started ahead runs the chain up to its worker while others train, and its worker
    takes the next free slot (its placement group waits for it), so the slot does not sit idle
    for the rest of the chain. 'auto' starts as many as there are CPUs the training trials leave
    idle (`spare_cpus`), at most one per slot: a GPU node where the GPU, not the CPUs, limits the
    trials; none on a CPU-only machine, whose CPUs all train (there, starting trials ahead took
    CPU from the training ones and was slower: benchmarks/speed.py --trials-ahead). Only on a local
    Ray whose trial drivers hold no CPU (else they could hold the CPUs their workers need) and
    without resources.max_concurrent_trials (which says exactly how many run); a cluster already
    starts every trial it can (0 = no limit).
    """
    if not starts_ahead(cfg, local):
        return 0
    if cfg.resources.trials_ahead == "auto":
        return max(0, min(slots, int(spare_cpus)))
    return cfg.resources.trials_ahead


def starts_ahead(cfg: ExperimentConfig, local: bool) -> bool:
    """Whether this run may start trials ahead of a free slot (see trials_ahead): only where Train
    can be told to wait for the slot (ecg_ray.tuning.trial.train_env: a tested Ray)."""
    r = cfg.resources
    return (local and not r.max_concurrent_trials and r.cpus_per_trial_driver == 0 and r.trials_ahead != 0
            and fast_path.trusted())


def check_placeable(worker: dict, driver: dict, local: bool) -> None:
    """Refuse trials that no node can ever hold, instead of letting them wait forever.

    On a local Ray (one node) a trial's driver and worker must fit together, and nothing
    will add nodes, so that is an error; on a cluster they may sit on different nodes and
    the autoscaler may add nodes, so it is a warning.
    """
    nodes = [n["Resources"] for n in ray.nodes() if n.get("Alive")]
    together = {k: worker.get(k, 0) + driver.get(k, 0) for k in {*worker, *driver}}
    requests = [("worker and Tune driver", together)] if local else [("worker", worker), ("Tune driver", driver)]
    for what, request in requests:
        if any(all(node.get(k, 0) >= v for k, v in request.items()) for node in nodes):
            continue
        largest = max(nodes, key=lambda n: (n.get("GPU", 0), n.get("CPU", 0)), default={})
        have = {k: largest.get(k, 0) for k in request}
        if not local:
            print(f"[ecg-ray] each trial's {what} asks for {request} but no node has that much right now "
                  f"(largest: {have}): trials wait until the autoscaler adds such a node", flush=True)
            continue
        raise ConfigError(
            f"Each trial's {what} asks for {request}, but this local Ray has no node with that much (it has {have}), "
            "so no trial could ever start. Use --cpu, lower resources.cpus_per_worker / gpus_per_worker / "
            "custom_resources_per_worker, or pass --num-cpus."
        )
