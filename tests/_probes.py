"""Run hostile-input probes in forked child processes, naming the probe behind every crash.

A *probe* is a snippet of Python that builds an object (an optimizer, an estimator, ...),
feeds it one bad input and reports what happened: the exception type and message, whether the
watched objects kept every parameter, state array and ``__dict__`` attribute, and the value of
a check expression. Bad input may make compiled code read or write out of bounds, so probes
never run in the pytest process.

``run_probes`` starts ONE child Python (``python _probes.py``) that imports the libraries and
runs a shared *prelude* once (small fitted models that probes deep-copy). The child is a fork
server (``_Scheduler``): it forks *workers* (``jobs`` at a time) that each run a chunk of
probes in order, writing one JSON line before and after each probe. A fork of a process that
has imported scikit-learn costs about as much as twenty small probes, hence chunks.

* A worker that dies (signal, abort of a corrupted heap, non-zero exit) or outlives a probe's
  time limit (``hang``) names the probe it was running. If that was not the first probe of
  its chunk, the probe is re-run alone: if it dies again it is the culprit; if not, an
  earlier probe of the chunk broke the process, and halving the earlier probes (each half run
  before the crashed probe) finds which (the brief's "re-run one by one, or bisect").
* Where glibc's debugging allocator exists, children run with it (``MALLOC_CHECK_=3``), so a
  write past the end of a heap block aborts when the block is freed. Many overruns of small
  NumPy buffers corrupt blocks that are only freed when the interpreter exits, so after the
  first pass every probe that passed is run again by workers that exit through the
  interpreter's finalisation (``verify``); a worker that dies while exiting is bisected the
  same way, and the probe found is reported as a crash.
* A crash that no search reproduces is reported as unattributed (``__unattributed__`` in the
  results), never dropped.
* Without ``os.fork`` the probes run one after the other in the child, each announced on
  stdout before it starts; when the child dies, the announced probe is reported as the crash
  and the remaining probes are re-run in a fresh child.

``verdict`` turns a result and its probe's expectations into a list of problems, empty when
the probe passed; ``assert_probe`` raises with a readable account (``describe``).
"""
from __future__ import annotations

import dataclasses
import gc
import json
import os
import re
import signal
import subprocess
import sys
import tempfile
import time
import traceback
from typing import Any, Dict, List, Optional, Sequence, Tuple

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)

# glibc >= 2.34 moved MALLOC_CHECK_ into this preloadable library.
_MALLOC_DEBUG = [p for p in ("/lib/x86_64-linux-gnu/libc_malloc_debug.so.0",
                             "/usr/lib/x86_64-linux-gnu/libc_malloc_debug.so.0",
                             "/lib64/libc_malloc_debug.so.0",
                             "/usr/lib64/libc_malloc_debug.so.0") if os.path.exists(p)]


# A probe still running after its limit is interrupted (SIGALRM, in Python code) and reported as
# a hang; one stuck in compiled code is killed KILL_MARGIN seconds later.
DEFAULT_LIMIT = 8.0
KILL_MARGIN = 5.0


@dataclasses.dataclass
class Probe:
    """One hostile input and what the contract says must happen.

    ``setup`` runs first (build the object, the bad input; may replace attributes); the
    objects named by ``watch`` (an expression, e.g. ``"opt, P"``) are snapshotted; then ``act``
    runs. ``expect`` lists the exception class names that are acceptable (a subclass counts);
    an empty ``expect`` means ``act`` must succeed. ``names``: at least one of them must appear
    in the message as a whole word. ``success_ok``: ``act`` may also succeed, and then
    ``check`` (an expression) must be true. ``check`` is also evaluated after a success of a
    probe that must succeed. ``limit``: seconds before the probe counts as hanging.
    """

    name: str
    setup: str
    act: str
    expect: Tuple[str, ...] = ("ValueError",)
    names: Tuple[str, ...] = ()
    watch: Optional[str] = None
    check: Optional[str] = None
    success_ok: bool = False
    limit: float = DEFAULT_LIMIT
    chunk: int = 0  # > 0: how many probes (this one first) share its worker process
    forbid: Tuple[str, ...] = ()  # words the message must not contain (a wrong diagnosis)
    note: str = ""

    def to_json(self) -> Dict[str, Any]:
        return dataclasses.asdict(self)


_PROBE_FIELDS = frozenset(f.name for f in dataclasses.fields(Probe))

# =========================================================================== snapshots
# (used in the child, and by the hypothesis runs)

