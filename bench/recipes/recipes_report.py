#!/usr/bin/env python3
"""Reads the validation curves bench_recipes.sh wrote (one JSON line per checkpoint: step, loss) and reports.

  recipes_report.py best DIR OPTIMIZER LR...        the grid's learning rate with the lowest final loss (seed 0)
  recipes_report.py optimizers DIR SEEDS LR...      Muon against AdamW: a table and one JSON line
  recipes_report.py growth DIR SEEDS SMALL_FLOPS WIDE_FLOPS   grown against from scratch: a table and a JSON line
  recipes_report.py preference DIR SEEDS [TAG [BASE [STAGES]]]   held-out adherence of the base and the post-trained runs
  recipes_report.py mup DIR SEEDS LR...             best rate per width, parametrisation and seed, and its drift
  recipes_report.py curriculum DIR RUNS SEEDS NAME  a curriculum against whole clips, by training time
"""
import json
import statistics
import sys
from pathlib import Path


def curve(directory, run):
    path = Path(directory) / f"{run}.jsonl"
    points = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    return sorted((p["step"], p["loss"]) for p in points)


def final_loss(points):
    return points[-1][1]


def best_lr(directory, optimizer, lrs):
    return min(lrs, key=lambda lr: final_loss(curve(directory, f"{optimizer}-lr{lr}-s0")))


def steps_to_reach(points, target):
    """First step at which the curve is at or below `target`, linear between checkpoints; None if never."""
    previous = (0, float("inf"))
    for step, loss in points:
        if loss <= target:
            if previous[1] == float("inf"):
                return float(step)
            fraction = (previous[1] - target) / (previous[1] - loss)
            return previous[0] + fraction * (step - previous[0])
        previous = (step, loss)
    return None


def optimizers(directory, seeds, lrs):
    print("learning-rate grid, seed 0, validation loss at the last step:")
    print("  lr        " + "  ".join(f"{lr:>8s}" for lr in lrs))
    for optimizer in ("adamw", "muon"):
        row = [final_loss(curve(directory, f"{optimizer}-lr{lr}-s0")) for lr in lrs]
        print(f"  {optimizer:8s}  " + "  ".join(f"{loss:8.4f}" for loss in row))
    best = {o: best_lr(directory, o, lrs) for o in ("adamw", "muon")}
    steps = curve(directory, f"adamw-lr{best['adamw']}-s0")[-1][0]
    per_seed = []
    for seed in range(seeds):
        adamw = curve(directory, f"adamw-lr{best['adamw']}-s{seed}")
        muon = curve(directory, f"muon-lr{best['muon']}-s{seed}")
        target = final_loss(adamw)
        reached = steps_to_reach(muon, target)
        per_seed.append({"seed": seed, "adamw_loss": target, "muon_loss": final_loss(muon),
                         "muon_steps_to_adamw_loss": reached,
                         "speedup": steps / reached if reached else None})
    print(f"best learning rates: AdamW {best['adamw']}, Muon {best['muon']}; {steps} steps")
    for r in per_seed:
        reached = f"{r['muon_steps_to_adamw_loss']:.0f}" if r["muon_steps_to_adamw_loss"] else f">{steps}"
        print(f"  seed {r['seed']}: AdamW {r['adamw_loss']:.4f}, Muon {r['muon_loss']:.4f}; "
              f"Muon reaches AdamW's loss at step {reached}")
    reached = [r["speedup"] for r in per_seed if r["speedup"]]
    summary = {"benchmark": "recipes.optimizers", "steps": steps, "best_lr": best, "seeds": per_seed,
               "speedup_min": min(reached) if reached else None,
               "speedup_max": max(reached) if reached else None,
               "speedup_median": statistics.median(reached) if reached else None,
               "seeds_reached": len(reached)}
    print(json.dumps(summary))


def loss_at(points, step):
    """The curve's loss at `step`, linear between checkpoints."""
    previous = None
    for s, loss in points:
        if s == step:
            return loss
        if s > step and previous:
            fraction = (step - previous[0]) / (s - previous[0])
            return previous[1] + fraction * (loss - previous[1])
        previous = (s, loss)
    return None


