"""Seeded synthetic single-lead ECG in the shape of the CinC 2017 data.

    python -c "from ecg_ray.data.synthetic import generate; print(generate(20, seed=0).summary())"

Records are 300 Hz, amplitudes in ADC units at 1000 per mV (as AliveCor's
`.mat` files), lengths mostly 9000 samples (30 s) with some between 2700 and
18300, and the challenge's class mix (59% N, 9% A, 29% O, 3% ~). Each beat is
a sum of Gaussian bumps (P, Q, R, S, T; McSharry et al. 2003 in spirit), placed
at beat times drawn from the class's rhythm:

- Normal (0): regular sinus rhythm, 55-100 bpm, small RR variability with
  respiratory sinus arrhythmia, a P wave before every QRS.
- AF (1): irregularly irregular RR (independent draws, coefficient of variation
  0.12-0.30), no P waves, and a fibrillatory baseline (f waves, 4-9 Hz).
- Other (2): one of: sinus rhythm with premature ectopic beats (wide, no P,
  compensatory pause); sinus bradycardia (38-55 bpm); sinus tachycardia
  (105-150 bpm); wide QRS (bundle-branch-block-like, 2-3x wider).
- Noisy (3): a weak sinus rhythm buried under motion artefacts: large baseline
  wander, step jumps, bursts of broadband noise and clipped segments.

Every class gets mild baseline wander, white noise and amplitude variation, and
the class ranges overlap a little, so a classifier is not perfect after a few
epochs. Labels are the class quotas shuffled by `seed`; the waveform of record
i is drawn from its own generator seeded with (seed, i).

That is `difficulty="easy"`. The default, `"realistic"`, makes it as hard as the
real recordings by adding what makes them hard:

- class overlap: pronounced sinus arrhythmia in a quarter of Normal records and
  heart rates up to the brady/tachycardia edges; AF with low RR variability, with
  regular-looking stretches (a third of AF records) and with f waves from
  invisible to coarse; Other that resembles Normal (rare ectopic beats, a long
  PR interval, rates near the normal range);
- noise on records of every class (a quarter get motion-artefact bursts), weaker
  artefacts on some Noisy records, and more white noise;
- amplitude and lead-placement variation: P and T amplitudes from faint to tall,
  QRS width, and the whole record inverted in 1 of 12 (the device held the
  other way round);
- label noise: LABEL_NOISE (8%) of the labels name another class, as experts
  disagree on real records (the labels of about 14% of the records are shuffled
  among them, so every class keeps its count); the waveform follows the record's
  true class.
"""

from __future__ import annotations

import numpy as np

from ecg_ray.data.records import RecordSet

FS = 300
ADC_PER_MV = 1000.0
CLASS_MIX = (0.59, 0.09, 0.29, 0.03)
STANDARD_LENGTH = 9000
LENGTH_RANGE = (2700, 18300)
P_STANDARD_LENGTH = 0.8
LABEL_NOISE = 0.08  # realistic: the share of labels that name another class than the waveform's
P_INVERTED = 1 / 12  # realistic: records inverted (lead placement)

# Wave components of one beat: (name, offset from R in s, width in s, amplitude in mV).
_SINUS_WAVES = (
    ("P", -0.20, 0.025, 0.12),
    ("Q", -0.025, 0.010, -0.10),
    ("R", 0.0, 0.012, 1.00),
    ("S", 0.025, 0.010, -0.22),
    ("T", 0.28, 0.050, 0.30),
)


def class_counts(n_records: int) -> np.ndarray:
    """Records per class for `n_records`: the CinC mix by largest remainder, every class >= 1."""
    quota = np.asarray(CLASS_MIX) * n_records
    counts = np.floor(quota).astype(int)
    counts[np.argsort(quota - counts)[::-1][: n_records - counts.sum()]] += 1
    while n_records >= len(CLASS_MIX) and (counts == 0).any():
        counts[np.argmin(counts)] += 1
        counts[np.argmax(counts)] -= 1
    return counts


def generate(n_records: int, seed: int = 0, fs: int = FS, difficulty: str = "realistic") -> RecordSet:
    """Generate `n_records` labelled synthetic ECG records.

    Args:
        n_records: number of records.
        seed: the generator's seed; the same seed gives the same records.
        fs: sampling rate in Hz.
        difficulty: "realistic" (as hard as CinC 2017, with label noise) or "easy" (see the module).

    Returns:
        A RecordSet with ids `S00000`..., float32 signals in ADC units and labels 0..3.
    """
    if difficulty not in ("realistic", "easy"):  # ecg_ray.config.DIFFICULTIES
        raise ValueError(f"difficulty must be 'realistic' or 'easy', not {difficulty!r}")
    hard = difficulty == "realistic"
    labels = np.repeat(np.arange(len(CLASS_MIX)), class_counts(n_records))
    np.random.default_rng([seed, 2**31]).shuffle(labels)
    signals = [_record(int(lab), np.random.default_rng([seed, i]), fs, hard) for i, lab in enumerate(labels)]
    ids = [f"S{i:05d}" for i in range(n_records)]
    if hard:
        labels = noisy_labels(labels, np.random.default_rng([seed, 2**31 + 1]))
    source = f"synthetic(n={n_records}, seed={seed}, {difficulty})"
    return RecordSet(ids=ids, signals=signals, labels=labels.astype(np.int64), fs=fs, source=source)


