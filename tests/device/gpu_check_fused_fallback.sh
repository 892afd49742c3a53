#!/usr/bin/env bash
# scripts/gpu-check.sh when the fused checks fail (here the fused operations are switched off, so all four
# fail as they would with kernels that are wrong on a GPU): it says so in a fused_off line, still runs every
# other check, with the unfused ops, and fails naming only the fused checks.
#   gpu_check_fused_fallback.sh SOURCE-DIR BUILD-DIR
set -uo pipefail
root="$1"
build="$2"
out="$(MUGV_FUSED_KERNELS=0 "$root/scripts/gpu-check.sh" --device cpu --no-bench --build-dir "$build")"
rc=$?
printf '%s\n' "$out"
fail() { echo "gpu_check_fused_fallback: $*" >&2; exit 1; }
[ $rc -eq 1 ] || fail "exit status $rc, expected 1 (the fused checks failed)"
grep -q '"check":"fused_off"' <<<"$out" || fail "no fused_off line"
grep -q '"failed":"fused_rope fused_norm_rope fused_norm_modulate fused_gated_residual"' <<<"$out" ||
  fail "the summary names other checks than the fused ones"
for check in golden_fp32 golden_bf16 train resume sample process_group adamw; do
  grep "\"check\":\"$check\"" <<<"$out" | grep -q '"ok":true' || fail "$check did not pass with the unfused ops"
done
echo "gpu_check_fused_fallback: ok"
