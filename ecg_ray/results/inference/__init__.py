"""Model inference: the best model, the held-out test, predictions.

    predict    best_model.pt (one trial or an ensemble) written, loaded and used by `ecg-ray predict`
    evaluate   the held-out test of the top configs, each ensemble beside its best trial
"""
