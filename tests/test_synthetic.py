import numpy as np
import pytest
from scipy.signal import find_peaks

from ecg_ray.data.synthetic import CLASS_MIX, FS, LABEL_NOISE, LENGTH_RANGE, P_INVERTED, class_counts, generate


@pytest.fixture(scope="module")
def records():
    """The easy generator: each class's physiology, untouched by the realistic confusions."""
    return generate(600, seed=7, difficulty="easy")


@pytest.fixture(scope="module")
def realistic():
    return generate(1200, seed=7)


def _r_peaks(sig):
    sig = sig - np.median(sig)
    return find_peaks(sig, height=0.5 * np.percentile(sig, 99.5), distance=int(0.25 * FS))[0]


def _by_class(records, label, fn, limit=60):
    idx = np.flatnonzero(records.labels == label)[:limit]
    return np.array([fn(records.signals[i]) for i in idx])


def test_seeded_and_reproducible():
    a, b, c = generate(30, seed=3), generate(30, seed=3), generate(30, seed=4)
    assert a.ids == b.ids
    assert all(np.array_equal(x, y) for x, y in zip(a.signals, b.signals))
    np.testing.assert_array_equal(a.labels, b.labels)
    assert not all(len(x) == len(y) and np.array_equal(x, y) for x, y in zip(a.signals, c.signals))


def test_class_mix_is_the_challenges():
    counts = class_counts(8528)
    assert counts.sum() == 8528
    np.testing.assert_allclose(counts / 8528, CLASS_MIX, atol=1e-3)
    assert (class_counts(40) >= 1).all()
    np.testing.assert_array_equal(generate(200, seed=1, difficulty="easy").class_counts(), class_counts(200))


def test_lengths_amplitudes_and_units(records):
    lengths = records.lengths()
    assert lengths.min() >= LENGTH_RANGE[0] and lengths.max() <= LENGTH_RANGE[1]
    assert 0.7 < (lengths == 9000).mean() < 0.9
    assert records.fs == 300
    peak = np.median([np.abs(s).max() for s in records.signals])
    assert 500 < peak < 3000  # ~1 mV R waves at 1000 ADC units per mV


def _rr_cv(sig):
    rr = np.diff(_r_peaks(sig))
    return rr.std() / rr.mean()


def test_af_rr_is_irregularly_irregular(records):
    normal = _by_class(records, 0, _rr_cv)
    af = _by_class(records, 1, _rr_cv)
    assert np.median(af) > 2.5 * np.median(normal)


def _p_wave(sig):
    """Mean amplitude 0.2 s before the R peaks (P), relative to the PR segment 0.1 s before."""
    peaks = _r_peaks(sig)
    peaks = peaks[(peaks > 0.5 * FS) & (peaks < len(sig) - FS)]
    p = sig[peaks - int(0.2 * FS)].mean() - sig[peaks - int(0.1 * FS)].mean()
    return p / sig[peaks].mean()


def test_normal_has_p_waves_af_has_none(records):
    assert np.median(_by_class(records, 0, _p_wave)) > 0.06
    assert abs(np.median(_by_class(records, 1, _p_wave))) < 0.04


def _heart_rate(sig):
    return 60.0 * FS / np.median(np.diff(_r_peaks(sig)))


def test_other_includes_brady_and_tachycardia(records):
    normal = _by_class(records, 0, _heart_rate)
    other = _by_class(records, 2, _heart_rate, limit=120)
    assert ((normal > 50) & (normal < 110)).mean() > 0.95
    assert ((other < 56) | (other > 104)).mean() > 0.3


def _low_freq_share(sig):
    spec = np.abs(np.fft.rfft(sig - sig.mean())) ** 2
    freqs = np.fft.rfftfreq(len(sig), 1 / FS)
    return spec[freqs < 1.0].sum() / spec.sum()


def test_noisy_is_dominated_by_artefacts(records):
    normal = _by_class(records, 0, _low_freq_share)
    noisy = _by_class(records, 3, _low_freq_share)
    assert np.median(noisy) > 3 * np.median(normal)


def test_generates_challenge_size_quickly_enough_to_be_default():
    # Not a timing assertion: a sanity check that 1000 records are produced and well formed.
    rs = generate(1000, seed=0)
    assert len(rs) == 1000 and all(np.isfinite(s).all() for s in rs.signals)


# --- realistic difficulty (the default) ---------------------------------------------------------


def test_realistic_labels_name_another_class_at_the_documented_rate(records, realistic):
    easy = generate(1200, seed=7, difficulty="easy")  # the same true classes, record by record
    flipped = realistic.labels != easy.labels
    assert abs(flipped.mean() - LABEL_NOISE) < 0.025
    np.testing.assert_array_equal(realistic.class_counts(), class_counts(1200))  # every class keeps its count
    assert (generate(40, seed=1).class_counts() >= 1).all()
    assert realistic.source == "synthetic(n=1200, seed=7, realistic)"


def test_realistic_records_overlap_between_classes_where_real_ones_do(realistic):
    easy = generate(1200, seed=7, difficulty="easy")
    true = easy.labels
    flipped = realistic.labels != true
    # Some AF looks regular and some Normal has marked sinus arrhythmia: the RR variability of the
    # two classes overlaps far more than in the easy data.
    def overlap(rs):
        normal = np.array([_rr_cv(rs.signals[i]) for i in np.flatnonzero(true == 0)[:80]])
        af = np.array([_rr_cv(rs.signals[i]) for i in np.flatnonzero(true == 1)[:80]])
        return (af < np.percentile(normal, 90)).mean()

    assert overlap(realistic) > overlap(easy) + 0.1
    # Some records are inverted (lead placement): their largest deflection is negative.
    inverted = np.mean([np.median(s) - s.min() > s.max() - np.median(s) for s, f in zip(realistic.signals, flipped) if not f])
    assert P_INVERTED / 2 < inverted < 3 * P_INVERTED
    assert all(np.isfinite(s).all() and len(s) >= LENGTH_RANGE[0] for s in realistic.signals)


def test_both_generators_are_seeded_and_a_bad_difficulty_is_refused():
    a, b = generate(40, seed=3), generate(40, seed=3)
    assert all(np.array_equal(x, y) for x, y in zip(a.signals, b.signals)) and np.array_equal(a.labels, b.labels)
    with pytest.raises(ValueError, match="difficulty must be 'realistic' or 'easy'"):
        generate(10, difficulty="hard")
