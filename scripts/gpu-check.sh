#!/usr/bin/env bash
# The GPU path in one call: configure and build the compute-only tree (README "Building for a GPU machine"), run
# the correctness checks (mugv-device-check) and the speed benchmarks, and print one JSON line per result, then
# a summary line. Exit status 0 when every check passed.
#
#   scripts/gpu-check.sh [--device cuda|cpu] [--build-dir DIR] [--golden-dir DIR] [--steps N] [--no-bench]
#
# --device cuda (default): builds build-device/ against the LibTorch of this machine's python3 (CUDA), runs the
#   checks on the GPU and the benchmarks at the two shapes of docs/BENCHMARKS.md ("The GPU path"), with the
#   targets of that section reported as meets_target.
# --device cpu: the same checks on the CPU with small sizes (CI runs this, so the script and the checks cannot rot).
#   It builds only the check programs in --build-dir (default build/, the tree `make test` builds; its compute
#   programs link only the compute layers) and configures the compute-only tree to prove the option set holds.
# The fused kernels' checks (fused_rope, fused_norm_rope, fused_norm_modulate, fused_gated_residual) run first:
# when they fail, a fused_off line says so and every other check and benchmark runs with MUGV_FUSED_KERNELS=0,
# so one call still measures the rest.
# Budgets on the GPU machine: build <= 5 min, checks <= 4 min; each step's seconds are in its line.
# A machine without the toml++, libsodium or SentencePiece development files needs .device-deps/ beside the
# tree: run scripts/device-deps.sh where they are installed and carry the folder (5 MB).
set -uo pipefail

root="$(cd "$(dirname "$0")/.." && pwd)"
device=cuda
build_dir=""
golden_dir="$root/../shared/data/golden"
steps=""
bench=1
while [ $# -gt 0 ]; do
  case "$1" in
    --device) device="$2"; shift 2 ;;
    --build-dir) build_dir="$2"; shift 2 ;;
    --golden-dir) golden_dir="$2"; shift 2 ;;
    --steps) steps="$2"; shift 2 ;;
    --no-bench) bench=0; shift ;;
    -h|--help) sed -n '2,18p' "$0"; exit 0 ;;
    *) echo "gpu-check: unknown argument '$1' (see --help)" >&2; exit 2 ;;
  esac
done
case "$device" in
  cuda) build_dir="${build_dir:-$root/build-device}"; steps="${steps:-300}" ;;
  cpu) build_dir="${build_dir:-$root/build}"; steps="${steps:-36}" ;;
  *) echo "gpu-check: --device must be cuda or cpu, not '$device'" >&2; exit 2 ;;
esac

failed=()
# result NAME OK SECONDS [EXTRA-JSON-FIELDS]: prints one line and remembers a failure.
result() {
  local name="$1" ok="$2" seconds="$3" extra="${4:-}"
  printf '{"check":"%s","device":"%s","ok":%s,"seconds":%s%s}\n' "$name" "$device" "$ok" "$seconds" "${extra:+,$extra}"
  [ "$ok" = true ] || failed+=("$name")
}
now() { date +%s.%N; }
elapsed() { awk -v a="$1" -v b="$(now)" 'BEGIN { printf "%.1f", b - a }'; }
json_string() { python3 -c 'import json,sys; print(json.dumps(sys.stdin.read()[-2000:]))' 2>/dev/null || echo '"(log)"'; }

# ---- configure + build ----------------------------------------------------------------------------------------
log="$(mktemp)"
trap 'rm -f "$log"' EXIT
targets=(mugv-device-check bench_train_step bench_sample_step)
start=$(now)
if [ "$device" = cuda ]; then
  torch_prefix="$(python3 -c 'import torch; print(torch.utils.cmake_prefix_path)' 2>>"$log")"
  if [ -z "$torch_prefix" ]; then
    result configure false "$(elapsed "$start")" "\"error\":\"no LibTorch: python3 cannot import torch\""
  elif (cd "$root" && cmake --preset device -B "$build_dir" -DCMAKE_PREFIX_PATH="$torch_prefix") >"$log" 2>&1; then
    result configure true "$(elapsed "$start")"
  else
    result configure false "$(elapsed "$start")" "\"log\":$(json_string <"$log")"
  fi
