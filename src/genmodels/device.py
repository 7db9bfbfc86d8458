"""What the running machine offers: the device to use, whether bf16 runs natively on it, and which fast
paths win here.

Everything here is detected at run time, never assumed from a CPU name; the layers above (models,
evaluation, training) ask this module instead of probing torch themselves.

A fast path is a private torch op that beat the public one on the machine it was written on (oneDNN's
linear on an AMD EPYC, Adam's fused kernel without torch's per-step Python). On another CPU or another
torch it may be missing, wrong or slower, so each is used only where it exists, gives the plain path's
result on a small case, and is faster on this machine by more than ``MARGIN``. The module that owns a
path registers its check and its measurement (:func:`register_fast_path`, at import, measuring
nothing); the first :func:`fast_path` call decides, once per process, and the decision is cached per
machine (CPU model, torch version, thread count) in the user cache directory so that every process on
the machine takes the same path (and results do not change in the last bits between a run and its
resume). Timings whose two halves disagree keep the plain path; a decision timed on a busy machine (load
above the CPU count) says so, and ``fast_paths(remeasure=True)`` times again. ``GENMODELS_FASTPATHS=off``
uses the plain paths, ``on`` uses every fast path that exists and passes its check without timing it,
``auto`` (the default) measures. :func:`fast_paths` says what was chosen and why.
"""

from __future__ import annotations

import contextlib
import json
import os
import platform
import stat
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from genmodels.errors import GenmodelsError

ENV = "GENMODELS_FASTPATHS"
MARGIN = 0.05  # a fast path must take less than 95% of the plain path's time: below that it is noise
CACHE_FORMAT = 1
_CACHE_LIMIT = 1 << 16


def pick_device(name: str = "auto") -> torch.device:
    """``auto`` -> CUDA when available, else CPU; otherwise the named device.

    Raises:
        GenmodelsError: the name is not a torch device, or names CUDA on a machine without it.
    """
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(name)
    except (RuntimeError, ValueError, TypeError):
        raise GenmodelsError(f"device '{name}' is not a device; use auto, cpu, cuda or cuda:N") from None
    if dev.type not in ("cpu", "cuda"):
        raise GenmodelsError(f"device '{name}' is not supported; use auto, cpu, cuda or cuda:N")
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise GenmodelsError(f"device {name} asked for but no CUDA device is available; use cpu or auto")
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise GenmodelsError(
                f"device {name} does not exist: this machine has {torch.cuda.device_count()} CUDA device(s)"
            )
    return dev


def bf16_is_fast(device: torch.device) -> bool:
    """Whether bf16 autocast runs natively here: an Ampere+ GPU, or a CPU with AVX512-BF16 / AMX."""
    if device.type == "cuda":
        return torch.cuda.is_bf16_supported()
    try:
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):
        return False


@dataclass(frozen=True)
class _Probe:
    check: Callable[[], str | None]  # None when the fast path exists and computes the plain result, else why not
    measure: Callable[[], dict[str, Any]]  # timings with "fast_s" and "plain_s" (seconds), plus what was timed


_probes: dict[str, _Probe] = {}
_decided: dict[str, dict[str, Any]] = {}
_lock = threading.RLock()


def register_fast_path(name: str, *, check: Callable[[], str | None], measure: Callable[[], dict[str, Any]]) -> None:
    """Declare a fast path; nothing is run until :func:`fast_path` is first asked about it.

    Args:
        check: returns None when the private op exists and gives the plain path's result on a small case,
            otherwise one line saying why not. Must take milliseconds.
        measure: times the fast and the plain path on a representative workload (well under a second)
            and returns at least ``{"fast_s": float, "plain_s": float}``, plus anything worth reporting.
    """
    _probes[name] = _Probe(check, measure)


def fast_path(name: str) -> bool:
    """Whether the fast path ``name`` is used in this process (decided on the first call, then a lookup)."""
    got = _decided.get(name)
    if got is None:
        got = _decide(name)
    return got["chosen"]


def fast_paths(remeasure: bool = False) -> dict[str, dict[str, Any]]:
    """Every registered fast path: ``{name: {"chosen": bool, "why": str, "measured": {...}}}``.

    Paths register when their module is imported (``genmodels.nets`` and ``genmodels.training``).
    ``remeasure`` times them again, ignoring and then replacing the machine's cached decision.
    """
    if remeasure:
        forget_fast_paths()
    return {name: dict(_decided.get(name) or _decide(name, use_cache=not remeasure)) for name in sorted(_probes)}


