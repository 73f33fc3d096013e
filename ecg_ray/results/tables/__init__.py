"""The tables: history, ranking and export.

    history   every epoch of every trial, from Tune's result files
    ranking   trials by best val macro-F1; configs over seeds and folds with CIs and tie tests
    export    CSV, Markdown, JSON, Parquet, LaTeX (the paper's configs table), atomically
    columns   the column names people read, and which config keys a table shows
"""
