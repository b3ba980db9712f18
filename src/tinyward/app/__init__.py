"""The application sandbox: manifest, output contract, leakage bound, sandboxed child, supervisor.

Typical use by the device::

    from tinyward.app import SandboxConfig, Supervisor, load_manifest

    with Supervisor(load_manifest("sensor.toml"), SandboxConfig(secret_paths=(keystore,))) as app:
        app.start()
        for frame in frames:
            outcome = app.process(frame)      # outcome.result is a contract-checked dict
        report(app.incidents(), app.healthy)

See docs/app.md for the layers and what each protects against.
"""

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
from tinyward.app.sandbox import Protection, Sandbox, SandboxConfig
from tinyward.app.supervisor import Outcome, State, Supervisor, SupervisorConfig

__all__ = [
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
