#!/usr/bin/env bash
# Installs kiln under PREFIX (default /usr/local): the binary in bin/, its
# man pages in share/man/man1/, completions for bash, zsh and fish where
# those shells look for them. Builds the release binary first unless
# KILN_BIN names one to install. DESTDIR is prepended, as packagers expect.
#   scripts/install.sh [PREFIX]
set -euo pipefail
cd "$(dirname "$0")/.."

prefix=${1:-${PREFIX:-/usr/local}}
root="${DESTDIR:-}$prefix"
bin=${KILN_BIN:-}
if [ -z "$bin" ]; then
  cargo build --release --locked
  bin=target/release/kiln
fi

install -Dm755 "$bin" "$root/bin/kiln"
man_dir="$root/share/man/man1"
mkdir -p "$man_dir"
"$bin" __man-pages "$man_dir"
completions() { "$bin" completion "$1"; }
install -d "$root/share/bash-completion/completions" \
  "$root/share/zsh/site-functions" "$root/share/fish/vendor_completions.d"
completions bash > "$root/share/bash-completion/completions/kiln"
completions zsh > "$root/share/zsh/site-functions/_kiln"
completions fish > "$root/share/fish/vendor_completions.d/kiln.fish"
echo "installed kiln into $root (bin/kiln, $(ls "$man_dir" | wc -l) man pages, bash/zsh/fish completions)"
