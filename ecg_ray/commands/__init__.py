"""The `ecg-ray` command line: argparse, dispatch and printing only; the work is in the stages.

    main     every subcommand's options (each value checked before anything runs) and dispatch
    repeat   `ecg-ray repeat`: the top configs of a finished experiment again, at more seeds or folds
    rerun    `ecg-ray rerun`: one trial again, compared with what the folder recorded, bit for bit
    k8s      `ecg-ray k8s`: the KubeRay RayJob manifest of an experiment file, built as data
"""
