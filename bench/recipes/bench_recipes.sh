#!/usr/bin/env bash
# Training recipes measured on the shapes starter set with the tiny preset (docs/BENCHMARKS.md "Training
# recipes"). Every comparison is judged by `mugv val-loss`: the flow loss on a separately generated validation
# set at fixed noise, so two runs are compared on exactly the same inputs.
#
#   bench_recipes [optimizers]   Muon against AdamW: each optimizer's learning rate is chosen from the same
#                                grid by its validation loss after STEPS steps; the best of each then runs on
#                                more seeds; reported: AdamW's loss after STEPS steps and the steps Muon needs
#                                to reach it (per seed, interpolated between checkpoints).
#   bench_recipes growth         HyperCloning: the tiny model trained STEPS steps, grown 2x (mugv grow) and
#                                trained STEPS more, against the wide model trained 2·STEPS steps from scratch
#                                at the same learning rate; reported: the grown run's loss after its STEPS wide
#                                steps, the scratch run's at the same step, and the steps from scratch needed
#                                for the grown run's loss, against the grown run's cost (its wide steps plus the
#                                small model's counted at their FLOP share).
#   bench_recipes mup            μP transfer: the learning-rate grid (MUGV_BENCH_MUP_LRS) at widths 64, 128 and
#                                256 (head width 32, heads grow), under the standard parametrisation and μP
#                                (base width 64), MUGV_BENCH_MUP_STEPS (200) steps each, MUGV_BENCH_MUP_SEEDS
#                                (2) seeds; reported per seed: each width's best rate and how far it drifts
#                                across widths, in grid steps (x2).
#   bench_recipes preference     Post-training: a base (tiny, MUGV_BENCH_PREF_BASE_STEPS = 1500 steps) makes two
#                                videos of each of MUGV_BENCH_PREF_PROMPTS (96) training captions (mugv pairs), the
#                                starter set's evaluator labels them (mugv label --auto shapes), and from the base
#                                DPO and KTO train on the labels and SFT on the dataset, the same steps
#                                (MUGV_BENCH_PREF_STEPS, 200) and learning rate, MUGV_BENCH_PREF_SEEDS (2) seeds;
#                                reported: held-out colour / shape / direction adherence of each (mugv eval, 4
#                                seeds per prompt) and on the labelled prompts, against the base's. Another
#                                MUGV_BENCH_PREF_LR / _BETA needs its own MUGV_BENCH_PREF_TAG (a suffix of the
#                                run names; the base and the labels are shared). MUGV_BENCH_PREF_FROM=DIR takes
#                                the base from a finished `make demo` folder (its MUGV_DEMO_DIR): the demo's home,
#                                starter set and demo-dit run (a base that binds colours and directions) instead
#                                of training one here (MUGV_BENCH_PREF_BASE_RUN names another run of that home);
#                                the results then go to $MUGV_BENCH_DIR/pref-demo. MUGV_BENCH_PREF_PAIRS (1) pairs
#                                of each prompt, each with its own seeds (the labeller skips pairs whose videos
#                                score alike; more pairs a prompt give it more to prefer); with more than one,
#                                the pairs, labels and runs go to a folder of their own (suffix -pN).
#                                MUGV_BENCH_PREF_OPTIMIZER (adamw) post-trains with another optimizer;
#                                MUGV_BENCH_PREF_SFT_WEIGHT (0) adds the preferred generations' flow loss to DPO
#                                and KTO (--preference-sft-weight). MUGV_BENCH_PREF_CAPTION_NOISE=F (with
#                                MUGV_BENCH_PREF_FROM) trains the base on a copy of the demo's starter set whose
#                                training captions name the opposite direction in a fraction F of clips (a
#                                captioner's left/right confusion; videos shared, seed 7), in a home of its own
#                                with the demo's VAE: Muon, lr 1e-3, batch 32, bf16, MUGV_BENCH_PREF_BASE_STEPS
#                                (750) steps; SFT then trains on those noisy captions, as a user's would, while
#                                the labeller judges what the videos show; results in pref-noise-F.
#                                MUGV_BENCH_PREF_CRITERION (all) labels on one attribute (mugv label
#                                --criterion: colour, shape or direction; a fresh MUGV_BENCH_DIR, since labels of
#                                another criterion in the same home would be learnt too). MUGV_BENCH_PREF_BATCH
#                                (8) videos a step: SFT and KTO that many, DPO half as many pairs;
#                                MUGV_BENCH_PREF_PRECISION (fp32) of the post-training; MUGV_BENCH_PREF_EVAL_SEEDS
#                                (4) seeds of each held-out prompt; MUGV_BENCH_PREF_STAGES ("sft dpo kto") the runs
#                                from the base, where "anchor" is the control of the SFT anchor: DPO with beta
#                                0.01, so the anchor alone (needs MUGV_BENCH_PREF_SFT_WEIGHT).
#   bench_recipes curriculum     A curriculum (MUGV_BENCH_CURRICULUM, tiny) against whole clips: the same STEPS
#                                steps, Muon at MUGV_BENCH_CURRICULUM_LR (1.2e-3), MUGV_BENCH_CURRICULUM_SEEDS (3)
#                                seeds; judged on whole validation clips by training time (the steps' step_ms
#                                from metrics.jsonl): each run's final loss and time, the whole-clip run's loss at
#                                the curriculum run's time, and the time the whole-clip run needs for the
#                                curriculum run's final loss (the time saved).
#
# Environment: MUGV_BENCH_DIR (work folder, reused: the data and VAE are made once), MUGV_BENCH_THREADS,
# MUGV_BENCH_STEPS (300), MUGV_BENCH_SEEDS (3; growth: MUGV_BENCH_GROWTH_SEEDS, 2), MUGV_BENCH_LRS ("3e-4 6e-4 1.2e-3 2.4e-3"), MUGV (the binary).
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
MUGV=${MUGV:-$HERE/../../bin/mugv}
WORK=${MUGV_BENCH_DIR:-${TMPDIR:-/tmp}/mugv-bench-recipes}
THREADS=${MUGV_BENCH_THREADS:-$(nproc)}
STEPS=${MUGV_BENCH_STEPS:-300}
SEEDS=${MUGV_BENCH_SEEDS:-3}
LRS=${MUGV_BENCH_LRS:-3e-4 6e-4 1.2e-3 2.4e-3}
BATCH=8
EVERY=${EVERY:-25}
DATA=$WORK/shapes  # the starter set the preference benchmark prompts and judges from
PREF=$WORK/pref    # its results
export MUGV_HOME=$WORK/home
mkdir -p "$WORK"
started=$SECONDS
stage() { echo "== [$(( SECONDS - started ))s] $*" >&2; }

