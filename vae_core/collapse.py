"""Whether a finished run's posterior collapsed, why, and what to do about it: one verdict for the Train page, the
collapse lab and the CLI.

A latent dimension j has collapsed when it tells the decoder nothing about the image, seen in either of two ways:
its test KL is under `KL_COLLAPSED` nats (q(z_j|x) is the prior N(0, 1) for every image), or it is an inactive
unit, Cov_x(E_q[z_j|x]) ≤ 0.01 (Burda et al. 2015): its posterior is the same for every image, even if free bits
hold its KL above zero. The cause is read from the run's settings, and each fix offered for it was measured to
leave fewer dimensions collapsed on the shipped datasets (README, *Collapse notices*; `tests/test_collapse.py`),
except a linear VAE's, which follows from pPCA's closed form.
"""
from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field

from .config import FIRST_RUN_STEPS, MAX_EPOCHS
from .metrics import ACTIVE_UNIT_THRESHOLD
from .runs import RunSpec

KL_COLLAPSED = 0.01  # nats: a dimension with less test KL than this is at its prior
FREE_BITS = 0.5  # λ offered first (nats per dimension); a run that had λ ≥ this is offered twice its λ

# Why the dimensions collapsed (Verdict.cause)
NONE = "none"  # nothing collapsed
BETA = "beta"  # β > 1 trades rate away by design
DECODER = "decoder"  # an autoregressive decoder models the images without z
LAG = "lag"  # β ≤ 1: the encoder lagged the decoder (and training may have ended before it caught up)
CAPACITY = "capacity"  # capacity annealing pins the rate at C
LINEAR = "linear"  # a linear-Gaussian VAE: pPCA's optimum drops the directions under the noise


@dataclass(frozen=True)
class Fix:
    """One change to a run's settings (`changes`: fields of its ModelConfig, ObjectiveConfig or TrainConfig) that
    leaves fewer dimensions collapsed, with a button's `label` and `why` it works here."""

    label: str
    changes: dict
    why: str

    @property
    def key(self) -> str:
        """The setting it is about (its first change): names its button."""
        return next(iter(self.changes))

    def apply(self, spec: RunSpec) -> RunSpec:
        """`spec` with this fix's changes."""
        parts = {"model": spec.model, "objective": spec.objective, "train": spec.train}
        for name, config in parts.items():
            own = {k: v for k, v in self.changes.items() if k in {f.name for f in dataclasses.fields(config)}}
            parts[name] = dataclasses.replace(config, **own) if own else config
        return dataclasses.replace(spec, **parts)


@dataclass(frozen=True)
class Verdict:
    """A finished run's collapse: which dimensions, by which measure, why, and the fixes ranked best first."""

    latent_dim: int
    kl_per_dim: tuple[float, ...]
    by_kl: tuple[int, ...]  # dimensions with KL < KL_COLLAPSED
    inactive: tuple[int, ...] | None  # inactive units; None when the record has only their count
    active_units: int
    cause: str
    reason: str  # why, in words fitted to the run's settings
    fixes: tuple[Fix, ...] = field(default=())

    @property
    def collapsed(self) -> tuple[int, ...]:
        """Dimensions collapsed by either measure."""
        return tuple(sorted(set(self.by_kl) | set(self.inactive or ())))

    @property
    def n_collapsed(self) -> int:
        """How many collapsed: the union when each inactive unit is known, else at least the larger count."""
        if self.inactive is None:
            return max(len(self.by_kl), self.latent_dim - self.active_units)
        return len(self.collapsed)

    @property
    def headline(self) -> str:
        d, n = self.latent_dim, self.n_collapsed
        if n == 0:
            return f"No collapse: all {d} latent dimensions carry information."
        if n == d:
            return f"Every latent dimension collapsed ({n} of {d}): the code carries nothing."
        return f"{n} of {d} latent dimensions collapsed."

    @property
    def measures(self) -> str:
        """Which dimensions, by each measure."""
        d = self.latent_dim
        if not self.n_collapsed:
            kl = self.kl_per_dim
            span = f" ({min(kl):.2f}–{max(kl):.2f} nats each)" if kl else ""
            return f"KL per dimension ≥ {KL_COLLAPSED:g} nats{span}; {self.active_units} of {d} units active."
        by_kl = dims(self.by_kl) if self.by_kl else f"none (every dimension carries at least {KL_COLLAPSED:g} nats)"
        if self.inactive is None:
            by_au = f"{self.latent_dim - self.active_units} of {d} (which ones was not recorded)"
        else:
            by_au = dims(self.inactive) if self.inactive else f"none (all {d} units active)"
        text = (f"By KL per dimension (under {KL_COLLAPSED:g} nats: the posterior is the prior): {by_kl}. By active "
                f"units (Cov_x E[z_u|x] ≤ {ACTIVE_UNIT_THRESHOLD:g}, Burda et al. 2015: the posterior is the same for "
                f"every image): {by_au}.")
        held = [j for j in (self.inactive or ()) if j not in self.by_kl]
        if held:
            text += (f" {dims(held)} {'keeps' if len(held) == 1 else 'keep'} KL above zero without varying from image "
                     "to image: rate spent on a fixed offset, not information.")
        return text

    def summary(self) -> str:
        """One paragraph: the headline, which dimensions, and why."""
        text = f"{self.headline} {self.measures}"
        return text if not self.n_collapsed else f"{text} {self.reason}"