def growth(directory, seeds, small_flops, wide_flops):
    """The grown run's loss after N wide steps, and the wide steps from scratch needed for that loss; the grown
    run's cost counts the small model's steps at their share of a wide step's FLOPs."""
    ratio = small_flops / wide_flops
    per_seed = []
    for seed in range(seeds):
        scratch = curve(directory, f"scratch-s{seed}")
        continued = curve(directory, f"continued-s{seed}")
        small = curve(directory, f"small-s{seed}")
        wide_steps, grown_loss = continued[-1]
        scratch_steps = steps_to_reach(scratch, grown_loss)
        cost = wide_steps + small[-1][0] * ratio
        per_seed.append({"seed": seed, "small_steps": small[-1][0], "small_loss": final_loss(small),
                         "grown_first_checkpoint_loss": continued[0][1], "grown_wide_steps": wide_steps,
                         "grown_loss": grown_loss, "scratch_loss_at_same_wide_steps": loss_at(scratch, wide_steps),
                         "scratch_steps_to_grown_loss": scratch_steps, "grown_cost_wide_steps": cost,
                         "speedup": scratch_steps / cost if scratch_steps else None})
    print(f"small model steps cost {ratio:.3f} of a wide step (FLOPs per sample)")
    for r in per_seed:
        reached = f"{r['scratch_steps_to_grown_loss']:.0f}" if r["scratch_steps_to_grown_loss"] else "more than ran"
        print(f"  seed {r['seed']}: small {r['small_loss']:.4f} after {r['small_steps']} steps; grown "
              f"{r['grown_loss']:.4f} after {r['grown_wide_steps']} wide steps (scratch at the same step "
              f"{r['scratch_loss_at_same_wide_steps']:.4f}); scratch needs {reached} steps for that loss, the "
              f"grown run cost {r['grown_cost_wide_steps']:.0f}")
    speedups = [r["speedup"] for r in per_seed if r["speedup"]]
    print(json.dumps({"benchmark": "recipes.growth", "seeds": per_seed, "flops_ratio_small_to_wide": ratio,
                      "speedup_min": min(speedups) if speedups else None,
                      "speedup_max": max(speedups) if speedups else None,
                      "seeds_reached": len(speedups)}))


def mup(directory, seeds, lrs):
    import math
    report = {"benchmark": "recipes.mup", "lrs": lrs, "seeds": []}
    for seed in range(seeds):
        print(f"seed {seed}: validation loss at the last step; best per row marked *")
        per_seed = {"seed": seed}
        for p in ("standard", "mup"):
            best = {}
            for width in (64, 128, 256):
                losses = [final_loss(curve(directory, f"{p}-h{width}-lr{lr}-s{seed}")) for lr in lrs]
                i = min(range(len(lrs)), key=lambda k: losses[k])
                best[width] = lrs[i]
                cells = "  ".join(f"{l:.4f}{'*' if k == i else ' '}" for k, l in enumerate(losses))
                print(f"  {p:8s} width {width:3d}: {cells}")
            values = [float(best[w]) for w in (64, 128, 256)]
            drift = math.log2(max(values) / min(values))
            per_seed[p] = {"best_lr": best, "drift_grid_steps": drift}
            print(f"  {p}: best rates {best}, drift {drift:.0f} grid step(s)")
        report["seeds"].append(per_seed)
    print(json.dumps(report))


def training_seconds(runs, run):
    """Seconds of training up to each step of a run: its metrics.jsonl steps' step_ms summed (checkpoints and
    validation not counted), as {step: seconds}."""
    total, at = 0.0, {0: 0.0}
    for line in (Path(runs) / run / "metrics.jsonl").read_text().splitlines():
        if line.strip():
            m = json.loads(line)
            total += m["step_ms"] / 1000.0
            at[m["step"]] = total
    return at


def on_time(points, seconds):
    """A validation curve by training time: (seconds, loss) at each checkpoint."""
    return [(seconds[step], loss) for step, loss in points if step in seconds]


