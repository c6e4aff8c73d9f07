#!/usr/bin/env bash
# Build (once per machine) and install Horovod 0.28.1 with PyTorch + Gloo, CPU only.
#
#   training/scripts/build_horovod.sh [PYTHON]      # PYTHON defaults to <repo>/.venv/bin/python
#
# Why a script: horovod 0.28.1 (the last release) ships only as an sdist and does not compile
# against torch >= 2.1 as released: its CMake files ask for C++14 while torch headers need C++17.
# `set(CMAKE_CXX_STANDARD 14)` must become 17 in BOTH CMakeLists.txt and
# horovod/torch/CMakeLists.txt (patching one fails at link time; CXXFLAGS does not help).
# The [spark]/[pytorch] extras are NOT used: they pin pyarrow<11 and make pip replace torch.
#
# The built wheel is cached outside the checkout, keyed by python tag and torch version, in
#   ${CAMOE_WHEEL_CACHE:-$HOME/.cache/camoe/wheels}/horovod-0.28.1/<cpXY>-torch-<version>/
# so a second run (or a fresh clone on the same machine) only installs (seconds).
# Idempotent: exits at once when `import horovod.torch` already gives 0.28.1.
set -euo pipefail

HVD_VERSION=0.28.1
REPO_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
PY="${1:-$REPO_ROOT/.venv/bin/python}"

say() { echo "[build_horovod] $*"; }
die() { echo "[build_horovod] ERROR: $*" >&2; exit 1; }

[ -x "$PY" ] || command -v "$PY" >/dev/null 2>&1 || die "python interpreter not found: $PY"

installed_ok() {
    "$PY" - "$HVD_VERSION" <<'EOF' >/dev/null 2>&1
import sys
import horovod
import horovod.torch  # loads the compiled torch extension: fails if built against another torch
sys.exit(0 if horovod.__version__ == sys.argv[1] else 1)
EOF
}

if installed_ok; then
    say "horovod $HVD_VERSION with PyTorch already importable in $PY; nothing to do"
    exit 0
fi

"$PY" -c "import torch" 2>/dev/null \
    || die "torch is not importable in $PY (install the project's [train] extra first)"

# Versions pip must never touch, pinned as constraints for the runtime-dependency install.
pinned_versions() {
    "$PY" - <<'EOF'
from importlib.metadata import version, PackageNotFoundError
for name in ("torch", "pyarrow", "pyspark", "numpy"):
    try:
        print(f"{name}=={version(name)}")
    except PackageNotFoundError:
        pass
EOF
}
PINNED="$(pinned_versions)"
TORCH_VERSION="$("$PY" -c 'import torch; print(torch.__version__)')"
PY_TAG="$("$PY" -c 'import sys; print(f"cp{sys.version_info[0]}{sys.version_info[1]}")')"

CACHE_ROOT="${CAMOE_WHEEL_CACHE:-$HOME/.cache/camoe/wheels}"
CACHE_DIR="$CACHE_ROOT/horovod-$HVD_VERSION/$PY_TAG-torch-$TORCH_VERSION"
mkdir -p "$CACHE_DIR"

find_wheel() { ls "$CACHE_DIR"/horovod-"$HVD_VERSION"-*.whl 2>/dev/null | head -n1 || true; }
WHEEL="$(find_wheel)"

if [ -n "$WHEEL" ]; then
    say "using cached wheel $WHEEL"