def forget_fast_paths() -> None:
    """Forget this process's decisions, so that the next use decides again (tests, a changed environment)."""
    with _lock:
        _decided.clear()


def mode() -> str:
    """The GENMODELS_FASTPATHS setting: auto (measure), on (every fast path, untimed) or off (plain paths)."""
    mode = os.environ.get(ENV, "auto").strip().lower() or "auto"
    if mode not in ("auto", "on", "off"):
        raise GenmodelsError(f"{ENV}={os.environ[ENV]!r} is not a setting; use auto, on or off")
    return mode


def _decide(name: str, use_cache: bool = True) -> dict[str, Any]:
    with _lock:
        if name in _decided:
            return _decided[name]
        probe = _probes.get(name)
        if probe is None:
            raise KeyError(f"no fast path named {name!r}; registered: {', '.join(sorted(_probes)) or 'none'}")
        # The first use may come inside inference mode or autocast (sampling, a bf16 step): the probes time
        # plain fp32 ops on tensors of their own, drawing no global random numbers. (An active profiler
        # records them, once.)
        with torch.inference_mode(False), torch.no_grad(), torch.autocast("cpu", enabled=False):
            result = _decision(name, probe, use_cache)
        _decided[name] = result
        return result


def _decision(name: str, probe: _Probe, use_cache: bool) -> dict[str, Any]:
    setting = mode()
    if setting == "off":
        return {"chosen": False, "why": f"{ENV}=off: the plain path", "measured": {}}
    try:
        missing = probe.check()
    except Exception as e:  # a private op may fail in any way: that is exactly a reason not to use it
        missing = f"its check failed: {type(e).__name__}: {e}"
    if missing:
        return {"chosen": False, "why": f"{missing}: the plain path", "measured": {}}
    if setting == "on":
        return {"chosen": True, "why": f"{ENV}=on: used without timing it", "measured": {}}
    # One process measures while the others on the machine wait for its decision: processes started together
    # (a run and its resume, workers) must take the same path, or their results differ in the last bits.
    with _machine_lock():
        key = machine_key()
        if use_cache:
            cached = cached_decisions().get(name)
            if cached is not None:
                return {**cached, "why": f"{cached['why']} (measured earlier on this machine: {cache_file()})"}
        result = _measured(probe)
        _write_cache(key, name, result)
        return result


def _measured(probe: _Probe) -> dict[str, Any]:
    busy = _busy()
    try:
        measured = probe.measure()
        fast, plain = float(measured["fast_s"]), float(measured["plain_s"])
    except Exception as e:
        return {
            "chosen": False,
            "why": f"its measurement failed ({type(e).__name__}: {e}): the plain path",
            "measured": {},
        }
    ratio = fast / plain if plain > 0 else float("inf")
    chosen = _wins(fast, plain)
    why = f"{fast * 1e3:.3f} ms against the plain path's {plain * 1e3:.3f} ms ({ratio:.2f}x)"
    agree = all(_wins(*h) == chosen for h in measured.get("halves") or [])
    if not agree:
        chosen = False
        why += ", but the odd and even rounds disagree: the plain path"
    else:
        why += ": used" if chosen else f": not faster by the {MARGIN:.0%} margin: the plain path"
    if busy:
        why += f"; timed on a busy machine ({busy}): fast_paths(remeasure=True) on a quiet one to time it again"
    # Kept even when unsettled: a decision that changed between processes would change results between a
    # run and its resume. Only an explicit remeasure replaces it.
    return {"chosen": chosen, "why": why, "measured": {**measured, "ratio": ratio, "settled": agree and not busy}}


@contextlib.contextmanager
def _machine_lock() -> Iterator[None]:
    """An exclusive lock beside the cache file, held while deciding; none where it cannot be had."""
    try:
        import fcntl

        path = cache_file().with_name("fastpaths.lock")
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_NONBLOCK, 0o644)
    except (ImportError, OSError):  # Windows, a read-only home: decide alone
        yield
        return
    try:
        with contextlib.suppress(OSError):
            fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


def _busy() -> str:
    """``"load 8.6 on 2 CPUs"`` where more work is waiting than there are CPUs, else ``""``."""
    try:
        load = os.getloadavg()[0]
        cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    except (OSError, AttributeError):  # no load average on this system (Windows)
        return ""
    return f"load {load:.1f} on {cpus} CPUs" if load > cpus else ""


def _wins(fast: float, plain: float) -> bool:
    return fast < (1 - MARGIN) * plain


