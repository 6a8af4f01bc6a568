"""Prometheus and Alertmanager configs shaped from the shipped files: one home for
every generator of them.

Three generators write configs for crawlguard's alerts, and all of them start
from the same shipped files (``rules/crawlguard.rules.yml`` and
``deploy/alertmanager/alertmanager.yml``):

- ``crawlguard up`` (``crawlguard.rig.promstack``): one rig's Prometheus and
  Alertmanager;
- ``crawlguard fleet generate`` (``crawlguard.fleet``): the central Prometheus
  and Alertmanager of a fleet of bare rigs;
- ``deploy/k8s/generate.py``: the Kubernetes fleet, run from a checkout with
  nothing installed but PyYAML, which is why this module imports PyYAML and the
  kernel's errors only, and takes the shipped files' paths as arguments.

What a fleet's Alertmanager adds to the single rig's is one thing: each rig's
crawl alerts go to that rig's sidecar alone. ``per_rig_alertmanager`` builds
that routing tree from the shipped one, so the matchers, the grouping, the
timings and the webhook settings (``send_resolved``, ``max_alerts``) are read,
never restated: the reasons for each are written once, in the shipped file.

Which alerts exist and where each goes are read the same way, never listed by
hand: ``alert_rules`` lists the alerts of rule groups, ``receivers_of`` walks an
Alertmanager routing tree as Alertmanager does (``amtool config routes test``
agrees, tests/kernel/test_promconfig.py), and ``alert_receivers`` combines them:
the alerts of the shipped rules and the receiver the shipped route gives each.
``crawlguard doctor`` checks a live Prometheus and Alertmanager against that.
"""

from __future__ import annotations

import copy
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from .errors import ConfigError

SIDECAR_RECEIVER = "crawlguard-sidecar"
"""The shipped Alertmanager's receiver of the alerts the sidecar acts on."""
HUMANS_RECEIVER = "crawlguard-humans"
"""The shipped Alertmanager's receiver of the alerts for people (no rung to take)."""
TIMING_KEYS = ("group_wait", "group_interval", "repeat_interval")


def load_yaml(path: Path, what: str = "shipped config") -> dict[str, Any]:
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError) as exc:
        # PyYAML's messages span lines; the command line prints one.
        raise ConfigError(what, str(path), "unreadable: " + " ".join(str(exc).split())) \
            from exc
    if not isinstance(data, dict):
        raise ConfigError(what, str(path), "not a YAML mapping")
    return data


def rule_groups(paths: Iterable[Path]) -> list[dict[str, Any]]:
    """The rule groups of every file in ``paths``, in order: what a Prometheus loads."""
    groups: list[dict[str, Any]] = []
    for path in paths:
        groups.extend(load_yaml(path, "rules file").get("groups") or [])
    return groups


@dataclass(frozen=True)
class AlertRule:
    """One alerting rule: its name, its group, and the labels the rule sets."""

    name: str
    group: str
    labels: dict[str, str] = field(default_factory=dict)


def alert_rules(groups: Iterable[Mapping[str, Any]]) -> list[AlertRule]:
    """Every alerting rule of ``groups``, in order (recording rules left out)."""
    out: list[AlertRule] = []
    for group in groups:
        for rule in group.get("rules") or []:
            if isinstance(rule, Mapping) and isinstance(rule.get("alert"), str):
                labels = rule.get("labels") or {}
                out.append(AlertRule(rule["alert"], str(group.get("name", "")),
                                     {str(k): str(v) for k, v in labels.items()}))
    return out


def rule_names(groups: Iterable[Mapping[str, Any]]) -> dict[str, str]:
    """Every rule of ``groups`` (alerting and recording), by name -> its group's name."""
    return {str(rule.get("alert") or rule.get("record")): str(group.get("name", ""))
            for group in groups for rule in group.get("rules") or []
            if isinstance(rule, Mapping) and (rule.get("alert") or rule.get("record"))}


_MATCHER = re.compile(
    r'\s*([A-Za-z_][A-Za-z0-9_]*)\s*(=~|!~|!=|=)\s*("(?:[^"\\]|\\.)*"|[^,}]*?)\s*(?:,|}|$)')