else
    command -v cmake >/dev/null 2>&1 \
        || die "cmake not found; install it (e.g. apt-get install cmake) and re-run"
    command -v g++ >/dev/null 2>&1 \
        || die "g++ not found; install it (e.g. apt-get install g++) and re-run"
    command -v make >/dev/null 2>&1 \
        || die "make not found; install it (e.g. apt-get install make) and re-run"

    WORK="$(mktemp -d "${TMPDIR:-/tmp}/build_horovod.XXXXXX")"
    trap 'rm -rf "$WORK"' EXIT

    SDIST="$(ls "$CACHE_DIR"/../horovod-"$HVD_VERSION".tar.gz 2>/dev/null | head -n1 || true)"
    if [ -z "$SDIST" ]; then
        say "downloading horovod $HVD_VERSION sdist"
        "$PY" -m pip download --quiet --no-deps --no-binary :all: \
            -d "$CACHE_DIR/.." "horovod==$HVD_VERSION"
        SDIST="$CACHE_DIR/../horovod-$HVD_VERSION.tar.gz"
        [ -f "$SDIST" ] || die "pip download did not produce $SDIST"
    fi
    tar -xzf "$SDIST" -C "$WORK"
    SRC="$WORK/horovod-$HVD_VERSION"

    say "patching CMAKE_CXX_STANDARD 14 -> 17 (root and horovod/torch CMakeLists.txt)"
    for f in "$SRC/CMakeLists.txt" "$SRC/horovod/torch/CMakeLists.txt"; do
        sed -i 's/set(CMAKE_CXX_STANDARD 14)/set(CMAKE_CXX_STANDARD 17)/' "$f"
        grep -q 'set(CMAKE_CXX_STANDARD 17)' "$f" || die "C++17 patch did not apply to $f"
    done

    JOBS="$(nproc 2>/dev/null || echo 2)"
    say "building wheel against torch $TORCH_VERSION with $JOBS jobs (takes ~4-5 min on 2 cores)"
    start=$SECONDS
    HOROVOD_WITH_PYTORCH=1 HOROVOD_WITHOUT_TENSORFLOW=1 HOROVOD_WITHOUT_MXNET=1 \
    HOROVOD_WITH_GLOO=1 HOROVOD_WITHOUT_MPI=1 HOROVOD_CPU_OPERATIONS=GLOO \
    MAKEFLAGS="-j$JOBS" \
        "$PY" -m pip wheel --no-deps --no-build-isolation -w "$WORK/dist" "$SRC" \
        > "$WORK/build.log" 2>&1 \
        || { tail -n 60 "$WORK/build.log" >&2; die "wheel build failed (log tail above)"; }
    built="$(ls "$WORK"/dist/horovod-"$HVD_VERSION"-*.whl 2>/dev/null | head -n1 || true)"
    [ -n "$built" ] || die "build finished but produced no wheel"
    # Copy then rename, so an interrupted copy never looks like a cached wheel.
    cp "$built" "$CACHE_DIR/.$(basename "$built").part"
    mv "$CACHE_DIR/.$(basename "$built").part" "$CACHE_DIR/$(basename "$built")"
    WHEEL="$CACHE_DIR/$(basename "$built")"
    say "built in $((SECONDS - start)) s, cached $WHEEL"
fi

say "installing $(basename "$WHEEL") (--no-deps)"
"$PY" -m pip install --quiet --no-deps --force-reinstall "$WHEEL"

# Runtime needs of horovod, horovod.torch and horovod.spark.run (import name:pip name),
# installed by name only when missing and with torch/pyarrow/pyspark/numpy pinned.
MISSING="$("$PY" - <<'EOF'
import importlib.util
needs = {"cloudpickle": "cloudpickle", "psutil": "psutil", "yaml": "pyyaml",
         "packaging": "packaging", "cffi": "cffi"}
print(" ".join(pip for mod, pip in needs.items() if importlib.util.find_spec(mod) is None))
EOF
)"
if [ -n "$MISSING" ]; then
    say "installing runtime dependencies: $MISSING"
    CONSTRAINTS="$(mktemp "${TMPDIR:-/tmp}/hvd_constraints.XXXXXX")"
    printf '%s\n' "$PINNED" > "$CONSTRAINTS"
    # shellcheck disable=SC2086
    "$PY" -m pip install --quiet -c "$CONSTRAINTS" $MISSING
    rm -f "$CONSTRAINTS"
fi

AFTER="$(pinned_versions)"
[ "$PINNED" = "$AFTER" ] || die "pinned package versions changed: before [$PINNED] after [$AFTER]"

installed_ok || die "installed, but 'import horovod.torch' (version $HVD_VERSION) fails in $PY"
say "ok: horovod $HVD_VERSION (PyTorch, Gloo) installed in $PY"
