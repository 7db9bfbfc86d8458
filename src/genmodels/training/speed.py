"""How a training step runs on this machine: bf16 autocast or fp32, channels_last or not, compiled or eager.

Nothing here is assumed from a CPU name. With ``train.precision=auto``, ``train.channels_last=auto`` and
``train.compile=auto`` the trainer times this model's own forward and backward passes, on a real batch, in
every combination the settings allow, interleaved (a busy moment slows one round, not one variant), and
keeps the plain combination unless another is faster by more than ``device.MARGIN``:

* bf16 autocast is a candidate only where bf16 runs natively (``device.bf16_is_fast``);
* channels_last only for a model with convolutions;
* torch.compile (inductor) is tried only when the run is long enough to repay a compile (see
  :func:`_worth_compiling`), and kept only where the compiled pass is faster than the eager one.

The probe saves and restores everything it touches (weights, buffers such as batch-norm statistics, the
random-number state, gradients), so a run's trajectory does not depend on it; its time counts inside
``--max-time``. The plan is cached per machine (``device.cache_file``) by model and config, so every run
of a config on a machine takes the same path, and it is stored in each checkpoint, so a resume takes the
path its run took (compiled kernels included: the same graph compiles to the same kernels).
"""

from __future__ import annotations

import contextlib
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass
from typing import Any

import torch

from genmodels.device import MARGIN, bf16_is_fast, cached_decision, fastest, remember_decision
from genmodels.models.base import architecture_key, has_convolutions
from genmodels.models.sampling_layout import SAMPLE_PREFIX

# ``trainer`` below is a ``training.trainer.Trainer`` (not imported: the trainer imports this module).
Trainer = Any
PLAN_PREFIX = "train-step "
# A first compile takes 17-82 s on 2 cores (measured on the six family defaults: 35 s the autoencoder, 82 s the
# diffusion U-Net) and was kept for one of them (the PixelCNN, 0.71x the eager pass); the other tries were dropped
# and cost a 3-minute run 10-46% of its time. Under 10 minutes a try costs more than it can return; 9.5 minutes
# left, so that a 10-minute run (``--max-time 10``, a few seconds gone before its plan) still tries.
MIN_COMPILE_RUN_S = 570.0
_DTYPES = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}


@dataclass
class StepPlan:
    """What a training step runs as."""

    precision: str  # fp32 | bf16 | fp16 (autocast dtype of the loss methods)
    channels_last: bool
    compile: bool
    why: str = ""  # what was timed and chosen, with the timings

    @property
    def amp_dtype(self) -> torch.dtype | None:
        return _DTYPES[self.precision]

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: Any) -> StepPlan | None:
        """A plan read back from a checkpoint or the cache; None when it is not one."""
        if not isinstance(d, dict) or d.get("precision") not in _DTYPES:
            return None
        if not isinstance(d.get("channels_last"), bool) or not isinstance(d.get("compile"), bool):
            return None
        return cls(d["precision"], d["channels_last"], d["compile"], str(d.get("why", "")))

    def describe(self) -> str:
        parts = [
            "bf16 autocast" if self.precision == "bf16" else self.precision,
            "channels_last" if self.channels_last else "contiguous",
            "compiled" if self.compile else "eager",
        ]
        return ", ".join(parts)


def loss_methods(trainer: Trainer) -> list[str]:
    """The model methods one training step calls."""
    if trainer.adversarial:
        return [*trainer.model.critic_methods, "generator_loss"]  # type: ignore[attr-defined]
    return ["loss"]


def plan_key(trainer: Trainer, model_name: str) -> str:
    """What a cached plan is valid for on a machine: the model, its config and the settings that shape it."""
    c = trainer.config
    digest = architecture_key(
        trainer.model,
        model=model_name,
        shape=list(trainer.images.shape[1:]),
        batch_size=c.batch_size,
        settings=[c.precision, c.channels_last, c.compile],
        device=trainer.device.type,
    )
    return f"{PLAN_PREFIX}{model_name} {digest}"


