"""The check kit every area shares (the leading underscore keeps this module out of AREAS).

- how a GRL is called: `forms` (the layer given alpha by `set_alpha`, the layer built with it,
  the function as a layer: `registry.layer_from_function`), each a module with `set_alpha`;
- the models: `linear_grl_linear` (Linear -> GRL -> Linear) and `Dann` (a trunk, a task head,
  a domain head behind the GRL), seeded so that the model around an implementation and around
  the reference GRL are the same; `dann_loss`;
- seeded inputs: `randn`, `sample_inputs`, `batch`;
- the tolerances (`TOLERANCES`, one table) and the judges that compare a step with the truth:
  the same model run eagerly with the harness's trusted GRL (`grl_conformance.core.reference`).
  A check never takes the implementation's own eager run as the truth; that comparison only
  adds to the detail.
"""
from __future__ import annotations

import math
from contextlib import contextmanager

import torch
from torch import nn

from grl_conformance.core import compat
from grl_conformance.core.outcome import CheckSignal, Errored, Failed, describe_exception, passed
from grl_conformance.core.reference import ReferenceGRL
from grl_conformance.core.registry import layer_from_function

# Every tolerance the checks use, in one table: name -> (rtol, atol, what it absorbs). No check
# writes an rtol or atol number of its own; docs/checks.md ("Tolerances") lists this table.
TOLERANCES = {
    "graph": (1.3e-6, 1e-5, "float32 results of the same math in another order (torch.testing's "
                            "float32 defaults): compile, export, TorchScript, FX"),
    "one_op": (1e-6, 1e-7, "float32: one multiply by -alpha, nothing reordered (compiled torch.func, "
                           "the context columns' parameter gradients)"),
    "func": (1e-6, 1e-6, "small float32 values through a torch.func transform"),
    "reduction": (1e-5, 1e-6, "float32 summed in another order: DDP, CUDA graphs, compiled "
                              "autograd, onnxruntime"),
    "inductor": (1e-4, 1e-5, "float32 fused and reordered by inductor under CUDA graphs"),
    "hooks64": (1e-6, 1e-9, "float64 under saved-tensor hooks (a float32-rounded alpha is "
                            "backward.reversal's finding, not this column's)"),
    "structure": (1e-6, 1e-30, "float32 rounding of alpha or the gradient, where the check is "
                               "about structure, not precision"),
    "scale": (1e-6, 0.0, "a gradient that is an exact multiple of the upstream one"),
}


def tol(name: str) -> dict:
    """`rtol=..., atol=...` of a named tolerance, for torch.allclose."""
    rtol, atol, _ = TOLERANCES[name]
    return {"rtol": rtol, "atol": atol}


def tolerance_text(name: str) -> str:
    rtol, atol, _ = TOLERANCES[name]
    return f"rtol {rtol:g}, atol {atol:g}"


RTOL, ATOL = TOLERANCES["graph"][:2]
TOLERANCE = tolerance_text("graph")

BATCH, FEATURES, OUT = 3, 4, 2
ALPHA = 0.3  # non-dyadic on purpose


def close(a: torch.Tensor, b: torch.Tensor) -> bool:
    """Same shape and equal within the shared float32 tolerance."""
    return a.shape == b.shape and torch.allclose(a, b, rtol=RTOL, atol=ATOL)


def squash(text, limit: int = 200) -> str:
    """`text` on one line (whitespace runs made one space), cut to `limit` characters."""
    return " ".join(str(text).split())[:limit]


def raised(what: str, exc: BaseException, summary: str) -> Errored:
    """The cell's error when a step the check takes (`what`: an export, a trace) raised."""
    return Errored(f"{what} raised {type(exc).__name__}: {squash(exc)}", summary=summary)


def first_line(exc: BaseException, limit: int = 160) -> str:
    """The first non-empty line of an exception's message, cut to `limit` characters."""
    lines = [line.strip() for line in str(exc).strip().splitlines() if line.strip()]
    return (lines[0] if lines else "")[:limit]