# The starter set (400 training clips), a validation set drawn with another seed (48 clips), a VAE and both
# latent caches. Made once per work folder.
setup() {
  if [[ -f $WORK/setup.done ]]; then return; fi
  rm -rf "$WORK/home" "$WORK/shapes" "$WORK/shapes-val"
  stage "starter data, VAE (600 steps) and latent caches in $WORK"
  "$MUGV" make-dataset shapes --out "$WORK/shapes" --count 400 --size 64 --frames 17 --fps 8 --seed 1 >&2
  "$MUGV" make-dataset shapes --out "$WORK/shapes-val" --count 48 --size 64 --frames 17 --fps 8 --seed 2 >&2
  "$MUGV" dataset import "$WORK/shapes" --name shapes >&2
  "$MUGV" dataset import "$WORK/shapes-val" --name shapes-val >&2
  "$MUGV" train-vae --preset tiny-vae --dataset shapes --run vae --steps 600 --threads "$THREADS" --seed 0 >&2
  "$MUGV" encode --dataset shapes --vae-run vae --threads "$THREADS" >&2
  "$MUGV" encode --dataset shapes-val --vae-run vae --threads "$THREADS" >&2
  touch "$WORK/setup.done"
}

# train RUN FLAGS...: a tiny DiT run of STEPS steps with checkpoints every EVERY steps, then its validation
# curve in $WORK/curves/RUN.jsonl. Skipped when the curve exists (an interrupted benchmark continues).
train() {
  local run=$1
  shift
  mkdir -p "$WORK/curves"
  if [[ -s $WORK/curves/$run.jsonl ]]; then return; fi
  rm -rf "$MUGV_HOME/runs/$run"
  stage "train $run: $*"
  "$MUGV" train --preset tiny --dataset shapes --vae-run vae --run "$run" --steps "$STEPS" --batch $BATCH \
    --warmup 20 --save-every $EVERY --keep 1000 --sample-every 0 --threads "$THREADS" --precision fp32 "$@" >&2
  "$MUGV" val-loss --run "$run" --dataset shapes-val --threads "$THREADS" --json > "$WORK/curves/$run.jsonl.part"
  mv "$WORK/curves/$run.jsonl.part" "$WORK/curves/$run.jsonl"
}