def dims(indices) -> str:
    """[0, 1, 2, 5, 7, 8] → 'z0–z2, z5, z7, z8'."""
    out, run = [], []
    for j in sorted(indices):
        if run and j != run[-1] + 1:
            out.append(_span(run))
            run = []
        run.append(j)
    if run:
        out.append(_span(run))
    return ", ".join(out)


def _span(run: list[int]) -> str:
    return f"z{run[0]}–z{run[-1]}" if len(run) > 2 else ", ".join(f"z{j}" for j in run)


def longer_epochs(steps_per_epoch: float) -> int:
    """The epochs (a multiple of 5) that give at least FIRST_RUN_STEPS optimiser steps."""
    need = math.ceil(FIRST_RUN_STEPS / max(1.0, steps_per_epoch))
    return min(MAX_EPOCHS, -(-need // 5) * 5)


def verdict(record: dict, spec: RunSpec) -> Verdict:
    """The verdict on a run from its last history record (`train.fit`: `kl_per_dim`, `active_units`, and where
    recorded `mean_var_per_dim` and `steps`) or a sweep's evaluation, and its settings."""
    d = spec.model.latent_dim
    kl = tuple(float(k) for k in record.get("kl_per_dim") or ())
    by_kl = tuple(j for j, k in enumerate(kl) if k < KL_COLLAPSED)
    variance = record.get("mean_var_per_dim")
    active = int(record.get("active_units", d))
    if variance is not None:
        inactive = tuple(j for j, v in enumerate(variance) if v <= ACTIVE_UNIT_THRESHOLD)
    else:  # an older record has only the count: which ones is known when it is none or all
        inactive = tuple(range(d)) if active == 0 else () if active == d else None
    steps = record.get("steps")
    per_epoch = steps / record["epoch"] if steps and record.get("epoch") else None
    short = steps is not None and steps < FIRST_RUN_STEPS
    base = Verdict(d, kl, by_kl, inactive, active, NONE, "")
    n = base.n_collapsed
    if n == 0:
        return base
    cause, reason = _cause(spec, n, steps, short)
    return dataclasses.replace(base, cause=cause, reason=reason,
                               fixes=_fixes(spec, cause, short, per_epoch))


def _cause(spec: RunSpec, n: int, steps: int | None, short: bool) -> tuple[str, str]:
    obj, model = spec.objective, spec.model
    if obj.capacity > 0:
        return CAPACITY, (f"Capacity annealing pulls the rate towards C = {obj.capacity:g} nats (Burgess et al. "
                          "2018), but not into information: the rate can go to posteriors that differ from the prior "
                          "by the same offset for every image, and dimensions it does not need stay at the prior.")
    if model.architecture == "linear":
        return LINEAR, (f"This linear VAE with fixed noise σ² = {model.gaussian_sigma ** 2:.3g} has an exact optimum, "
                        "probabilistic PCA: a dimension is used only where the data's variance along it exceeds σ² "
                        "(Tipping & Bishop 1999; Lucas et al. 2019), so the others collapse by design — no lagging "
                        "encoder, no local optimum.")
    if obj.beta > 1:
        reason = (f"β = {obj.beta:g} > 1 trades rate away by design (Higgins et al. 2017; Alemi et al. 2018): each "
                  f"nat a dimension carries costs β = {obj.beta:g} nats of loss, so a dimension whose information "
                  "saves less distortion than that is switched off.")
        return BETA, reason + _tried(obj, n)
    if model.autoregressive:
        return DECODER, ("The PixelCNN decoder predicts each pixel from the pixels before it, so it models the "
                         "images well without z: a nat put into z costs a nat of KL and saves less than that, and "
                         "the ELBO's optimum ignores z even at β = 1 (Bowman et al. 2016; Chen et al. 2017)."
                         + _tried(obj, n))
    if short:
        took = f"The run took {steps} optimiser steps, under the {FIRST_RUN_STEPS} a first run needs."
        return LAG, (f"{took} The decoder learns faster than the encoder, and while the codes still carry little the "
                     "cheapest way to lower the loss is to switch them off (the encoder lags the decoder; He et al. "
                     "2019): training ended before it caught up. It is not a property of your data." + _tried(obj, n))
    return LAG, ("Early in training the decoder learns faster than the encoder, and dimensions that carry little then "
                 "are switched off (the encoder lags the decoder; He et al. 2019). A dimension at the prior gets almost "
                 "no gradient to leave it — the decoder ignores it and its KL is at its minimum — so training longer "
                 "rarely brings it back (Lucas et al. 2019): 3× the epochs "
                 "left as many collapsed on the digits and on Fashion-MNIST, a KL warm-up or aggressive encoder "
                 "training did not help on the digits either, while a floor on each dimension's KL kept all of them."
                 + _tried(obj, n))


def _tried(obj, n: int) -> str:
    """What a run that already had a cure on says: the cure was not enough."""
    if obj.is_plain:
        return ""
    cures = dataclasses.replace(obj, beta=1.0).label.removeprefix("β=1, ")
    return f" This run already had {cures}, and {n} still collapsed: the next step is below."


def _fixes(spec: RunSpec, cause: str, short: bool, per_epoch: float | None) -> tuple[Fix, ...]:
    obj, model = spec.objective, spec.model
    longer = {"epochs": longer_epochs(per_epoch)} if short and per_epoch else {}
    tail = f" and {longer['epochs']} epochs" if longer else ""
    also = (f" With {longer['epochs']} epochs, for at least {FIRST_RUN_STEPS} optimiser steps: this run's "
            f"{spec.train.epochs} were too few for any fix to take." if longer else "")
    lam = FREE_BITS if obj.free_bits < FREE_BITS else 2 * obj.free_bits
    free_bits = Fix(f"Free bits λ = {lam:g}{tail}",
                    {"free_bits": lam, **({"kl_target": 0.0} if obj.kl_target > 0 else {}), **longer},
                    f"Each dimension's KL counts as at least {lam:g} nats (Kingma et al. 2016), so switching one off "
                    "gains nothing. The −ELBO may rise or fall by a few nats (at d = 16: +3.0 on the digits, −0.9 on "
                    "Fashion-MNIST)." + also)
    if cause == CAPACITY:  # more capacity went into fixed offsets too: C = 2, 4, 8 nats left 16, 16, 11 of 16
        return (Fix(f"Free bits λ = {FREE_BITS:g} instead", {"capacity": 0.0, "free_bits": FREE_BITS},
                    f"Each dimension's KL counts as at least {FREE_BITS:g} nats (Kingma et al. 2016), and the rate goes "
                    "into information: on the digits capacity annealing to C = 2, 4 or 8 nats left 16, 16 and 11 of "
                    "16 dimensions collapsed, free bits none."),)
    if cause == LINEAR:
        s2 = model.gaussian_sigma ** 2 / 2
        return (Fix(f"Noise σ² = {s2:.3g}", {"gaussian_sigma": math.sqrt(s2)},
                    "Half the noise: every direction of the data with variance between the new and the old σ² "
                    "becomes worth a dimension (exactly, at pPCA's optimum)."),)
    if cause == BETA:  # free bits first: they kept every dimension wherever measured, β = 1 only some
        return (free_bits,
                Fix(f"β = 1{tail}", {"beta": 1.0, **longer},
                    "The plain ELBO: a nat in z costs one nat of loss, so the dimensions that save more than that "
                    "come back." + also))
    if cause == DECODER:
        return (free_bits,)
    if cause == LAG and longer:
        return (Fix(f"Train longer ({longer['epochs']} epochs)", longer,
                    f"At least {FIRST_RUN_STEPS} optimiser steps: time for the encoder to catch up."), free_bits)
    return (free_bits,)
