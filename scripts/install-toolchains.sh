#!/usr/bin/env bash
# Installs, with apt, the sandbox (bubblewrap) and the compilers/interpreters that code scoring
# runs (dft_mm/evaluation/code): g++, OpenJDK + javatuples, php-cli, node + npm (TypeScript itself
# is a pinned npm package that scripts/setup.sh installs into .toolchains/), mono
# (mcs), bash, and Debian's own python3 (sandboxed Python runs as an unprivileged uid, which must
# be able to read the interpreter; a pyenv/conda Python under /root is not readable to it).
# Debian's chromium: the headless browser the report test opens report.html in (tests/browser.py).
# Idempotent and quiet: does nothing when every tool is already present.
set -euo pipefail

declare -A need=(
  [bwrap]=bubblewrap
  [g++]=g++
  [javac]=openjdk-17-jdk-headless
  [php]=php-cli
  [node]=nodejs
  [npm]=npm
  [mcs]=mono-mcs
  [mono]=mono-runtime
  [ps]=procps
  [chromium]=chromium
)
missing=()
for tool in "${!need[@]}"; do
  command -v "$tool" >/dev/null 2>&1 || missing+=("${need[$tool]}")
done
[ -f /usr/share/java/javatuples.jar ] || missing+=(libjavatuples-java)
[ -x /usr/bin/python3 ] || missing+=(python3)
# the sandboxed Python (HumanEval(+) via EvalPlus, MultiPL-E Python) has numpy, as EvalPlus environments do
/usr/bin/python3 -c "import numpy" 2>/dev/null || missing+=(python3-numpy)
/usr/bin/python3 -c "import psutil" 2>/dev/null || missing+=(python3-psutil)

if [ ${#missing[@]} -eq 0 ]; then
  exit 0
fi
echo "install-toolchains: installing ${missing[*]}"
if [ "$(id -u)" -ne 0 ]; then SUDO=sudo; else SUDO=; fi
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq
$SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
