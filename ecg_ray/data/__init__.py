"""The data stage: records in, a prepared, checked, split and cached dataset out. No Ray, no torch.

    records     a set of records as read (ids, signals of any length, labels, where each came from)
    sources     the source registry: synthetic, a CinC 2017 challenge folder, a pickle, a Parquet file
    synthetic   the project's own ECG generator (the built-in default data)
    prepare     bad-record checks, the stratified splits (or folds), pad/trim, class weights, hash, cache
    check       `ecg-ray data check`: class counts, lengths, amplitudes and every problem found
    trust       which pickle files may be loaded (a pickle runs code: only ones the user names)
"""
