"""Acoustic clip features computed from the waveform alone: pitch (an F0 tracker) and formants (LPC).

Both mean the same on real and synthetic speech, which is why the heads can learn them from synthetic clips:
- `pitch`:    voiced fraction and the 20/50/80th percentiles of log2 F0 (autocorrelation tracker, 60-400 Hz)
- `formants`: log2 of the median first three formants (LPC at 11 kHz): vocal-tract length, which pitch alone misses
              (a shouting man can reach 260 Hz, a low female voice sits at 150 Hz)
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

from ..audio import SAMPLE_RATE as RATE


def f0_track(audio: np.ndarray, *, fmin: float = 60.0, fmax: float = 400.0, hop: int = 160,
             frame: int = 1024, threshold: float = 0.5) -> np.ndarray:
    """F0 in Hz of each voiced 64 ms frame (10 ms hop); unvoiced and quiet frames are left out.

    Normalised autocorrelation of a Hann-windowed frame, divided by the window's own autocorrelation so that long
    lags are not penalised; a frame is voiced when its best peak in the lag range reaches `threshold` and its energy
    is within 40 dB of the loudest frame. The peak is refined by parabolic interpolation."""
    audio = np.asarray(audio, dtype=np.float32)
    if len(audio) < frame:
        audio = np.pad(audio, (0, frame - len(audio)))
    starts = np.arange(0, len(audio) - frame + 1, hop)
    window = np.hanning(frame).astype(np.float32)
    frames = audio[starts[:, None] + np.arange(frame)] * window
    frames -= frames.mean(axis=1, keepdims=True)
    spectrum = np.fft.rfft(frames, n=2 * frame)
    ac = np.fft.irfft(np.abs(spectrum) ** 2)[:, :frame]
    window_ac = np.fft.irfft(np.abs(np.fft.rfft(window, n=2 * frame)) ** 2)[:frame]
    energy = ac[:, 0]
    norm = ac / np.maximum(energy[:, None], 1e-12) / np.maximum(window_ac / window_ac[0], 1e-3)
    low, high = int(RATE / fmax), int(RATE / fmin)
    lags = norm[:, low:high + 1]
    peak = lags.max(axis=1)
    # The shortest lag whose local peak nearly reaches the best one: multiples of the period score as high as the
    # period itself, and picking them would halve or third the pitch.
    local_max = np.zeros_like(lags, dtype=bool)
    local_max[:, 1:-1] = (lags[:, 1:-1] >= lags[:, :-2]) & (lags[:, 1:-1] >= lags[:, 2:])
    near_best = local_max & (lags >= 0.9 * peak[:, None])
    best = np.where(near_best.any(axis=1), near_best.argmax(axis=1), lags.argmax(axis=1))
    loud = energy > energy.max() * 1e-4
    voiced = (peak >= threshold) & loud & (energy > 1e-8)
    lag = (best + low).astype(np.float64)
    # parabolic interpolation around the peak for sub-sample lag precision
    inner = (best > 0) & (best < lags.shape[1] - 1)
    i = np.arange(len(lags))[inner]
    a, b, c = lags[i, best[inner] - 1], lags[i, best[inner]], lags[i, best[inner] + 1]
    denom = a - 2 * b + c
    lag[inner] += np.where(np.abs(denom) > 1e-9, 0.5 * (a - c) / np.where(denom == 0, 1, denom), 0.0)
    return RATE / lag[voiced]


def pitch_features(clips: Sequence[np.ndarray]) -> np.ndarray:
    """Per clip, the voiced fraction of its frames and log2 of the 20/50/80th percentiles of its F0: (clips, 4)."""
    rows = []
    for audio in clips:
        hops = max(1, (max(len(audio), 1024) - 1024) // 160 + 1)
        f0 = f0_track(audio)
        if len(f0) == 0:
            rows.append([0.0, np.log2(150.0), np.log2(150.0), np.log2(150.0)])  # no voice: a neutral pitch
            continue
        rows.append([len(f0) / hops, *np.log2(np.percentile(f0, [20, 50, 80]))])
    return np.asarray(rows, dtype=np.float32)


def _levinson(r: np.ndarray, order: int) -> np.ndarray:
    """LPC polynomials (frames, order + 1), 1 + a1 z^-1 + ..., from autocorrelations (frames, order + 1)."""
    a = np.zeros((len(r), order + 1))
    a[:, 0] = 1.0
    err = r[:, 0].copy()
    for i in range(1, order + 1):
        k = -(r[:, i] + np.sum(a[:, 1:i] * r[:, i - 1:0:-1], axis=1)) / np.maximum(err, 1e-12)
        a[:, 1:i] = a[:, 1:i] + k[:, None] * a[:, i - 1:0:-1]
        a[:, i] = k
        err = err * (1 - k ** 2)
    return a


def formant_track(audio: np.ndarray, *, order: int = 14, rate: int = 11025) -> np.ndarray:
    """The three lowest formants (Hz) of each loud 25 ms frame (10 ms hop), from the roots of an LPC fit at 11 kHz:
    resonances with a bandwidth under 400 Hz between 200 and 4500 Hz. Frames with fewer than three are left out."""
    import soxr

    audio = soxr.resample(np.asarray(audio, dtype=np.float64), RATE, rate)
    audio = np.append(audio[:1], audio[1:] - 0.97 * audio[:-1])  # pre-emphasis: flattens the glottal tilt
    frame, hop = int(rate * 0.03), rate // 100
    if len(audio) < frame:
        return np.zeros((0, 3))
    starts = np.arange(0, len(audio) - frame + 1, hop)
    frames = audio[starts[:, None] + np.arange(frame)] * np.hamming(frame)
    energy = (frames ** 2).sum(1)
    frames = frames[energy > max(energy.max() * 1e-2, 1e-10)]
    spectrum = np.fft.rfft(frames, n=2 * frame)
    r = np.fft.irfft(np.abs(spectrum) ** 2)[:, :order + 1]
    polys = _levinson(r, order)
    companion = np.zeros((len(polys), order, order))  # the roots of each polynomial, all frames in one call
    companion[:, 0, :] = -polys[:, 1:]
    companion[:, np.arange(1, order), np.arange(order - 1)] = 1.0
    out = []
    for roots in np.linalg.eigvals(companion):
        roots = roots[roots.imag > 0]
        freq = np.angle(roots) * rate / (2 * np.pi)
        bandwidth = -np.log(np.maximum(np.abs(roots), 1e-9)) * rate / np.pi
        freq = np.sort(freq[(bandwidth < 400) & (freq > 200) & (freq < 4500)])
        if len(freq) >= 3:
            out.append(freq[:3])
    return np.asarray(out).reshape(-1, 3)


def formant_features(clips: Sequence[np.ndarray]) -> np.ndarray:
    """Per clip, log2 of the median F1, F2, F3 (clips, 3): the vocal tract's length shows in them whatever the pitch."""
    rows = []
    for audio in clips:
        track = formant_track(audio)
        median = np.median(track, axis=0) if len(track) else np.array([500.0, 1500.0, 2500.0])
        rows.append(np.log2(median))
    return np.asarray(rows, dtype=np.float32)