def fixed_plan(trainer: Trainer, why: str) -> StepPlan:
    """The plan without timing anything: the settings as given, ``auto`` as the plain path (bf16 where native)."""
    c = trainer.config
    precision = c.precision
    if precision == "auto":
        precision = "bf16" if bf16_is_fast(trainer.device) else "fp32"
    return StepPlan(precision, c.channels_last == "on", c.compile == "on", why)


def choose(trainer: Trainer, model_name: str, remaining_s: float | None, mode: str) -> StepPlan:
    """The step plan for this run: cached for this machine, else measured (``mode`` is the
    GENMODELS_FASTPATHS setting: ``off`` plain paths, ``on`` every candidate untimed, ``auto`` measure)."""
    c = trainer.config
    if mode == "off":
        return fixed_plan(trainer, "GENMODELS_FASTPATHS=off: the plain path")
    if trainer.world > 1:
        return fixed_plan(trainer, "a distributed run: every process takes the plain path, untimed")
    if "auto" not in (c.precision, c.channels_last, c.compile):
        return fixed_plan(trainer, "set in the config")
    key = plan_key(trainer, model_name)
    cached = cached_decision(key)
    if cached is not None:
        plan = StepPlan.from_dict(cached.get("measured", {}).get("plan"))
        if plan is not None:
            plan.why = f"{plan.why} (measured earlier on this machine)"
            return plan
    plan = _measure(trainer, remaining_s, mode)
    mine = {"chosen": plan.compile, "why": plan.why, "measured": {"plan": plan.as_dict()}}
    stored = remember_decision(key, mine, first_wins=True)
    if stored is not mine:  # another run of this config timed it first: every run here takes one path
        other = StepPlan.from_dict(stored.get("measured", {}).get("plan"))
        if other is not None:
            other.why = f"{other.why} (measured by another run on this machine at the same time)"
            return other
    return plan


# ---------------------------------------------------------------------------------------------- measuring


def _candidates(trainer: Trainer) -> tuple[list[str], list[bool]]:
    c = trainer.config
    if c.precision == "auto":
        precisions = ["bf16", "fp32"] if bf16_is_fast(trainer.device) else ["fp32"]
    else:
        precisions = [c.precision]
    if c.channels_last == "auto":
        layouts = [False, True] if has_convolutions(trainer.model) else [False]
    else:
        layouts = [c.channels_last == "on"]
    return precisions, layouts


def _measure(trainer: Trainer, remaining_s: float | None, mode: str) -> StepPlan:
    c = trainer.config
    precisions, layouts = _candidates(trainer)
    variants = [(p, cl) for p in precisions for cl in layouts]
    times: dict[tuple[str, bool], float] = {}
    notes: list[str] = []
    with _probing(trainer) as idx:

        def variant(v: tuple[str, bool]) -> Callable[[], None]:
            apply_layout(trainer, v[1])
            batch = trainer.batch_of(idx)
            return lambda: _pass(trainer, v[0], batch)

        if mode == "on":
            best = (precisions[0], layouts[-1])
        elif len(variants) > 1:
            times = fastest({v: (lambda v=v: variant(v)) for v in variants})
            best = variants[0]
            quickest = min(variants, key=lambda v: times[v])
            if times[quickest] < (1 - MARGIN) * times[best]:
                best = quickest
            notes.append(
                "timed forward+backward: "
                + ", ".join(f"{p}{' channels_last' if cl else ''} {1e3 * times[(p, cl)]:.1f} ms" for p, cl in variants)
            )
        else:
            best = variants[0]
        compiled = False
        want = c.compile
        if want == "auto" and mode == "on":
            want = "on"
        if want != "off":
            if best not in times:
                times.update(fastest({best: lambda: variant(best)}))
            worth, reason = (True, "") if want == "on" else _worth_compiling(trainer, remaining_s, times[best])
            if not worth:
                notes.append(f"not compiled: {reason}")
            else:
                apply_layout(trainer, best[1])
                compiled, note = _try_compile(trainer, best[0], trainer.batch_of(idx), forced=want == "on")
                notes.append(note)
    return StepPlan(best[0], best[1], compiled, "; ".join(notes) or "one candidate")


