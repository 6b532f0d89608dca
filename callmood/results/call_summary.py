"""Call-level figures from scored segments: speech per role, emotion shares, escalation.

How the probabilities of single segments become figures a manager reads (docs/analytics.md;
the settings are `CallAnalytics`, fitted on the call benchmark's dev split):

1. **Persistence.** A speaker's emotion in a call changes slowly, so each speaker channel's
   segments are read together through a sticky hidden Markov model over the emotions
   (forward-backward): the emotion stays from one segment to the next with probability
   exp(-gap / persistence) (else it is drawn anew, uniformly), and a segment's
   probabilities, raised to `evidence_weight` (< 1 because overlapping windows hear the
   same audio twice), are its evidence. An agent's emotion changes more slowly than a
   customer's (`agent_persistence_s` against `persistence_s`), so a calm agent is not shown
   with the sporadic sad or angry windows a phone line makes of calm speech.
2. **Shares from probability mass.** A role's share of an emotion is the expected share of
   its speech time in that emotion: the duration-weighted mean of the smoothed
   probabilities, not a count of each segment's top label (`shares="argmax"` counts them).
3. **Uncertainty.** The customer negative share comes with a 95 % interval: the spread of
   the share if each segment were negative with its probability, widened by the model's own
   error on calls (`share_error_sd`, measured on the dev split).
4. **Escalation.** The customer's mean negative probability (of each segment as scored,
   since a trend is what is asked for) in the last third of the call is at least `min_rise`
   above the first third's, with the evidence to back it: the rise is at least
   `min_evidence` standard errors (of the difference of the two means), and the customer
   spoke in at least `min_segments` segments in each of the two thirds. Live alerts apply
   the rule with thresholds of their own (`live_min_rise`, `live_min_evidence`,
   `live_min_segments`) to the call so far and fire only after it has held for
   `confirm_segments` customer segments in a row: a rule read after every segment has a
   chance to fire at each of them, so it needs more evidence than one read once at the end
   of the call to keep false alarms as rare.

Which emotions are negative comes from the model folder's valence map (label -> -1/0/1).
`escalation_slope` (least squares, negative probability per minute) is kept as a column
for readers; the flag does not use it.
"""

from __future__ import annotations

import math
import reprlib
import warnings
from dataclasses import asdict, astuple, dataclass, fields, replace
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from callmood.model.folder import LoadedModel

ROLES = ("agent", "customer")
Z95 = 1.96
LIVE_THRESHOLDS = ("live_min_rise", "live_min_evidence", "live_min_segments")