def noisy_labels(labels: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Label noise that keeps every class's count: the labels of a random subset of records are
    shuffled among them. The subset is sized so that LABEL_NOISE of all labels name another
    class, in expectation (a shuffled label repeats its record's class with chance sum(mix^2))."""
    mix = np.asarray(CLASS_MIX)
    subset = rng.permutation(len(labels))[: int(round(len(labels) * LABEL_NOISE / (1 - (mix**2).sum())))]
    out = labels.copy()
    out[subset] = labels[rng.permutation(subset)]
    return out


def _length(rng: np.random.Generator) -> int:
    if rng.random() < P_STANDARD_LENGTH:
        return STANDARD_LENGTH
    return int(rng.integers(LENGTH_RANGE[0], LENGTH_RANGE[1] + 1))


def _beat(fs: int, waves, qrs_scale: float = 1.0, amp: float = 1.0) -> tuple[np.ndarray, int]:
    """One beat template (mV) and the index of its R peak inside the template."""
    lo, hi = -0.30, 0.55
    t = np.arange(int(lo * fs), int(hi * fs)) / fs
    beat = np.zeros_like(t)
    for name, offset, width, a in waves:
        w = width * (qrs_scale if name in "QRS" else 1.0)
        o = offset * (qrs_scale if name in "QS" else 1.0)
        beat += amp * a * np.exp(-((t - o) ** 2) / (2 * w**2))
    return beat, -int(lo * fs)


def _place(signal: np.ndarray, beat: np.ndarray, r_index: int, r_pos: int) -> None:
    start = r_pos - r_index
    a, b = max(start, 0), min(start + len(beat), len(signal))
    if a < b:
        signal[a:b] += beat[a - start : b - start]


def _rr_times(rng: np.random.Generator, n: int, fs: int, rr_fn) -> np.ndarray:
    """R-peak sample positions covering n samples, with RR intervals (s) from rr_fn(k)."""
    rr = rr_fn(int(n / fs / 0.25) + 4)
    t = np.cumsum(rr) - rng.uniform(0, rr[0])
    return (t[t < n / fs] * fs).astype(int)


def _sinus_rr(rng, hr: float, sd: float, depth: float = 0.04):
    """RR intervals of sinus rhythm: respiratory modulation of `depth`, plus noise of `sd`."""
    mean = 60.0 / hr
    resp = rng.uniform(0.2, 0.35)

    def rr_fn(k):
        i = np.arange(k)
        return mean * (1 + depth * np.sin(2 * np.pi * resp * i * mean) + sd * rng.standard_normal(k))

    return rr_fn


def _record(label: int, rng: np.random.Generator, fs: int, hard: bool = False) -> np.ndarray:
    n = _length(rng)
    t = np.arange(n) / fs
    amp = rng.uniform(0.6, 1.6)
    signal = np.zeros(n)
    waves = _varied(rng, _SINUS_WAVES) if hard else _SINUS_WAVES
    qrs_scale = rng.uniform(0.8, 1.4) if hard else rng.uniform(0.9, 1.15)
    noise_mv = rng.uniform(0.01, 0.08) if hard else rng.uniform(0.01, 0.04)
    if label == 0:
        hr = rng.uniform(50, 105) if hard else rng.uniform(55, 100)
        resp = rng.uniform(0.08, 0.2) if hard and rng.random() < 0.25 else 0.04  # sinus arrhythmia
        peaks = _rr_times(rng, n, fs, _sinus_rr(rng, hr, rng.uniform(0.01, 0.04), resp))
    elif label == 1:
        hr = rng.uniform(70, 150)
        cv = rng.uniform(0.06, 0.30) if hard else rng.uniform(0.12, 0.30)
        peaks = _rr_times(rng, n, fs, lambda k: np.clip(rng.normal(60 / hr, cv * 60 / hr, k), 0.25, 2.0))
        if hard and rng.random() < 1 / 3:
            peaks = _regular_stretch(rng, peaks, n, fs, hr)
        waves = tuple(w for w in waves if w[0] != "P")
        f_amp, f_hz = (rng.uniform(0.0, 0.12) if hard else rng.uniform(0.03, 0.12)), rng.uniform(4, 9)
        drift = np.cumsum(rng.normal(0, 0.02, n))  # f waves wander in frequency and phase
        signal += f_amp * np.sin(2 * np.pi * f_hz * t + drift)
    elif label == 2:
        kind = rng.integers(6 if hard else 4)
        if hard:  # rates nearer the normal range; 4: long PR (first-degree AV block); 5: rare ectopy
            hr = {0: rng.uniform(60, 95), 1: rng.uniform(40, 58), 2: rng.uniform(98, 140)}.get(int(kind), rng.uniform(55, 95))
        else:
            hr = {0: rng.uniform(60, 95), 1: rng.uniform(38, 55), 2: rng.uniform(105, 150), 3: rng.uniform(55, 95)}[int(kind)]
        peaks = _rr_times(rng, n, fs, _sinus_rr(rng, hr, rng.uniform(0.01, 0.04)))
        if kind == 3:
            qrs_scale = rng.uniform(1.6, 3.0) if hard else rng.uniform(2.0, 3.0)
        if kind == 4:
            waves = tuple(("P", -0.32, w, a) if name == "P" else (name, o, w, a) for name, o, w, a in waves)
        if kind in (0, 5):
            p_ectopic = rng.uniform(0.02, 0.06) if kind == 5 else rng.uniform(0.03 if hard else 0.05, 0.25)
            signal = _with_ectopics(rng, peaks, n, fs, amp, qrs_scale, waves, p_ectopic)
            return _finish(rng, signal, t, noise_mv, hard)
    else:
        peaks = _rr_times(rng, n, fs, _sinus_rr(rng, rng.uniform(55, 110), 0.04))
        amp *= rng.uniform(0.2, 0.6)
    beat, r_index = _beat(fs, waves, qrs_scale, amp)
    for p in peaks:
        _place(signal, beat, r_index, p)
    if label == 3:
        signal += _motion_artefact(rng, n, fs, t) * (rng.uniform(0.3, 1.0) if hard else 1.0)
        ceiling = rng.uniform(1.5, 3.0)  # the amplifier saturates under large artefacts
        signal = np.clip(signal, -ceiling, ceiling)
    elif hard and rng.random() < 0.25:
        signal += _motion_artefact(rng, n, fs, t) * rng.uniform(0.1, 0.4)  # noise on records of every class
    return _finish(rng, signal, t, noise_mv, hard)


def _varied(rng, waves):
    """Per-record morphology: P from faint to tall, T likewise (lead placement, anatomy)."""
    scale = {"P": rng.uniform(0.3, 1.5), "T": rng.uniform(0.3, 1.6)}
    return tuple((name, o, w, a * scale.get(name, 1.0)) for name, o, w, a in waves)


def _regular_stretch(rng, peaks, n, fs, hr):
    """AF that looks regular for a while: 20-50% of the record with sinus-like RR intervals."""
    span = int(n * rng.uniform(0.2, 0.5))
    a = int(rng.integers(0, n - span + 1))
    regular = _rr_times(rng, span, fs, _sinus_rr(rng, hr, 0.02)) + a
    return np.sort(np.concatenate([peaks[(peaks < a) | (peaks >= a + span)], regular]))


def _with_ectopics(rng, peaks, n, fs, amp, qrs_scale, waves, p_ectopic) -> np.ndarray:
    """Sinus beats with premature ventricular beats: early, wide, no P, then a pause."""
    signal = np.zeros(n)
    normal, r_index = _beat(fs, waves, qrs_scale, amp)
    pvc_waves = (("R", 0.0, 0.03, 1.3), ("S", 0.06, 0.03, -0.5), ("T", 0.30, 0.07, -0.35))
    pvc, pvc_index = _beat(fs, pvc_waves, 1.0, amp)
    for i, p in enumerate(peaks):
        if 0 < i < len(peaks) - 1 and rng.random() < p_ectopic:
            early = int((peaks[i] - peaks[i - 1]) * rng.uniform(0.25, 0.4))
            _place(signal, pvc, pvc_index, p - early)
        else:
            _place(signal, normal, r_index, p)
    return signal


def _motion_artefact(rng, n: int, fs: int, t: np.ndarray) -> np.ndarray:
    """Large wander, steps, broadband bursts: what a moving finger does to AliveCor."""
    art = rng.uniform(0.5, 2.0) * np.sin(2 * np.pi * rng.uniform(0.1, 0.6) * t + rng.uniform(0, 6.3))
    for _ in range(rng.integers(2, 8)):
        a = int(rng.integers(0, n))
        b = min(n, a + int(rng.uniform(0.5, 4.0) * fs))
        art[a:b] += rng.normal(0, rng.uniform(0.3, 1.5), b - a)
        art[a:] += rng.normal(0, 0.5)  # electrode shift: a step in the baseline
    return art


def _finish(rng, signal: np.ndarray, t: np.ndarray, noise_mv: float, hard: bool = False) -> np.ndarray:
    wander = rng.uniform(0.02, 0.15) * np.sin(2 * np.pi * rng.uniform(0.05, 0.4) * t + rng.uniform(0, 6.3))
    signal = signal + wander + rng.normal(0, noise_mv, len(signal))
    if hard and rng.random() < P_INVERTED:
        signal = -signal
    # AliveCor's ADC saturates; int16-like range at 1000 per mV.
    return np.clip(np.round(signal * ADC_PER_MV), -32768, 32767).astype(np.float32)