optimizers() {
  for optimizer in adamw muon; do
    for lr in $LRS; do train "$optimizer-lr$lr-s0" --optimizer "$optimizer" --lr "$lr" --seed 0; done
  done
  local best
  for optimizer in adamw muon; do
    best=$(python3 "$HERE/recipes_report.py" best "$WORK/curves" "$optimizer" $LRS)
    for ((seed = 1; seed < SEEDS; ++seed)); do
      train "$optimizer-lr$best-s$seed" --optimizer "$optimizer" --lr "$best" --seed "$seed"
    done
  done
  python3 "$HERE/recipes_report.py" optimizers "$WORK/curves" "$SEEDS" $LRS
}

growth() {
  local seeds=${MUGV_BENCH_GROWTH_SEEDS:-2} lr=6e-4 wide_steps=$((2 * STEPS))
  for ((seed = 0; seed < seeds; ++seed)); do
    train "small-s$seed" --lr 1e-3 --seed "$seed"
    if [[ ! -f $MUGV_HOME/runs/grown-s$seed/run.json ]]; then
      "$MUGV" grow --run "small-s$seed" --out "grown-s$seed" --width 2 --weights model --seed "$seed" >&2
    fi
    train "continued-s$seed" --from "grown-s$seed" --from-weights model --lr $lr --seed "$seed"
    STEPS=$wide_steps train "scratch-s$seed" --model tiny-w2 --lr $lr --seed "$seed"
  done
  local small_flops wide_flops
  small_flops=$("$MUGV" model info --preset tiny --json | python3 -c 'import json,sys; print(json.load(sys.stdin)["flops_per_sample"])')
  wide_flops=$("$MUGV" model info --preset tiny-w2 --json | python3 -c 'import json,sys; print(json.load(sys.stdin)["flops_per_sample"])')
  python3 "$HERE/recipes_report.py" growth "$WORK/curves" "$seeds" "$small_flops" "$wide_flops"
}

mup() {
  local steps=${MUGV_BENCH_MUP_STEPS:-200} lrs=${MUGV_BENCH_MUP_LRS:-2e-4 4e-4 8e-4 1.6e-3 3.2e-3}
  local seeds=${MUGV_BENCH_MUP_SEEDS:-2}
  mkdir -p "$MUGV_HOME/presets/models"
  for width in 64 128 256; do
    printf 'inherits = "tiny"\ndescription = "tiny at hidden %s (bench_recipes mup)"\n[dit]\nhidden = %s\nheads = %s\n' \
      "$width" "$width" $((width / 32)) > "$MUGV_HOME/presets/models/tiny-h$width.toml"
    for ((seed = 0; seed < seeds; ++seed)); do
      for p in standard mup; do
        for lr in $lrs; do
          STEPS=$steps EVERY=$steps train "$p-h$width-lr$lr-s$seed" --model "tiny-h$width" --parametrization "$p" \
            --mup-base-hidden 64 --lr "$lr" --seed "$seed"
        done
      done
    done
  done
  python3 "$HERE/recipes_report.py" mup "$WORK/curves" "$seeds" $lrs
}

