"""``tracker.instrument(model)``: every forward pass of a torch model is one batch.

sentence-transformers, FlagEmbedding and a transformers SPLADE loop all batch
inside ``encode``, so the build cannot time the real batches; the model's
``nn.Module`` can, by having its ``forward`` go through crawlguard.

- **What is wrapped.** A ``torch.nn.Module`` itself (``SentenceTransformer`` is
  one, so is any transformers model); otherwise the ``nn.Module`` held in
  ``.model`` (FlagEmbedding's ``BGEM3FlagModel`` runs
  ``EncoderOnlyEmbedderM3ModelForInference`` there). Anything else is refused
  with a ``TypeError`` that says what was expected. ``Observed`` is set as the
  module's instance attribute ``forward``, which ``nn.Module.__call__`` calls;
  ``uninstrument`` removes it.
- **Why a wrapper, not forward hooks.** torch runs an ``always_call`` forward
  hook only when the forward raises an ``Exception``: a ``KeyboardInterrupt``
  (the notebook's interrupt) skipped it, left the batch in flight (a stall could
  follow) and, with it, every later forward looking nested. A wrapper sees every
  ``BaseException`` in its ``try``, keeps its state in the call's own locals (so
  two threads encoding with one model are each observed once) and, without
  hooks, torch keeps its fast call path.
- **Batch shape and tokens.** Genes are the rows of the batch; its shape
  (``workmodel.padded_shape``: rows and padded length) is read from the
  ``attention_mask``, looked up in the keyword arguments or in a mapping passed
  positionally (sentence-transformers and FlagEmbedding pass a feature dict);
  tokens are the mask's sum (non-padding tokens), queued before the forward and
  read after it. Without a mask the batch counts genes only.
- **GPU timing.** A CUDA forward returns when its kernels are queued, not done.
  The wrapper synchronises once with the batch's device before it stops the
  clock, so a batch's time is its real device time. All three libraries copy
  the batch's output to the host right after the forward (which waits for the
  same kernels), so the synchronisation moves that wait earlier instead of
  adding one.
- **Once per batch.** A module holds at most one wrapper; calling
  ``instrument`` again (with this tracker or another, e.g. the backfill tracker
  after the drain one) only retargets it. Forwards nested inside an observed
  forward (an instrumented submodule) are not observed again.
- **FlagEmbedding's batch-size probe.** ``encode_single_device`` runs its
  first batch once before its loop (``while flag is False: ... self.model(...)``)
  to find a batch size that fits, then runs it again in the loop. A forward
  called from that probe (the frame of FlagEmbedding's ``encode_single_device``
  with ``flag`` still False) is observed as work without genes: its time and
  shape are judged like any batch, but ``bfm_genes_total`` and ``remaining``
  count each gene once.
- **OOM.** A forward that raises torch's out-of-memory error is recorded by
  ``CrawlTracker.fail`` before the exception leaves the wrapper, unchanged.
- **Processes.** The wrapper observes the process that installed it. Pickled
  to start a child process (a library's multi-process encode pool:
  ``encode(pool=...)``, ``encode(device=[...])``, ``start_multi_process_pool``,
  FlagEmbedding with several devices), it refuses with ``UnobservedPoolError``:
  batches in a child would run unwatched, and a child has no tracker (it would
  register itself as the shard's worker). Pickled otherwise (``torch.save``,
  ``copy.deepcopy``), the copy is plain. A forked child runs the model
  unobserved, after one warning.

torch is never imported here: a model can only be a torch module if the build
imported torch, so ``sys.modules`` answers.
"""

from __future__ import annotations

import functools
import inspect
import multiprocessing.context
import os
import sys
import threading
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from crawlguard.kernel.errors import UnobservedPoolError
from crawlguard.kernel.logs import get_logger

from .workmodel import Shape, padded_shape

if TYPE_CHECKING:
    from .tracker import CrawlTracker

log = get_logger(__name__)

PROBE_FRAMES = 8
"""Frames walked up from a forward to find FlagEmbedding's encode_single_device."""
_nesting = threading.local()


def _torch() -> Any:
    return sys.modules.get("torch")


def target_module(model: Any) -> Any:
    """The ``nn.Module`` whose forward passes are the batches of ``model``."""
    torch = _torch()
    if torch is None:
        raise TypeError("instrument() needs a torch model, and torch is not imported; "
                        f"got {type(model).__name__}")
    module_type = torch.nn.Module
    if isinstance(model, module_type):
        return model
    inner = getattr(model, "model", None)
    if isinstance(inner, module_type):
        return inner  # FlagEmbedding's BGEM3FlagModel and its relatives
    raise TypeError(f"instrument() accepts a torch.nn.Module or an object whose .model is "
                    f"one (FlagEmbedding's BGEM3FlagModel); got {type(model).__name__}")


def probe_code(model: Any) -> Any:
    """The code of FlagEmbedding's ``encode_single_device`` for ``model``, else None."""
    if not type(model).__module__.startswith("FlagEmbedding"):
        return None
    method = getattr(type(model), "encode_single_device", None)
    code = getattr(inspect.unwrap(method), "__code__", None) if method is not None else None
    return code if code is not None and "flag" in code.co_varnames else None