def _worth_compiling(trainer: Trainer, remaining_s: float | None, eager_s: float) -> tuple[bool, str]:
    """Whether to try a compile: the run's time left (``--max-time``, else its steps at the eager pass's
    time) must be long enough to repay a compile that may take a minute and a half (``MIN_COMPILE_RUN_S``)."""
    if remaining_s is None:
        steps = (trainer.budget.total or trainer.config.steps or 0) - trainer.step
        remaining_s = steps * eager_s
    if remaining_s < MIN_COMPILE_RUN_S:
        left = f"the run has about {remaining_s:.0f} s left"
        return False, f"{left}, under the {MIN_COMPILE_RUN_S:.0f} s a compile needs to repay"
    return True, ""


class Compiled:
    """The compiled forms of what a step runs: a single-objective model's loss methods (the whole loss
    fuses), an adversarial model's networks (its loss methods hand tensors from one to the next, the
    fakes of the D step to the G step, which one compiled graph per method would free too early)."""

    def __init__(self, trainer: Trainer) -> None:
        model = trainer.model
        self.methods: dict[str, Callable[..., Any]] = {}
        self.proven: set[str] = set()  # loss methods whose compiled form has run once (then built)
        self.forwards: dict[torch.nn.Module, Callable[..., Any]] = {}
        if trainer.adversarial:
            for child in model.children():
                if any(True for _ in child.parameters()):
                    self.forwards[child] = torch.compile(child.forward)
        else:
            self.methods = {m: torch.compile(getattr(model, m)) for m in loss_methods(trainer)}

    def use(self, trainer: Trainer, on: bool) -> None:
        """Make the trainer's steps run compiled (or eager again)."""
        trainer.compiled = self if on else None

    @contextlib.contextmanager
    def active(self) -> Iterator[None]:
        """The compiled networks in place for one loss call only: sampling, evaluation and checkpoints
        between steps see the plain modules (inductor's graphs are traced for training)."""
        for child, fwd in self.forwards.items():
            child.forward = fwd  # an instance attribute over the class's forward
        try:
            yield
        finally:
            for child in self.forwards:
                child.__dict__.pop("forward", None)

    def call(self, model: torch.nn.Module, method: str, batch: Any) -> Any:
        fn = self.methods.get(method)
        with self.active():
            out = fn(batch) if fn is not None else getattr(model, method)(batch)
        self.proven.add(method)
        return out


def is_compile_failure(e: BaseException) -> bool:
    """Whether an error came from torch.compile building a graph (dynamo or inductor), not from the model."""
    return type(e).__module__.startswith(("torch._dynamo", "torch._inductor"))


def _try_compile(trainer: Trainer, precision: str, batch: Any, forced: bool) -> tuple[bool, str]:
    """Compile what a step runs and time it against eager; keeps the compiled form when faster."""
    compiled = None
    try:
        compiled = Compiled(trainer)
        compiled.use(trainer, True)
        t0 = time.perf_counter()
        _pass(trainer, precision, batch)  # the compile itself
        compile_s = time.perf_counter() - t0

        def side(on: bool) -> Callable[[], None]:
            compiled.use(trainer, on)
            return lambda: _pass(trainer, precision, batch)

        times = fastest({True: lambda: side(True), False: lambda: side(False)}, warm_up=False)
    except Exception as e:  # inductor may fail on any model, in any way: then the eager step it is
        if compiled is not None:
            compiled.use(trainer, False)
        return False, f"not compiled: torch.compile failed ({compile_error(e)})"
    ratio = times[True] / times[False]
    faster = times[True] < (1 - MARGIN) * times[False]
    note = (
        f"compiled in {compile_s:.1f} s: {1e3 * times[True]:.1f} ms against eager {1e3 * times[False]:.1f} ms "
        f"({ratio:.2f}x)"
    )
    keep = faster or forced
    compiled.use(trainer, keep)
    if keep:
        return True, note + (": compiled" if faster else ": compiled (train.compile=on)")
    return False, note + f": not faster by the {MARGIN:.0%} margin: eager"


def compile_step(trainer: Trainer) -> None:
    """Compile what a step runs, for a plan that says so (a resume, a cached plan); eager when that fails
    here or, the compile being lazy, at the first step (``Trainer.call_loss`` calls :func:`fall_back_eager`)."""
    try:
        Compiled(trainer).use(trainer, True)
    except Exception as e:
        fall_back_eager(trainer, e)


