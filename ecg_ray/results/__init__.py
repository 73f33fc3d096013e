"""The results stage: what a run leaves, read once, ranked, analysed and exported. No Ray.

    the folder     folder (layout, file names, locks), state (FolderState: read once, written through),
                   results (Results: ranked trials, history, problems; each checkpoint read once)
    the tables     report (the aggregator: trials, configs over seeds, history, exports), tables (columns)
    the analyses   stats (CIs, tie tests, bootstraps), importance (fANOVA), tradeoffs (costs, Pareto),
                   rungs (ASHA's rungs), oof (out-of-fold scores), cost (parameters, MACs, latency)
    inference      predict (best_model.pt: one trial or an ensemble), evaluate (the held-out test)
    presentation   figures, page (index.html), compare (`ecg-ray compare`)
    integrations   tracking (MLflow, from the driver), optuna_study (the folder as an Optuna study)
"""
