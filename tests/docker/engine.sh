#!/usr/bin/env bash
# Docker for the tests, on a machine without bridge/NAT and without Docker Hub:
#   engine.sh install     install the engine, the registry and htpasswd (Debian, as root) if missing
#   engine.sh start DIR   start dockerd (root) with its socket at DIR/docker.sock; print DOCKER_HOST
#   engine.sh base-image  make the local test base image runctl-test/python:3.11 (docker import of
#                         this machine's Debian python3.11: the interpreter, its shared libraries,
#                         the standard library without tests/idle/tk, and /bin/sh) if missing.
# Used by .ci/run and by tests/docker/conftest.py (which calls it when the engine or image is missing).
set -euo pipefail
BASE_IMAGE=runctl-test/python:3.11

case "${1:-}" in
install)
  if command -v dockerd >/dev/null && command -v docker-registry >/dev/null && command -v htpasswd >/dev/null; then
    exit 0
  fi
  if [ "$(id -u)" != 0 ]; then
    echo "the Docker tests need docker.io, docker-registry and apache2-utils: install them as root" >&2
    exit 1
  fi
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq docker.io docker-registry apache2-utils >/dev/null
  ;;
start)
  dir=${2:?engine.sh start DIR}
  mkdir -p "$dir"
  sock="$dir/docker.sock"
  if ! DOCKER_HOST="unix://$sock" docker info >/dev/null 2>&1; then
    nohup dockerd --data-root "$dir/data" --exec-root "$dir/exec" -H "unix://$sock" --pidfile "$dir/dockerd.pid" \
      --bridge=none --iptables=false --ip-forward=false --ip-masq=false >"$dir/dockerd.log" 2>&1 &
    for _ in $(seq 1 100); do
      DOCKER_HOST="unix://$sock" docker info >/dev/null 2>&1 && break
      sleep 0.2
    done
    DOCKER_HOST="unix://$sock" docker info >/dev/null 2>&1 || { echo "dockerd did not start; see $dir/dockerd.log" >&2; tail -5 "$dir/dockerd.log" >&2; exit 1; }
  fi
  echo "unix://$sock"
  ;;
base-image)
  if docker image inspect "$BASE_IMAGE" >/dev/null 2>&1; then exit 0; fi
  py=/usr/bin/python3.11
  root=$(mktemp -d)
  trap 'rm -rf "$root"' EXIT
  mkdir -p "$root/usr/bin" "$root/bin" "$root/tmp" "$root/workspace"
  chmod 1777 "$root/tmp"
  cp -a "$py" "$root/usr/bin/python3.11"
  ln -s python3.11 "$root/usr/bin/python3"
  ln -s python3.11 "$root/usr/bin/python"
  cp -aL /bin/sh "$root/bin/sh"
  for lib in $( { ldd "$py"; ldd /bin/sh; } | grep -o '/[^ ]*' | sort -u); do
    mkdir -p "$root$(dirname "$lib")"
    cp -aL "$lib" "$root$lib"
  done
  # the standard library's extension modules need their own shared libraries too
  mkdir -p "$root/usr/lib"
  tar -C /usr/lib --exclude='python3.11/test' --exclude='python3.11/idlelib' --exclude='python3.11/tkinter' \
    --exclude='python3.11/ensurepip' --exclude='python3.11/lib2to3' --exclude='python3.11/turtledemo' \
    --exclude='python3.11/unittest/test' --exclude='python3.11/dist-packages' --exclude='__pycache__' \
    -cf - python3.11 | tar -C "$root/usr/lib" -xf -
  for so in "$root"/usr/lib/python3.11/lib-dynload/*.so; do
    for lib in $(ldd "$so" 2>/dev/null | grep -o '/[^ ]*' | sort -u); do
      [ -e "$root$lib" ] || { mkdir -p "$root$(dirname "$lib")"; cp -aL "$lib" "$root$lib"; }
    done
  done
  tar -C "$root" -cf - . | docker import --change 'ENV PATH=/usr/local/bin:/usr/bin:/bin' \
    --change 'WORKDIR /workspace' - "$BASE_IMAGE" >/dev/null
  echo "made $BASE_IMAGE" >&2
  ;;
*) echo "usage: engine.sh install | start DIR | base-image" >&2; exit 2 ;;
esac
