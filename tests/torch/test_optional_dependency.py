"""torch is optional: ``import sparseopt`` (and every module but ``sparseopt.torch``) never
imports it, and ``import sparseopt.torch`` without it says how to get it. Runs with or without
torch installed."""
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_import_sparseopt_does_not_import_torch():
    code = ("import sys, sparseopt, sparseopt.optim, sparseopt.linear_model, "
            "sparseopt.recommend; assert 'torch' not in sys.modules, sorted(m for m in "
            "sys.modules if 'torch' in m)")
    subprocess.run([sys.executable, "-c", code], check=True, cwd=ROOT, timeout=120)


def test_sparseopt_torch_without_torch_says_what_to_install():
    # a torch that cannot be imported, as where it is not installed
    code = ("import sys; sys.modules['torch'] = None\n"
            "try:\n    import sparseopt.torch\nexcept ImportError as e:\n"
            "    assert 'pip install \"sparseopt[torch]\"' in str(e), e\n"
            "else:\n    raise SystemExit('imported')")
    subprocess.run([sys.executable, "-c", code], check=True, cwd=ROOT, timeout=120)