def _valid(entry: Any) -> bool:
    return (
        isinstance(entry, dict)
        and isinstance(entry.get("chosen"), bool)
        and isinstance(entry.get("why"), str)
        and isinstance(entry.get("measured"), dict)
    )


PROBE_SECONDS = 2.0  # fastest(): the sides are timed for about this long in all
MAX_ROUNDS = 8  # and in at most this many rounds (a small model's passes take milliseconds: no need for 2 s)


def fastest(sides: dict[Any, Callable[[], Callable[[], None]]], warm_up: bool = True) -> dict[Any, float]:
    """Each side's fastest time, over interleaved rounds (the order reversed every other round, so a busy
    moment slows one round, not one side): at least 3 rounds, more while within ``PROBE_SECONDS``, at most
    ``MAX_ROUNDS``. A side is a ``prepare`` that sets the model up (untimed) and returns the call to time."""
    keys = list(sides)
    best = dict.fromkeys(keys, float("inf"))
    start = time.perf_counter()
    rounds = 0
    while rounds < 3 or (time.perf_counter() - start < PROBE_SECONDS and rounds < MAX_ROUNDS):
        for k in keys if rounds % 2 else keys[::-1]:
            run = sides[k]()
            if warm_up and rounds == 0:
                run()  # allocator, oneDNN primitive caches
            t0 = time.perf_counter()
            run()
            best[k] = min(best[k], time.perf_counter() - t0)
        rounds += 1
    return best


def race(
    units: list[tuple[Callable[[], Any], Callable[[], Any]]], budget_s: float = 0.25, min_reps: int = 4
) -> dict[str, Any]:
    """Time ``(fast, plain)`` pairs of calls, interleaved, and sum each side's fastest time per unit.

    Short units, alternated in both orders, and the minimum over repetitions: on a machine shared with
    other work a slice of time lost to another process inflates single calls, not the fastest one. Runs
    ``min_reps`` rounds and more while within ``budget_s`` (at most 50), never past 4x the budget. The odd
    and the even rounds are also summed apart: two independent verdicts, which a busy machine can make
    disagree (then :func:`fast_path` keeps the plain path).

    Returns:
        ``{"fast_s", "plain_s", "reps", "halves"}``: the sums over units of each side's fastest call, in
        seconds, and ``halves``, the same two sums over the odd and over the even rounds.
    """
    for fast, plain in units:  # warm-up: first calls allocate, dispatch and pick (JIT) kernels
        fast()
        plain()
    inf = float("inf")
    best = [[[inf, inf] for _ in units] for _ in range(2)]  # [half][unit][fast, plain]
    start = time.perf_counter()
    reps = 0
    while reps < 50:
        elapsed = time.perf_counter() - start
        if (reps >= min_reps and elapsed > budget_s) or (reps >= 2 and elapsed > 4 * budget_s):
            break
        reps += 1
        half = best[reps % 2]
        for i, pair in enumerate(units):
            for side in (0, 1) if reps % 2 else (1, 0):
                t0 = time.perf_counter()
                pair[side]()
                half[i][side] = min(half[i][side], time.perf_counter() - t0)
    halves = [[sum(u[side] for u in h) for side in (0, 1)] for h in best]
    fast_s = sum(min(a[0], b[0]) for a, b in zip(*best, strict=True))
    plain_s = sum(min(a[1], b[1]) for a, b in zip(*best, strict=True))
    return {"fast_s": fast_s, "plain_s": plain_s, "reps": reps, "halves": halves}


def machine_key() -> str:
    """What a cached decision is valid for: the CPU model, torch's version and the thread count."""
    return f"{platform.machine()} {_cpu_model()} | torch {torch.__version__} | {torch.get_num_threads()} threads"


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


def cache_file() -> Path:
    """``$XDG_CACHE_HOME/genmodels/fastpaths.json`` (or under ``~/.cache``)."""
    xdg = os.environ.get("XDG_CACHE_HOME", "")
    base = Path(xdg) if xdg and os.path.isabs(xdg) else Path.home() / ".cache"
    return base / "genmodels" / "fastpaths.json"


def _read_cache() -> dict[str, Any]:
    """The cached decisions by machine key; empty when the file is missing, damaged or not a plain file."""
    try:
        fd = os.open(cache_file(), os.O_RDONLY | os.O_NONBLOCK)
    except OSError:
        return {}
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode) or st.st_size > _CACHE_LIMIT:
            return {}
        with os.fdopen(fd, "rb", closefd=False) as f:
            doc = json.loads(f.read(_CACHE_LIMIT).decode("utf-8"))
    except (OSError, ValueError):
        return {}
    finally:
        os.close(fd)
    if not isinstance(doc, dict) or doc.get("format") != CACHE_FORMAT or not isinstance(doc.get("machines"), dict):
        return {}
    return doc["machines"]


