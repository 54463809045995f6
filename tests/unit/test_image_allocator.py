"""The e2e tier and the footprint benchmark start the operator on the image's allocator, read from
deploy/Dockerfile's ENV instructions (a continued line, quotes and comments as Docker reads them)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tests.e2e.image import check_preloaded, image_allocator


def test_the_allocator_is_read_from_continued_env_lines(tmp_path: Path) -> None:
    dockerfile = tmp_path / "Dockerfile"
    dockerfile.write_text('FROM python:3.11-slim\nENV PATH=/venv/bin:$PATH \\\n    PYTHONMALLOC=malloc\n'
                          '# a comment\nENV LD_PRELOAD=libjemalloc.so.2 \\\n    MALLOC_CONF="narenas:1,tcache:false"\n'
                          'USER 10001:10001\n')
    assert image_allocator(dockerfile) == {"LD_PRELOAD": "libjemalloc.so.2", "PYTHONMALLOC": "malloc",
                                           "MALLOC_CONF": "narenas:1,tcache:false"}


def test_an_image_without_its_allocator_is_refused_by_name(tmp_path: Path) -> None:
    dockerfile = tmp_path / "Dockerfile"
    dockerfile.write_text("FROM python:3.11-slim\nENV PYTHONMALLOC=malloc\n")
    with pytest.raises(RuntimeError, match="Dockerfile: no ENV LD_PRELOAD, MALLOC_CONF"):
        image_allocator(dockerfile)


def test_a_process_without_the_preloaded_library_is_refused() -> None:
    with pytest.raises(RuntimeError, match=r"runs without libnot-loaded\.so\.9"):
        check_preloaded(os.getpid(), {"LD_PRELOAD": "libnot-loaded.so.9"})
