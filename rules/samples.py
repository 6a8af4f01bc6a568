"""Samples as the evaluator sees them, and Prometheus' label-set identity.

A ``Snapshot`` is one instant of every series: what a Prometheus instant
query would return at the evaluation time. The embedded loop builds one from a
scrape of the exporter; the parity tests build them from promtool input
series. Label values that are empty are dropped, exactly as Prometheus does
(``gpu=""`` on a CPU worker is "no gpu label"), so joins behave the same.

``fingerprint`` is Alertmanager's: FNV-1a 64 over the sorted label names and
values, each followed by the 0xff separator byte, printed as 16 hex digits.
The sidecar dedups on it, so the embedded path must produce the very same
value for the same label set as the Prometheus path.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass

from prometheus_client.parser import text_string_to_metric_families

LabelSet = tuple[tuple[str, str], ...]
"""Sorted ``(name, value)`` pairs without empty values and without ``__name__``."""

_FNV_OFFSET = 14695981039346656037
_FNV_PRIME = 1099511628211
_MASK64 = (1 << 64) - 1
_SEPARATOR = 0xFF


def label_set(labels: Mapping[str, str]) -> LabelSet:
    """Canonical label set: sorted, empty values dropped, ``__name__`` dropped."""
    return tuple(sorted((k, v) for k, v in labels.items() if v != "" and k != "__name__"))


def fingerprint(labels: Mapping[str, str]) -> str:
    """Alertmanager's fingerprint of a label set (``model.LabelSet.Fingerprint``)."""
    h = _FNV_OFFSET
    for name, value in sorted(labels.items()):
        for part in (name, value):
            for byte in part.encode("utf-8"):
                h = ((h ^ byte) * _FNV_PRIME) & _MASK64
            h = ((h ^ _SEPARATOR) * _FNV_PRIME) & _MASK64
    return f"{h:016x}"


@dataclass(frozen=True)
class Sample:
    """One sample of one series. ``timestamp`` (unix seconds) is when it was
    taken; ``None`` means "at the evaluation time" (a fresh scrape)."""

    name: str
    labels: LabelSet
    value: float
    timestamp: float | None = None


class Snapshot:
    """The instant vector of every metric name at one evaluation time."""

    def __init__(self, samples: Iterable[Sample]) -> None:
        self._by_name: dict[str, dict[LabelSet, Sample]] = {}
        for s in samples:
            # A later duplicate wins, as the last line of an exposition would.
            self._by_name.setdefault(s.name, {})[s.labels] = s

    def series(self, name: str) -> dict[LabelSet, float]:
        """``{labels: value}`` of every series named ``name`` (empty if none)."""
        return {ls: s.value for ls, s in self._by_name.get(name, {}).items()}

    def samples(self, name: str) -> list[Sample]:
        return list(self._by_name.get(name, {}).values())

    def __iter__(self) -> Iterator[Sample]:
        for by_labels in self._by_name.values():
            yield from by_labels.values()

    def __len__(self) -> int:
        return sum(len(v) for v in self._by_name.values())


def parse_exposition(text: str, target_labels: Mapping[str, str] | None = None) -> list[Sample]:
    """Samples of a Prometheus text exposition, with ``target_labels`` added the
    way Prometheus adds ``job``/``instance`` to a scraped target's series (the
    target's labels win over the exposition's, as without honor_labels).

    Raises ``ValueError`` on text that does not parse.
    """
    extra = dict(target_labels or {})
    out: list[Sample] = []
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            labels = {**s.labels, **extra}
            out.append(Sample(s.name, label_set(labels), float(s.value)))
    return out


def as_dict(labels: LabelSet) -> dict[str, str]:
    return dict(labels)
