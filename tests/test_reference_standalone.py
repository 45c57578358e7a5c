"""The NumPy reference is the specification: it must import and run without the compiled
kernels it is used to check."""
import subprocess
import sys
import textwrap
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_reference_runs_with_the_kernels_blocked():
    code = textwrap.dedent(f"""
        import importlib.abc, sys, types
        class Block(importlib.abc.MetaPathFinder):
            def find_spec(self, name, path=None, target=None):
                if name.startswith("sparseopt._kernels") or name.startswith("sparseopt.optim"):
                    raise ImportError("blocked: " + name)
                return None
        sys.meta_path.insert(0, Block())
        # the package's __init__ imports the optimizers; stand in a bare package for it
        pkg = types.ModuleType("sparseopt")
        pkg.__path__ = [{str(ROOT / "sparseopt")!r}]
        sys.modules["sparseopt"] = pkg
        import numpy as np
        from sparseopt import _reference as R
        p = np.zeros((4, 2))
        opt = R.Adam([p], lr=0.1)
        opt.step([R.RowGrad(np.array([1, 1, 3]), np.ones((3, 2)))])
        assert not any(m.startswith("sparseopt._kernels") for m in sys.modules)
        print(p[:, 0].tolist())
    """)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=120)
    assert out.returncode == 0, out.stderr
    first = [float(v) for v in out.stdout.strip().strip("[]").split(",")]
    assert first[0] == 0.0 and first[2] == 0.0
    assert first[1] < 0 and first[3] < 0  # touched rows moved against the gradient
