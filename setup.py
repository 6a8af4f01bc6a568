"""Build hook: the wheel carries rules/, deploy/ and the runbook as package data.

They stay where people edit them (the top of the repository); ``build_py``
copies them into ``crawlguard/_shipped/`` of the build, so a wheel has them and
the repository holds no second copy. ``crawlguard.shipped.locate()`` finds
either layout. Everything else is configured in pyproject.toml.
"""

from __future__ import annotations

import shutil
from pathlib import Path

from setuptools import setup
from setuptools.command.build_py import build_py

HERE = Path(__file__).resolve().parent
# (source relative to the repository, glob) -> crawlguard/_shipped/<same path>
SHIPPED = (("rules", "*.yml"), ("deploy", "**/*"), ("docs", "runbook.md"))
SKIP = {"__pycache__", "sidecar.token"}


class BuildWithShipped(build_py):
    def run(self) -> None:
        super().run()
        target = Path(self.build_lib) / "crawlguard" / "_shipped"
        for folder, pattern in SHIPPED:
            for src in sorted((HERE / folder).glob(pattern)):
                rel = src.relative_to(HERE)
                if not src.is_file() or SKIP & set(rel.parts) or src.suffix == ".pyc":
                    continue
                dst = target / rel
                dst.parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(src, dst)


setup(cmdclass={"build_py": BuildWithShipped})