def _write_cache(key: str, name: str, result: dict[str, Any]) -> None:
    """Add one decision to the cache; a cache that cannot be written only costs a measurement next time."""
    machines = _read_cache()
    entry = machines.get(key) if isinstance(machines.get(key), dict) else {}
    machines[key] = {**entry, name: result}
    text = json.dumps({"format": CACHE_FORMAT, "machines": machines}, indent=1)
    if len(text) > _CACHE_LIMIT:  # many machines or torch versions share this home: keep only this one
        mine = machines[key]
        # and, of its other decisions (training-step plans, one per model config), the newest
        while len(text := json.dumps({"format": CACHE_FORMAT, "machines": {key: mine}}, indent=1)) > _CACHE_LIMIT:
            old = next((k for k in mine if k != name and k not in _probes), None)
            if old is None:
                break
            mine = {k: v for k, v in mine.items() if k != old}
    _write_doc(text)


def _write_doc(text: str) -> None:
    """Replace the cache file with ``text`` atomically; a cache that cannot be written only costs a
    measurement next time."""
    path = cache_file()
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=".fastpaths-", dir=path.parent)
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as f:
                f.write(text)
            os.replace(tmp, path)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
            raise
    except OSError:
        pass


def cached_decision(name: str) -> dict[str, Any] | None:
    """A decision cached for this machine under ``name`` (a training step's plan), or None."""
    return cached_decisions().get(name) if mode() == "auto" else None


def cached_decisions() -> dict[str, dict[str, Any]]:
    """Every valid decision cached for this machine, by name."""
    entries = _read_cache().get(machine_key(), {})
    return {k: v for k, v in entries.items() if _valid(v)} if isinstance(entries, dict) else {}


def forget_decisions(prefix: str) -> int:
    """Drop this machine's cached decisions whose name starts with ``prefix``; how many were dropped."""
    with _machine_lock():
        machines = _read_cache()
        key = machine_key()
        mine = machines.get(key) if isinstance(machines.get(key), dict) else {}
        kept = {k: v for k, v in mine.items() if not k.startswith(prefix)}
        if len(kept) < len(mine):
            machines[key] = kept
            _write_doc(json.dumps({"format": CACHE_FORMAT, "machines": machines}, indent=1))
        return len(mine) - len(kept)


def remember_decision(name: str, result: dict[str, Any], first_wins: bool = False) -> dict[str, Any]:
    """Cache a decision for this machine (``{"chosen", "why", "measured"}``), so later processes reuse it;
    returns what is cached. ``first_wins``: a decision another process cached meanwhile (two first runs of
    a config timed at once) is kept and returned instead, so both take one path."""
    with _machine_lock():
        if first_wins:
            entry = _read_cache().get(machine_key(), {}).get(name) if mode() == "auto" else None
            if _valid(entry):
                return entry
        _write_cache(machine_key(), name, result)
        return result


def cpu_flags() -> set[str]:
    """The CPU's feature flags from /proc/cpuinfo (empty where there is none)."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as f:
            for line in f:
                if line.startswith("flags"):
                    return set(line.split(":", 1)[1].split())
    except OSError:
        pass
    return set()


def report(remeasure: bool = False) -> dict[str, Any]:
    """What ``genmodels doctor`` prints: the machine, what torch detects on it, and every registered fast
    path's decision with its reason (paths register when their modules are imported: the caller imports
    ``genmodels.nets`` and ``genmodels.training`` first)."""
    flags = cpu_flags()
    cuda = []
    if torch.cuda.is_available():
        for i in range(torch.cuda.device_count()):
            cuda.append({"name": torch.cuda.get_device_name(i), "bf16": torch.cuda.is_bf16_supported()})
    return {
        "machine": machine_key(),
        "cpu": _cpu_model(),
        "cores": os.cpu_count(),
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "cpu_capability": torch.backends.cpu.get_cpu_capability(),
        "cpu_flags": {f: f in flags for f in ("avx2", "avx512f", "avx512_bf16", "amx_bf16", "amx_tile")},
        "bf16_autocast_cpu": bf16_is_fast(torch.device("cpu")),
        "cuda": cuda,
        "default_device": str(pick_device("auto")),
        "fast_paths_setting": os.environ.get(ENV, "auto"),
        "fast_paths": fast_paths(remeasure=remeasure),
        "cache": str(cache_file()),
    }
