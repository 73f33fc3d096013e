"""The folder's persistence: an experiment folder's layout and files, read once per command.

    folder    ExperimentDir: the layout, file names, JSON records, trial statuses, locks
    state     FolderState: a folder read once (one download of a bucket's), written through
    results   Results: the ranked trials, history and problems every post-run phase takes
"""