# Caches and locks: rebuilt on demand, not part of a model's or an optimizer's state.
IGNORED_ATTRS = frozenset({"_lock", "_indexers", "_pow", "_checked", "_scratch"})


def snapshot(obj: Any, _memo: Optional[Dict[int, str]] = None, _path: str = "") -> Any:
    """A deep, plain-data copy of an object graph: arrays by bytes, sparse matrices by their
    arrays, objects by their ``__dict__`` (minus ``IGNORED_ATTRS``), generators by state.
    Values are compared, not identities: an attribute replaced by an equal copy is unchanged."""
    import numpy as np

    memo = {} if _memo is None else _memo  # objects on the current path (cycle guard)
    if obj is None or isinstance(obj, (bool, int, str, bytes)):
        return obj
    if isinstance(obj, float):
        return ("float", repr(obj))
    if isinstance(obj, np.ndarray):
        if obj.dtype.kind == "O":
            return ("ndarray-object", obj.shape,
                    [snapshot(x, memo, f"{_path}[{i}]") for i, x in enumerate(obj.ravel())])
        return ("ndarray", obj.dtype.str, obj.shape, obj.flags.writeable,
                np.ascontiguousarray(obj).tobytes())
    if isinstance(obj, np.generic):
        return ("scalar", obj.dtype.str, obj.tobytes())
    if isinstance(obj, np.dtype):
        return ("dtype", obj.str)
    if isinstance(obj, type):
        return ("type", obj.__module__, obj.__qualname__)
    key = id(obj)
    if key in memo:  # a cycle: the object contains itself
        return ("cycle", memo[key])
    memo[key] = _path or "<root>"
    try:
        return _snapshot_container(obj, memo, _path)
    finally:
        del memo[key]


def _snapshot_container(obj: Any, memo: Dict[int, str], _path: str) -> Any:
    import numpy as np
    import scipy.sparse as sp

    if sp.issparse(obj):
        return ("sparse", type(obj).__name__, obj.shape,
                snapshot({k: v for k, v in vars(obj).items() if k != "maxprint"}, memo,
                         _path + ".<sparse>"))
    if isinstance(obj, np.random.Generator):
        return ("generator", repr(obj.bit_generator.state))
    if isinstance(obj, np.random.RandomState):
        st = obj.get_state()
        return ("randomstate", st[0], st[1].tobytes(), st[2:])
    if isinstance(obj, dict):
        return ("dict", [(repr(k), snapshot(v, memo, f"{_path}[{k!r}]"))
                         for k, v in obj.items() if k not in IGNORED_ATTRS])
    if isinstance(obj, (list, tuple)):
        return (type(obj).__name__,
                [snapshot(v, memo, f"{_path}[{i}]") for i, v in enumerate(obj)])
    if isinstance(obj, (set, frozenset)):
        return ("set", sorted(map(repr, obj)))
    mod = type(obj).__module__ or ""
    if hasattr(obj, "__dict__") and mod.split(".")[0] in ("sparseopt", "sklearn", "_probes",
                                                           "__main__", "builtins"):
        attrs = {k: v for k, v in vars(obj).items() if k not in IGNORED_ATTRS}
        return ("object", f"{mod}.{type(obj).__qualname__}", snapshot(attrs, memo, _path))
    if hasattr(obj, "__slots__") and mod.startswith("sparseopt"):
        return ("slots", type(obj).__qualname__,
                [(s, snapshot(getattr(obj, s, None), memo, f"{_path}.{s}"))
                 for s in obj.__slots__])
    return ("other", f"{mod}.{type(obj).__qualname__}")


