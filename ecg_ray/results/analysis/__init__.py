"""The analyses of a ranking: statistics, importance, trade-offs, rungs, costs.

    stats       mean, sd, CIs, the paired tie test, bootstraps over records
    importance  fANOVA over configs: which keys mattered
    tradeoffs   cost columns and Pareto fronts
    rungs       ASHA's rungs and grouped decisions, replayed
    oof         out-of-fold scores of a cross-validated experiment
    cost        parameters, MACs and latency of a model shape
"""
