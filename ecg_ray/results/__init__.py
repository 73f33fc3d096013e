"""The results stage: what a run leaves, read once, ranked, analysed and exported. No Ray.
One subpackage per job, and two modules that put them together:

    store          the folder's persistence (folder, state, results)
    tables         history, ranking, export (and the column names)
    analysis       stats, importance, tradeoffs, rungs, oof, cost
    inference      predict (best_model.pt), evaluate (the held-out test)
    page           figures, webpage (index.html), console (the terminal's tables)
    integrations   tracking (MLflow), optuna_study
    report         the report: a folder -> tables, analyses, figures, page
    compare        `ecg-ray compare`: several folders side by side
"""