def diff(a: Any, b: Any, path: str = "") -> Optional[str]:
    """The first difference between two snapshots, described, or None."""
    where = path or "<root>"
    if type(a) is not type(b):
        return f"{where}: {_short(a)} -> {_short(b)}"
    if not (isinstance(a, tuple) and a and isinstance(a[0], str)):
        return None if a == b else f"{where}: {_short(a)} -> {_short(b)}"
    kind = a[0]
    if kind != b[0]:
        return f"{where}: {kind} -> {b[0]}"
    if kind == "ndarray":
        if a[1:4] != b[1:4]:
            return f"{where}: array (dtype, shape, writeable) {a[1:4]} -> {b[1:4]}"
        return None if a[4] == b[4] else f"{where}: array values changed"
    if kind == "dict":
        da, db = dict(a[1]), dict(b[1])
        for k in da:
            if k not in db:
                return f"{path}[{k}] was removed"
        for k in db:
            if k not in da:
                return f"{path}[{k}] was added ({_short(db[k])})"
        for k in da:
            sub = f"{path}.{k[1:-1]}" if k[:1] == "'" and k[1:-1].isidentifier() \
                else f"{path}[{k}]"
            d = diff(da[k], db[k], sub)
            if d:
                return d
        return None
    if kind in ("list", "tuple", "ndarray-object"):
        la, lb = a[-1], b[-1]
        if len(la) != len(lb):
            return f"{where}: length {len(la)} -> {len(lb)}"
        for i, (x, y) in enumerate(zip(la, lb)):
            d = diff(x, y, f"{path}[{i}]")
            if d:
                return d
        return None
    if kind in ("object", "sparse", "slots"):
        if a[1:-1] != b[1:-1]:
            return f"{where}: {_short(a[1:-1])} -> {_short(b[1:-1])}"
        if kind == "slots":
            for (s, x), (_, y) in zip(a[2], b[2]):
                d = diff(x, y, f"{path}.{s}")
                if d:
                    return d
            return None
        return diff(a[-1], b[-1], path)
    return None if a == b else f"{where}: {_short(a)} -> {_short(b)}"


def _short(x: Any) -> str:
    s = repr(x)
    return s if len(s) < 120 else s[:117] + "..."


# =========================================================================== the child


def _describe_tb(tb) -> List[str]:
    frames = traceback.extract_tb(tb)
    out = []
    for fr in frames[-4:]:
        fn = fr.filename
        for marker in ("site-packages/", "/sparseopt/", "/tests/"):
            if marker in fn:
                fn = fn[fn.index(marker) + (len("site-packages/") if marker == "site-packages/"
                                            else 1):]
                break
        out.append(f"{fn}:{fr.lineno} {fr.name}")
    return out


# A forked probe may reserve at most this much more address space than the child had: a probe
# that asks for 10**5 threads (8 MiB of stack each) or allocates by a corrupted counter then
# fails in its own process instead of exhausting the memory (or the thread quota) that other
# processes of this user share.
PROBE_EXTRA_ADDRESS_SPACE = 3 << 30


def _limit_address_space() -> None:
    try:
        import resource
        with open("/proc/self/status") as f:
            vm = next(int(line.split()[1]) * 1024 for line in f if line.startswith("VmSize"))
        limit = vm + PROBE_EXTRA_ADDRESS_SPACE
        resource.setrlimit(resource.RLIMIT_AS, (limit, resource.getrlimit(resource.RLIMIT_AS)[1]))
    except (ImportError, OSError, ValueError, StopIteration):
        pass


class _Timeout(BaseException):
    pass


def _alarm(signum, frame):
    raise _Timeout()


def _run_one(probe: Dict[str, Any], base: Dict[str, Any], collect: bool = True
             ) -> Dict[str, Any]:
    """Run one probe here; returns its result record."""
    ns = dict(base)
    res: Dict[str, Any] = {"name": probe["name"]}
    try:
        exec(compile(probe["setup"], f"<setup {probe['name']}>", "exec"), ns)
    except BaseException as e:  # noqa: BLE001 - reported
        res.update(outcome="setup-error", type=type(e).__name__, msg=str(e)[:2000],
                   where=_describe_tb(e.__traceback__))
        return res
    before = None
    if probe.get("watch"):
        before = snapshot(eval(probe["watch"], ns))
    limit = float(probe.get("limit") or DEFAULT_LIMIT)
    old = signal.signal(signal.SIGALRM, _alarm) if hasattr(signal, "SIGALRM") else None
    if old is not None:
        signal.setitimer(signal.ITIMER_REAL, limit)
    t0 = time.perf_counter()
    try:
        exec(compile(probe["act"], f"<act {probe['name']}>", "exec"), ns)
        res.update(outcome="ok")
    except _Timeout:
        res.update(outcome="hang", msg=f"still running after {limit:g} s (interrupted)")
    except BaseException as e:  # noqa: BLE001 - reported
        res.update(outcome="raised", type=type(e).__name__,
                   mro=[c.__name__ for c in type(e).__mro__], msg=str(e)[:2000],
                   where=_describe_tb(e.__traceback__))
    finally:
        if old is not None:
            signal.setitimer(signal.ITIMER_REAL, 0)
            signal.signal(signal.SIGALRM, old)
    res["seconds"] = round(time.perf_counter() - t0, 4)
    if before is not None:
        try:
            res["changed"] = diff(before, snapshot(eval(probe["watch"], ns)))
        except BaseException as e:  # noqa: BLE001
            res["changed"] = f"<could not snapshot after: {type(e).__name__}: {e}>"
    if probe.get("check") and res["outcome"] == "ok":
        try:
            res["check"] = bool(eval(probe["check"], ns))
        except BaseException as e:  # noqa: BLE001
            res["check"] = f"{type(e).__name__}: {e}"
    # Free everything the probe made, so the debugging allocator inspects the blocks a
    # kernel may have overrun while this probe is still the one to blame.
    ns.clear()
    if collect:
        gc.collect()
    return res


