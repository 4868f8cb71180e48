"""Deployment on real devices: certificates, the coordinator (a SuperLink), a device (a SuperNode
running the same ClientApp), submitting a run, and the ServerApp the deployment engine loads
(fleet.deploy.serverapp:app, named in pyproject.toml and never imported here).
"""

from fleet.deploy.certs import make_certs
from fleet.deploy.coordinator import Coordinator, run_coordinator
from fleet.deploy.device import Device, run_device
from fleet.deploy.flower import DeploymentError
from fleet.deploy.submission import submit

__all__ = [
    "Coordinator",
    "DeploymentError",
    "Device",
    "make_certs",
    "run_coordinator",
    "run_device",
    "submit",
]