@dataclass(frozen=True)
class CallAnalytics:
    """How segment probabilities become call figures (see the module docstring). A model
    folder carries those fitted with it (`of_model`); the defaults, for folders without,
    are the bundled model's (callmood-default-v4, fitted on the call benchmark's dev split:
    benchmarks/fit_call_analytics.py, benchmarks/results/call_analytics_fit.json)."""

    shares: str = "mass"  # mass | argmax
    persistence_s: float = 5.0  # customers (and calls without roles); 0: each segment alone
    agent_persistence_s: float = 80.0
    evidence_weight: float = 0.5
    min_rise: float = 0.2
    min_evidence: float = 1.0  # standard errors the rise must span
    min_segments: int = 4  # customer segments needed in the first and in the last third
    live_min_rise: float = 0.2
    live_min_evidence: float = 3.0
    live_min_segments: int = 2
    confirm_segments: int = 3  # live: customer segments the rule must hold for in a row
    share_error_sd: float = 0.322  # the model's own error of a call's negative share

    def __post_init__(self) -> None:
        if self.shares not in ("mass", "argmax"):
            raise ValueError("shares must be 'mass' or 'argmax', got "
                             f"{reprlib.repr(self.shares)}")
        for f in fields(self):
            value = getattr(self, f.name)
            if f.name == "shares":
                continue
            whole = f.type == "int"
            if isinstance(value, bool) or not isinstance(value, int if whole else (int, float)):
                raise ValueError(f"{f.name} must be a {'whole ' if whole else ''}number, "
                                 f"got {reprlib.repr(value)}")
            if not math.isfinite(value) or value < 0:
                raise ValueError(f"{f.name} must be a finite number >= 0, got {value!r}")
        if not 0 < self.evidence_weight <= 1:
            raise ValueError(f"evidence_weight must lie in (0, 1], got {self.evidence_weight}")
        if min(self.min_segments, self.live_min_segments, self.confirm_segments) < 1:
            raise ValueError("min_segments, live_min_segments and confirm_segments must be "
                             "at least 1")

    @property
    def nightly_rule(self) -> EscalationRule:
        return EscalationRule(self.min_rise, self.min_evidence, self.min_segments)

    @property
    def live_rule(self) -> EscalationRule:
        return EscalationRule(self.live_min_rise, self.live_min_evidence, self.live_min_segments)

    @classmethod
    def from_dict(cls, values: dict) -> CallAnalytics:
        """Settings from JSON (e.g. `chosen` of fit_call_analytics.py's report); the
        defaults for those not given, a ValueError naming any that is not a setting."""
        unknown = set(values) - {f.name for f in fields(cls)}
        if unknown:
            raise ValueError(f"unknown analytics settings: {_names(unknown)}")
        return cls(**values)

    @classmethod
    def from_fitted(cls, values: dict, source: str) -> CallAnalytics:
        """from_dict for settings a fit or a scoring wrote (`source`, for the warning).
        Settings with a live confirmation count but no live thresholds were fitted when
        live alerts read the nightly thresholds (before 2026-12-07), their count chosen
        for those: they are read so, with a warning to refit."""
        analytics = cls.from_dict(values)
        if not _before_live_thresholds(values):
            return analytics
        warnings.warn(f"{source}: fitted before live alerts had thresholds of their own; its "
                      "live alerts read the nightly ones, as when it was fitted (refit with "
                      "benchmarks/fit_call_analytics.py)", stacklevel=2)
        return replace(analytics, **dict(zip(LIVE_THRESHOLDS, astuple(analytics.nightly_rule),
                                             strict=True)))

    @classmethod
    def of_model(cls, model: LoadedModel, given: dict | None = None) -> CallAnalytics:
        """The settings a model's calls are read with: those fitted with it (its folder's
        call_analytics.json; the defaults where it has none) with `given` (--analytics)
        over them. Settings this callmood does not know (a folder fitted by a newer one)
        are left out with a warning; a bad value is a ValueError naming the file."""
        known = {f.name for f in fields(cls)}
        unknown = set(model.analytics) - known - {"fitted_on"}
        if unknown:
            warnings.warn(f"{model.analytics_file}: ignored settings this callmood does not "
                          f"know: {_names(unknown)}", stacklevel=2)
        try:
            fitted = cls.from_fitted({key: value for key, value in model.analytics.items()
                                      if key in known}, str(model.analytics_file))
        except ValueError as err:
            raise ValueError(f"{model.analytics_file}: {err}") from None
        given = given or {}
        base = asdict(fitted)
        if _before_live_thresholds(given):  # its count goes with the nightly thresholds
            base = {key: value for key, value in base.items() if key not in LIVE_THRESHOLDS}
        return cls.from_fitted(base | given, "--analytics")


def _before_live_thresholds(values: dict) -> bool:
    return "confirm_segments" in values and not set(values) & set(LIVE_THRESHOLDS)


def _names(names: set) -> str:
    """A few of `names`, each cut short: a stranger's folder may hold thousands."""
    shown = [reprlib.repr(str(name)).strip("'") for name in sorted(names, key=str)[:5]]
    return ", ".join(shown) + (f" and {len(names) - 5} more" if len(names) > 5 else "")