# evaluate RUN: adherence of RUN on the held-out prompts (4 seeds each) in $PREF/RUN.json and on the labelled
# training prompts (one seed each, not the pairs' seeds) in $PREF/RUN.train.json; each skipped when it exists.
evaluate() {
  local run=$1
  if [[ ! -s $PREF/$run.json ]]; then
    stage "eval $run (held-out prompts)"
    "$MUGV" eval --run "$run" --dataset-dir "$DATA" --seeds "${MUGV_BENCH_PREF_EVAL_SEEDS:-4}" --json \
      > "$PREF/$run.json.part"
    mv "$PREF/$run.json.part" "$PREF/$run.json"
  fi
  if [[ ! -s $PREF/$run.train.json ]]; then
    stage "eval $run (labelled training prompts)"
    "$MUGV" eval --run "$run" --dataset-dir "$PREF/train-prompts" --json > "$PREF/$run.train.json.part"
    mv "$PREF/$run.train.json.part" "$PREF/$run.train.json"
  fi
}

# noisy_base DEMO F STEPS: for the preference benchmark, a home of its own (the demo's VAE run copied), the
# demo's starter set with a fraction F of its training captions naming the opposite direction (videos linked,
# truth fields kept), its latents, and a base DiT `noisy-base` trained on it with the demo's recipe (Muon).
# Sets MUGV_HOME, DATA and PREF for the rest of preference(); each part is skipped once made.
noisy_base() {
  local demo=$1 fraction=$2 steps=$3 dir=$WORK/noise-$2
  export MUGV_HOME=$dir/home
  DATA=$dir/shapes
  PREF=$WORK/pref-noise-$fraction
  if [[ ! -f $dir/data.done ]]; then
    stage "caption noise $fraction: the demo's starter set with flipped directions, its latents"
    rm -rf "$dir" && mkdir -p "$MUGV_HOME/runs" "$DATA"
    cp -r "$demo/home/runs/demo-vae" "$MUGV_HOME/runs/"
    python3 -c 'import json, os, random, sys
src, dst, fraction = sys.argv[1], sys.argv[2], float(sys.argv[3])
for name in ("train", "heldout"): os.symlink(os.path.join(src, name), os.path.join(dst, name))
for name in ("dataset.json", "heldout.json", "heldout.jsonl"):
    open(os.path.join(dst, name), "w").write(open(os.path.join(src, name)).read())
opposite = {"left": "right", "right": "left", "up": "down", "down": "up"}
rng, flipped = random.Random(7), 0
with open(os.path.join(dst, "manifest.jsonl"), "w") as out:
    for line in open(os.path.join(src, "manifest.jsonl")):
        clip = json.loads(line)
        if clip["split"] == "train" and rng.random() < fraction:
            d = clip["direction"]
            clip["caption"] = clip["caption"].replace("moving " + d, "moving " + opposite[d])
            flipped += 1
        out.write(json.dumps(clip) + "\n")
print("flipped the direction of", flipped, "training captions", file=sys.stderr)' "$demo/shapes" "$DATA" "$fraction"
    "$MUGV" dataset import "$DATA" --name shapes >&2
    "$MUGV" encode --dataset shapes --vae-run demo-vae --threads "$THREADS" >&2
    touch "$dir/data.done"
  fi
  if [[ ! -f $MUGV_HOME/runs/noisy-base/checkpoints/latest ]]; then
    rm -rf "$MUGV_HOME/runs/noisy-base"
    stage "train noisy-base: $steps Muon steps on the noisy captions"
    "$MUGV" train --preset tiny --dataset shapes --vae-run demo-vae --run noisy-base --steps "$steps" --batch 32 \
      --optimizer muon --lr 1e-3 --precision bf16 --threads "$THREADS" --seed 0 --save-every "$steps" \
      --sample-every 0 >&2
  fi
}

