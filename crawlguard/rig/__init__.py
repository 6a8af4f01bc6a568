"""`crawlguard up` and `crawlguard demo`: every part of crawlguard for one rig.

``up`` (the rig: exporter, sidecar, alert evaluation, supervisor), ``servers``
and ``promstack`` (the children it runs, real Prometheus and Alertmanager
configured from deploy/), ``liveview`` and ``shardview`` (live progress),
``demo`` (the reference rebuild's two incidents and the lossless verdict).
"""
