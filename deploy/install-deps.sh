#!/usr/bin/env bash
# Installs what lookout needs to build, run and test on Debian 12 / Ubuntu 22.04+.
# Idempotent: each step checks first and does nothing when its result is already there.
#
#   deploy/install-deps.sh            # apt packages + the ONNX Runtime library in .deps/
#   deploy/install-deps.sh --no-apt   # only the ONNX Runtime library (no root needed)
#
# ONNX Runtime: `ort` 2.0.0-rc.15 loads the shared library at run time (ORT_DYLIB_PATH).
# Its CDN is not reachable from every network, so the library is taken from the PyPI wheel
# onnxruntime==1.31.1 (the wheel only, with --no-deps) and checked against a pinned sha256.
# On a Jetson, use the library of NVIDIA's onnxruntime-gpu wheel instead (see README, "Jetson").
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
DEPS="$ROOT/.deps"
ORT_VERSION=1.31.1
# sha256 of libonnxruntime.so.1.31.1 inside onnxruntime-1.31.1-cp311-cp311-manylinux_2_28_x86_64.whl
ORT_SHA256_X86_64=fc44112fbe06d7d689c57e11d3862031f64711007e4ee020f8eed5185fd2c1d3

APT_PACKAGES=(
  pkg-config curl unzip python3-pip
  cmake nasm  # libjpeg-turbo, which the turbojpeg-sys crate builds from its own source (nasm: x86-64 SIMD)
  libgstreamer1.0-dev libgstreamer-plugins-base1.0-dev libgstrtspserver-1.0-dev
  gstreamer1.0-tools gstreamer1.0-plugins-base gstreamer1.0-plugins-good gstreamer1.0-plugins-bad
  gstreamer1.0-plugins-ugly gstreamer1.0-libav gstreamer1.0-x gstreamer1.0-rtsp
  mosquitto  # the MQTT alert tests' broker
  bsdutils   # script(1): the progress-bar test's terminal (Essential on Debian, listed to be sure)
  fonts-dejavu-core  # DejaVu Sans: label text in the scripts it covers, not '?' (src/draw/font.rs)
  fonts-droid-fallback  # Chinese, Japanese and Korean label text (DejaVu has no CJK glyphs)
  chromium    # the control plane's page test (headless)
  prometheus  # promtool: the /metrics test checks the text format with `promtool check metrics`
)

say() { printf '[install-deps] %s\n' "$*" >&2; }

install_apt() {
  local missing=()
  for p in "${APT_PACKAGES[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
  done
  if [ ${#missing[@]} -eq 0 ]; then
    say "apt packages: all present"
    return
  fi
  say "apt packages missing: ${missing[*]}"
  local sudo=""
  if [ "$(id -u)" -ne 0 ]; then sudo="sudo"; fi
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}"
}

install_ort() {
  local lib="$DEPS/onnxruntime/libonnxruntime.so.$ORT_VERSION"
  local arch
  arch="$(uname -m)"
  if [ -f "$lib" ]; then
    if [ "$arch" != x86_64 ] || echo "$ORT_SHA256_X86_64  $lib" | sha256sum -c --quiet - 2>/dev/null; then
      say "ONNX Runtime $ORT_VERSION: present at $lib"
      return
    fi
    say "ONNX Runtime at $lib has the wrong sha256; downloading it again"
    rm -f "$lib"
  fi
  local platform
  case "$arch" in
    x86_64) platform=manylinux_2_28_x86_64 ;;
    aarch64) platform=manylinux_2_28_aarch64 ;;
    *) say "no onnxruntime wheel for $arch; set ORT_DYLIB_PATH to your libonnxruntime.so"; exit 1 ;;
  esac
  local tmp
  tmp="$(mktemp -d)"
  say "downloading onnxruntime==$ORT_VERSION ($platform) from PyPI"
  python3 -m pip download --quiet --no-deps --only-binary=:all: --implementation cp --python-version 3.11 \
    --platform "$platform" -d "$tmp" "onnxruntime==$ORT_VERSION"
  (cd "$tmp" && unzip -q -o ./*.whl 'onnxruntime/capi/libonnxruntime*')
  if [ "$arch" = x86_64 ]; then
    echo "$ORT_SHA256_X86_64  $tmp/onnxruntime/capi/libonnxruntime.so.$ORT_VERSION" | sha256sum -c --quiet - || {
      say "sha256 mismatch for libonnxruntime.so.$ORT_VERSION from PyPI; refusing to install it"
      exit 1
    }
  fi
  mkdir -p "$DEPS/onnxruntime"
  cp "$tmp"/onnxruntime/capi/libonnxruntime* "$DEPS/onnxruntime/"
  ln -sf "libonnxruntime.so.$ORT_VERSION" "$DEPS/onnxruntime/libonnxruntime.so"
  rm -rf "$tmp"
  say "ONNX Runtime $ORT_VERSION installed at $lib"
}

if [ "${1:-}" != "--no-apt" ]; then
  install_apt
fi
install_ort