# --- how a GRL is called ---------------------------------------------------------------------

FORMS = ("layer.set_alpha", "layer(alpha=)", "fn")


def forms(impl, alpha: float, which: tuple[str, ...] = ("layer.set_alpha", "fn")) -> list:
    """[(label, module)]: the GRL in the forms a DANN calls it in, alpha already given, each a
    module with `set_alpha`. `layer.set_alpha`: built with alpha 1.0, then set (a schedule's
    way, and the seed API's promise); `layer(alpha=)`: the constructor's alpha; `fn`: the
    function, in the layer `--grl-impl` gives a function row (`registry.layer_from_function`)."""
    made = []
    for label in which:
        if label == "layer.set_alpha":
            grl = impl.api.layer(alpha=1.0)
            grl.set_alpha(alpha)
        elif label == "layer(alpha=)":
            grl = impl.api.layer(alpha=alpha)
        elif label == "fn":
            grl = layer_from_function(impl.api.fn, "fn")(alpha)
        else:
            raise ValueError(f"unknown form {label!r}; one of {FORMS}")
        made.append((label, grl))
    return made


def form(impl, label: str, alpha: float) -> nn.Module:
    """One of `forms`: the GRL called as `label`."""
    return forms(impl, alpha, (label,))[0][1]


# --- seeded inputs and the models --------------------------------------------------------------

def randn(*shape, dtype=torch.float64, seed: int = 0) -> torch.Tensor:
    """A seeded normal tensor, drawn in float64 and cast: the same values in every dtype."""
    gen = torch.Generator().manual_seed(seed)
    return torch.randn(tuple(shape), generator=gen, dtype=torch.float64).to(dtype)


def linear_grl_linear(grl: nn.Module, seed: int = 0,
                      sizes: tuple[int, int, int] = (FEATURES, FEATURES, OUT)) -> nn.Sequential:
    """Linear(4, 4) -> grl -> Linear(4, 2) (or `sizes`), weights seeded independently of the
    GRL, so the model around the implementation and around the reference GRL are the same."""
    gen = torch.Generator().manual_seed(seed)
    first, last = nn.Linear(sizes[0], sizes[1]), nn.Linear(sizes[1], sizes[2])
    with torch.no_grad():
        for p in (*first.parameters(), *last.parameters()):
            p.copy_(torch.randn(p.shape, generator=gen))
    return nn.Sequential(first, grl, last)


def impl_model(impl, alpha=ALPHA) -> nn.Sequential:
    """Linear -> the implementation's layer -> Linear."""
    return linear_grl_linear(impl.api.layer(alpha=alpha))


def reference_model(alpha=ALPHA) -> nn.Sequential:
    """Linear -> the trusted reference GRL -> Linear: the truth for `impl_model`."""
    return linear_grl_linear(ReferenceGRL(float(alpha)))


def unreversed_model() -> nn.Sequential:
    """Linear -> identity -> Linear: the gradients a GRL that lost its reversal produces."""
    return linear_grl_linear(nn.Identity())


def sample_inputs(batch=BATCH, seed=1):
    """An input and a non-uniform upstream gradient for the Linear -> GRL -> Linear model."""
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(batch, FEATURES, generator=gen)
    upstream = torch.randn(batch, OUT, generator=gen)
    return x, upstream


def step(fn, model, x, upstream):
    """One forward/backward of `fn` (model or its compiled form): (output, input grad, param grads)."""
    model.zero_grad(set_to_none=True)
    x = x.detach().clone().requires_grad_(True)
    out = fn(x)
    out.backward(upstream)
    return out.detach(), x.grad, [p.grad for p in model.parameters()]


def reference_step(x, upstream, alpha=ALPHA):
    """The truth for one step of `impl_model(impl, alpha)`."""
    model = reference_model(alpha)
    return step(model, model, x, upstream)


