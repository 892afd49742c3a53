#!/usr/bin/env bash
# The Debian package, installed into a scratch root: builds it with cpack from this build tree (or, when
# cpack cannot, stages `cmake --install`), checks its contents (programs, presets, desktop entry, icon,
# systemd unit) and runs the installed programs from the scratch root.
#   test_install.sh BUILD_DIR WITH_STUDIO(ON|OFF) WITH_MONITOR(ON|OFF)
# Exit 0 when everything checks out; otherwise 1 with one line per problem on stderr.
set -uo pipefail

build=$(cd "${1:?usage: test_install.sh BUILD_DIR WITH_STUDIO WITH_MONITOR}" && pwd)
with_studio=${2:-OFF}
with_monitor=${3:-OFF}
tmp=$(mktemp -d "${TMPDIR:-/tmp}/mugv-install.XXXXXX")
trap 'rm -rf "$tmp"' EXIT
root="$tmp/root"
mkdir -p "$root" "$tmp/pkg"
failures=0
fail() { echo "test_install: $*" >&2; failures=$((failures + 1)); }
is_on() { case "${1^^}" in ON|1|TRUE|YES) return 0 ;; *) return 1 ;; esac; }

# 1. The package, or a staged install when cpack / dpkg-deb are missing.
listing=""
if command -v cpack >/dev/null && command -v dpkg-deb >/dev/null; then
  if ! cpack -G DEB --config "$build/CPackConfig.cmake" -B "$tmp/pkg" >"$tmp/cpack.log" 2>&1; then
    echo "test_install: cpack -G DEB failed:" >&2
    tail -n 30 "$tmp/cpack.log" >&2
    exit 1
  fi
  deb=$(find "$tmp/pkg" -maxdepth 1 -name '*.deb' | head -n 1)
  [[ -n "$deb" ]] || { echo "test_install: cpack wrote no .deb into $tmp/pkg" >&2; exit 1; }
  echo "package: $(basename "$deb") ($(du -h "$deb" | cut -f1))"
  dpkg-deb -I "$deb" >/dev/null || fail "$deb: dpkg-deb cannot read its control data"
  listing=$(dpkg-deb -c "$deb" | awk '{print $NF}' | sed 's|^\./|/|')
  dpkg-deb -x "$deb" "$root" || { echo "test_install: dpkg-deb -x $deb failed" >&2; exit 1; }
else
  echo "cpack or dpkg-deb not found: checking a staged 'cmake --install' instead of a .deb"
  cmake --install "$build" --prefix "$root/usr" >"$tmp/install.log" 2>&1 || {
    echo "test_install: cmake --install failed:" >&2; tail -n 30 "$tmp/install.log" >&2; exit 1; }
  listing=$(cd "$root" && find . -mindepth 1 | sed 's|^\.||')
fi

# 2. What the package must hold.
expect() { grep -qxF "$1" <<<"$listing" || fail "the package has no $1"; }
expect_some() { grep -q "$1" <<<"$listing" || fail "the package has nothing matching $1 ($2)"; }
expect /usr/bin/mugv
expect /usr/bin/mugv-worker
expect /usr/share/applications/mugv-studio.desktop
expect /usr/share/icons/hicolor/scalable/apps/mugv.svg
expect_some '/lib/systemd/system/mugv-serve.service$' "systemd unit"
expect_some '^/usr/share/mugv/presets/models/.*\.toml$' "model presets"
expect_some '^/usr/share/mugv/presets/curation/' "curation presets"
expect_some '^/usr/share/mugv/presets/train/' "training presets"
is_on "$with_studio" && expect /usr/bin/mugv-studio
is_on "$with_monitor" && expect /usr/bin/mugv-monitor

# 3. The installed programs run from the scratch root (libraries of the package first, if it has any).
libs=$(find "$root/usr" -maxdepth 3 -type d -name 'lib*' 2>/dev/null | tr '\n' ':')
export LD_LIBRARY_PATH="${libs}${LD_LIBRARY_PATH:-}"
export MUGV_HOME="$tmp/home"
unset MUGV_PRESETS
check_version() {
  local program="$root/usr/bin/$1" out
  if [[ ! -x "$program" ]]; then fail "$program is missing or not executable"; return; fi
  if ! out=$("$program" --version 2>&1); then fail "$1 --version failed: $out"; return; fi
  grep -q "^$1 " <<<"$out" || fail "$1 --version printed '$out'"
  echo "$out"
}
check_version mugv
is_on "$with_studio" && check_version mugv-studio
is_on "$with_monitor" && check_version mugv-monitor

# The installed mugv works on data and finds the installed presets (share/mugv/presets beside its bin/):
# a preset that exists only in the scratch root must resolve.
presets="$root/usr/share/mugv/presets"
if [[ -f "$presets/curation/lenient.toml" ]]; then
  cp "$presets/curation/lenient.toml" "$presets/curation/installcheck.toml"
  mugv="$root/usr/bin/mugv"
  if ! out=$("$mugv" make-dataset shapes --out "$tmp/shapes" --count 2 --size 16 --frames 5 2>&1 &&
             "$mugv" dataset import "$tmp/shapes" --name shapes 2>&1 &&
             "$mugv" curate redecide --dataset shapes --preset installcheck 2>&1); then
    fail "the installed mugv failed on a starter dataset with an installed-only preset: $out"
  fi
fi

# The desktop entry and the unit point at programs the package installs.
desktop="$root/usr/share/applications/mugv-studio.desktop"
if [[ -f "$desktop" ]]; then
  grep -q '^Exec=mugv-studio' "$desktop" || fail "$desktop: Exec is not mugv-studio"
  grep -q '^Icon=mugv$' "$desktop" || fail "$desktop: Icon is not mugv"
  if command -v desktop-file-validate >/dev/null; then desktop-file-validate "$desktop" || fail "$desktop: not valid"; fi
fi
unit=$(find "$root" -path '*/systemd/system/mugv-serve.service' | head -n 1)
if [[ -n "$unit" ]]; then
  grep -q '^ExecStart=/usr/bin/mugv serve' "$unit" || fail "$unit: ExecStart does not run /usr/bin/mugv serve"
  # A server holds a socket per client and files per job: the distribution's 1,024 descriptors run out.
  grep -qE '^LimitNOFILE=[0-9]{5,}$' "$unit" || fail "$unit: no LimitNOFILE of at least 10,000"
fi

if ((failures)); then
  echo "test_install: $failures problem(s)" >&2
  exit 1
fi
echo "install test passed"