def curriculum(directory, runs, seeds, name):
    """Both runs take the same steps; the curriculum's are cheaper while its clips are shorter. Judged on whole
    validation clips: each run's final loss and training time, the whole-clip run's loss at the curriculum run's
    time (what the same time buys without it), and the time the whole-clip run needs for the curriculum run's
    final loss (its ratio to the curriculum run's time: the time saved)."""
    per_seed = []
    for seed in range(seeds):
        whole_run, staged_run = f"whole-s{seed}", f"curriculum-{name}-s{seed}"
        whole = on_time(curve(directory, whole_run), training_seconds(runs, whole_run))
        staged = on_time(curve(directory, staged_run), training_seconds(runs, staged_run))
        whole_time, whole_loss = whole[-1]
        staged_time, staged_loss = staged[-1]
        per_seed.append({"seed": seed, "whole_loss": whole_loss, "whole_s": whole_time,
                         "curriculum_loss": staged_loss, "curriculum_s": staged_time,
                         "whole_loss_at_curriculum_s": loss_at(whole, staged_time),
                         "whole_s_to_curriculum_loss": steps_to_reach(whole, staged_loss)})
        reached = per_seed[-1]["whole_s_to_curriculum_loss"]
        per_seed[-1]["time_saved"] = reached / staged_time if reached else None
    print(f"curriculum {name} against whole clips, validation loss on whole clips by training time:")
    for r in per_seed:
        reached = r["whole_s_to_curriculum_loss"]
        print(f"  seed {r['seed']}: whole clips {r['whole_loss']:.4f} in {r['whole_s']:.0f} s "
              f"({r['whole_loss_at_curriculum_s']:.4f} at {r['curriculum_s']:.0f} s); curriculum "
              f"{r['curriculum_loss']:.4f} in {r['curriculum_s']:.0f} s, which whole clips reach "
              + (f"after {reached:.0f} s (x{r['time_saved']:.2f})" if reached else "not at all"))
    print(json.dumps({"benchmark": "recipes.curriculum", "curriculum": name, "seeds": per_seed}))


def preference(directory, seeds, tag="", base="pref-base", stages="sft dpo kto"):
    import os

    def scores(run, which):
        total = json.load(open(os.path.join(directory, f"{run}{which}.json")))["total"]
        return {k: total.get(k, 0) for k in ("clips", "color", "shape", "direction", "axis", "all")}

    labels = json.load(open(os.path.join(directory, "labels.json")))
    counts = labels["counts"]
    print(f"labels: {counts['preferred']} pairs preferred, {counts['skipped']} skipped (equal scores)")
    runs = [base] + [f"pref-{stage}{tag}-s{seed}" for stage in stages.split() for seed in range(seeds)]
    report = {"benchmark": "recipes.preference", "labels": counts, "runs": {}}
    for which, title in ((".train", "labelled training prompts, one seed"), ("", "held-out prompts")):
        first = scores(base, which)
        print(f"{title} ({first['clips']} videos): colour  shape  direction  axis  all")
        for run in runs:
            r = scores(run, which)
            report["runs"].setdefault(run, {})["train" if which else "heldout"] = r
            print(f"  {run:20s} {r['color']:6d} {r['shape']:6d} {r['direction']:10d} {r['axis']:5d} {r['all']:4d}")
    print(json.dumps(report))


def main(argv):
    if len(argv) >= 4 and argv[1] == "best":
        print(best_lr(argv[2], argv[3], argv[4:]))
    elif len(argv) == 6 and argv[1] == "growth":
        growth(argv[2], int(argv[3]), float(argv[4]), float(argv[5]))
    elif len(argv) in (4, 5, 6, 7) and argv[1] == "preference":
        preference(argv[2], int(argv[3]), *argv[4:])
    elif len(argv) >= 4 and argv[1] == "mup":
        mup(argv[2], int(argv[3]), argv[4:])
    elif len(argv) == 6 and argv[1] == "curriculum":
        curriculum(argv[2], argv[3], int(argv[4]), argv[5])
    elif len(argv) >= 4 and argv[1] == "optimizers":
        optimizers(argv[2], int(argv[3]), argv[4:])
    else:
        print(__doc__, file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
