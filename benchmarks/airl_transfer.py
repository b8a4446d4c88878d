"""AIRL's transfer experiment (Fu et al. 2018, sec. 7.2) on a walker with changed dynamics.

Steps, each through the real command line (every command is printed before it runs):

1. ``airl``: AIRL with a state-only reward on the original task (``gail-robot train airl/Hopper-v5``
   on the shipped demos);
2. ``reward.pt``: ``gail-robot export-reward airl`` (the disentangled reward g(s));
3. ``gail``: GAIL-PPO on the original task (shipped ``Hopper-v5`` config, same demos), or
   ``--gail-sweep DIR``;
4. ``airl_on_variant``: PPO on the variant (e.g. ``gail_robot/HopperCrippled-v0``, the foot motor's
   gear cut tenfold) with ``--reward reward.pt``: the learned reward re-optimised on new dynamics;
5. ``variant_expert``: PPO on the variant's true reward (the reference);

   ``--learner sac`` runs steps 4 and 5 with SAC instead (the task's ``sac/`` expert config, the recipe of
   the shipped expert; runs ``airl_on_variant_sac`` and ``variant_expert_sac``, table ``results_sac``):
   PPO with the Hopper settings does not learn to hop on a changed body from its own reward in 1M steps,
   which leaves the ratio without a trustworthy reference;
   ``--warm-start`` starts both from the AIRL policy trained on the task (``--init-from``, with the
   warm-start settings of docs/DESIGN.md §8.11; runs ``*_warm``, table ``results_warm``): a reward
   learned from a BC-started AIRL run is only informative near the expert's behaviour, and from a
   random policy PPO on it found running backwards first (HalfCheetah);
6. ``gail-robot eval RUN --env VARIANT --episodes 10 --json`` of every policy on the variant (the GAIL
   and AIRL policies as trained, i.e. run directly on the variant, the re-optimised AIRL reward, the
   variant's expert, the shipped expert of the original task), all scored by the original task's
   reward function (the variant keeps it: forward velocity + healthy bonus - control cost).

Every step runs once per seed of ``--seeds`` (training seed S; default 0): ``OUT/seed_S/<step>``.
``--airl-sweep DIR`` / ``--gail-sweep DIR`` take the AIRL and GAIL runs from ``gail-robot sweep``
directories instead (``DIR/seed_S``, e.g. the "airl" and "hopper" quality tables), so that the
learners of the transfer table are the ones whose scores the README reports on the original task.

Outputs in ``--out`` (default ``runs/airl_transfer``): the runs, ``seed_S/reward.pt``,
``results.json`` and ``results.md`` (``results_sac.*`` with ``--learner sac``, ``*_best_eval.*`` with
``--pick best-eval``, ``_shaped`` with ``--shaping``; the table, also printed): per method the mean and
standard deviation over seeds
of the return on the variant and of ``fraction``, the return over the mean return of the variant's
true-reward experts (one per seed), and the per-seed returns.

The script is resumable: a run with ``final.pt`` is reused, an interrupted one is continued with
``train --resume`` (a finished one with fewer steps than asked is extended), so the experiment
can be stopped and started again. ``--report`` trains nothing: it evaluates what exists,
taking ``checkpoints/latest.pt`` of unfinished runs (marked ``partial`` with their env steps) and
exporting the reward from the AIRL run's latest checkpoint if need be. ``--quick`` runs the whole
pipeline with 20k env steps per run and 2 evaluation episodes (a check that it works, not a result).

Usage:
    python benchmarks/airl_transfer.py [--out runs/airl_transfer] [--steps 1000000] [--quick]
    python benchmarks/airl_transfer.py --variant gail_robot/HopperHeavy-v0 --seeds 0 1 2 \
        --airl-sweep runs/quality-tables/airl/Hopper-v5/airl/gail.generator=ppo \
        --gail-sweep runs/quality-tables/hopper/Hopper-v5/gail/gail.generator=ppo
    python benchmarks/airl_transfer.py --variant gail_robot/HopperHeavy-v0 --learner sac --steps 300000 \
        --stages airl_on_variant variant_expert eval --airl-sweep ... --gail-sweep ...
    python benchmarks/airl_transfer.py --report            # the table from what exists so far
    python benchmarks/airl_transfer.py --stages airl reward variant_expert --set run.checkpoint_interval=50000
"""

