"""The cures for posterior collapse as the app offers them (`config.ObjectiveConfig` holds their settings and
`objectives.py` their formulas): a name and a caption each, saying what it does, with its paper."""
from __future__ import annotations

# The KL-weight rules a run can follow (one at a time) and what each does, for the Train page's choice
SCHEDULES = {
    "none": ("none (constant β)", "The rate term keeps the weight β throughout: β = 1 is the ELBO."),
    "warm-up": ("linear warm-up", "The KL weight grows linearly from 0 to β over the first epochs (Bowman et al. "
                "2016), so the codes carry information before they cost any: $w_t=\\beta\\min(1, t/N)$."),
    "cyclical": ("cyclical annealing", "The run is cut into M cycles; in each, the KL weight climbs from 0 to β over "
                 "the first share R and then stays (Fu et al. 2019). Each restart lets the encoder put information "
                 "back into z: $w_t=\\beta\\min(1,\\tau_t/R)$, τ the position in the cycle."),
    "soft": ("soft free bits", "The KL weight adapts after every step: it falls by 5 % while the batch rate is under "
             "the target and climbs back (to β) above it (Chen et al. 2017), so the rate settles near the target "
             "without the hard floor's dead gradient."),
    "capacity": ("capacity annealing", "The objective becomes $D+\\gamma\\,|\\mathrm{KL}-C(t)|$, with the capacity C "
                 "growing linearly to $C_{max}$ nats (Burgess et al. 2018): the code is made to carry C nats, "
                 "whatever the decoder could do without it. β is not used."),
}
FREE_BITS = ("A floor λ on each latent dimension's batch-mean KL (Kingma et al. 2016): a dimension under λ nats "
             "gets no gradient from the rate term, so nothing pushes it further towards the prior.")
AGGRESSIVE = ("Before each decoder step, the encoder alone is trained until its loss stops improving, so q(z|x) "
              "keeps up with the decoder instead of lagging behind it; once I(x;z) stops rising (checked every "
              "epoch), training goes on as usual (He et al. 2019). The first epochs take several times longer.")


def schedule_of(objective) -> str:
    """Which of SCHEDULES an `ObjectiveConfig` follows."""
    if objective.capacity > 0:
        return "capacity"
    if objective.kl_target > 0:
        return "soft"
    if objective.kl_schedule == "cyclical":
        return "cyclical"
    return "warm-up" if objective.warmup_epochs > 0 else "none"