preference() {
  local base_steps=${MUGV_BENCH_PREF_BASE_STEPS:-1500} prompts=${MUGV_BENCH_PREF_PROMPTS:-96}
  local steps=${MUGV_BENCH_PREF_STEPS:-200} seeds=${MUGV_BENCH_PREF_SEEDS:-2} lr=${MUGV_BENCH_PREF_LR:-3e-4}
  local beta=${MUGV_BENCH_PREF_BETA:-1000} tag=${MUGV_BENCH_PREF_TAG:-} per_prompt=${MUGV_BENCH_PREF_PAIRS:-1}
  local base=pref-base
  local stages=${MUGV_BENCH_PREF_STAGES:-sft dpo kto} stage_name
  # Refused before anything is made: an unknown stage, and the anchor's control
  # without an anchor (it would be DPO at beta 0.01, learning nothing).
  for stage_name in $stages; do
    case $stage_name in
      sft | dpo | kto) ;;
      anchor) [[ ${MUGV_BENCH_PREF_SFT_WEIGHT:-0} != 0 ]] || {
                echo "bench_recipes preference: the anchor stage needs MUGV_BENCH_PREF_SFT_WEIGHT above 0" >&2; exit 2; } ;;
      *) echo "bench_recipes preference: unknown stage '$stage_name' in MUGV_BENCH_PREF_STAGES" >&2; exit 2 ;;
    esac
  done
  if [[ -n ${MUGV_BENCH_PREF_CAPTION_NOISE:-} && -z ${MUGV_BENCH_PREF_FROM:-} ]]; then
    echo "bench_recipes preference: MUGV_BENCH_PREF_CAPTION_NOISE needs MUGV_BENCH_PREF_FROM (a make demo folder)" >&2
    exit 2
  fi
  if [[ -n ${MUGV_BENCH_PREF_FROM:-} ]]; then
    local demo
    demo=$(cd "$MUGV_BENCH_PREF_FROM" && pwd)
    base=${MUGV_BENCH_PREF_BASE_RUN:-demo-dit}
    # The noisy-caption set-up takes only the demo's starter set and VAE; otherwise its DiT is the base.
    local needed=$base
    if [[ -n ${MUGV_BENCH_PREF_CAPTION_NOISE:-} ]]; then needed=demo-vae; fi
    [[ -f $demo/home/runs/$needed/run.json && -f $demo/shapes/manifest.jsonl ]] || {
      echo "bench_recipes preference: $demo is not a finished make demo folder (no home/runs/$needed or shapes/)" >&2
      exit 1
    }
    export MUGV_HOME=$demo/home
    DATA=$demo/shapes
    PREF=$PREF-demo
    if [[ -n ${MUGV_BENCH_PREF_CAPTION_NOISE:-} ]]; then
      noisy_base "$demo" "$MUGV_BENCH_PREF_CAPTION_NOISE" "${MUGV_BENCH_PREF_BASE_STEPS:-750}"
      base=noisy-base
    fi
  fi
  if ((per_prompt > 1)); then PREF=$PREF-p$per_prompt; fi
  mkdir -p "$PREF/train-prompts"
  # The labelled prompts: the first $prompts distinct training captions in a fixed shuffle, as a prompt file for
  # mugv pairs and as a held-out list for mugv eval.
  python3 -c 'import json,random,sys
seen = []
for line in open(sys.argv[1]):
    c = json.loads(line)["caption"]
    if c not in seen: seen.append(c)