def _batch_tensors(args: tuple[Any, ...], kwargs: Mapping[str, Any]) -> tuple[Any, Any]:
    """(input_ids or the first tensor, attention_mask or None) of one forward call."""
    feats: Mapping[str, Any] = kwargs
    if "input_ids" not in kwargs and "attention_mask" not in kwargs:
        first = args[0] if args else next(iter(kwargs.values()), None)
        if isinstance(first, Mapping):
            feats = first
        else:
            mask = args[1] if len(args) > 1 else kwargs.get("attention_mask")
            return first, mask
    ids = feats.get("input_ids")
    if ids is None:
        ids = feats.get("inputs_embeds")
    return ids, feats.get("attention_mask")


def _rows(tensor: Any) -> int:
    shape = getattr(tensor, "shape", None)
    if shape is None or len(shape) == 0:
        return 1
    return int(shape[0])


def _in_probe(code: Any, frame: Any) -> bool:
    for _ in range(PROBE_FRAMES):
        if frame is None:
            return False
        if frame.f_code is code:
            return frame.f_locals.get("flag") is False
        frame = frame.f_back
    return False


class Observed:
    """What ``instrument`` sets as a module's ``forward``: each call is one batch."""

    def __init__(self, tracker: CrawlTracker, inner: Any, previous: Any = None,
                 probe: Any = None) -> None:
        self.tracker: CrawlTracker | None = tracker
        self.inner = inner
        """The forward this wraps (the module's own, bound, or whatever was set before)."""
        self.previous = previous
        """The module's instance-level ``forward`` before this one (None: the class's)."""
        self.probe = probe
        self.pid = os.getpid()
        functools.update_wrapper(self, inner)  # signature, name, doc: inspect sees forward

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        tracker = self.tracker
        depth: int = getattr(_nesting, "depth", 0)
        if tracker is None or depth:
            return self.inner(*args, **kwargs)  # detached, or nested in an observed forward
        if os.getpid() != self.pid:
            self._forked()
            return self.inner(*args, **kwargs)
        _nesting.depth = 1
        try:
            ids, mask = _batch_tensors(args, kwargs)
            genes = _rows(ids if ids is not None else mask)
            shape: Shape | None = None
            tokens = None
            if mask is not None and getattr(mask, "ndim", 0) == 2:
                shape = padded_shape(int(mask.shape[0]), int(mask.shape[1]))
                tokens = mask.sum()  # queued ahead of the forward, read after it
            if self.probe is not None and _in_probe(self.probe, sys._getframe(1)):
                genes = 0  # FlagEmbedding's batch-size probe: work, but no genes
            flight = tracker.begin(genes, shape)
            try:
                output = self.inner(*args, **kwargs)
            except BaseException as exc:
                tracker.fail(flight, exc)
                raise
            if tokens is not None and getattr(mask, "is_cuda", False):
                _torch().cuda.synchronize(mask.device)
            tracker.finish(flight, None if tokens is None else int(tokens))
            return output
        finally:
            _nesting.depth = 0

    def _forked(self) -> None:
        if self.tracker is not None:
            log.warning("crawlguard: an instrumented model runs in a forked child process "
                        "(pid %d); its batches are not observed", os.getpid())
        self.tracker = None

    def __reduce__(self) -> tuple[Any, tuple[Any, ...]]:
        if multiprocessing.context.get_spawning_popen() is not None:
            raise UnobservedPoolError(
                "this model is instrumented by crawlguard and is being sent to a child "
                "process: a multi-process encode pool (encode(pool=...), "
                "encode(device=[...]), start_multi_process_pool, FlagEmbedding with several "
                "devices). crawlguard cannot watch batches in the pool's children, nor "
                "restart them. Run one worker process per GPU instead, each with its own "
                "CrawlTracker (crawlguard run/up starts one per shard); or, to run the pool "
                "unwatched, call crawlguard.exporter.instrument.uninstrument(model) first.")
        # The copy gets the forward this wraps, pickled as itself (a bound method
        # pickles as getattr(module, name)): no crawlguard needed to load it.
        return self.inner.__reduce_ex__(2)  # type: ignore[no-any-return]


def instrument(tracker: CrawlTracker, model: Any) -> Any:
    """Wrap (or retarget) the forward of ``model``'s module; returns ``model``."""
    module = target_module(model)
    current = module.__dict__.get("forward")
    if isinstance(current, Observed):
        current.tracker = tracker
        return model
    module.forward = Observed(tracker, module.forward, current, probe_code(model))
    return model


def uninstrument(model: Any) -> Any:
    """Remove crawlguard's wrapper from ``model`` (no-op when there is none)."""
    module = target_module(model)
    current = module.__dict__.get("forward")
    if isinstance(current, Observed):
        current.tracker = None
        if current.previous is None:
            del module.__dict__["forward"]
        else:
            module.__dict__["forward"] = current.previous  # someone's own override
    return model