class _Task:
    """Probes for one forked worker.

    * ``run``: probes run in order; their results are the results.
    * ``alone``: a probe during which a ``run`` worker died, re-run by itself; its result
      (crash, or a normal result) replaces the one it never reported.
    * ``verify``: probes that passed, run again by a worker that exits through the
      interpreter's finalisation (see ``_worker_main``); nothing is reported unless it dies.
    * ``search``: find which of ``subset`` broke the process. The worker runs ``subset`` and
      then ``trigger`` (a probe that crashed after them but passes alone), or just ``subset``
      when the process died at exit (a heap corrupted by a write out of bounds is often only
      detected when the interpreter frees everything). If the worker dies again, the subset
      is halved until one probe is left: that probe is blamed. Search results are not
      reported otherwise.
    """

    def __init__(self, mode: str, probes: List[Dict[str, Any]],
                 trigger: Optional[Dict[str, Any]] = None, full_exit: bool = False) -> None:
        self.mode = mode
        self.probes = probes
        self.trigger = trigger
        self.full_exit = full_exit

    def to_run(self) -> List[Dict[str, Any]]:
        return self.probes + ([self.trigger] if self.trigger is not None else [])


class _Worker:
    def __init__(self, task: _Task, pid: int, res_path: str, err_path: str) -> None:
        self.task = task
        self.pid = pid
        self.res_path = res_path
        self.err_path = err_path
        self.pos = 0            # bytes of the result file already parsed
        self.buf = ""
        self.results: List[Dict[str, Any]] = []
        self.current: Optional[Dict[str, Any]] = None   # started, not finished
        self.done = False       # every probe finished; the interpreter is exiting
        self.started_at = time.monotonic()
        self.killed_after: Optional[float] = None

    def poll(self) -> None:
        try:
            with open(self.res_path) as f:
                f.seek(self.pos)
                data = f.read()
                self.pos = f.tell()
        except OSError:
            return
        self.buf += data
        *lines, self.buf = self.buf.split("\n")
        for line in lines:
            if not line.strip():
                continue
            rec = json.loads(line)
            if "start" in rec:
                self.current = rec
                self.started_at = time.monotonic()
            elif "done" in rec:
                self.done = True
                self.started_at = time.monotonic()
            else:
                self.results.append(rec)
                self.current = None


# seconds a worker may take to exit (interpreter finalisation) after its last probe
EXIT_LIMIT = 30.0
# verification workers run this many times more probes than the first pass's workers
VERIFY_CHUNK_FACTOR = 2