def _matchers(route: Mapping[str, Any]) -> list[tuple[str, str, str]]:
    """A route's matchers as (label, operator, value): ``matchers`` (each string one or
    more, ``{...}`` allowed) and the older ``match`` / ``match_re`` maps."""
    out: list[tuple[str, str, str]] = []
    matchers = route.get("matchers") or []
    if not isinstance(matchers, list):
        raise ConfigError("Alertmanager route", matchers, "matchers is not a list")
    for text in matchers:
        body = str(text).strip()
        body = body[1:] if body.startswith("{") else body
        pos = 0
        while pos < len(body) and body[pos:].strip(" ,}"):
            m = _MATCHER.match(body, pos)
            if m is None:
                raise ConfigError("Alertmanager route", str(text), "unparsable matcher")
            value = m.group(3)
            if value.startswith('"'):
                value = re.sub(r"\\(.)", lambda c: {"n": "\n"}.get(c.group(1), c.group(1)),
                               value[1:-1])
            out.append((m.group(1), m.group(2), value))
            pos = m.end()
    for key, op in (("match", "="), ("match_re", "=~")):
        pairs = route.get(key) or {}
        if not isinstance(pairs, Mapping):
            raise ConfigError("Alertmanager route", pairs, f"{key} is not a mapping")
        for label, value in pairs.items():
            out.append((str(label), op, str(value)))
    return out


def _matches(matchers: Iterable[tuple[str, str, str]], labels: Mapping[str, str]) -> bool:
    for label, op, value in matchers:
        have = labels.get(label, "")
        if op in ("=", "!="):
            hit = have == value
        else:
            try:
                hit = re.fullmatch(value, have) is not None  # anchored, as Alertmanager's
            except re.error as exc:
                raise ConfigError("Alertmanager route", value, f"bad regex: {exc}") from exc
        if hit != (op in ("=", "=~")):
            return False
    return True


def receivers_of(config: Mapping[str, Any], labels: Mapping[str, str]) -> list[str]:
    """The receivers Alertmanager's routing tree (``config["route"]``) sends an alert
    with ``labels`` to: depth first, a child's unset receiver inherited, the first
    matching child taken unless it says ``continue``, the route itself when no child
    matches. The root matches every alert."""

    def walk(route: Mapping[str, Any], inherited: str, root: bool) -> list[str]:
        receiver = str(route.get("receiver") or inherited)
        if not root and not _matches(_matchers(route), labels):
            return []
        found: list[str] = []
        children = route.get("routes") or []
        if not isinstance(children, list):
            raise ConfigError("Alertmanager route", children, "routes is not a list")
        for child in children:
            if not isinstance(child, Mapping):
                raise ConfigError("Alertmanager route", child, "not a mapping")
            got = walk(child, receiver, False)
            found.extend(got)
            if got and not child.get("continue", False):
                break
        return found or [receiver]

    route = config.get("route")
    return walk(route, "", True) if isinstance(route, Mapping) else []


def alert_receivers(rules: Iterable[Path], alertmanager: Mapping[str, Any]
                    ) -> dict[str, list[str]]:
    """Each alert of the rule files ``rules`` -> the receivers ``alertmanager`` (a config)
    routes it to, judged on its name and the labels its rule sets."""
    return {a.name: receivers_of(alertmanager, {**a.labels, "alertname": a.name})
            for a in alert_rules(rule_groups(rules))}


@dataclass(frozen=True)
class Route:
    """One route of the shipped Alertmanager config, as the generators reuse it."""

    receiver: str
    matchers: list[str]
    group_by: list[str]
    timing: dict[str, str] = field(default_factory=dict)

    @property
    def alertnames(self) -> str:
        """The regular expression of its ``alertname=~"..."`` matcher."""
        for matcher in self.matchers:
            name, op, value = matcher.partition("=~")
            if op and name.strip() == "alertname":
                return value.strip().strip('"')
        raise ConfigError("shipped config", self.receiver, "route has no alertname=~ matcher")