def unreversed_step(x, upstream):
    model = unreversed_model()
    return step(model, model, x, upstream)


def max_diff(a, b, other: str = "reference") -> str:
    """How far tensor a is from b, in a few words (None and shape mismatches named)."""
    if a is None or b is None:
        return f"one is None (got {a is None}, {other} {b is None})"
    if a.shape != b.shape:
        return f"shape {tuple(a.shape)} vs {other} {tuple(b.shape)}"
    nan = int(torch.isnan(a).sum()) - int(torch.isnan(b).sum())
    diff = (a.double() - b.double()).abs().nan_to_num(nan=math.inf).max().item() if a.numel() else 0.0
    return f"max |diff| {diff:.3g}" + (f", {nan:+d} NaN" if nan else "")


_PARTS = ("output", "input gradient", "parameter gradients")


def first_mismatch(got, want, *, bitwise: bool, other: str = "reference") -> tuple[str, str] | None:
    """(part, how far) for the first of output, input gradient, parameter gradients where the
    step results `got` and `want` differ (or of a single result tensor each); None when they
    agree."""
    got, want = (r if isinstance(r, tuple) else (r,) for r in (got, want))
    if len(got) != len(want):
        raise ValueError(f"comparing {len(got)} parts with {len(want)}")
    for name, g, w in zip(_PARTS[:len(got)], got, want, strict=True):
        for a, b in (list(zip(g, w, strict=True)) if isinstance(g, list) else [(g, w)]):
            if a is None or b is None or a.shape != b.shape:
                return name, max_diff(a, b, other)
            if not (torch.equal(a, b) if bitwise else close(a, b)):
                return name, max_diff(a, b, other)
    return None


# --- naming what is wrong ------------------------------------------------------------------

LOWER_PRECISION = (torch.float32, torch.float16, torch.bfloat16)


def name_the_error(got: torch.Tensor, upstream: torch.Tensor, alpha: float, dtype: torch.dtype) -> str:
    """What is wrong with `got` as `-alpha * upstream` (a `dtype` gradient), in a DANN user's
    words: `reversal lost`, `wrong sign`, `zero gradient`, `alpha rounded to <dtype>` or `grad
    rounded to <dtype>` (right to that lower precision only: `outcome.PRECISION_LOSS`), `wrong
    scale (x k)`, or `wrong gradient`. Compared on the finite elements of the truth."""
    g, q = upstream.detach().double().reshape(-1), got.detach().double().reshape(-1)
    ref = -alpha * g
    keep = ref.isfinite() & q.isfinite()
    g, q, ref = g[keep], q[keep], ref[keep]
    if not ref.numel() or not bool(ref.ne(0).any()):
        return "wrong gradient"

    def near(a, b, rel):
        return bool(((a - b).abs() <= rel * b.abs() + 1e-300).all())

    own = 4 * torch.finfo(dtype).eps
    if alpha != -1.0 and near(q, g, own):
        return "reversal lost"
    if near(q, -ref, own):
        return "wrong sign"
    if not bool(q.ne(0).any()):
        return "zero gradient"
    for lower in LOWER_PRECISION:
        if torch.finfo(lower).eps <= torch.finfo(dtype).eps:
            continue
        name = str(lower).removeprefix("torch.")
        rounded = float(torch.tensor(alpha, dtype=torch.float64).to(lower))
        if rounded != alpha and near(q, -rounded * g, own):
            return f"alpha rounded to {name}"
        if near(q, ref, 2 * torch.finfo(lower).eps):
            return f"grad rounded to {name}"
    k = float(q @ ref) / float(ref @ ref)
    if near(q, k * ref, own):
        return f"wrong scale (x{k:.3g})"
    return "wrong gradient"


# --- alpha after a transformation ----------------------------------------------------------

