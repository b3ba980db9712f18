"""Optional dependencies: which extra of tinyward installs each one, and the error that says so.

``pip install tinyward`` installs only what every part needs (cryptography, cbor2, the
command line). The rest comes in extras, so that a device or a fleet server does not carry
the analysis stack: ``device`` (sandbox, readout, the application's numpy), ``fleet`` (the
server), ``detect`` (training and evaluating detectors: scikit-learn, matplotlib, dpkt),
``all`` (the three) and ``dev`` (tests and tools). A command whose extra is missing says
which one to install instead of failing with a traceback.
"""

from __future__ import annotations

from tinyward.errors import TinywardError

#: Top-level module -> (PyPI project, the tinyward extra that installs it).
OPTIONAL: dict[str, tuple[str, str]] = {
    "numpy": ("numpy", "device"),
    "psutil": ("psutil", "device"),
    "pyotp": ("pyotp", "device"),
    "segno": ("segno", "device"),
    "pyseccomp": ("pyseccomp", "device"),
    "aiohttp": ("aiohttp", "fleet"),
    "prometheus_client": ("prometheus_client", "fleet"),
    "jinja2": ("jinja2", "fleet"),
    "dpkt": ("dpkt", "detect"),
    "sklearn": ("scikit-learn", "detect"),
    "matplotlib": ("matplotlib", "detect"),
    "pysad": ("pysad", "dev"),
    "river": ("river", "dev"),
}


class MissingExtra(TinywardError):
    """A command needs an optional package that is not installed."""

    def __init__(self, project: str, extra: str, what: str = "this command") -> None:
        super().__init__(f"{what} needs {project}, which is not installed: "
                         f"pip install 'tinyward[{extra}]'")
        self.project, self.extra = project, extra


def missing_extra(error: ModuleNotFoundError, what: str = "this command") -> MissingExtra | None:
    """The :class:`MissingExtra` for an import that failed, or None if the module is not
    one of tinyward's optional dependencies (then it is a bug, and should show as one)."""
    top = (error.name or "").split(".")[0]
    if top not in OPTIONAL:
        return None
    project, extra = OPTIONAL[top]
    return MissingExtra(project, extra, what)


__all__ = ["OPTIONAL", "MissingExtra", "missing_extra"]