def shipped_route(config: Mapping[str, Any], receiver: str, where: str = "") -> Route:
    for route in (config.get("route") or {}).get("routes") or []:
        if route.get("receiver") == receiver:
            return Route(receiver=receiver, matchers=[str(m) for m in route["matchers"]],
                         group_by=[str(label) for label in route["group_by"]],
                         timing={k: str(route[k]) for k in TIMING_KEYS if k in route})
    raise ConfigError("shipped config", where, f"has no route for receiver {receiver!r}")


def shipped_webhook(config: Mapping[str, Any], receiver: str, where: str = "") -> dict[str, Any]:
    """The first webhook of ``receiver`` (a copy), e.g. the sidecar's."""
    for entry in config.get("receivers") or []:
        if entry.get("name") == receiver and entry.get("webhook_configs"):
            hook: dict[str, Any] = copy.deepcopy(entry["webhook_configs"][0])
            return hook
    raise ConfigError("shipped config", where, f"has no webhook receiver {receiver!r}")


@dataclass(frozen=True)
class RigReceiver:
    """Where one rig's crawl alerts go: its sidecar's webhook."""

    receiver: str
    """The receiver's name, e.g. ``sidecar-rig1``."""
    matcher: str
    """What picks the rig's alerts, e.g. ``rig="rig1"`` or ``pod="crawlguard-rebuild-0"``."""
    url: str
    """The sidecar's webhook, ``.../v1/alerts``."""
    http_config: dict[str, Any]
    """Alertmanager's ``http_config``: the bearer token file, TLS."""


def per_rig_alertmanager(shipped: Path, rigs: Sequence[RigReceiver], scope: Sequence[str] = (),
                         sidecar_timing: Mapping[str, str] | None = None,
                         extra_routes: Sequence[Mapping[str, Any]] = ()) -> dict[str, Any]:
    """The shipped Alertmanager routing, with each rig's crawl alerts sent to its own sidecar.

    ``scope``: matchers added to both crawlguard routes (a namespace); alerts of
    a rig missing from ``rigs`` go to people. ``sidecar_timing`` replaces the sidecar
    route's group_wait / group_interval / repeat_interval (scaled time).
    """
    config = load_yaml(shipped)
    where = str(shipped)
    sidecar = shipped_route(config, SIDECAR_RECEIVER, where)
    humans = shipped_route(config, HUMANS_RECEIVER, where)
    hook = shipped_webhook(config, SIDECAR_RECEIVER, where)
    receivers: list[dict[str, Any]] = [{"name": config["route"]["receiver"]},
                                       {"name": HUMANS_RECEIVER}]
    for rig in rigs:
        rig_hook = copy.deepcopy(hook)
        rig_hook["url"] = rig.url
        rig_hook["http_config"] = rig.http_config
        receivers.append({"name": rig.receiver, "webhook_configs": [rig_hook]})
    return {
        "route": {
            "receiver": config["route"]["receiver"],
            "routes": [
                {"receiver": HUMANS_RECEIVER,  # a rig missing from the fleet
                 "matchers": [*sidecar.matchers, *scope],
                 "group_by": sidecar.group_by, **(sidecar_timing or sidecar.timing),
                 "routes": [{"receiver": r.receiver, "matchers": [r.matcher]} for r in rigs]},
                {"receiver": HUMANS_RECEIVER,
                 "matchers": [*humans.matchers, *scope],
                 "group_by": humans.group_by, **humans.timing},
                *(dict(r) for r in extra_routes),
            ],
        },
        "receivers": receivers,
    }


class _Dumper(yaml.SafeDumper):
    """Block style, multi-line strings as literal blocks (rules stay readable)."""


def _str(dumper: yaml.SafeDumper, value: str) -> yaml.ScalarNode:
    style = "|" if "\n" in value else None
    return dumper.represent_scalar("tag:yaml.org,2002:str", value, style=style)


_Dumper.add_representer(str, _str)
_Dumper.add_multi_representer(str, _str)  # str subclasses too (crawlguard's ShardName)


def dump(*docs: Any) -> str:
    """YAML for people to read: keys in order, block style, rules as literal blocks."""
    return yaml.dump_all(docs, Dumper=_Dumper, sort_keys=False, default_flow_style=False,
                         width=100, allow_unicode=True)
