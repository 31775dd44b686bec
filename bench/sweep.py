"""The same 8-run digits sweep (β × λ, d = 16, 30 epochs each) one run after another, then two at a time on the
local executor (two worker processes, one torch thread each) and on a local Ray (two CPUs): wall time from
submitting to the last run's end, every worker warmed up first (worker processes started, torch imported); and
whether all three gave the same numbers: every evaluation and history value equal to a relative 1e-6
(`identical_results`; the one-at-a-time runs use both cores' torch threads, the parallel ones one each, and a
matrix product's rounding can depend on that), and whether they were even equal bit for bit.

The machine is shared, so the three are measured in interleaved rounds and each speed-up is the median of the
per-round ratios.

    python -m bench.sweep [--json] [--epochs N] [--rounds N]
"""
from __future__ import annotations

import tempfile
import time
from pathlib import Path
from statistics import median

from vae_core.executors import LocalExecutor, RayExecutor
from vae_core.runs import RunService
from vae_core.store import Workspace
from vae_core.sweep import SweepSpec, load_sweep, submit_sweep

from .common import SAME_NUMBERS_RTOL, emit, log, machine, max_relative_difference, parser

IMAGE_SHAPE = (1, 8, 8)


def warm_service(executor, root: Path, spec: SweepSpec) -> RunService:
    """A run service on `executor` whose every worker has run once (processes started, torch imported)."""
    service = RunService(Workspace(root / "home"), executor)
    warm = SweepSpec(**{**spec.to_dict(), "betas": tuple(range(1, executor.max_workers + 1)), "free_bits": (0.0,),
                        "epochs": 1})
    for run in submit_sweep(service, warm, root / f"warm-up-{id(executor)}", IMAGE_SHAPE):
        run.wait()
    return service


def timed_sweep(service: RunService, spec: SweepSpec, folder: Path) -> tuple[float, list]:
    """Seconds for the whole sweep into a new folder, and its runs' numbers."""
    t0 = time.perf_counter()
    runs = submit_sweep(service, spec, folder, IMAGE_SHAPE)
    for run in runs:
        run.wait()
    seconds = time.perf_counter() - t0
    failed = [r.error for r in runs if r.status != "done"]
    if failed:
        raise RuntimeError(f"{folder.name}: runs failed: {failed}")
    numbers = [(r.evaluation, [{k: v for k, v in h.items() if not k.endswith("seconds")} for h in r.checkpoint.history])
               for r in load_sweep(folder)[1]]
    return seconds, numbers


def main() -> None:
    p = parser(__doc__)
    p.add_argument("--epochs", type=int, default=30)
    p.add_argument("--rounds", type=int, default=3)
    args = p.parse_args()
    machine_line = machine()  # before Ray changes this process's environment
    spec = SweepSpec(latent_dim=16, hidden=(256,), epochs=args.epochs, betas=(0.5, 1.0, 2.0, 4.0),
                     free_bits=(0.0, 0.5), iwae_k=50, batch_size=128)
    with tempfile.TemporaryDirectory(prefix="vae-bench-sweep-") as tmp:
        root = Path(tmp)
        log("starting the executors and warming every worker …")
        executors = {"sequential": LocalExecutor(1), "local": LocalExecutor(2, processes=True),
                     "ray": RayExecutor(max_workers=2)}
        services = {name: warm_service(ex, root, spec) for name, ex in executors.items()}
        seconds: dict[str, list[float]] = {name: [] for name in executors}
        numbers = {}
        for r in range(args.rounds):
            for name, service in services.items():
                log(f"round {r + 1}/{args.rounds}: {name} …")
                s, numbers[name] = timed_sweep(service, spec, root / f"{name}-{r}")
                seconds[name].append(s)
            log("  " + ", ".join(f"{name} {v[-1]:.2f} s" for name, v in seconds.items()))
        for ex in executors.values():
            ex.shutdown()
    ratio = lambda name: round(median(a / b for a, b in zip(seconds["sequential"], seconds[name])), 2)  # noqa: E731
    difference = max(max_relative_difference(numbers["sequential"], numbers[name]) for name in ("local", "ray"))
    emit({"machine": machine_line, "runs": len(spec.settings()), "epochs_per_run": args.epochs, "workers": 2,
          "rounds": args.rounds, "sequential_s": round(median(seconds["sequential"]), 2),
          "local_parallel_s": round(median(seconds["local"]), 2), "ray_parallel_s": round(median(seconds["ray"]), 2),
          "rounds_s": {name: [round(v, 2) for v in vs] for name, vs in seconds.items()},
          "speedup_local": ratio("local"), "speedup_ray": ratio("ray"),
          "identical_results": difference <= SAME_NUMBERS_RTOL, "max_relative_difference": difference,
          "bitwise_identical": numbers["sequential"] == numbers["local"] == numbers["ray"]}, args.json)


if __name__ == "__main__":
    main()