def fall_back_eager(trainer: Trainer, e: Exception) -> None:
    """A plan's compile failed: the run goes on eager with one warning, and its plan says so (checkpoints keep
    it, so a resume does not try again)."""
    print(f"warning: torch.compile failed ({compile_error(e)}); training eager", file=sys.stderr)
    trainer.compiled = None
    if trainer.plan is not None and trainer.plan.compile:
        trainer.plan.compile = False
        trainer.plan.why += f"; the compile failed at the first step ({type(e).__name__}): eager"


def compile_error(e: BaseException) -> str:
    """A compile error in one line: its type and the first line of its message."""
    return f"{type(e).__name__}: {(str(e).strip().splitlines() or [''])[0][:200]}"


def _pass(trainer: Trainer, precision: str, batch: Any) -> None:
    """One step's forward and backward passes (no optimiser update) on ``batch``, called the way the
    trainer calls them (compiled when ``trainer.compiled`` is set), at ``precision``."""
    d_params = list(trainer.model.discriminator_parameters()) if trainer.adversarial else []  # type: ignore[attr-defined]
    amp = trainer.amp_dtype
    trainer.amp_dtype = _DTYPES[precision]
    try:
        for name in loss_methods(trainer):
            frozen = name == "generator_loss"
            for p in d_params:
                p.requires_grad_(not frozen)
            trainer.call_loss(name, batch).loss.backward()
    finally:
        trainer.amp_dtype = amp
        for p in d_params:
            p.requires_grad_(True)
    if trainer.device.type == "cuda":
        torch.cuda.synchronize(trainer.device)
    for p in trainer.model.parameters():
        p.grad = None


def apply_layout(trainer: Trainer, channels_last: bool) -> None:
    """Put the model's weights, the batches, the EMA and the optimiser's moments in one memory layout."""
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    trainer.model.to(memory_format=fmt)
    trainer.channels_last = channels_last
    if trainer.ema is not None:  # the layout change gave the weights new storage: the EMA must follow it
        trainer.ema.bind(trainer.model)
    for opt in trainer.optimizers.values():  # moments in their parameter's layout (a resume reads them dense)
        for p, st in opt.state.items():
            for k, v in st.items():
                if torch.is_tensor(v) and v.shape == p.shape and v.dim() == 4:
                    st[k] = v.contiguous(memory_format=fmt)


@contextlib.contextmanager
def _probing(trainer: Trainer) -> Iterator[torch.Tensor]:
    """Everything the probe touches is put back: weights, buffers, random state, gradients. Yields the
    indices of the training images it runs on (the stream of batches does not move)."""
    model = trainer.model
    saved = {k: v.detach().clone() for k, v in model.state_dict().items()}
    idx = torch.arange(min(trainer.config.batch_size, len(trainer.images)), device=trainer.device)
    cuda = [trainer.device.index or 0] if trainer.device.type == "cuda" else []
    try:
        with torch.random.fork_rng(devices=cuda):
            yield idx
    finally:
        with torch.no_grad():
            model.load_state_dict(saved)
        for p in model.parameters():
            p.grad = None


def describe_machine_plans() -> list[dict[str, Any]]:
    """The step plans and sampling layouts cached for this machine (``genmodels doctor``)."""
    from genmodels.device import cached_decisions

    out = []
    for name, entry in cached_decisions().items():
        if name.startswith(PLAN_PREFIX):
            plan = StepPlan.from_dict(entry.get("measured", {}).get("plan"))
            if plan is not None:
                out.append({"model": name[len(PLAN_PREFIX) :], "plan": plan.describe(), "why": plan.why})
        elif name.startswith(SAMPLE_PREFIX):  # sampling layouts (models.sampling_layout)
            layout = "channels_last" if entry["chosen"] else "contiguous"
            out.append({"model": name[len(SAMPLE_PREFIX) :], "plan": f"sampling {layout}", "why": entry["why"]})
    return out


__all__ = ["StepPlan", "choose", "compile_step", "describe_machine_plans"]
