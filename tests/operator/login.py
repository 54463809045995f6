"""Test-only login: point Kopf at the mock API server (the kubernetes client read KUBECONFIG at import)."""

from __future__ import annotations

import os
from typing import Any

import kopf


@kopf.on.login()
def login(**_: Any) -> kopf.ConnectionInfo:
    """The kmock server of the running test."""
    return kopf.ConnectionInfo(server=os.environ["DM_TEST_API_URL"], insecure=True)
