#!/usr/bin/env bash
# Set-up for the fidelity harness only (tests/eval): Debian packages and TensorFlow.js.
#   python3-numpy python3-torch python3-matplotlib python3-pil  (deploy/install-deps.sh)
#   python3-skimage        face photos: skimage/data/astronaut.png, camera.png, lfw_subset.npy
#   python-matplotlib-data face photo: sample_data/grace_hopper.jpg (python3-matplotlib dep)
#   nodejs npm             to check the torch forward pass against TensorFlow.js
# @tensorflow/tfjs (pure-JS CPU backend) goes into tests/eval/.cache/npm (git-ignored).
# Idempotent; needs root (or sudo) only when a package is missing.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
TFJS_VERSION=4.22.0
pkgs=(python3 python3-numpy python3-torch python3-matplotlib python3-pil python3-skimage
      python-matplotlib-data)
missing=()
for p in "${pkgs[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
# node and npm may come from another nodejs build (e.g. NodeSource bundles npm).
command -v node >/dev/null || missing+=(nodejs)
command -v npm >/dev/null || missing+=(npm)
if ((${#missing[@]})); then
  SUDO=""; [[ $(id -u) -ne 0 ]] && SUDO="sudo"
  echo "eval setup: installing ${missing[*]}"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}"
fi
npm_dir="$here/.cache/npm"
if [[ ! -f "$npm_dir/node_modules/@tensorflow/tfjs/package.json" ]] ||
   ! grep -q "\"version\": \"$TFJS_VERSION\"" "$npm_dir/node_modules/@tensorflow/tfjs/package.json"; then
  mkdir -p "$npm_dir"
  [[ -f "$npm_dir/package.json" ]] || echo '{"name":"eval-cache","private":true}' > "$npm_dir/package.json"
  (cd "$npm_dir" && npm install --no-audit --no-fund --ignore-scripts "@tensorflow/tfjs@$TFJS_VERSION" >/dev/null) ||
    echo "eval setup: npm install of @tensorflow/tfjs failed; the TensorFlow.js check will be skipped"
fi
echo "eval setup: ok"
