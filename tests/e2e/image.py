"""The operator's process as its image runs it: the allocator settings of deploy/Dockerfile.

Written once, in the Dockerfile's ENV; the e2e tier and the footprint benchmark start every
operator with them, so what the tests and the figures see is what a cluster runs.
"""

from __future__ import annotations

import shlex
from pathlib import Path

DOCKERFILE = Path(__file__).resolve().parents[2] / "deploy" / "Dockerfile"
ALLOCATOR = ("LD_PRELOAD", "PYTHONMALLOC", "MALLOC_CONF")


def image_allocator(dockerfile: Path = DOCKERFILE) -> dict[str, str]:
    """LD_PRELOAD, PYTHONMALLOC and MALLOC_CONF as the image's ENV instructions set them."""
    env: dict[str, str] = {}
    for line in dockerfile.read_text().replace("\\\n", " ").splitlines():
        if line.startswith("ENV "):
            env.update(word.partition("=")[::2] for word in shlex.split(line[4:], comments=True))
    missing = [key for key in ALLOCATOR if key not in env]
    if missing:
        raise RuntimeError(f"{dockerfile}: no ENV {', '.join(missing)}: the operator is started with the "
                           "allocator its image sets")
    return {key: env[key] for key in ALLOCATOR}


def check_preloaded(pid: int, env: dict[str, str]) -> None:
    """Fail loudly when the preloaded allocator is not in the process: the dynamic loader only
    warns and goes on with glibc's, and the operator would run on another allocator than the image's."""
    library = env["LD_PRELOAD"]
    if library not in Path(f"/proc/{pid}/maps").read_text():
        raise RuntimeError(f"the operator runs without {library}, which deploy/Dockerfile preloads: install it "
                           "(Debian and Ubuntu: apt-get install libjemalloc2; .ci/run and benchmarks/run do)")
