"""``captures/record.py`` loaded once as a module, for every test that needs its scenarios, servers or
clients (it is a script, not part of the package)."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

CAPTURES = Path(__file__).resolve().parents[1] / "captures"


def load_record() -> ModuleType:
    """The recorder module (one module object under one name, however many tests load it)."""
    name = "anz_captures_record"
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, CAPTURES / "record.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # dataclasses look their module up while the class is created
    spec.loader.exec_module(module)
    return module