def _worker_main(task: _Task, base: Dict[str, Any], res_path: str, err_path: str) -> None:
    """Body of a forked worker: run the task's probes in order (one JSON line per event), then
    exit. With ``task.full_exit`` the exit goes through the interpreter's finalisation, which
    frees every object and so lets the allocator notice a heap corrupted by a write out of
    bounds (a small NumPy buffer overrun often corrupts a block that only finalisation frees);
    it costs a copy of every page the worker shares with its parent, so only the verification
    pass and single long probes do it."""
    code = 0
    try:
        fd = os.open(err_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        os.dup2(fd, 2)
        os.close(fd)
        _limit_address_space()
        with open(res_path, "w") as f:
            for p in task.to_run():
                sys.stderr.flush()
                f.write(json.dumps({"start": p["name"], "err": os.lseek(2, 0, os.SEEK_CUR)})
                        + "\n")
                f.flush()
                f.write(json.dumps(_run_one(p, base, collect=False)) + "\n")
                f.flush()
            f.write(json.dumps({"done": True}) + "\n")
    except BaseException:  # noqa: BLE001
        traceback.print_exc()
        code = 3
    sys.stdout.flush()
    sys.stderr.flush()
    if task.full_exit:
        raise SystemExit(code)  # unwinds the scheduler's frames in this process only
    os._exit(code)


class _Scheduler:
    def __init__(self, base, probes, jobs, chunk, emit, verify=True) -> None:
        self.base = base
        self.jobs = jobs
        self.emit_line = emit
        self.tmp = tempfile.mkdtemp(prefix="probes-")
        self.tasks: List[_Task] = []
        self.chunk = chunk
        i = 0
        while i < len(probes):  # a probe with its own chunk size (long ones) sets it
            size = int(probes[i].get("chunk") or chunk)
            # a probe that has a worker to itself exits through finalisation right away
            self.tasks.append(_Task("run", probes[i:i + size], full_exit=size == 1))
            i += size
        self.verify = bool(verify)
        self.probes = {p["name"]: p for p in probes}
        self.running: Dict[int, _Worker] = {}
        self.forks: Dict[str, int] = {}
        self.serial = 0
        self.reported: Dict[str, Dict[str, Any]] = {}

    def emit(self, rec: Dict[str, Any]) -> None:
        if "name" in rec:
            self.reported[rec["name"]] = rec
        self.emit_line(rec)

    def launch(self, task: _Task) -> None:
        self.serial += 1
        res_path = os.path.join(self.tmp, f"{self.serial}.jsonl")
        err_path = os.path.join(self.tmp, f"{self.serial}.err")
        sys.stdout.flush()
        sys.stderr.flush()
        self.forks[task.mode] = self.forks.get(task.mode, 0) + 1
        pid = os.fork()
        if pid == 0:
            _worker_main(task, self.base, res_path, err_path)
        self.running[pid] = _Worker(task, pid, res_path, err_path)

    def _stderr(self, w: _Worker, offset: int = 0) -> str:
        try:
            with open(w.err_path, errors="replace") as f:
                f.seek(offset)
                return f.read()[-4000:]
        except OSError:
            return ""

    def blame(self, name: str, msg: str, stderr: str, sig: Optional[int]) -> None:
        prev = self.reported.get(name, {"name": name})
        rec = {"name": name, "outcome": "crash", "msg": msg, "signal": sig, "stderr": stderr,
               "seconds": prev.get("seconds")}
        if prev.get("outcome") not in (None, "crash", "hang"):
            # what the probe itself reported before it was found to break the process
            rec["before"] = {k: prev.get(k) for k in ("outcome", "type", "msg", "changed")}
        self.emit(rec)

    def search(self, subset, trigger) -> None:
        """Queue the halves of ``subset`` (run before ``trigger``, or alone before a full
        exit when ``trigger`` is None)."""
        if not subset:
            return
        full = trigger is None
        if len(subset) == 1:
            self.tasks.insert(0, _Task("search", subset, trigger, full_exit=full))
            return
        half = len(subset) // 2
        self.tasks.insert(0, _Task("search", subset[half:], trigger, full_exit=full))
        self.tasks.insert(0, _Task("search", subset[:half], trigger, full_exit=full))

    def finish(self, w: _Worker, status: int) -> None:
        w.poll()
        task = w.task
        if task.mode in ("run", "alone"):
            for rec in w.results:
                self.emit(rec)
        died = not (os.WIFEXITED(status) and os.WEXITSTATUS(status) == 0)
        if os.WIFSIGNALED(status):
            sig: Optional[int] = os.WTERMSIG(status)
            how = f"killed by signal {sig} ({signal.Signals(sig).name})"
        else:
            sig = None
            how = f"exited with status {os.WEXITSTATUS(status)}"
        if w.killed_after is not None:
            how = f"killed after {w.killed_after:g} s without a result (hang)"
        stderr = self._stderr(w, int((w.current or {}).get("err", 0)))
        for path in (w.res_path, w.err_path):
            try:
                os.unlink(path)
            except OSError:
                pass
        if not died:
            return
        names = [p["name"] for p in task.to_run()]
        at_exit = w.done or w.current is None
        k = names.index(w.current["start"]) if not at_exit else len(names)
        if task.mode == "search":
            if len(task.probes) == 1 and (at_exit or k <= 1):
                victim = task.probes[0]["name"]
                if task.trigger is not None and k == 1:
                    msg = (f"corrupts the process: {task.trigger['name']!r} (which passes by "
                           f"itself) was then {how}")
                elif at_exit:
                    msg = (f"corrupts the heap: the process was {how} while exiting after "
                           "this probe")
                else:
                    msg = how
                self.blame(victim, msg, stderr, sig)
            else:
                self.search(task.probes[:min(k + 1, len(task.probes))], task.trigger)
            return
        if task.mode == "alone":
            if at_exit:
                self.blame(names[0], f"corrupts the heap: the process was {how} while exiting "
                           "after this probe", stderr, sig)
            else:
                rec = {"name": names[0], "outcome": "hang" if w.killed_after else "crash",
                       "signal": sig, "msg": how, "stderr": stderr,
                       "seconds": round(time.monotonic() - w.started_at, 3)}
                self.emit(rec)
            return
        # a "run" or "verify" worker died
        if at_exit:
            self.emit({"event": "search", "kind": "exit", "probes": names})
            if len(names) == 1:
                self.blame(names[0], f"corrupts the heap: the process was {how} while exiting "
                           "after this probe", stderr, sig)
            else:
                self.search(task.probes, None)
            return
        rest = task.probes[k + 1:]
        if rest:
            self.tasks.insert(0, _Task(task.mode, rest, full_exit=task.full_exit))
        if k == 0 or w.killed_after is not None:
            self.emit({"name": names[k], "outcome": "hang" if w.killed_after else "crash",
                       "signal": sig, "msg": how, "stderr": stderr,
                       "seconds": round(time.monotonic() - w.started_at, 3)})
        else:  # died after other probes ran: does it die by itself?
            self.tasks.insert(0, _Task("alone", [task.probes[k]], None,
                                       full_exit=task.full_exit))
            self._earlier = getattr(self, "_earlier", {})
            self._earlier[names[k]] = task.probes[:k]

    def after(self, w: _Worker, status: int) -> None:
        ok = os.WIFEXITED(status) and os.WEXITSTATUS(status) == 0
        if w.task.mode == "alone" and ok and w.results:
            name = w.task.probes[0]["name"]
            earlier = getattr(self, "_earlier", {}).pop(name, [])
            if earlier:  # it passes by itself: one of the probes before it broke the process
                self.emit({"event": "search", "kind": "trigger", "trigger": name,
                           "probes": [p["name"] for p in earlier]})
                self.search(earlier, w.task.probes[0])

    def start_verification(self) -> None:
        """Queue the probes that passed (and shared their worker) for the exit check."""
        self.verify = False
        passed = []
        for name, p in self.probes.items():
            rec = self.reported.get(name)
            if int(p.get("chunk") or 0) == 1 or rec is None:
                continue
            if not verdict(Probe(**{k: (tuple(v) if isinstance(v, list) else v)
                                    for k, v in p.items() if k in _PROBE_FIELDS}), rec):
                passed.append(p)
        size = VERIFY_CHUNK_FACTOR * self.chunk  # an exit costs a copy of the shared pages
        for i in range(0, len(passed), size):
            self.tasks.append(_Task("verify", passed[i:i + size], full_exit=True))

    def loop(self) -> None:
        while self.tasks or self.running or self.verify:
            if not self.tasks and not self.running:
                self.start_verification()
                continue
            while self.tasks and len(self.running) < self.jobs:
                self.launch(self.tasks.pop(0))
            pid, status = os.waitpid(-1, os.WNOHANG)
            if pid == 0:
                now = time.monotonic()
                for w in list(self.running.values()):
                    w.poll()
                    if w.killed_after is not None:
                        continue
                    if w.done:
                        lim = EXIT_LIMIT
                    elif w.current is not None:
                        lim = next((float(p.get("limit") or DEFAULT_LIMIT)
                                    for p in w.task.to_run()
                                    if p["name"] == w.current["start"]),
                                   DEFAULT_LIMIT) + KILL_MARGIN
                    else:
                        continue
                    if now - w.started_at > lim:
                        w.killed_after = lim
                        os.kill(w.pid, signal.SIGKILL)
                time.sleep(0.005)
                continue
            w = self.running.pop(pid, None)
            if w is None:
                continue
            self.finish(w, status)
            self.after(w, status)
        self.emit_line({"event": "forks", "forks": self.forks})
        try:
            for name in os.listdir(self.tmp):
                os.unlink(os.path.join(self.tmp, name))
            os.rmdir(self.tmp)
        except OSError:
            pass


def _child_main() -> None:
    job = json.loads(sys.stdin.read())
    sys.path[:0] = job["path"]
    base: Dict[str, Any] = {"__name__": "__probe__"}
    exec(compile(job["prelude"], "<prelude>", "exec"), base)
    gc.collect()
    # Objects that exist now are shared with every fork: keep the collector from touching
    # (and so copying) them in each probe.
    if hasattr(gc, "freeze"):
        gc.freeze()
    probes = job["probes"]
    out = sys.stdout

    def emit(rec: Dict[str, Any]) -> None:
        out.write(json.dumps(rec) + "\n")
        out.flush()

    if not (job.get("fork", True) and hasattr(os, "fork")):
        for p in probes:
            emit({"start": p["name"]})
            emit(_run_one(p, base))
        return
    _Scheduler(base, probes, max(1, int(job.get("jobs", 1))), max(1, int(job.get("chunk", 1))),
               emit, verify=job.get("verify", True)).loop()


# =========================================================================== the parent


def child_env(malloc_check: bool = True) -> Dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([ROOT, HERE] + [p for p in
                                        env.get("PYTHONPATH", "").split(os.pathsep) if p])
    env.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    if malloc_check and _MALLOC_DEBUG:
        env["LD_PRELOAD"] = " ".join(filter(None, [env.get("LD_PRELOAD"), _MALLOC_DEBUG[0]]))
        env["MALLOC_CHECK_"] = "3"
    return env


def run_probes(probes: Sequence[Probe], prelude: str = "", *, timeout: float = 300.0,
               jobs: int = 2, chunk: int = 30, fork: bool = True,
               malloc_check: bool = True, verify: bool = True, rounds: int = 50
               ) -> Dict[str, Dict[str, Any]]:
    """Run every probe in one child process (resumed in a new one if it dies); returns
    {probe name: result}. Results have ``outcome`` in ok / raised / setup-error / crash / hang;
    ``chunk`` probes share a worker; ``verify`` re-runs the passing ones with a full exit.
    """
    names = [p.name for p in probes]
    if len(set(names)) != len(names):
        dup = sorted({n for n in names if names.count(n) > 1})
        raise ValueError(f"duplicate probe names: {dup[:5]}")
    results: Dict[str, Dict[str, Any]] = {}
    events: List[Dict[str, Any]] = []
    forks: Dict[str, int] = {}
    pending = [p.to_json() for p in probes]
    for _ in range(rounds):
        if not pending:
            break
        job = json.dumps(dict(prelude=prelude, probes=pending, jobs=jobs, fork=fork,
                              chunk=chunk, verify=verify, path=[ROOT, HERE]))
        t0 = time.monotonic()
        try:
            proc = subprocess.run([sys.executable, os.path.abspath(__file__)], input=job,
                                  capture_output=True, text=True, timeout=timeout,
                                  env=child_env(malloc_check), cwd=ROOT)
            stdout, stderr, rc = proc.stdout, proc.stderr, proc.returncode
        except subprocess.TimeoutExpired as e:
            stdout = e.stdout.decode() if isinstance(e.stdout, bytes) else (e.stdout or "")
            stderr = e.stderr.decode() if isinstance(e.stderr, bytes) else (e.stderr or "")
            rc = "timeout"
        started = None
        for line in stdout.splitlines():
            try:
                rec = json.loads(line)
            except ValueError:
                continue
            if "start" in rec:
                started = rec["start"]
            elif "event" in rec:
                if rec["event"] == "forks":
                    forks.update(rec["forks"])
                else:
                    events.append(rec)
            elif "name" in rec:
                results[rec["name"]] = rec
                if rec["name"] == started:
                    started = None
        if rc == 0 and all(p["name"] in results for p in pending):
            break
        if rc in (-signal.SIGTERM, -signal.SIGINT, -signal.SIGHUP) or (
                rc == -signal.SIGKILL and fork):
            # killed from outside (the run was interrupted): do not start it again
            raise RuntimeError(f"the probe child was killed (status {rc}); run interrupted")
        if started is None and not any(p["name"] in results for p in pending):
            # the child died before the first probe: the prelude itself failed
            for p in pending:
                results[p["name"]] = {"name": p["name"], "outcome": "setup-error",
                                      "type": "ChildError",
                                      "msg": f"probe child failed (status {rc}) before "
                                             f"running probes:\n{stderr[-3000:]}"}
            break
        if started is not None:  # sequential mode: the announced probe killed the child
            results[started] = {"name": started,
                                "outcome": "hang" if rc == "timeout" else "crash",
                                "msg": (f"child {'timed out' if rc == 'timeout' else 'died'} "
                                        f"(status {rc}) during this probe"),
                                "signal": -rc if isinstance(rc, int) and rc < 0 else None,
                                "stderr": stderr[-3000:],
                                "seconds": round(time.monotonic() - t0, 3)}
        pending = [p for p in pending if p["name"] not in results]
        if pending and started is None:
            # fork mode and the child itself died: run the rest without forking
            fork = False
    for p in pending:
        results.setdefault(p["name"], {"name": p["name"], "outcome": "setup-error",
                                       "type": "ChildError", "msg": "never ran"})
    # A worker died (during a probe that passes by itself, or while exiting) and searching
    # the probes it had run blamed none of them: the crash is unexplained, and says so.
    unattributed = []
    for ev in events:
        if not any(results.get(n, {}).get("outcome") == "crash" for n in ev["probes"]):
            if ev["kind"] == "trigger":
                unattributed.append(f"a worker died during {ev['trigger']!r}, which passes by "
                                    f"itself, after running {ev['probes']}")
            else:
                unattributed.append(f"a worker died while exiting after {ev['probes']}, and "
                                    "no subset of them reproduced it")
    results["__unattributed__"] = {"name": "__unattributed__", "crashes": unattributed,
                                   "forks": forks}
    return results


# =========================================================================== verdicts


def _word(name: str, msg: str) -> bool:
    return re.search(r"(?<![A-Za-z0-9_])" + re.escape(name) + r"(?![A-Za-z0-9_])",
                     msg) is not None


def verdict(probe: Probe, res: Dict[str, Any]) -> List[str]:
    """Every way the result breaks the probe's contract (empty: it passed)."""
    problems: List[str] = []
    outcome = res.get("outcome")
    if outcome in ("crash", "hang", "setup-error"):
        problems.append(f"{outcome.upper()}: {res.get('type', '')} {res.get('msg', '')}".strip())
        return problems
    if outcome == "ok":
        if probe.expect and not probe.success_ok:
            problems.append(f"no exception (expected {' or '.join(probe.expect)})")
        if probe.check and res.get("check") is not True:
            problems.append(f"check `{probe.check}` failed after success: {res.get('check')!r}")
        if probe.watch and not probe.expect and False:  # successes may change the model
            pass
        return problems
    # raised
    mro = res.get("mro") or [res.get("type")]
    if not probe.expect:
        problems.append(f"raised {res.get('type')}: {res.get('msg')!r} (expected success)")
        return problems
    if not any(t in mro for t in probe.expect):
        problems.append(f"wrong exception {res.get('type')} (expected "
                        f"{' or '.join(probe.expect)}): {res.get('msg')!r}")
    msg = res.get("msg") or ""
    if probe.names and not any(_word(n, msg) for n in probe.names):
        problems.append(f"message does not name {' / '.join(map(repr, probe.names))}: "
                        f"{msg!r}")
    for w in probe.forbid:
        if w.lower() in msg.lower():
            problems.append(f"message blames {w!r}: {msg!r}")
    if probe.watch and res.get("changed"):
        problems.append(f"state changed although the call failed: {res['changed']}")
    return problems


def describe(probe: Probe, res: Dict[str, Any]) -> str:
    """A one-paragraph account of a result, for failure messages and reports."""
    lines = [f"probe {probe.name!r}: outcome={res.get('outcome')}"]
    if res.get("type"):
        lines.append(f"  raised {res['type']}: {res.get('msg')!r}")
    elif res.get("msg"):
        lines.append(f"  {res['msg']}")
    if res.get("where"):
        lines.append("  raised at " + " <- ".join(reversed(res["where"])))
    if res.get("changed"):
        lines.append(f"  changed: {res['changed']}")
    if res.get("before"):
        lines.append(f"  its own run reported: {res['before']}")
    if res.get("stderr"):
        tail = res["stderr"].strip().splitlines()[-12:]
        lines.append("  child stderr (tail):\n    " + "\n    ".join(tail))
    lines.append(f"  setup: {probe.setup.strip()[:600]}")
    lines.append(f"  act:   {probe.act.strip()[:300]}")
    return "\n".join(lines)


def assert_probe(probe: Probe, res: Dict[str, Any]) -> None:
    problems = verdict(probe, res)
    if problems:
        raise AssertionError("; ".join(problems) + "\n" + describe(probe, res))


if __name__ == "__main__":
    _child_main()
