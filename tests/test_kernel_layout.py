"""The layout of ``sparseopt/_kernels``: what the build compiles is what the code imports, and
the C the kernels share has one home.

* ``setup.py`` builds exactly the kernel sources that exist, and every kernel module imported by
  the package, the tests, the benchmarks or the examples is one it builds: an in-place build
  leaves the shared object of a removed or renamed kernel behind, and an import of that stale
  file would pass here and fail on a clean build.
* The C row helpers live in ``_rowops.h`` (declared in ``_rowops.pxd``): no kernel source
  carries C of its own, and ``__builtin_prefetch`` appears only behind the header's guard.
  ``_openmp.pxd`` keeps the OpenMP runtime shim, the one other piece of verbatim C. The C
  drivers under ``benchmarks/c`` include that header by name, so the name they use must exist.
"""
import ast
import pathlib
import re

ROOT = pathlib.Path(__file__).resolve().parents[1]
KERNELS = ROOT / "sparseopt" / "_kernels"


def built_kernels():
    """The names in setup.py's ``kernels = [...]`` list."""
    tree = ast.parse((ROOT / "setup.py").read_text())
    for node in ast.walk(tree):
        if isinstance(node, ast.Assign) and any(getattr(t, "id", None) == "kernels"
                                                for t in node.targets):
            return set(ast.literal_eval(node.value))
    raise AssertionError("setup.py has no `kernels = [...]` list")


def imported_kernels(path):
    """Kernel module names a Python file imports (``from .._kernels import _x``,
    ``from sparseopt._kernels import _x as y``, ``import sparseopt._kernels._x``)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.ImportFrom) and node.module:
            parts = node.module.split(".")
            if parts[-1] == "_kernels":
                found.update(a.name for a in node.names)
            elif "_kernels" in parts[:-1]:
                found.add(parts[parts.index("_kernels") + 1])
        elif isinstance(node, ast.Import):
            for a in node.names:
                parts = a.name.split(".")
                if "_kernels" in parts[:-1]:
                    found.add(parts[parts.index("_kernels") + 1])
    return found


def test_setup_builds_exactly_the_kernel_sources():
    sources = {p.stem for p in KERNELS.glob("*.pyx")}
    assert built_kernels() == sources


def test_every_imported_kernel_is_built():
    built = built_kernels()
    files = [p for d in ("sparseopt", "tests", "benchmarks", "examples")
             for p in (ROOT / d).rglob("*.py")]
    assert any(imported_kernels(p) for p in files), "the scan found no kernel import at all"
    stale = {str(p.relative_to(ROOT)): sorted(imported_kernels(p) - built) for p in files}
    assert {k: v for k, v in stale.items() if v} == {}


def test_kernel_sources_carry_no_c_of_their_own():
    for p in sorted(KERNELS.glob("*.p*")):
        if p.suffix not in (".pyx", ".pxd"):
            continue
        text = p.read_text()
        assert "__builtin_prefetch" not in text, p.name
        if p.name != "_openmp.pxd":
            assert "cdef extern from *" not in text, p.name
    headers = sorted(h.name for h in KERNELS.glob("*.h"))
    # _halfops.h: the half-precision conversions and rounding, on top of _rowops.h (included
    # by it and declared in _halfrows.pyx, its one user)
    assert headers == ["_halfops.h", "_rowops.h"]
    assert "#if defined(__GNUC__) || defined(__clang__)\n#define SO_PREFETCH" in (
        KERNELS / "_rowops.h").read_text()


def test_benchmark_c_drivers_include_existing_kernel_headers():
    drivers = sorted((ROOT / "benchmarks" / "c").glob("*.c"))
    included = {m for p in drivers
                for m in re.findall(r'#include\s+"([^"]+)"', p.read_text())}
    assert included, "no C driver includes a kernel header"
    assert {h for h in included if not (KERNELS / h).is_file()} == set()