from __future__ import annotations

import argparse
import json
import shlex
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
STAGES = ("airl", "reward", "gail", "airl_on_variant", "variant_expert", "eval")
# --warm-start: the settings that keep a warm-started PPO run from undoing its start (docs/DESIGN.md §8.11)
WARM_START = [
    "--set",
    "ppo.lr=1e-4",
    "--set",
    "run.critic_warmup_rounds=5",
    "--set",
    "policy.warm_start_min_log_std=-2.0",
]


def gail_robot(*args: str, capture: bool = False) -> str:
    cmd = [sys.executable, "-m", "gail_robot.cli", *args]
    print("$ gail-robot " + shlex.join(args), flush=True)
    proc = subprocess.run(cmd, capture_output=capture, text=True, cwd=ROOT)
    if proc.returncode != 0:
        raise SystemExit(f"failed ({proc.returncode}): gail-robot {shlex.join(args)}\n{proc.stderr or ''}")
    return proc.stdout if capture else ""


def env_steps_of(ckpt: Path) -> int:
    import torch

    data = torch.load(ckpt, map_location="cpu", weights_only=True)
    return int(data["progress"]["env_steps"])


def checkpoint_of(run: Path) -> Path | None:
    """``final.pt``, else ``checkpoints/latest.pt``, else None."""
    for path in (run / "final.pt", run / "checkpoints" / "latest.pt"):
        if path.is_file():
            return path
    return None


def best_evaluated_checkpoint(run: Path) -> Path | None:
    """The kept ``checkpoints/step_*.pt`` whose in-training evaluation (``metrics.jsonl``) was the best.

    SAC's evaluations on Hopper swing from one checkpoint to the next (a policy that hops for 1000 steps
    may fall at the next one), so an expert is picked this way (datasets/experts/Hopper-v5/README.md).
    """
    from gail_robot.plot import read_metrics  # skips the torn last row of an interrupted run

    if not (run / "metrics.jsonl").is_file():
        return None
    evaluated = {
        int(row["env_steps"]): float(row["eval_return"])
        for row in read_metrics(run)
        if row.get("eval_return") is not None
    }
    kept = {int(p.stem.split("_")[1]): p for p in (run / "checkpoints").glob("step_*.pt")}
    scored = [(evaluated[steps], steps) for steps in kept if steps in evaluated]
    return kept[max(scored)[1]] if scored else None


def train(run: Path, steps: int, args: list[str]) -> None:
    """Train ``run`` to ``steps`` env steps: fresh, resumed, extended, or left as it is."""
    ckpt = checkpoint_of(run)
    if ckpt is not None and (run / "config.yaml").is_file():
        if (run / "final.pt").is_file() and env_steps_of(run / "final.pt") >= steps:
            print(f"[reuse] {run} ({env_steps_of(run / 'final.pt')} env steps)")
            return
        gail_robot("train", "--resume", str(run), "--steps", str(steps), "--no-progress")
        return
    if run.exists():
        import shutil

        shutil.rmtree(run)  # nothing resumable in it
    gail_robot("train", *args, "--steps", str(steps), "--out", str(run), "--no-progress")


