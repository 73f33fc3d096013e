"""The tuning stage: everything that touches Ray, and the only package that imports it
(tests/test_layout.py holds that, and that only _ray_internals uses Ray's private names).

    driver         the Tune driver's phases: preflight, data, Ray, the tuner, what is left to do
    trial          a trial: a Tune function running a one-worker Ray Train run
    worker         what that Train worker runs (ecg_ray.training), its checkpoints and reports
    fast_path      which path a trial takes on this Ray release, and the fallback on any other
    _ray_internals the fast path, and every private Ray name
    schedulers     ASHA (grouped over seeds and folds), the FIFO scheduler
    searchers      the seeded, batched, resumable Tune searcher around any adaptive searcher, by name
    optuna_search  the adaptive searcher shipped: Optuna's TPE, one batch at a time
    packing        trials per GPU (fractional GPUs) from a memory estimate
    resources      the CPUs and GPUs a trial asks for
    progress       the live progress lines, statuses and the run's records (a Tune callback)
    ray_session    starting or joining Ray (loopback only for a local one)
    submit         `ecg-ray submit`: a job to a running cluster, an allow-list of files uploaded
    nodes          one Ray instance's processes (`ecg-ray stop-node`), never every Ray on the host
"""
