"""The documented import surface of each package (``__all__``), served lazily.

Each package lists its public names once for readers and type checkers (the
``TYPE_CHECKING`` imports and ``__all__``) and once for the lazy loader (``_EXPORTS``);
these tests keep the lists equal and check that importing a package stays cheap.
"""

from __future__ import annotations

import ast
import importlib
import json
import subprocess
import sys
from pathlib import Path

import pytest

PACKAGES = ("trust", "fleet", "link", "detect", "app", "readout")


def _type_checking_names(package: str) -> set[str]:
    module = importlib.import_module(f"tinyward.{package}")
    tree = ast.parse(Path(str(module.__file__)).read_text())
    block = next(n for n in tree.body if isinstance(n, ast.If)
                 and getattr(n.test, "id", "") == "TYPE_CHECKING")
    return {alias.name for node in block.body if isinstance(node, ast.ImportFrom)
            for alias in node.names}


@pytest.mark.parametrize("package", PACKAGES)
def test_every_public_name_is_documented_listed_and_importable(package: str) -> None:
    module = importlib.import_module(f"tinyward.{package}")
    assert module.__doc__ and len(module.__doc__) > 300  # more than a one-word docstring
    exported = {name for names in module._EXPORTS.values() for name in names}
    assert set(module.__all__) == exported == _type_checking_names(package)
    for submodule, names in module._EXPORTS.items():
        source = importlib.import_module(f"tinyward.{package}.{submodule}")
        for name in names:
            assert getattr(module, name) is getattr(source, name), name
    assert set(module.__all__) <= set(dir(module))
    # A name equal to a submodule's would be shadowed once that submodule is imported.
    submodules = {p.stem for p in Path(str(module.__file__)).parent.glob("*.py")}
    assert not set(module.__all__) & submodules


@pytest.mark.parametrize("package", PACKAGES)
def test_an_unknown_name_is_an_attribute_error(package: str) -> None:
    module = importlib.import_module(f"tinyward.{package}")
    with pytest.raises(AttributeError, match="no attribute 'NoSuchName'"):
        _ = module.NoSuchName


def test_importing_a_package_loads_none_of_its_modules() -> None:
    # Every CLI command and server worker imports packages; a name costs only its module.
    probe = (
        "import json, sys\n"
        + "".join(f"import tinyward.{p}\n" for p in PACKAGES)
        + "print(json.dumps(sorted(m for m in sys.modules if m.startswith(('tinyward.',"
        " 'sklearn', 'numpy', 'sqlite3', 'aiohttp', 'cryptography')))))"
    )
    loaded = json.loads(subprocess.run([sys.executable, "-c", probe], capture_output=True,
                                       text=True, check=True, timeout=60).stdout)
    assert set(loaded) == {"tinyward._lazy", *(f"tinyward.{p}" for p in PACKAGES)}


def test_from_import_loads_only_what_it_names() -> None:
    probe = ("import sys\nfrom tinyward.fleet import verify_offline\n"
             "print('tinyward.fleet.server' in sys.modules, 'sqlite3' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True,
                         check=True, timeout=60).stdout.split()
    assert out == ["False", "True"]  # verify_offline records into the SQLite store