# The alpha a transformed form (compiled, traced, scripted, exported, a torch.func transform)
# must follow once `set_alpha` is called on the layer it was made from. A DANN trains with a
# schedule: a form that keeps the alpha it was made with trains with a frozen schedule.
ALPHA_AFTER = 0.7


def _tensors_of(layer) -> dict:
    return {**{k: v for k, v in vars(layer).items() if isinstance(v, torch.Tensor)},
            **dict(layer.named_buffers())}


def alpha_holder(layer, before: dict, made_with: float, verb: str) -> str:
    """How `layer` held its alpha (`made_with`) when the form was made, from its attributes and
    tensors then (`before`) and now (after `set_alpha`), in an `alpha frozen` detail's words."""
    import numbers

    tensors_before = {k: v for k, v in before.items() if isinstance(v, torch.Tensor)}
    replaced = [k for k, v in _tensors_of(layer).items()
                if k in tensors_before and tensors_before[k] is not v and v.numel() == 1]
    if replaced:
        return (f"set_alpha replaces the tensor `{replaced[0]}` with a new one, and {verb} holds "
                "the old one")
    held = [k for k, v in before.items() if isinstance(v, numbers.Real) and not isinstance(v, bool)
            and abs(abs(float(v)) - made_with) < 1e-6]
    if held:
        return f"the layer keeps alpha as a Python number (`{held[0]}`), which {verb} records as a constant"
    for name, tensor in tensors_before.items():
        if tensor.numel() == 1:
            return (f"alpha is the tensor `{name}`, which {verb} copied instead of sharing (set in "
                    "place, a shared tensor is read at run time)")
    return f"{verb} kept the alpha the layer had when it was made"


def judge_alpha_after(where: str, rerun, layer, made_with: float, want, frozen, verb: str) -> str:
    """Call `set_alpha(ALPHA_AFTER)` on `layer` (what the transformed form was made from, at
    alpha `made_with`), run `rerun()` and require `want` (the truth at ALPHA_AFTER); the truth at
    the old alpha (`frozen`) is `fail (alpha frozen)`. The layer gets `made_with` back
    afterwards. Returns the detail's note."""
    before = {**vars(layer), **_tensors_of(layer)}
    layer.set_alpha(ALPHA_AFTER)
    try:
        holder = alpha_holder(layer, before, made_with, verb)
        got = rerun()
    except Failed:
        raise
    except Exception as exc:  # noqa: BLE001 - the finding
        raise Errored(f"{where}: after set_alpha({ALPHA_AFTER}) the run raised "
                      f"{type(exc).__name__}: {first_line(exc)}", summary="error after set_alpha") from None
    finally:
        layer.set_alpha(made_with)
    off = first_mismatch(got, want, bitwise=False)
    if off is None:
        return f"set_alpha({ALPHA_AFTER}) afterwards is followed"
    if first_mismatch(got, frozen, bitwise=False) is None:
        raise Failed(f"{where}: after set_alpha({ALPHA_AFTER}) on the layer it was made from, it "
                     f"still reverses with the alpha it was made with: {holder}; a DANN trained "
                     "through it keeps that alpha for the whole schedule", summary="alpha frozen")
    raise Failed(f"{where}: after set_alpha({ALPHA_AFTER}) its result differs from a correct "
                 f"GRL's ({off[1]}, {TOLERANCE})", summary="wrong after set_alpha")


