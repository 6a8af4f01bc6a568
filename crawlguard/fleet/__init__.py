"""A fleet of bare rigs (``crawlguard fleet``): one central Prometheus, Alertmanager and
Grafana for many workstations, over TLS, generated from one file.

    fleetfile   the fleet file: the central host and each rig, checked
    pki         the fleet's CA and certificates (``cryptography``)
    layout      the folder ``generate`` writes, and its record fleet.json
    generate    ``crawlguard fleet generate``: central configs, rig env files, secrets
    status      ``crawlguard fleet status`` and ``fleet rung``: every rig's sidecar and
                exporter, reached from the central host

A rig runs ``crawlguard up --env-file DIR/rigs/NAME/crawlguard.env --alert-path
external``: its exporter and sidecar on its own address, with TLS and its token,
and no Prometheus or Alertmanager of its own. docs/deploy.md, "A fleet of bare
rigs", is the how-to.
"""
