"""Group commit: each waiter gets its own result, batches form under load."""

from __future__ import annotations

import asyncio
import threading
from concurrent.futures import ThreadPoolExecutor

import pytest

from sidecar.batching import Batcher


def test_each_item_gets_its_own_result_or_error_and_batches_form() -> None:
    sizes: list[int] = []
    gate = threading.Event()

    def run(items: list[int]) -> list[int | BaseException]:
        gate.wait(10)  # hold the first batch so the others queue behind it
        sizes.append(len(items))
        return [ValueError(i) if i % 5 == 0 else i * 2 for i in items]

    async def main() -> list[int | BaseException]:
        batcher: Batcher[int, int] = Batcher(run, ThreadPoolExecutor(1))
        tasks = [asyncio.ensure_future(batcher.submit(i)) for i in range(1, 21)]
        await asyncio.sleep(0)  # let every submit enqueue (not synchronisation: ordering)
        gate.set()
        return list(await asyncio.gather(*tasks, return_exceptions=True))

    results = asyncio.run(main())
    for i, r in enumerate(results, start=1):
        if i % 5 == 0:
            assert isinstance(r, ValueError) and r.args == (i,)
        else:
            assert r == i * 2
    assert sum(sizes) == 20 and len(sizes) < 20


def test_a_crashing_batch_fails_all_its_waiters_and_close_refuses() -> None:
    def run(items: list[int]) -> list[int | BaseException]:
        raise OSError("disk gone")

    async def main() -> None:
        batcher: Batcher[int, int] = Batcher(run, ThreadPoolExecutor(1))
        with pytest.raises(OSError, match="disk gone"):
            await batcher.submit(1)
        batcher.close()
        with pytest.raises(RuntimeError, match="shutting down"):
            await batcher.submit(2)

    asyncio.run(main())