def roles_for(channels: int, customer_channel: int | None) -> list[str]:
    """Role of each channel: customer / agent from metadata, else mono or ch<N>."""
    if customer_channel is not None and 0 <= customer_channel < channels and channels > 1:
        return ["customer" if c == customer_channel else "agent" for c in range(channels)]
    if channels == 1:
        return ["mono"]
    return [f"ch{c}" for c in range(channels)]


def persist(times_s: np.ndarray, probs: np.ndarray, persistence_s: float,
            evidence_weight: float) -> np.ndarray:
    """One speaker's segment probabilities (in time order) read through the sticky HMM:
    the posteriors of forward-backward."""
    if persistence_s == 0 or len(probs) < 2:
        return probs
    k = probs.shape[1]
    evidence = np.power(np.clip(probs, 1e-6, None), evidence_weight)
    stay = np.exp(-np.diff(times_s) / persistence_s)
    forward = np.empty_like(evidence)
    forward[0] = evidence[0] / evidence[0].sum()
    for t in range(1, len(evidence)):
        belief = (stay[t - 1] * forward[t - 1] + (1 - stay[t - 1]) / k) * evidence[t]
        forward[t] = belief / belief.sum()
    backward = np.ones_like(evidence)
    for t in range(len(evidence) - 2, -1, -1):
        message = evidence[t + 1] * backward[t + 1]
        backward[t] = stay[t] * message + (1 - stay[t]) * message.sum() / k
        backward[t] /= backward[t].sum()
    posterior = forward * backward
    return posterior / posterior.sum(axis=1, keepdims=True)


def negative_share_interval(weights: np.ndarray, negative_p: np.ndarray, share: float,
                            analytics: CallAnalytics) -> tuple[float, float] | None:
    """The 95 % interval of the negative share `share` (module docstring, point 3)."""
    total = weights.sum()
    if total <= 0:
        return None
    sampling = float((weights ** 2 * negative_p * (1 - negative_p)).sum() / total ** 2)
    half = Z95 * math.sqrt(sampling + analytics.share_error_sd ** 2)
    return max(0.0, share - half), min(1.0, share + half)


@dataclass(frozen=True)
class EscalationRule:
    """The thresholds of the escalation rule (module docstring, point 4): the nightly
    flag's and the live alert's are each a CallAnalytics' `nightly_rule` / `live_rule`."""

    min_rise: float
    min_evidence: float
    min_segments: int


def escalation_rule(times_s: np.ndarray, negative_p: np.ndarray, duration_s: float,
                    rule: EscalationRule) -> bool:
    """Whether the customer's negative probability rose over the call (docstring, point 4);
    the evidence needs two segments in each third (a spread of one is no spread)."""
    first = negative_p[times_s < duration_s / 3]
    last = negative_p[times_s > 2 * duration_s / 3]
    if min(len(first), len(last)) < rule.min_segments:
        return False
    rise = float(last.mean() - first.mean())
    if rise < rule.min_rise:
        return False
    if rule.min_evidence == 0:
        return True
    if min(len(first), len(last)) < 2:
        return False
    spread = math.sqrt(first.var(ddof=1) / len(first) + last.var(ddof=1) / len(last))
    return rise >= rule.min_evidence * spread


@dataclass
class AlertConfirmation:
    """Live alerts: the live escalation rule (`CallAnalytics.live_rule`) read after each new
    customer segment of the call so far, firing once it has held for `confirm_segments` of
    them in a row."""

    analytics: CallAnalytics
    held: int = 0

    def after_segment(self, times_s: np.ndarray, negative_p: np.ndarray,
                      heard_s: float) -> bool:
        """Whether the alert fires now, `times_s` / `negative_p` being the rule's segments
        heard so far and `heard_s` the call's length so far."""
        holds = escalation_rule(times_s, negative_p, heard_s, self.analytics.live_rule)
        self.held = self.held + 1 if holds else 0
        return self.held >= self.analytics.confirm_segments

    def after_end(self, ends_s: np.ndarray, times_s: np.ndarray, negative_p: np.ndarray,
                  now_s: float) -> bool:
        """after_segment once the rule's segment that ends at `now_s` is heard, on those of
        the rule's segments (alert_trend) that had ended by then."""
        heard = ends_s <= now_s
        return self.after_segment(times_s[heard], negative_p[heard], now_s)