def judge_step(got, truth, *, where: str, what: str, own_eager=None, unreversed=None,
               bitwise_eager: bool = False) -> None:
    """Fail unless the step `got` equals the truth within tolerance; then, if `own_eager` is
    given, unless it equals the implementation's own eager step (bitwise when asked).

    The detail says how the result relates to the implementation's own eager run ("its eager
    run is wrong the same way", "compile changed a right eager result") and, with
    `unreversed`, whether the gradient is that of the model without the GRL.
    """
    off = first_mismatch(got, truth, bitwise=False)
    if off is not None:
        name, diff = off
        notes = []
        if unreversed is not None and first_mismatch(got, unreversed, bitwise=False) is None:
            notes.append("the gradients equal those of the model without the GRL: reversal lost")
        if own_eager is not None:
            if first_mismatch(own_eager, truth, bitwise=False) is None:
                notes.append(f"its own eager run is right: {what} changed it")
            elif first_mismatch(got, own_eager, bitwise=False) is None:
                notes.append("its own eager run is wrong the same way")
            else:
                notes.append("its own eager run is wrong too, differently")
        lost = bool(notes) and notes[0].endswith("reversal lost")
        summary = "reversal lost" if lost else ("wrong output" if name == "output" else "wrong gradient")
        raise Failed(f"{where}: {name} of {what} differs from a correct GRL's ({diff}, {TOLERANCE})"
                     + "".join(f"; {n}" for n in notes), summary=summary)
    if own_eager is None:
        return
    off = first_mismatch(got, own_eager, bitwise=bitwise_eager, other="eager")
    if off is not None:
        name, diff = off
        how = "not bitwise equal to" if bitwise_eager else "differs beyond tolerance from"
        raise Failed(f"{where}: {name} of {what} is right but {how} its own eager run ({diff})",
                     summary="differs from eager")


fresh_dynamo = compat.fresh_dynamo  # the compile columns' way into dynamo (core/compat.py)


def offload_hooks():
    """The saved-tensor hooks the offload columns run under, each counting the bytes it packs:
    (label, lossy, make) where make() gives (context manager, counter dict with "bytes").

    `compress`: every saved floating tensor kept as bfloat16, its dtype restored on unpack
    (activation compression); lossy on purpose, so a value a GRL needs exactly and saves
    through autograd (alpha) comes back rounded. `save_on_cpu`: torch's offloading hooks
    (`torch.autograd.graph.save_on_cpu`, unpinned); lossless, so the gradient must be exact.
    On a CPU tensor its pack keeps the tensor itself (`.cpu()`): here it shows the hooks run
    and what they are handed, not a copy.
    """
    from torch.autograd.graph import save_on_cpu, saved_tensors_hooks

    def compress():
        count = {"bytes": 0}

        def pack(t):
            count["bytes"] += t.numel() * t.element_size()
            return t.dtype, (t.to(torch.bfloat16) if t.is_floating_point() else t)

        def unpack(saved):
            dtype, t = saved
            return t.to(dtype)

        return saved_tensors_hooks(pack, unpack), count

    def offload():
        count = {"bytes": 0}
        torch_hooks = save_on_cpu(pin_memory=False)
        pack_to_cpu = torch_hooks.pack_hook

        def pack(t):
            count["bytes"] += t.numel() * t.element_size()
            return pack_to_cpu(t)

        return saved_tensors_hooks(pack, torch_hooks.unpack_hook), count

    return [("compressing hooks (bfloat16)", True, compress), ("save_on_cpu", False, offload)]


OFFLOAD_ALPHA = 0.1  # not a bfloat16 number: a compressed alpha shows


def grad_under_hooks(model, make_hooks) -> tuple:
    """One float64 forward of `model` (a float64 Linear -> GRL -> Linear, or its compiled form)
    under the hooks `make_hooks()` gives (`offload_hooks`), backward after them: the input
    gradient and the bytes the hooks packed."""
    x0, upstream = (t.double() for t in sample_inputs())
    hooks, packed = make_hooks()
    x = x0.requires_grad_(True)
    with hooks:
        out = model(x)
    out.backward(upstream)
    return x.grad, packed["bytes"]


# bfloat16 keeps 8 significant bits: a value rounded to it is off by at most 2^-9 relatively
BFLOAT16_ROUNDING = 2.0 ** -8


