"""Line profiles of the call benchmark: what happens to each side of a call between the
talker and the recording a call center stores.

A profile is drawn per call (`draw_profile`) and applied to both channels (`render_line`),
talker's side first, then the network, then the recorder:

1. background noise on the customer's side (babble, or office: pink noise under babble) at
   an SNR against the customer's active speech;
2. echo: the agent's voice leaking back into the customer's channel (played by the
   customer's handset, picked up by its microphone), delayed and attenuated;
3. levels: each channel's talker level; `level_mismatch` makes one side much quieter;
4. clipping: an overdriven input stage, hard-clipped at full scale;
5. the network: telephone band and 8 kHz (narrowband) or 50-7000 Hz at 16 kHz (wideband),
   then each codec of the path in turn (two in tandem for a transcoded call), through the
   real encoder and decoder (`training.channel.codec_roundtrip`);
6. packet loss: lost 20 ms frames, in bursts; the first lost frame of a burst is concealed
   by repeating the last good one at half level, the rest are silent gaps;
7. the recorder: G.711 mu-law or A-law WAV at 8 kHz, 16-bit PCM FLAC at 16 kHz, or Ogg Opus
   at 8 kHz and a low bitrate; a share of the calls is mixed down to one channel.

Everything is a pure function of the inputs and the rng; times stay aligned (every stage
keeps the signal's length and delay), so the ground truth's utterance times hold in the file.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import numpy as np
import soxr
from scipy.fft import next_fast_len

from callmood.training.channel import active_power, codec_roundtrip, pink_noise

SOURCE_RATE = 16000
FRAME_S = 0.02  # packet length of the VoIP leg

# profile -> share of the calls (the shares sum to 1)
PROFILE_SHARES = {
    "g711_ulaw": 0.12, "g711_alaw": 0.08, "gsm": 0.10, "opus_low": 0.10, "tandem": 0.10,
    "packet_loss": 0.10, "clipping": 0.08, "noisy": 0.14, "echo": 0.08,
    "level_mismatch": 0.06, "wideband": 0.04,
}
MONO_SHARE = 0.1  # calls recorded with both sides mixed into one channel


@dataclass(frozen=True)
class LineProfile:
    name: str
    codecs: tuple[str, ...] = ()  # the network's codecs, in order, before the recorder
    opus_kbps: float = 12.0
    store: str = "ulaw"  # ulaw | alaw | flac16k | opus
    wideband: bool = False
    noise: str | None = None  # babble | office, on the customer's side
    snr_db: float = 20.0
    echo_db: float | None = None  # level of the agent's echo in the customer channel
    echo_delay_s: float = 0.0
    quiet_side: str | None = None  # customer | agent: the side level_mismatch lowers
    mismatch_db: float = 0.0
    overdrive_db: float = 0.0  # gain into the clipping input stage
    loss_rate: float = 0.0  # share of 20 ms packets lost
    mono: bool = False

    @property
    def rate(self) -> int:
        """The stored file's sample rate."""
        return SOURCE_RATE if self.wideband else 8000

    def describe(self) -> dict:
        """The fields that differ from a plain G.711 mu-law line, and the name."""
        plain = asdict(LineProfile(self.name))
        return {k: v for k, v in asdict(self).items() if k == "name" or v != plain[k]}


def draw_profile(rng: np.random.Generator) -> LineProfile:
    """One call's line: a profile by PROFILE_SHARES, its parameters drawn in its range."""
    names = list(PROFILE_SHARES)
    name = names[rng.choice(len(names), p=np.array(list(PROFILE_SHARES.values())))]
    mono = bool(rng.random() < MONO_SHARE)
    store = "alaw" if name == "g711_alaw" else "ulaw"
    match name:
        case "gsm":
            return LineProfile(name, codecs=("gsm",), mono=mono)
        case "opus_low":
            return LineProfile(name, store="opus", opus_kbps=float(rng.uniform(6, 10)),
                               mono=mono)
        case "tandem":  # a mobile or VoIP leg transcoded to G.711 at the gateway
            first = ("gsm", "opus")[int(rng.integers(2))]
            return LineProfile(name, codecs=(first,), opus_kbps=float(rng.uniform(6, 12)),
                               store=("ulaw", "alaw")[int(rng.integers(2))], mono=mono)
        case "packet_loss":
            return LineProfile(name, loss_rate=float(rng.uniform(0.03, 0.12)), mono=mono)
        case "clipping":
            return LineProfile(name, overdrive_db=float(rng.uniform(14, 24)), mono=mono)
        case "noisy":
            return LineProfile(name, noise=("babble", "office")[int(rng.integers(2))],
                               snr_db=float(rng.uniform(5, 20)), mono=mono)
        case "echo":
            return LineProfile(name, echo_db=float(rng.uniform(-30, -15)),
                               echo_delay_s=float(rng.uniform(0.05, 0.3)), mono=mono)
        case "level_mismatch":
            return LineProfile(name, quiet_side=("customer", "agent")[int(rng.integers(2))],
                               mismatch_db=float(rng.uniform(12, 24)), mono=mono)
        case "wideband":
            return LineProfile(name, store="flac16k", wideband=True, mono=mono)
    return LineProfile(name, store=store, mono=mono)


