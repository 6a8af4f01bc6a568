"""The remediation side (``crawlguard.sidecar``): the webhook service.

Alertmanager's notifications arrive at ``webhook``; ``ladder`` (pure) decides
the rung; ``judging``, ``engine`` and ``rungs`` record and carry it out;
``actions`` verifies the worker and signals it; ``state`` and ``audit`` keep
it durable; ``app``, ``schemas``, ``server`` and ``metrics`` serve the HTTP
API. ``client`` and ``resume`` are what other processes use of it.

Kept free of imports on purpose: ``crawlguard.sidecar.resume`` must stay
cheap to import from a build's own supervisor loop.
"""
