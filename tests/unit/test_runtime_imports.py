"""The provider's runtime import graph holds no test or demo tooling: the stand-in CRM, the order
services stand-in and the Tryton launcher are for tests and the demo only (issue 13)."""

import subprocess
import sys
from pathlib import Path

PLUGINS = Path(__file__).resolve().parents[2] / "plugins"
TOOLING = ("conduit.standin", "conduit.orders_standin", "conduit.devtools", "conduit.demo")
# excluded from the walk: the tooling itself
RUNTIME_SCRIPT = """
import importlib, pkgutil, sys
import conduit
tooling = {tooling!r}
def walk(package):  # pkgutil.walk_packages would import the tooling packages itself
    for info in pkgutil.iter_modules(package.__path__, package.__name__ + "."):
        if info.name.startswith(tooling):
            continue
        module = importlib.import_module(info.name)
        if info.ispkg:
            walk(module)
walk(conduit)
loaded = sorted(m for m in sys.modules if m.startswith(tooling))
print("\\n".join(loaded))
"""


def test_no_runtime_module_imports_test_or_demo_tooling():
    script = RUNTIME_SCRIPT.format(tooling=TOOLING)
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300,
                            cwd=PLUGINS.parent)
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.strip() == "", f"runtime modules import tooling: {result.stdout}"