def judge_under_hooks(where: str, got, want, alpha: float, packed: int, lossy: bool,
                      rounding_ok: bool = False) -> str:
    """The offload columns' verdict: the input gradient under saved-tensor hooks must be the
    reference GRL's under the same hooks (tolerance "hooks64": float32 rounding of alpha is
    backward.reversal's finding). `rounding_ok`: under a lossy (bfloat16) hook a deviation of
    bfloat16's rounding passes, with a note (the compiled graph, not the GRL, chose to save
    alpha). `packed` is what the GRL packed beyond the reference. Returns a note ("" if exact)."""
    if got is None:
        raise Failed(f"{where}: no gradient reaches the input", summary="no gradient")
    if torch.allclose(got, want, **tol("hooks64")):
        return ""
    diff = (got - want).abs().max().item()
    if torch.allclose(got, want / -alpha, **tol("hooks64")):
        raise Failed(f"{where}: the input gradient is the unreversed one (max |diff| {diff:.3g} "
                     "from the reference GRL's under the same hooks): reversal lost",
                     summary="reversal lost")
    relative = ((got - want).abs() / want.abs().clamp_min(1e-30)).max().item()
    if lossy and rounding_ok and packed > 0 and relative <= BFLOAT16_ROUNDING:
        return (f"{where}: alpha packed ({packed} B) and rounded by the lossy hook (max relative "
                f"diff {relative:.2g}, within bfloat16's rounding)")
    why = ("what was saved for backward came back rounded (alpha saved through autograd?)"
           if lossy else "the hook is lossless, yet the gradient changed")
    raise Failed(f"{where}: the input gradient differs from the reference GRL's under the same "
                 f"hooks (max |diff| {diff:.3g}, max relative {relative:.2g}): {why}; the GRL "
                 f"packed {packed} B", summary="wrong under hooks")


# --- the DANN-shaped model of the context columns, and activation checkpointing -------------
# (docs/contexts.md). Alphas are powers of two, so a correct reversal is exact in every dtype.

CONTEXT_ALPHA = 0.5  # a power of two: -alpha * g is exact in float16/bfloat16 too


class Dann(nn.Module):
    """Shared trunk, a task head, a domain head behind the GRL. `grl` may be a module or a
    callable; `segment` wraps the domain branch (activation checkpointing)."""

    def __init__(self, grl, segment=None) -> None:
        super().__init__()
        gen = torch.Generator().manual_seed(0)
        self.trunk, self.task, self.domain = nn.Linear(6, 8), nn.Linear(8, 3), nn.Linear(8, 2)
        with torch.no_grad():
            for p in self.parameters():
                p.copy_(torch.randn(p.shape, generator=gen) * 0.5)
        self.grl = grl
        self.segment = segment

    def branch(self, f):
        return self.domain(self.grl(f))

    def forward(self, x):
        f = self.trunk(x)
        dom = self.segment(self.branch, f) if self.segment is not None else self.branch(f)
        return self.task(f), dom


def batch(step: int = 0, rows: int = 5):
    """A step's batch for `Dann`: input, task target, domain target (seeded by the step)."""
    gen = torch.Generator().manual_seed(100 + step)
    return (torch.randn(rows, 6, generator=gen), torch.randn(rows, 3, generator=gen),
            torch.randn(rows, 2, generator=gen))


def dann_loss(outputs, ct, cd, mean: bool = False):
    """Task loss plus domain loss, linear in the outputs (every gradient is exact to judge).
    mean: divided by the rows, as data-parallel training averages its ranks' gradients."""
    task, dom = outputs
    loss = (task.float() * ct).sum() + (dom.float() * cd).sum()
    return loss / task.shape[0] if mean else loss


def grads_of(model: nn.Module) -> dict:
    return {n: (None if p.grad is None else p.grad.detach().clone())
            for n, p in model.named_parameters() if not n.startswith("grl.")}


