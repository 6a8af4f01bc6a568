"""``tracker.instrument(model)``: every forward pass of a torch model is one batch.

sentence-transformers, FlagEmbedding and a transformers SPLADE loop all batch
inside ``encode``, so the build cannot time the real batches; a forward
pre-hook and an always-called forward hook on the model's ``nn.Module`` can.

- **What is hooked.** A ``torch.nn.Module`` itself (``SentenceTransformer`` is
  one, so is any transformers model); otherwise the ``nn.Module`` held in
  ``.model`` (FlagEmbedding's ``BGEM3FlagModel`` runs
  ``EncoderOnlyEmbedderM3ModelForInference`` there). Anything else is refused
  with a ``TypeError`` that says what was expected.
- **Batch size and tokens.** Genes are the rows of the batch; tokens are the
  sum of its ``attention_mask`` (non-padding tokens), looked up in the keyword
  arguments or in a mapping passed positionally (sentence-transformers and
  FlagEmbedding pass a feature dict). Without a mask the batch counts genes only.
- **GPU timing.** A CUDA forward returns when its kernels are queued, not done.
  The forward hook synchronises once with the batch's device before it stops
  the clock, so a batch's time is its real device time. All three libraries
  copy the batch's output to the host right after the forward (which waits for
  the same kernels), so the synchronisation moves that wait earlier instead of
  adding one; its own cost is one driver call (bench/bench_instrument.py).
  Timing from one forward start to the next would hide nothing either, but it
  would charge the build's own work between ``encode`` calls (writing outputs)
  to the last batch of each call.
- **Once per batch.** A module holds at most one crawlguard hook pair; calling
  ``instrument`` again (with this tracker or another, e.g. the backfill
  tracker after the drain one) only retargets it. Forwards nested inside an
  instrumented forward (an instrumented submodule) are not observed again.
- **OOM.** A forward that raises torch's out-of-memory error is recorded by
  ``CrawlTracker.fail`` before the exception leaves the hook.
- **Processes.** Hooks observe the process that installed them. A library's
  multi-process encode pool pickles the model into its children; the hooks
  pickle as inert ones there (a child has no tracker of its own and would
  otherwise register itself as the shard's worker). Run one worker process
  per shard and GPU, each with its own tracker, which is crawlguard's model.

torch is never imported here: a model can only be a torch module if the build
imported torch, so ``sys.modules`` answers.
"""

from __future__ import annotations

import sys
import threading
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .tracker import CrawlTracker

ATTR = "_crawlguard_hooks"
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


def hidden_size(module: Any) -> int | None:
    """The encoder's width, where a transformers config says it (see ``work``)."""
    for candidate in (module, getattr(module, "model", None)):
        config = getattr(candidate, "config", None)
        size = getattr(config, "hidden_size", None)
        if isinstance(size, int) and size > 0:
            return size
    for sub in module.modules():
        size = getattr(getattr(sub, "config", None), "hidden_size", None)
        if isinstance(size, int) and size > 0:
            return size
    return None


def work(mask: Any, hidden: int | None) -> tuple[int, float]:
    """(non-padding tokens, their cost in token units) of one batch.

    A transformer layer spends about 12 h^2 multiply-adds per token in its
    linear layers and 2 L h in attention over a sequence of L tokens, so a
    token of an L-token text costs 1 + L / 6h times a token of a short one. For
    BGE-M3 (h = 1024) a 2,000-token text's tokens cost 1.3x; for a narrow model
    far more. Weighting each text's tokens so keeps a length-sorted encode's
    rate flat from its longest batch to its shortest.
    """
    lengths = mask.sum(dim=-1)
    tokens = int(lengths.sum())
    if hidden is None:
        return tokens, float(tokens)
    return tokens, float((lengths * (1.0 + lengths / (6.0 * hidden))).sum())


def _rows(tensor: Any) -> int:
    shape = getattr(tensor, "shape", None)
    if shape is None or len(shape) == 0:
        return 1
    return int(shape[0])


class Hooks:
    """The hook pair of one module; ``tracker`` can be swapped by a new instrument()."""

    def __init__(self, tracker: CrawlTracker, hidden: int | None = None) -> None:
        self.tracker = tracker
        self.hidden = hidden
        self.handles: list[Any] = []
        self._start = 0.0
        self._genes = 0
        self._mask: Any = None
        self._owner = False

    def pre(self, module: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
        depth = getattr(_nesting, "depth", 0)
        _nesting.depth = depth + 1
        self._owner = depth == 0
        if not self._owner:
            return
        ids, mask = _batch_tensors(args, kwargs)
        self._mask = mask
        self._genes = _rows(ids if ids is not None else mask)
        self._start = self.tracker.begin(self._genes)

    def post(self, module: Any, args: tuple[Any, ...], kwargs: dict[str, Any],
             output: Any) -> None:
        _nesting.depth = max(getattr(_nesting, "depth", 1) - 1, 0)
        if not self._owner:
            return
        self._owner = False
        mask, self._mask = self._mask, None
        error = sys.exc_info()[1]
        if output is None and error is not None:  # torch runs this hook on the way out
            self.tracker.fail(self._genes, error)
            return
        if mask is not None and getattr(mask, "is_cuda", False):
            _torch().cuda.synchronize(mask.device)
        if mask is None or getattr(mask, "ndim", 0) != 2:
            self.tracker.finish(self._genes, self._start)
            return
        tokens, cost = work(mask, self.hidden)
        self.tracker.finish(self._genes, self._start, tokens, cost)

    def remove(self) -> None:
        for handle in self.handles:
            handle.remove()
        self.handles.clear()

    def __reduce__(self) -> tuple[Any, tuple[()]]:
        return (_inert, ())


class _Inert:
    """What a hook becomes in another process (a multi-process encode pool)."""

    def __call__(self, *args: Any) -> None:
        return None

    def pre(self, *args: Any) -> None:
        return None

    def post(self, *args: Any) -> None:
        return None

    def remove(self) -> None:
        return None


def _inert() -> _Inert:
    return _Inert()


def instrument(tracker: CrawlTracker, model: Any) -> Any:
    """Install (or retarget) the hook pair on ``model``'s module; returns ``model``."""
    module = target_module(model)
    hooks = module.__dict__.get(ATTR)
    if isinstance(hooks, Hooks):
        hooks.tracker = tracker
        return model
    hooks = Hooks(tracker, hidden_size(module))
    hooks.handles.append(module.register_forward_pre_hook(hooks.pre, with_kwargs=True))
    hooks.handles.append(module.register_forward_hook(hooks.post, with_kwargs=True,
                                                      always_call=True))
    module.__dict__[ATTR] = hooks
    return model


def uninstrument(model: Any) -> Any:
    """Remove crawlguard's hooks from ``model`` (no-op when there are none)."""
    module = target_module(model)
    hooks = module.__dict__.pop(ATTR, None)
    if isinstance(hooks, Hooks):
        hooks.remove()
    return model