random.Random(0).shuffle(seen)
chosen = seen[:int(sys.argv[2])]
open(sys.argv[3] + "/prompts.txt", "w").write("\n".join(chosen) + "\n")
json.dump({"prompts": chosen}, open(sys.argv[3] + "/train-prompts/heldout.json", "w"))' \
    "$DATA/manifest.jsonl" "$prompts" "$PREF"
  cp "$DATA/dataset.json" "$PREF/train-prompts/dataset.json"
  if [[ $base == pref-base ]]; then STEPS=$base_steps EVERY=$base_steps train pref-base --lr 1.2e-3 --seed 0; fi
  evaluate "$base"
  if [[ ! -f $PREF/labelled.done ]]; then
    stage "pairs: $per_prompt pair(s) of videos of each of $prompts training captions"
    "$MUGV" pairs --run "$base" --prompts "$PREF/prompts.txt" --count $((prompts * per_prompt)) --seed 1000 \
      --out-dir "$PREF/pairs" >&2
    "$MUGV" label --auto shapes --criterion "${MUGV_BENCH_PREF_CRITERION:-all}" --json > "$PREF/labels.json"
    touch "$PREF/labelled.done"
  fi
  local common=(--preset tiny --from "$base" --steps "$steps" --lr "$lr" --warmup 10 --save-every "$steps"
                --sample-every 0 --threads "$THREADS" --precision "${MUGV_BENCH_PREF_PRECISION:-fp32}"
                --optimizer "${MUGV_BENCH_PREF_OPTIMIZER:-adamw}")
  local anchor=(--preference-sft-weight "${MUGV_BENCH_PREF_SFT_WEIGHT:-0}")
  local batch=${MUGV_BENCH_PREF_BATCH:-8}
  for ((seed = 0; seed < seeds; ++seed)); do
    for stage_name in $stages; do
      local run=pref-$stage_name$tag-s$seed
      if [[ ! -f $MUGV_HOME/runs/$run/checkpoints/latest ]]; then
        rm -rf "$MUGV_HOME/runs/$run"
        stage "train $run"
        case $stage_name in
          sft) "$MUGV" train "${common[@]}" --run "$run" --dataset shapes --batch "$batch" --seed "$seed" >&2 ;;
          dpo) "$MUGV" train "${common[@]}" --run "$run" --objective dpo --preference-beta "$beta" "${anchor[@]}" \
                 --batch $((batch / 2)) --seed "$seed" >&2 ;;
          kto) "$MUGV" train "${common[@]}" --run "$run" --objective kto --preference-beta "$beta" "${anchor[@]}" \
                 --batch "$batch" --seed "$seed" >&2 ;;
          anchor) "$MUGV" train "${common[@]}" --run "$run" --objective dpo --preference-beta 0.01 "${anchor[@]}" \
                    --batch $((batch / 2)) --seed "$seed" >&2 ;;
        esac
      fi
      evaluate "$run"
    done
  done
  python3 "$HERE/recipes_report.py" preference "$PREF" "$seeds" "$tag" "$base" "$stages"
}

curriculum() {
  local seeds=${MUGV_BENCH_CURRICULUM_SEEDS:-3} name=${MUGV_BENCH_CURRICULUM:-tiny}
  local lr=${MUGV_BENCH_CURRICULUM_LR:-1.2e-3}
  for ((seed = 0; seed < seeds; ++seed)); do
    train "whole-s$seed" --optimizer muon --lr "$lr" --seed "$seed"
    train "curriculum-$name-s$seed" --optimizer muon --lr "$lr" --seed "$seed" --curriculum "$name"
  done
  python3 "$HERE/recipes_report.py" curriculum "$WORK/curves" "$MUGV_HOME/runs" "$seeds" "$name"
}

[[ ${1:-} == preference && -n ${MUGV_BENCH_PREF_FROM:-} ]] || setup
case ${1:-optimizers} in
  optimizers) optimizers ;;
  growth) growth ;;
  mup) mup ;;
  preference) preference ;;
  curriculum) curriculum ;;
  *) echo "usage: bench_recipes [optimizers|growth|mup|preference|curriculum]" >&2; exit 2 ;;
esac
stage "done"
