"""Write spoken words as WAV class folders, the input of jobs/speech_commands.yaml.

    apt-get install espeak-ng               # Debian's speech synthesiser (no download)
    python jobs/make_speech_wavs.py         # -> jobs/data/speech/{train,val,test}/<word>/
    python jobs/make_speech_wavs.py OUT_DIR

Eight command words, each said by espeak-ng's voices: a voice is an accent (American,
British RP, Scottish, Lancaster, Caribbean) with a variant (male m1-m4, female f1-f4), 40
in all, dealt by a fixed seed into 24 training, 8 validation and 8 test voices, so the
validation and test splits are said by voices never heard in training. Each voice says
each word 3 times at a random speed (words per minute), pitch and loudness, placed at a
random moment of a one-second clip, with white noise added at a random signal-to-noise
ratio (0-20 dB). 22,050 Hz mono 16-bit WAV, espeak-ng's rate.
"""

from __future__ import annotations

import itertools
import random
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

WORDS = ("yes", "no", "up", "down", "left", "right", "stop", "go")
ACCENTS = ("en-us", "en-gb-x-rp", "en-gb-scotland", "en-gb-x-gbclan", "en-029")
VARIANTS = ("m1", "m2", "m3", "m4", "f1", "f2", "f3", "f4")
SPLITS = {"train": 24, "val": 8, "test": 8}  # voices per split
TAKES = 3  # each voice says each word this many times


def voices_by_split(seed: int = 0) -> dict[str, list[str]]:
    voices = [f"{accent}+{variant}" for accent in ACCENTS for variant in VARIANTS]
    random.Random(seed).shuffle(voices)
    split, start = {}, 0
    for name, count in SPLITS.items():
        split[name] = voices[start : start + count]
        start += count
    return split


def write_speech(out: Path, seed: int = 0, takes: int = TAKES, voices: int | None = None) -> int:
    """The clips under out/{train,val,test}/<word>/; `voices` keeps that many of each
    split's voices (a quick test's few dozen clips)."""
    import numpy as np
    import soundfile

    if shutil.which("espeak-ng") is None:
        raise SystemExit("espeak-ng not found: apt-get install espeak-ng")
    rng = random.Random(seed)
    noise = np.random.default_rng(seed)
    written = 0
    with tempfile.TemporaryDirectory() as scratch:
        raw = Path(scratch) / "raw.wav"
        for split, split_voices in voices_by_split(seed).items():
            for word in WORDS:
                (out / split / word).mkdir(parents=True, exist_ok=True)
            speakers = split_voices[:voices]
            for voice, word, take in itertools.product(speakers, WORDS, range(takes)):
                wave, rate = _said(voice, word, raw, rng, noise)
                name = f"{voice.replace('+', '_')}_{take}.wav"
                soundfile.write(out / split / word / name, wave, rate)
                written += 1
    return written


def _said(voice: str, word: str, raw: Path, rng: random.Random, noise):
    """One second of `word` said by `voice` at a random speed, pitch and loudness, at a
    random moment, in white noise."""
    import numpy as np
    import soundfile

    speed, pitch = rng.randint(120, 200), rng.randint(25, 75)
    command = ["espeak-ng", "-v", voice, "-s", str(speed), "-p", str(pitch), "-w", str(raw)]
    subprocess.run([*command, word], check=True)
    said, rate = soundfile.read(raw, dtype="float32")
    loud = np.flatnonzero(np.abs(said) > 0.02 * np.abs(said).max())
    said = said[loud[0] : loud[-1] + 1][:rate]  # without espeak-ng's leading/trailing silence
    wave = np.zeros(rate, dtype=np.float32)
    start = rng.randint(0, rate - len(said))
    wave[start : start + len(said)] = said * rng.uniform(0.3, 1.0)
    power = float(np.mean(wave[start : start + len(said)] ** 2)) or 1e-8
    snr_db = rng.uniform(0, 20)
    wave += noise.normal(0, (power / 10 ** (snr_db / 10)) ** 0.5, rate).astype(np.float32)
    return np.clip(wave, -1, 1), rate


if __name__ == "__main__":
    target = Path(sys.argv[1]) if len(sys.argv) > 1 else Path(__file__).parent / "data/speech"
    print(f"wrote {write_speech(target)} clips under {target}")
