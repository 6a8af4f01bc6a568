"""The small subset of Prometheus' alert templating the shipped rules use.

Annotations of the embedded alerts must be byte-identical to the ones
Prometheus renders from ``rules/crawlguard.rules.yml`` (promtool compares
them in the parity tests). Rather than a Go template engine, this renders
exactly the actions those annotations contain and refuses anything else, so
a rule that grows a construct we do not mirror fails loudly in the tests:

    {{ $labels.NAME }}          the label's value, "" when absent (missingkey=zero)
    {{ $value | FUNC }}         FUNC in humanize, humanizePercentage, humanizeDuration
    {{ FUNC $value }}           the same, call syntax

The number formatting mirrors Go's ``fmt.Sprintf("%.4g")``, which Python's
``%.4g`` matches for finite values (both round correctly, strip trailing
zeros and print two-digit exponents); NaN and the infinities are spelled the
Go way.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Mapping

_ACTION = re.compile(r"\{\{-?\s*(.*?)\s*-?\}\}", re.S)
_LABEL = re.compile(r"^\$labels\.([A-Za-z_][A-Za-z0-9_]*)$")
_PIPE = re.compile(r"^\$value\s*\|\s*([A-Za-z]+)$")
_CALL = re.compile(r"^([A-Za-z]+)\s+\$value$")


class TemplateError(ValueError):
    """A template uses a construct this renderer does not mirror."""


def go_g4(v: float) -> str:
    """Go's ``fmt.Sprintf("%.4g", v)``."""
    if math.isnan(v):
        return "NaN"
    if math.isinf(v):
        return "+Inf" if v > 0 else "-Inf"
    return f"{v:.4g}"


def humanize(v: float) -> str:
    if v == 0 or math.isnan(v) or math.isinf(v):
        return go_g4(v)
    if abs(v) >= 1:
        prefix = ""
        for p in ("k", "M", "G", "T", "P", "E", "Z", "Y"):
            if abs(v) < 1000:
                break
            prefix = p
            v /= 1000
        return go_g4(v) + prefix
    v, prefix = _small_prefix(v)
    return go_g4(v) + prefix


def _small_prefix(v: float) -> tuple[float, str]:
    """Scale |v| < 1 up by thousands, as Prometheus' humanize functions do."""
    prefix = ""
    for p in ("m", "u", "n", "p", "f", "a", "z", "y"):
        if abs(v) >= 1:
            break
        prefix = p
        v *= 1000
    return v, prefix


def humanize_percentage(v: float) -> str:
    return go_g4(v * 100) + "%"


def humanize_duration(v: float) -> str:
    if math.isnan(v) or math.isinf(v):
        return go_g4(v)
    if v == 0:
        return go_g4(v) + "s"
    if abs(v) >= 1:
        sign = ""
        if v < 0:
            sign, v = "-", -v
        whole = int(v)  # Go's int64(v) truncates, as int() does
        seconds = whole % 60
        minutes = (whole // 60) % 60
        hours = (whole // 3600) % 24
        days = whole // 86400
        if days:
            return f"{sign}{days}d {hours}h {minutes}m {seconds}s"
        if hours:
            return f"{sign}{hours}h {minutes}m {seconds}s"
        if minutes:
            return f"{sign}{minutes}m {seconds}s"
        return f"{sign}{go_g4(v)}s"
    v, prefix = _small_prefix(v)
    return f"{go_g4(v)}{prefix}s"


FUNCS: dict[str, Callable[[float], str]] = {
    "humanize": humanize,
    "humanizePercentage": humanize_percentage,
    "humanizeDuration": humanize_duration,
}


def _action(expr: str, labels: Mapping[str, str], value: float) -> str:
    m = _LABEL.match(expr)
    if m:
        return labels.get(m.group(1), "")
    m = _PIPE.match(expr) or _CALL.match(expr)
    if m and m.group(1) in FUNCS:
        return FUNCS[m.group(1)](value)
    raise TemplateError(f"unsupported template action {{{{ {expr} }}}}")


def render(template: str, labels: Mapping[str, str], value: float) -> str:
    """Expand ``template`` the way Prometheus expands an alert annotation."""
    if "{{-" in template or "-}}" in template:
        raise TemplateError("whitespace-trimming actions are not supported")
    return _ACTION.sub(lambda m: _action(m.group(1), labels, value), template)