def alert_trend(labels: list[str], valence: dict[str, int],
                segments: list[tuple[str, float, float]], probs: np.ndarray,
                ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(end times, midpoints, negative probability) of the escalation rule's segments
    (customer_trend) in the order they end: what the live alert reads, a segment at a
    time. Exact for a customer channel or a mono call; where two channels without known
    roles both count, live reads each channel's windows as their pauses pass, so its
    order, and its alert, can differ."""
    ends = np.array([e for _, _, e in segments], dtype=np.float64)
    mids, trend = customer_trend(labels, valence, segments, probs)
    ends = ends[trend_focus(np.array([role for role, _, _ in segments]))]
    order = np.lexsort((mids, ends))
    return ends[order], mids[order], trend[order]


def alert_held_counts(ends_s: np.ndarray, times_s: np.ndarray, negative_p: np.ndarray,
                      analytics: CallAnalytics) -> np.ndarray:
    """For how many of the rule's segments in a row the live rule has held after each of
    them ends (alert_trend's order), read on the segments heard by then, as live scoring
    reads it (AlertConfirmation)."""
    confirmation, held = AlertConfirmation(analytics), []
    for now in ends_s:
        confirmation.after_end(ends_s, times_s, negative_p, float(now))
        held.append(confirmation.held)
    return np.array(held, dtype=int)


def first_alert(ends_s: np.ndarray, held: np.ndarray, confirm_segments: int) -> float | None:
    """The end of the segment after which the rule has held for `confirm_segments` in a
    row (`held`: alert_held_counts), when the live alert fires; None: it never does."""
    fired = np.flatnonzero(held >= confirm_segments)
    return float(ends_s[fired[0]]) if len(fired) else None


def live_alert_at(ends_s: np.ndarray, times_s: np.ndarray, negative_p: np.ndarray,
                  analytics: CallAnalytics) -> float | None:
    """When the live alert fires on the rule's segments (alert_trend); None: never."""
    return first_alert(ends_s, alert_held_counts(ends_s, times_s, negative_p, analytics),
                       analytics.confirm_segments)


def escalation_slope(times_s: np.ndarray, negative_p: np.ndarray) -> float | None:
    """Least-squares slope of the negative probability per minute."""
    if len(times_s) < 2 or np.ptp(times_s) == 0:
        return None
    return float(np.polyfit(times_s / 60.0, negative_p, 1)[0])


def trend_focus(roles: np.ndarray) -> np.ndarray:
    """Which of these (segments' or channels') roles the trend and the peak read: the
    customer's where the roles are known (none when the customer did not speak: the
    agent's speech is not the customer's), all of them where they are not (mono, chN)."""
    customer = roles == "customer"
    known = customer.any() or (roles == "agent").any()
    return customer if known else np.ones(len(roles), bool)


def customer_trend(labels: list[str], valence: dict[str, int],
                   segments: list[tuple[str, float, float]], probs: np.ndarray,
                   ) -> tuple[np.ndarray, np.ndarray]:
    """(midpoints, negative probability as scored) of the segments trend_focus picks: the
    escalation rule's input."""
    negative = np.array([valence.get(label, 0) < 0 for label in labels])
    roles = np.array([role for role, _, _ in segments])
    mids = np.array([(s + e) / 2 for _, s, e in segments], dtype=np.float64)
    focus = trend_focus(roles)
    scored = np.asarray(probs, dtype=np.float64).reshape(len(segments), len(labels))
    return mids[focus], scored[focus][:, negative].sum(axis=1)


def smoothed_by_role(roles: np.ndarray, mids: np.ndarray, probs: np.ndarray,
                     analytics: CallAnalytics) -> np.ndarray:
    """`persist` applied to each role's segments (each role is one speaker)."""
    out = probs.astype(np.float64, copy=True)
    for role in set(roles.tolist()):
        mine = np.flatnonzero(roles == role)
        order = mine[np.argsort(mids[mine], kind="stable")]
        persistence = (analytics.agent_persistence_s if role == "agent"
                       else analytics.persistence_s)
        out[order] = persist(mids[order], probs[order].astype(np.float64), persistence,
                             analytics.evidence_weight)
    return out


def summarize_call(labels: list[str], valence: dict[str, int], duration_s: float,
                   speech: list[tuple[str, float, float]],
                   segments: list[tuple[str, float, float]], probs: np.ndarray,
                   analytics: CallAnalytics) -> dict:
    """The computed columns of a `calls` row.

    speech: (role, start_s, end_s) VAD regions; segments: (role, start_s, end_s) scored
    windows, one row of `probs` (N, labels) each. Shares weigh segments by duration.
    """
    negative = np.array([valence.get(label, 0) < 0 for label in labels])
    roles = np.array([role for role, _, _ in segments])
    starts = np.array([s for _, s, _ in segments], dtype=np.float64)
    ends = np.array([e for _, _, e in segments], dtype=np.float64)
    mids = (starts + ends) / 2
    raw = np.asarray(probs, dtype=np.float64).reshape(len(segments), len(labels))
    smoothed = smoothed_by_role(roles, mids, raw, analytics)
    mass = (smoothed if analytics.shares == "mass"
            else np.eye(len(labels))[smoothed.argmax(axis=1)] if len(smoothed) else smoothed)
    smoothed_negative = smoothed[:, negative].sum(axis=1)
    row: dict = {}
    for role in ROLES:
        row[f"speech_s_{role}"] = float(sum(e - s for r, s, e in speech if r == role))
        mine = roles == role
        weights = (ends - starts)[mine]
        for i, label in enumerate(labels):
            row[f"{role}_share_{label}"] = (float(weights @ mass[mine, i] / weights.sum())
                                            if weights.sum() > 0 else None)

    # a share of customer speech needs a known customer channel: None without one, since
    # the agent's speech would dilute it
    customer = roles == "customer"
    shares = [row[f"customer_share_{label}"] for label in labels]
    row["customer_negative_share"] = (
        float(sum(s for s, neg in zip(shares, negative, strict=True) if neg))
        if shares and shares[0] is not None else None)
    interval = (negative_share_interval((ends - starts)[customer], smoothed_negative[customer],
                                        row["customer_negative_share"], analytics)
                if customer.any() and row["customer_negative_share"] is not None else None)
    row["customer_negative_share_low"], row["customer_negative_share_high"] = (
        interval or (None, None))

    # the peak and the trend are still worth flagging without roles (mono, unknown
    # channels): there the whole call stands in for the customer
    focus = trend_focus(roles)

    row.update({"peak_negative_emotion": None, "peak_negative_confidence": None,
                "peak_negative_at_s": None})
    predicted = raw.argmax(axis=1)
    candidates = np.flatnonzero(focus & negative[predicted]) if len(raw) else []
    if len(candidates):
        confident = raw.max(axis=1)
        best = candidates[np.argmax(confident[candidates])]
        row.update({"peak_negative_emotion": labels[predicted[best]],
                    "peak_negative_confidence": float(confident[best]),
                    "peak_negative_at_s": float(starts[best])})

    ends, times, trend = alert_trend(labels, valence, segments, raw)
    row["escalation_slope"] = escalation_slope(times, trend)
    row["escalated"] = escalation_rule(times, trend, duration_s, analytics.nightly_rule)
    # a call scored at night shows when the live alert would have fired, so a call that
    # paged a supervisor is not a mystery the next morning (the two rules differ)
    row["live_alert_at_s"] = live_alert_at(ends, times, trend, analytics)
    return row
