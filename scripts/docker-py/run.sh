#!/usr/bin/env bash
# Runs the Docker SDK for Python's own integration suite (docker==7.0.0:
# its sdist from PyPI, checked by hash, ships tests/integration) against
# `kiln serve` on a socket and store of its own, with the tests listed in
# scripts/docker-py/deselected.txt left out (each group says why), and
# prints passed / failed / skipped / deselected. Exits non-zero if a
# selected test fails.
#   scripts/docker-py/run.sh [PYTEST ARGS...]   (KILN=path/to/kiln)
# Safety: the daemon may contact only registries on 127.0.0.1
# (KILN_REGISTRY_ALLOW), a container or build asking for the default
# network gets none (--default-network none), and the tests that dial
# anything else are in the never-run group of deselected.txt.
set -euo pipefail
cd "$(dirname "$0")/../.."
repo=$PWD
kiln=${KILN:-$repo/target/debug/kiln}
work=$repo/target/docker-py
sdist_sha256=323736fb92cd9418fc5e7133bc953e11a9da04f4483f828b527db553f1e7e5a3
suite=$work/docker-7.0.0

mkdir -p "$work"
[ -x "$work/venv/bin/pip" ] || python3 -m venv "$work/venv"
if [ ! -f "$suite/.unpacked" ]; then
  rm -rf "$suite" "$work/sdist"
  mkdir -p "$work/sdist"
  "$work/venv/bin/pip" download -q --no-binary :all: --no-deps \
    -d "$work/sdist" docker==7.0.0
  echo "$sdist_sha256  $work/sdist/docker-7.0.0.tar.gz" | sha256sum -c --quiet
  tar -xzf "$work/sdist/docker-7.0.0.tar.gz" -C "$work"
  touch "$suite/.unpacked"
fi
# The suite's own pins (test-requirements.txt and requirements.txt;
# paramiko because its helpers import it), less coverage and lint.
"$work/venv/bin/pip" install -q docker==7.0.0 pytest==7.4.2 pytest-timeout==2.1.0 \
  requests==2.31.0 urllib3==1.26.18 packaging==21.3 websocket-client==1.3.3 \
  paramiko==2.11.0

run=$(mktemp -d /tmp/kiln-docker-py.XXXXXX)
daemon=
cleanup() {
  [ -n "$daemon" ] && kill "$daemon" 2>/dev/null && wait "$daemon" 2>/dev/null
  rm -rf "$run"
}
trap cleanup EXIT
store=$run/store
export HOME=$run/home DOCKER_CONFIG=$run/home/.docker
mkdir -p "$DOCKER_CONFIG"
# A config file there, or the SDK keeps its contexts in ./contexts of
# the suite, where they outlive the run.
echo '{}' >"$DOCKER_CONFIG/config.json"
rm -rf "$suite/contexts"

# The images the suite names, made here from the busybox rootfs: busybox
# with its CMD, and as alpine:3.10 (its TEST_IMG), alpine:latest and
# hello-world the same files with what of Alpine's base the tests use (its
# postgres user, /var/opt).
scripts/busybox-rootfs.sh "$run/busybox-rootfs.tar" >/dev/null
"$kiln" --root "$store" import "$run/busybox-rootfs.tar" busybox-rootfs >/dev/null
mkdir -p "$run/context"
printf 'FROM busybox-rootfs\nCMD ["sh"]\n' >"$run/context/Dockerfile"
"$kiln" --root "$store" build -q --network none -t busybox:latest "$run/context" >/dev/null
cat >"$run/context/Dockerfile" <<'DOCKERFILE'
FROM busybox-rootfs
RUN echo 'postgres:x:70:70::/var/lib/postgresql:/bin/sh' >>/etc/passwd \
 && echo 'postgres:x:70:' >>/etc/group && mkdir -p /var/opt /var/lib/postgresql
CMD ["/bin/sh"]
DOCKERFILE
for image in alpine:3.10 alpine:latest hello-world:latest; do
  "$kiln" --root "$store" build -q --network none -t "$image" "$run/context" >/dev/null
done

socket=$run/kiln.sock
KILN_REGISTRY_ALLOW=127.0.0.1 "$kiln" --root "$store" serve \
  --host "unix://$socket" --default-network none 2>"$run/daemon.log" &
daemon=$!
for _ in $(seq 1 100); do
  [ -S "$socket" ] && break
  sleep 0.1
done

deselect=()
while read -r line; do
  case "$line" in '' | '#'*) continue ;; esac
  deselect+=(--deselect "$line")
done <"$repo/scripts/docker-py/deselected.txt"

status=0
rm -f "$work/junit.xml"
(
  cd "$suite"
  DOCKER_HOST="unix://$socket" "$work/venv/bin/python" -m pytest tests/integration \
    -p no:cacheprovider --timeout 120 -q -rfE \
    --junitxml "$work/junit.xml" "${deselect[@]}" "$@"
) || status=$?
[ -f "$work/junit.xml" ] && python3 - "$work/junit.xml" <<'PY'
import sys, xml.etree.ElementTree as ET
suite = ET.parse(sys.argv[1]).getroot()
suite = suite if suite.tag == "testsuite" else suite.find("testsuite")
tests, failures, errors, skipped = (int(suite.get(k, 0)) for k in ("tests", "failures", "errors", "skipped"))
print(f"docker-py 7.0.0 against kiln serve: {tests - failures - errors - skipped} passed, "
      f"{failures + errors} failed, {skipped} skipped (of {tests} selected)")
PY
if [ "$status" -ne 0 ]; then
  echo "the daemon's log: $run/daemon.log (kept below)" >&2
  tail -20 "$run/daemon.log" >&2 || true
fi
exit "$status"