def evaluate(source: Path, env_id: str, episodes: int) -> dict[str, Any]:
    out = gail_robot(
        "eval", str(source), "--env", env_id, "--episodes", str(episodes), "--json", capture=True
    )
    return json.loads(out.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--out", default="runs/airl_transfer")
    parser.add_argument("--task", default="Hopper-v5")
    parser.add_argument("--variant", default="gail_robot/HopperCrippled-v0")
    parser.add_argument("--demos", default="datasets/experts/Hopper-v5/demos.hdf5")
    parser.add_argument(
        "--expert", default="datasets/experts/Hopper-v5/policy.pt", help="the original's expert"
    )
    parser.add_argument("--steps", type=int, default=1_000_000, help="env steps of every training run")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0], help="training seeds (default 0)")
    parser.add_argument("--airl-sweep", default=None, help="take the AIRL runs from DIR/seed_S")
    parser.add_argument("--gail-sweep", default=None, help="take the GAIL runs from DIR/seed_S")
    parser.add_argument(
        "--learner",
        choices=("ppo", "sac"),
        default="ppo",
        help="the RL algorithm of the two variant runs: the re-optimisation and the reference "
        "(sac: the task's sac/ expert config; runs in airl_on_variant_sac, variant_expert_sac)",
    )
    parser.add_argument(
        "--warm-start",
        action="store_true",
        help="the two variant runs start from the AIRL policy trained on the task (--init-from, with the "
        "warm-start settings of docs/DESIGN.md §8.11; PPO only; runs in airl_on_variant_warm, "
        "variant_expert_warm, table results_warm): the reward is then judged where it was learned, "
        "near the expert's behaviour, and both runs share the start",
    )
    parser.add_argument(
        "--absorbing",
        choices=("learned", "demo-min"),
        default="learned",
        help="the exported reward's absorbing-state value (export-reward --absorbing): demo-min pays a fall "
        "no more than the demos' lowest step (reward_demo-min.pt, run airl_on_variant*_demo-min, table "
        "results*_demo-min)",
    )
    parser.add_argument(
        "--shaping",
        action="store_true",
        help="re-optimise AIRL's whole f = g + gamma h(s') - h(s) (export-reward --shaping: the same optimal "
        "policy as g on any dynamics, h a dense guide; reward_shaped.pt, run airl_on_variant*_shaped)",
    )
    parser.add_argument(
        "--pick",
        choices=("last", "best-eval"),
        default="last",
        help="which checkpoint of the two variant runs is evaluated: the last one, or the kept one with the "
        "best in-training evaluation (true reward: the recipe of the shipped SAC expert; for the "
        "re-optimisation it is privileged information that can only flatter the learned reward)",
    )
    parser.add_argument("--episodes", type=int, default=10, help="evaluation episodes")
    parser.add_argument("--stages", nargs="+", choices=STAGES, default=list(STAGES))
    parser.add_argument("--report", action="store_true", help="train nothing: evaluate what exists")
    parser.add_argument(
        "--quick", action="store_true", help="20k steps per run, 2 episodes: a pipeline check"
    )
    parser.add_argument(
        "--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE", help="for every new run"
    )
    args = parser.parse_args()
    if args.warm_start and args.learner != "ppo":
        parser.error("--warm-start is for --learner ppo")
    if args.quick:
        args.steps, args.episodes = 20_000, 2
        if args.out == "runs/airl_transfer":
            args.out = "runs/airl_transfer_quick"
    out = (ROOT / args.out).resolve() if not Path(args.out).is_absolute() else Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    task, variant = args.task, args.variant
    stages = [] if args.report else args.stages
    extra = ["--set", "run.eval_interval=0", "--set", "run.checkpoint_interval=10000"] if args.quick else []
    for override in args.overrides:
        extra += ["--set", override]

    def from_sweep(sweep: str | None, seed: int, default: Path) -> Path:
        return Path(sweep).resolve() / f"seed_{seed}" if sweep else default

    # PPO runs the task's GAIL config with --algo ppo; SAC its expert config (the shipped expert's recipe)
    suffix = ("_sac" if args.learner == "sac" else "") + ("_warm" if args.warm_start else "")
    # only the re-optimisation depends on the reward file's absorbing value; the reference runs are shared
    rule = ("_shaped" if args.shaping else "") + ("" if args.absorbing == "learned" else f"_{args.absorbing}")
    learner = ["--algo", "ppo"] if args.learner == "ppo" else []
    task_config = task if args.learner == "ppo" else f"sac/{task}"
    plan = {
        seed: {
            "airl": from_sweep(args.airl_sweep, seed, out / f"seed_{seed}" / "airl"),
            "gail": from_sweep(args.gail_sweep, seed, out / f"seed_{seed}" / "gail"),
            "airl_on_variant": out / f"seed_{seed}" / f"airl_on_variant{suffix}{rule}",
            "variant_expert": out / f"seed_{seed}" / f"variant_expert{suffix}",
        }
        for seed in args.seeds
    }
    for seed, runs in plan.items():
        reward = out / f"seed_{seed}" / f"reward{rule}.pt"
        common = ["--seed", str(seed), *extra]
        warm = [*WARM_START, "--init-from", str(runs["airl"])] if args.warm_start else []
        if "airl" in stages and not args.airl_sweep:
            train(runs["airl"], args.steps, [f"airl/{task}", "--demos", args.demos, *common])
        if "reward" in stages or (args.report and checkpoint_of(runs["airl"]) and not reward.is_file()):
            source = checkpoint_of(runs["airl"])
            if source is None:
                raise SystemExit(f"no AIRL run in {runs['airl']} yet: run the 'airl' stage first")
            shaping = ["--shaping"] if args.shaping else []
            gail_robot(
                "export-reward", str(source), "--out", str(reward), "--absorbing", args.absorbing, *shaping
            )
        if "gail" in stages and not args.gail_sweep:
            train(runs["gail"], args.steps, [task, "--demos", args.demos, *common])
        if "airl_on_variant" in stages:
            if not reward.is_file():
                raise SystemExit(f"{reward} is missing: run the 'reward' stage first")
            train(
                runs["airl_on_variant"],
                args.steps,
                [task_config, *learner, "--env", variant, "--reward", str(reward), *warm, *common],
            )
        if "variant_expert" in stages:
            expert_args = [task_config, *learner, "--env", variant, *warm, *common]
            train(runs["variant_expert"], args.steps, expert_args)
    if "eval" not in stages and not args.report:
        return

    start = ", from the AIRL policy" if args.warm_start else ""
    # --warm-start without its own reference runs: the ratio is taken against the runs from scratch
    from_scratch = args.warm_start and not any(checkpoint_of(r["variant_expert"]) for r in plan.values())
    if from_scratch:
        cold = "variant_expert_sac" if args.learner == "sac" else "variant_expert"
        for seed, runs in plan.items():
            runs["variant_expert"] = out / f"seed_{seed}" / cold
    what = {
        "variant_expert": f"{args.learner.upper()} on {variant}'s true reward"
        + (", from scratch" if from_scratch else start),
        "airl_on_variant": (
            f"{args.learner.upper()} on {variant} with the AIRL reward "
            + ("f = g(s) + gamma h(s') - h(s)" if args.shaping else "g(s)")
            + f" learned on {task}{start}"
            + (", falls paid the demos' lowest reward" if args.absorbing != "learned" else "")
        ),
        "gail": f"GAIL-PPO policy trained on {task}, run on {variant}",
        "airl": f"AIRL-PPO policy trained on {task}, run on {variant}",
    }
    per_seed: list[dict[str, Any]] = []
    for seed, runs in plan.items():
        for name in what:
            ckpt = checkpoint_of(runs[name])
            if args.pick == "best-eval" and name in ("airl_on_variant", "variant_expert"):
                ckpt = best_evaluated_checkpoint(runs[name]) or ckpt
            if ckpt is None:
                continue
            result = evaluate(ckpt, variant, args.episodes)
            per_seed.append(
                {
                    "method": name,
                    "seed": seed,
                    "checkpoint": str(ckpt),
                    "env_steps": env_steps_of(ckpt),
                    "partial": ckpt.name == "latest.pt",  # an unfinished run's last checkpoint
                    **result,
                }
            )
    if Path(args.expert).is_file() or (ROOT / args.expert).is_file():
        what["original_expert"] = f"shipped {task} expert run on {variant}"
        result = evaluate(Path(args.expert), variant, args.episodes)
        per_seed.append({"method": "original_expert", "seed": None, **result})
    rows = summarise(per_seed, what)
    name = "results" + suffix + rule + ("_best_eval" if args.pick == "best-eval" else "")
    (out / f"{name}.json").write_text(
        json.dumps(
            {
                "task": task,
                "variant": variant,
                "learner": args.learner,
                "pick": args.pick,
                "seeds": args.seeds,
                "rows": rows,
                "runs": per_seed,
            },
            indent=1,
        )
    )
    text = (
        f"Transfer {task} -> {variant}, scored by the task's own reward on the variant "
        f"(training seeds {', '.join(map(str, args.seeds))}; {args.episodes} deterministic episodes "
        f"per policy, reset seeds 0..{args.episodes - 1}; the variant runs' {args.pick} checkpoint)\n\n"
        + markdown(rows)
    )
    (out / f"{name}.md").write_text(text)
    print(text)


