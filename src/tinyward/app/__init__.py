"""The application sandbox: manifest, output contract, leakage bound, sandboxed child,
supervisor. The application is untrusted; everything here keeps it in its box.

Typical use by the device::

    from tinyward.app import SandboxConfig, Supervisor, load_manifest

    with Supervisor(load_manifest("sensor.toml"), SandboxConfig(secret_paths=(keystore,))) as app:
        app.start()
        for frame in frames:
            outcome = app.process(frame)      # outcome.result is a contract-checked dict
        report(app.incidents(), app.healthy)

or, for a device runner, :class:`AppResultSource` (a :class:`ResultSource`). See
docs/app.md for the layers and what each protects against. Names are imported on first
use.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from tinyward._lazy import exports

if TYPE_CHECKING:
    from tinyward.app.contract import LeakageBound, RateLimiter, check_result, leakage_bound
    from tinyward.app.errors import (
        ContractViolation,
        IllegalTransition,
        ManifestError,
        ProtocolError,
        SandboxError,
    )
    from tinyward.app.manifest import (
        Contract,
        FieldSpec,
        InputSpec,
        Manifest,
        load_manifest,
        parse_manifest,
    )
    from tinyward.app.results import ResultSource
    from tinyward.app.sandbox import Protection, Sandbox, SandboxConfig
    from tinyward.app.source import AppResultSource
    from tinyward.app.supervisor import Outcome, State, Supervisor, SupervisorConfig

_EXPORTS: dict[str, tuple[str, ...]] = {
    "contract": ("LeakageBound", "RateLimiter", "check_result", "leakage_bound"),
    "errors": (
        "ContractViolation", "IllegalTransition", "ManifestError", "ProtocolError", "SandboxError",
    ),
    "manifest": (
        "Contract", "FieldSpec", "InputSpec", "Manifest", "load_manifest", "parse_manifest",
    ),
    "sandbox": ("Protection", "Sandbox", "SandboxConfig"),
    "supervisor": ("Outcome", "State", "Supervisor", "SupervisorConfig"),
    "source": ("AppResultSource",),
    "results": ("ResultSource",),
}

__all__ = [
    "AppResultSource",
    "Contract",
    "ContractViolation",
    "FieldSpec",
    "IllegalTransition",
    "InputSpec",
    "LeakageBound",
    "Manifest",
    "ManifestError",
    "Outcome",
    "Protection",
    "ProtocolError",
    "RateLimiter",
    "ResultSource",
    "Sandbox",
    "SandboxConfig",
    "SandboxError",
    "State",
    "Supervisor",
    "SupervisorConfig",
    "check_result",
    "leakage_bound",
    "load_manifest",
    "parse_manifest",
]

__getattr__, __dir__ = exports(globals(), _EXPORTS)