def _band(x: np.ndarray, low: float, high: float, rate: int) -> np.ndarray:
    """Zero-phase band-pass with the magnitude of a 4th-order Butterworth high- and
    low-pass run forward and backward, applied in the frequency domain (an order of
    magnitude faster than sosfiltfilt on minutes of audio)."""
    n = next_fast_len(len(x) + rate // 10, real=True)  # 0.1 s against wrap-around
    spectrum = np.fft.rfft(x, n)
    f = np.fft.rfftfreq(n, 1 / rate)
    with np.errstate(divide="ignore"):
        gain = 1 / ((1 + (f / high) ** 8) * (1 + (low / f) ** 8))
    return np.fft.irfft(spectrum * gain, n)[:len(x)]


def _scaled_noise(speech: np.ndarray, kind: str, snr_db: float, babble: np.ndarray,
                  rng: np.random.Generator) -> np.ndarray:
    n = len(speech)
    offset = int(rng.integers(len(babble)))
    noise = np.take(babble, (offset + np.arange(n)) % len(babble)).astype(np.float64)
    noise /= math.sqrt(np.mean(noise ** 2))
    if kind == "office":  # a room of keyboards and air conditioning under distant talk
        noise = 0.5 * noise + pink_noise(n, SOURCE_RATE, rng)
        noise /= math.sqrt(np.mean(noise ** 2))
    target = active_power(speech, SOURCE_RATE) / 10 ** (snr_db / 10)
    return noise * math.sqrt(target)


def lose_packets(x: np.ndarray, rate: int, loss_rate: float,
                 rng: np.random.Generator) -> np.ndarray:
    """Drop 20 ms packets in bursts (a two-state Gilbert model whose mean burst is 2.5
    packets and whose long-run loss is `loss_rate`); conceal as the module docstring says."""
    frame = int(FRAME_S * rate)
    count = len(x) // frame
    stay_lost = 0.6
    start_loss = loss_rate * (1 - stay_lost) / (1 - loss_rate)
    lost = np.zeros(count, bool)
    state = False
    for i, u in enumerate(rng.random(count).tolist()):
        state = u < (stay_lost if state else start_loss)
        lost[i] = state
    y = x.copy()
    frames = y[:count * frame].reshape(count, frame)  # a view: writes land in y
    first = np.flatnonzero(lost & ~np.concatenate([[False], lost[:-1]]))
    frames[lost] = 0.0
    previous = first[first > 0] - 1
    frames[previous + 1] = 0.5 * x[:count * frame].reshape(count, frame)[previous]
    return y


def render_line(customer: np.ndarray, agent: np.ndarray, profile: LineProfile,
                babble: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Both channels (customer, agent; 16 kHz float) through the line: (channels, samples)
    at `profile.rate`, in [-1, 1]; one channel when the profile is mono (customer + agent)."""
    customer, agent = customer.astype(np.float64), agent.astype(np.float64)
    if profile.noise:
        customer = customer + _scaled_noise(customer, profile.noise, profile.snr_db, babble,
                                            rng)
    if profile.echo_db is not None:
        delay = int(profile.echo_delay_s * SOURCE_RATE)
        echo = np.concatenate([np.zeros(delay), agent[:len(agent) - delay]])
        customer = customer + echo * 10 ** (profile.echo_db / 20)
    sides = {"customer": customer, "agent": agent}
    if profile.quiet_side:
        sides[profile.quiet_side] = sides[profile.quiet_side] * 10 ** (-profile.mismatch_db / 20)
    out = []
    for side in ("customer", "agent"):
        x = sides[side]
        if profile.overdrive_db:
            x = np.clip(x * 10 ** (profile.overdrive_db / 20), -1, 1)
        out.append(_network(x, profile, rng))
    length = min(len(x) for x in out)
    stereo = np.stack([x[:length] for x in out])
    if profile.mono:
        stereo = stereo.sum(axis=0, keepdims=True)
    return np.clip(stereo, -1.0, 1.0)


def _network(x: np.ndarray, profile: LineProfile, rng: np.random.Generator) -> np.ndarray:
    """One channel from the talker's handset to the recorder's input, at profile.rate."""
    if profile.wideband:
        x = _band(x, 50, 7000, SOURCE_RATE)
    else:
        x = soxr.resample(_band(x, 300, 3400, SOURCE_RATE), SOURCE_RATE, 8000)
    rate = profile.rate
    for codec in profile.codecs:
        decoded, codec_at = codec_roundtrip(np.clip(x, -1, 1), rate, codec, profile.opus_kbps)
        x = soxr.resample(decoded, codec_at, rate) if codec_at != rate else decoded
    if profile.loss_rate:
        x = lose_packets(x, rate, profile.loss_rate, rng)
    return x
