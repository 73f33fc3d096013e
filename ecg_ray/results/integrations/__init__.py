"""The integrations: other tools' views of an experiment.

    tracking       MLflow runs, written by the driver
    optuna_study   the folder as an Optuna study (`report --optuna-storage`)
"""