def compare_grads(got: dict, want: dict, where: str, lost: dict | None = None, *,
                  bitwise: bool = False, tolerance: str = "one_op") -> None:
    """Fail with `where` unless every parameter gradient equals the reference's."""
    for name, w in want.items():
        g = got.get(name)
        if g is None:
            raise Failed(f"{where}: no gradient reached {name}", summary="no gradient")
        ok = torch.equal(g, w) if bitwise else (
            g.shape == w.shape and torch.allclose(g.double(), w.double(), **tol(tolerance)))
        if ok:
            continue
        if lost is not None and lost.get(name) is not None and torch.allclose(
                g.double(), lost[name].double(), **tol("reduction")) and name.startswith("trunk"):
            raise Failed(f"{where}: {name}'s gradient equals that of the model WITHOUT a GRL: the "
                         "reversal is lost", summary="reversal lost")
        diff = (g.double() - w.double()).abs().nan_to_num(nan=float("inf")).max().item()
        raise Failed(f"{where}: gradient of {name} differs from the trusted reference GRL run the "
                     f"same way (max |diff| {diff:.3g}{', bitwise rule' if bitwise else ''})",
                     summary="wrong gradient")


@contextmanager
def at(where: str, summary: str = "raises"):
    """An exception raised by the implementation inside this block becomes `error` naming where
    (with `summary`; the eager columns' own cells leave it empty)."""
    try:
        yield
    except CheckSignal:
        raise
    except Exception as exc:  # noqa: BLE001 - the cell's error, with where it happened
        raise Errored(f"{where}: {describe_exception(exc)}", summary=summary) from exc


def reversal_scale(layer, dtype=torch.float64) -> float | None:
    """s such that the layer's input gradient is -s * upstream, or None when it is not a
    multiple of the upstream gradient (read on a fresh non-leaf input, grad mode on)."""
    gen = torch.Generator().manual_seed(7)
    leaf = torch.randn(4, 3, generator=gen, dtype=dtype).requires_grad_(True)
    x = leaf * 1.0
    upstream = torch.randn(4, 3, generator=gen, dtype=dtype)
    y = layer(x)
    if not (isinstance(y, torch.Tensor) and y.requires_grad):
        return None
    (g,) = torch.autograd.grad(y, x, upstream, allow_unused=True)
    if g is None:
        return None
    s = -(g.double() / upstream.double()).flatten()[0].item()
    return s if torch.allclose(g.double(), -s * upstream.double(), **tol("scale")) else None


def scale_text(s: float | None) -> str:
    return "not a multiple of the upstream gradient" if s is None else f"-{s:g} * upstream"


def autocast_regions() -> list[tuple[str, torch.dtype]]:
    regions = [("cpu", torch.bfloat16)]
    if torch.cuda.is_available():
        regions += [("cuda", torch.float16), ("cuda", torch.bfloat16)]
    return regions


def dtype_name(dtype) -> str:
    return str(dtype).replace("torch.", "")


CHECKPOINT_ALPHAS = (0.5, 0.25, 2.0)


def _checkpoint_steps(grl, set_alpha, reentrant: bool | None, compile_ctx=None, policy=None):
    """Three training steps (set_alpha between them); the domain branch in a checkpoint when
    `reentrant` is not None (selective, with `policy`, when given). Returns per step the
    parameter gradients."""
    from torch.utils.checkpoint import checkpoint

    segment = None
    if reentrant is not None and policy is not None:
        import functools

        from torch.utils.checkpoint import create_selective_checkpoint_contexts

        def segment(fn, f):
            return checkpoint(fn, f, use_reentrant=False, context_fn=functools.partial(
                create_selective_checkpoint_contexts, policy))
    elif reentrant is not None:
        def segment(fn, f):
            return checkpoint(fn, f, use_reentrant=reentrant)
    model = Dann(grl, segment)
    run = model
    if compile_ctx is not None:
        run = torch.compile(model, backend="aot_eager")
    out = []
    for step, alpha in enumerate(CHECKPOINT_ALPHAS):
        set_alpha(alpha)
        x, ct, cd = batch(step)
        model.zero_grad(set_to_none=True)
        dann_loss(run(x), ct, cd).backward()
        out.append(grads_of(model))
    return out


