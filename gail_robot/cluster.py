"""Connecting to a Ray cluster: the one place that starts, joins and checks Ray (docs/DESIGN.md §9).

Ray is an optional extra (``pip install 'gail-robot[ray]'``): nothing on the default code path
imports this module, and it imports ``ray`` only inside :func:`connect`. Every failure a user can
cause (Ray missing, an address nobody answers, a cluster without free CPUs, workers with other
package versions) becomes a one-line :class:`~gail_robot.errors.UserError`.
"""

from __future__ import annotations

import contextlib
import os
import socket
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from gail_robot.errors import UserError

#: seconds to wait for a TCP answer from a cluster address before calling it unreachable
CONNECT_TIMEOUT_S = 5.0

#: the packages whose versions must match between the driver and every worker
MATCHED_PACKAGES = ("gail-robot", "torch", "mujoco", "gymnasium", "numpy")


@dataclass(frozen=True)
class ClusterInfo:
    """What the driver knows about the cluster it is connected to.

    Attributes:
        address: the address joined (``"local"`` for a Ray started by this process).
        cpus: total CPUs the cluster offers (all nodes).
        nodes: number of alive nodes.
        owned: True when this process started Ray (and :func:`disconnect` stops it).
    """

    address: str
    cpus: float
    nodes: int
    owned: bool


def require_ray() -> Any:
    """The ``ray`` module, or a one-line error saying how to install it."""
    try:
        import ray
    except ImportError:
        raise UserError("Ray is not installed: pip install 'gail-robot[ray]'") from None
    return ray


def resolve_address(address: str | None) -> str | None:
    """``address``, else ``$RAY_ADDRESS``, else None (a local Ray started for this process)."""
    if address:
        return address
    return os.environ.get("RAY_ADDRESS") or None


def _check_reachable(address: str) -> None:
    """Refuse an address nobody answers at in a few seconds (Ray itself would retry for minutes)."""
    if address == "auto" or (address.startswith("ray://") and ":" not in address[6:]):
        return
    host_port = address[6:] if address.startswith("ray://") else address
    host, sep, port = host_port.rpartition(":")
    if not sep or not port.isdigit():
        raise UserError(f"bad Ray address {address!r}: expected HOST:PORT, ray://HOST:PORT or 'auto'")
    try:
        with socket.create_connection((host, int(port)), timeout=CONNECT_TIMEOUT_S):
            pass
    except OSError as exc:
        reason = exc.strerror or type(exc).__name__
        raise UserError(f"cannot reach the Ray cluster at {address}: {reason}") from None


def connect(address: str | None = None, num_cpus: int | None = None) -> ClusterInfo:
    """Join the cluster at ``address`` (or ``$RAY_ADDRESS``), else start a local Ray for this process.

    Reuses an already initialised Ray. A local Ray gets ``num_cpus`` CPUs (default: all cores).
    Raises :class:`UserError` when Ray is missing or the address cannot be reached.
    """
    ray = require_ray()
    owned = False
    target = resolve_address(address)
    if not ray.is_initialized():
        common: dict[str, Any] = {"logging_level": "ERROR", "log_to_driver": False}
        if target is None:
            # address="local": a new Ray even when another one runs on this machine (never join it silently)
            local_cpus = num_cpus or os.cpu_count() or 1
            ray.init(address="local", num_cpus=local_cpus, include_dashboard=False, **common)
            owned = True
        else:
            _check_reachable(target)
            try:
                ray.init(address=target, **common)
            except (ConnectionError, RuntimeError, ValueError) as exc:
                first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
                raise UserError(f"cannot join the Ray cluster at {target}: {first}") from None
    nodes = [n for n in ray.nodes() if n.get("Alive")]
    cpus = float(ray.cluster_resources().get("CPU", 0.0))
    return ClusterInfo(address=target or "local", cpus=cpus, nodes=len(nodes), owned=owned)


def disconnect(info: ClusterInfo) -> None:
    """Stop Ray when this process started it; leave a joined cluster running."""
    if info.owned:
        require_ray().shutdown()


@contextlib.contextmanager
def connected(address: str | None = None, num_cpus: int | None = None) -> Iterator[ClusterInfo]:
    """:func:`connect` for the duration of a ``with`` block."""
    info = connect(address, num_cpus)
    try:
        yield info
    finally:
        disconnect(info)


def package_versions() -> dict[str, str]:
    """Installed versions of :data:`MATCHED_PACKAGES` (from package metadata: imports nothing)."""
    from importlib.metadata import PackageNotFoundError, version

    out = {}
    for name in MATCHED_PACKAGES:
        try:
            out[name] = version(name)
        except PackageNotFoundError:
            out[name] = "missing"
    return out


def check_versions(worker: dict[str, str], where: str) -> None:
    """Refuse a worker whose :func:`package_versions` differ from this process's (one line, both versions)."""
    mine = package_versions()
    for name in MATCHED_PACKAGES:
        if worker.get(name) != mine[name]:
            raise UserError(
                f"Ray worker on {where} has {name} {worker.get(name)}, the driver has {mine[name]}: "
                "install the same versions on every node"
            )