def summarise(per_seed: list[dict[str, Any]], what: dict[str, str]) -> list[dict[str, Any]]:
    """One row per method: mean and std over seeds; fraction = return / the variant experts' mean."""
    experts = [r["mean_return"] for r in per_seed if r["method"] == "variant_expert"]
    reference = float(np.mean(experts)) if experts else None
    rows: list[dict[str, Any]] = []
    for name, description in what.items():
        members = [r for r in per_seed if r["method"] == name]
        if not members:
            rows.append({"method": name, "what": description, "missing": True})
            continue
        returns = np.array([r["mean_return"] for r in members])
        row: dict[str, Any] = {
            "method": name,
            "what": description,
            "n": len(members),
            "env_steps": sorted({r["env_steps"] for r in members if "env_steps" in r}),
            "partial": any(r.get("partial") for r in members),
            "mean_return": float(returns.mean()),
            "std_over_seeds": float(returns.std()),
            "mean_length": float(np.mean([r["mean_length"] for r in members])),
            "per_seed": [round(float(x), 1) for x in returns],
        }
        if reference:
            fractions = returns / reference
            row["fraction_of_variant_expert"] = float(fractions.mean())
            row["fraction_min"], row["fraction_max"] = float(fractions.min()), float(fractions.max())
        rows.append(row)
    return rows


def markdown(rows: list[dict[str, Any]]) -> str:
    lines = [
        "| policy, run on the variant | seeds | env steps | return (mean ± std over seeds) | per seed "
        "| length | fraction of the variant's expert [min, max] |",
        "|---|---|---|---|---|---|---|",
    ]
    for row in rows:
        if row.get("missing"):
            lines.append(f"| {row['what']} | 0 | not run | – | – | – | – |")
            continue
        steps = "–" if not row["env_steps"] else "/".join(f"{s:,}" for s in row["env_steps"])
        steps += " (partial)" if row["partial"] else ""
        fraction = row.get("fraction_of_variant_expert")
        fraction_text = (
            "–"
            if fraction is None
            else f"{fraction:.2f} [{row['fraction_min']:.2f}, {row['fraction_max']:.2f}]"
        )
        lines.append(
            f"| {row['what']} | {row['n']} | {steps} | "
            f"{row['mean_return']:.0f} ± {row['std_over_seeds']:.0f} | "
            f"{', '.join(f'{x:.0f}' for x in row['per_seed'])} | {row['mean_length']:.0f} | {fraction_text} |"
        )
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