def _checkpoint_truth() -> tuple[list, list]:
    """Per step, the trusted reference's gradients without checkpointing, and those of the
    model with no GRL at all (what a lost reversal gives)."""
    ref = ReferenceGRL()
    return (_checkpoint_steps(ref, ref.set_alpha, None),
            _checkpoint_steps(nn.Identity(), lambda a: None, None))


def _checkpoint_forms(impl) -> tuple:
    """(label, grl, set_alpha) for the layer and for the function."""
    return tuple((label, grl, grl.set_alpha) for label, grl in forms(impl, 1.0))


def _compare_steps(got: list, want: list, lost: list, where: str) -> None:
    for step, alpha in enumerate(CHECKPOINT_ALPHAS):
        compare_grads(got[step], want[step], f"{where}, step {step} (alpha {alpha})", lost[step])


def checkpoint_check(impl, reentrant: bool, compile_ctx=None):
    """The domain branch (GRL -> domain head) inside torch.utils.checkpoint, three steps."""
    kind = "reentrant" if reentrant else "non-reentrant"
    want, lost = _checkpoint_truth()
    graphs = []
    for label, grl, set_alpha in _checkpoint_forms(impl):
        where = f"checkpoint(use_reentrant={reentrant}){' compiled (aot_eager)' if compile_ctx else ''}, {label}"
        if compile_ctx is not None:
            with compile_ctx() as counters:
                with at(where):
                    got = _checkpoint_steps(grl, set_alpha, reentrant, compile_ctx)
                n = int(counters["stats"].get("unique_graphs", 0))
                breaks = sum(counters["graph_break"].values())
            if not n:
                raise Errored(f"{where}: torch.compile compiled nothing (the model ran eagerly)",
                              summary="not compiled")
            graphs.append(f"{label} {n} graph(s), {breaks} break(s)")
        else:
            with at(where):
                got = _checkpoint_steps(grl, set_alpha, reentrant)
        _compare_steps(got, want, lost, where)
    extra = f"; {'; '.join(graphs)}" if graphs else ""
    first = ("forward first under no_grad, recomputed with grad in backward" if reentrant else
             "forward recomputed during backward")
    return passed(f"{kind} checkpoint around GRL -> domain head ({first}): {len(CHECKPOINT_ALPHAS)} "
                  f"steps with set_alpha between them (alpha {', '.join(map(str, CHECKPOINT_ALPHAS))}), "
                  f"gradients equal the trusted reference without checkpointing (layer and fn){extra}")


def _sac_policies():
    from torch.utils.checkpoint import CheckpointPolicy

    def save_everything(ctx, op, *args, **kwargs):
        return CheckpointPolicy.MUST_SAVE

    def recompute_everything(ctx, op, *args, **kwargs):
        return CheckpointPolicy.PREFER_RECOMPUTE

    return (("save-everything", save_everything), ("recompute-everything", recompute_everything))


def selective_checkpoint_check(impl):
    """The domain branch under selective activation checkpointing (a policy per op), both ends
    of the policy range, three steps with set_alpha between them."""
    policies = _sac_policies()  # torch >= 2.5 has them: every supported torch
    want, lost = _checkpoint_truth()
    forms = _checkpoint_forms(impl)
    for name, policy in policies:
        for label, grl, set_alpha in forms:
            where = f"selective checkpoint ({name} policy), {label}"
            with at(where):
                got = _checkpoint_steps(grl, set_alpha, False, policy=policy)
            _compare_steps(got, want, lost, where)
    return passed(f"torch.utils.checkpoint with create_selective_checkpoint_contexts around GRL -> "
                  f"domain head, a save-everything and a recompute-everything policy: "
                  f"{len(CHECKPOINT_ALPHAS)} steps with set_alpha between them, gradients equal the "
                  f"trusted reference without checkpointing (layer and fn)")
