"""Deployment on real devices: certificates, the coordinator (a SuperLink), a device (a SuperNode
running the same ClientApp), submitting a run, and the ServerApp the deployment engine loads
(fleet.deploy.serverapp:app, named in pyproject.toml and never imported here).

The names load on first use (fleet.lazy): every `fleet` command imports this face for
DeploymentError, and `fleet device` on a Pi should not load the certificate tooling
(cryptography) or the other commands it never runs.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from fleet.lazy import lazy_names

if TYPE_CHECKING:
    from fleet.deploy.certs import make_certs
    from fleet.deploy.coordinator import Coordinator, run_coordinator
    from fleet.deploy.device import Device, run_device
    from fleet.deploy.flower import DeploymentError
    from fleet.deploy.submission import submit

_HOMES = {
    "Coordinator": "fleet.deploy.coordinator",
    "DeploymentError": "fleet.deploy.flower",
    "Device": "fleet.deploy.device",
    "make_certs": "fleet.deploy.certs",
    "run_coordinator": "fleet.deploy.coordinator",
    "run_device": "fleet.deploy.device",
    "submit": "fleet.deploy.submission",
}

__all__ = [
    "Coordinator",
    "DeploymentError",
    "Device",
    "make_certs",
    "run_coordinator",
    "run_device",
    "submit",
]

__getattr__ = lazy_names(__name__, _HOMES)
