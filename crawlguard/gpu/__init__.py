"""The GPU edge (``crawlguard.gpu``): readings of GPU memory behind small interfaces.

``vram`` reads dedicated memory per GPU (NVML, ``file:PATH``, torch in the
build); ``shared`` reads each worker's shared (system) GPU memory (Windows
PDH, ``file:PATH``). This is the one edge crawlguard cannot have on a machine
without a GPU, so tests feed the ``file:`` sources; the real readers are
written, documented and exercised wherever a GPU is. pynvml and PDH errors
are translated into ``VramError`` / ``SharedMemoryError`` here, at their one
boundary. The exporter (metrics), the sidecar (restart verification), the
supervisor (waiting for a dead worker's memory) and doctor read through it.
"""