else
  # The compute-only option set must configure here too (no FFmpeg, ZeroMQ, SQLite, Qt or OpenCV looked up).
  compute_dir="$(mktemp -d)"
  if cmake -S "$root" -B "$compute_dir" -G Ninja -DMUGV_COMPUTE_ONLY=ON -DMUGV_BUILD_BENCH=ON >"$log" 2>&1; then
    result configure_compute_only true "$(elapsed "$start")"
  else
    result configure_compute_only false "$(elapsed "$start")" "\"log\":$(json_string <"$log")"
  fi
  rm -rf "$compute_dir"
  [ -f "$build_dir/build.ninja" ] || cmake -S "$root" -B "$build_dir" -G Ninja >"$log" 2>&1
fi
if [ ${#failed[@]} -eq 0 ]; then
  start=$(now)
  if cmake --build "$build_dir" --target "${targets[@]}" >"$log" 2>&1; then
    result build true "$(elapsed "$start")"
  else
    result build false "$(elapsed "$start")" "\"log\":$(json_string <"$log")"
  fi
fi
bin="$build_dir/bin"
if [ ${#failed[@]} -ne 0 ]; then
  printf '{"check":"summary","device":"%s","ok":false,"failed":"%s"}\n' "$device" "${failed[*]}"
  exit 1
fi

# ---- correctness ----------------------------------------------------------------------------------------------
work="$(mktemp -d)"
trap 'rm -f "$log"; rm -rf "$work"' EXIT
if [ "$device" = cuda ]; then
  # Deterministic cuBLAS for the resume check (the workspace setting cuBLAS documents for reproducibility).
  export CUBLAS_WORKSPACE_CONFIG=:4096:8
fi
# device_check NAME ARGS...: runs mugv-device-check in its own folder, prints its lines and remembers the
# checks that failed; a run that fails with no failing line (a crash) is reported as NAME.
device_check() {
  local name="$1"; shift
  local start rc before=${#failed[@]}
  start=$(now)
  mkdir -p "$work/$name"
  "$bin/mugv-device-check" --device "$device" --golden-dir "$golden_dir" --steps "$steps" --work "$work/$name" "$@" \
    > "$work/$name.jsonl" 2>"$log"
  rc=$?
  cat "$work/$name.jsonl"
  while IFS= read -r line; do
    case "$line" in *'"ok":false'*) failed+=("$(sed -n 's/.*"check":"\([a-z0-9_]*\)".*/\1/p' <<<"$line")") ;; esac
  done < "$work/$name.jsonl"
  if [ $rc -ne 0 ] && [ ${#failed[@]} -eq "$before" ]; then
    result "$name" false "$(elapsed "$start")" "\"exit\":$rc,\"log\":$(json_string <"$log")"
  fi
}
# The fused kernels first: should they be wrong on this device, the other checks and the benchmarks run with
# them off (MUGV_FUSED_KERNELS=0, said in a line), so one call still measures everything else.
fused_checks=fused_rope,fused_norm_rope,fused_norm_modulate,fused_gated_residual
failed_before=${#failed[@]}
device_check fused_checks --only "$fused_checks"
if [ ${#failed[@]} -ne "$failed_before" ]; then
  export MUGV_FUSED_KERNELS=0
  printf '{"check":"fused_off","device":"%s","ok":true,"note":"the fused checks failed: the checks and benchmarks below run the unfused ops"}\n' "$device"
fi
device_check checks --skip "$fused_checks"

# ---- speed ----------------------------------------------------------------------------------------------------
# bench NAME TARGET-TOKENS-PER-S PROGRAM ARGS...: runs bench/PROGRAM, prints its line with the check's name and
# whether it meets the target (0: no target).
bench() {
  local name="$1" target="$2" program="$3"; shift 3
  local t0 out
  t0=$(now)
  if out="$("$build_dir/bench/$program" "$@" 2>"$log")"; then
    local tps
    tps="$(sed -n 's/.*"tokens_per_s":\([0-9.e+-]*\).*/\1/p' <<<"$out")"
    local meets=true
    if [ "$target" != 0 ]; then meets="$(awk -v a="$tps" -v b="$target" 'BEGIN { print (a >= b) ? "true" : "false" }')"; fi
    printf '%s\n' "${out%\}},\"check\":\"$name\",\"ok\":true,\"target_tokens_per_s\":$target,\"meets_target\":$meets,\"seconds\":$(elapsed "$t0")}"
  else
    result "$name" false "$(elapsed "$t0")" "\"log\":$(json_string <"$log")"
  fi
}
if [ $bench = 1 ]; then
  if [ "$device" = cuda ]; then
    # PLATFORM.md's PyTorch eager reference on the same machine × 1.2 (docs/BENCHMARKS.md "The GPU path").
    bench train_step_1b_width 20000 train_step/bench_train_step --device cuda --precision bf16 --preset mugv-1b \
      --latent 8x32x32 --text-tokens 128 --batch 4 --steps 10
    bench train_step_10b_width 83000 train_step/bench_train_step --device cuda --precision bf16 --preset mugv-10b \
      --depth 4 --latent 8x32x64 --text-tokens 128 --batch 2 --steps 10
    # The same 1B-width step with the unfused LibTorch ops for the attention's q/k norm and RoPE: what the fused
    # kernels save (model/fused_ops.h).
    bench train_step_1b_width_unfused 0 train_step/bench_train_step --device cuda --precision bf16 \
      --preset mugv-1b --latent 8x32x32 --text-tokens 128 --batch 4 --steps 10 --fused off
    # LoRA on the 1B width (issue: fine-tuning), the base kept on the GPU and swapped in block by block: the
    # ratio of the two step times is the block-swap slowdown.
    bench train_step_1b_width_lora 0 train_step/bench_train_step --device cuda --precision bf16 --preset mugv-1b \
      --latent 8x32x32 --text-tokens 128 --batch 4 --steps 10 --lora rank=32,targets=attn,cross,mlp
    bench train_step_1b_width_lora_swap 0 train_step/bench_train_step --device cuda --precision bf16 \
      --preset mugv-1b --latent 8x32x32 --text-tokens 128 --batch 4 --steps 10 --lora rank=32,targets=attn,cross,mlp \
      --offload blocks
    # One guided sampling step (CFG batch of 2) at 720p, the 10B width with 4 blocks.
    bench sample_step_10b_width_720p 0 sample_step/bench_sample_step --device cuda --precision bf16 \
      --presets mugv-10b --depth 4 --size 1280x720 --frames 33 --steps 3
  else
    bench train_step_tiny 0 train_step/bench_train_step --device cpu --precision fp32 --preset tiny --latent 5x8x8 \
      --text-tokens 32 --batch 4 --steps 2 --threads 2
    bench train_step_tiny_unfused 0 train_step/bench_train_step --device cpu --precision fp32 --preset tiny \
      --latent 5x8x8 --text-tokens 32 --batch 4 --steps 2 --threads 2 --fused off
    bench train_step_tiny_lora_swap 0 train_step/bench_train_step --device cpu --precision fp32 --preset tiny \
      --latent 5x8x8 --text-tokens 32 --batch 4 --steps 2 --threads 2 --lora rank=4,targets=attn,mlp --offload blocks
    bench sample_step_tiny 0 sample_step/bench_sample_step --device cpu --presets tiny --size 64x64 --frames 17 \
      --steps 2 --threads 2
  fi
fi

if [ ${#failed[@]} -eq 0 ]; then
  printf '{"check":"summary","device":"%s","ok":true}\n' "$device"
  exit 0
fi
printf '{"check":"summary","device":"%s","ok":false,"failed":"%s"}\n' "$device" "${failed[*]}"
exit 1
