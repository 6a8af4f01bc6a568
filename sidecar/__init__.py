"""crawlguard's remediation side: webhook, ladder, actions, state, supervisor.

Kept free of imports on purpose: ``sidecar.resume`` must stay cheap to import
from a build's own supervisor loop. Entry points: ``sidecar.cli:main`` (the
``crawlguard`` command) and ``sidecar.resume.resume_env``.
"""
