#!/usr/bin/env bash
# One-command demo: build, record a built-in example tree, stream it, list it with tar,
# resume from the middle, then mount it and read archive.tar straight from the mount.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release --quiet
bin="$PWD/target/release/tartape"
work=$(mktemp -d /tmp/tartape-try.XXXXXX)
mnt="$work/mnt"
export XDG_STATE_HOME="$work"    # the mount's log goes here and is removed with it
cleanup() {
    if mountpoint -q "$mnt" 2>/dev/null; then "$bin" umount "$mnt" || true; fi
    rm -rf "$work"
}
trap cleanup EXIT

echo "== example tree in $work/example"
src="$work/example"
mkdir -p "$src/docs/notes" "$src/bin" "$src/empty"
printf 'tartape demo\n' > "$src/README.txt"
printf '#!/bin/sh\necho hi\n' > "$src/bin/hello.sh"; chmod +x "$src/bin/hello.sh"
seq 1 20000 > "$src/docs/numbers.txt"
head -c 300000 /dev/urandom > "$src/docs/random.bin"
printf 'résumé\n' > "$src/docs/notes/café.txt"
ln -s ../README.txt "$src/docs/readme-link"
# a path of over 255 bytes: recorded with a PAX header, which tar reads back whole
long="$src/photos/$(printf 'a-long-album-name-%.0s' 1 2 3 4 5)/$(printf 'nested-folder-%.0s' 1 2 3 4 5 6)"
mkdir -p "$long"
printf 'deep\n' > "$long/$(printf 'a-picture-with-a-long-name-%.0s' 1 2 3).jpg"

echo "== tartape record"
"$bin" record "$src" --catalog "$work/example.db"

echo "== tartape stream | tar -tvf -"
"$bin" stream "$src" --catalog "$work/example.db" -o "$work/full.tar"
tar -tvf "$work/full.tar"

total=$(stat -c %s "$work/full.tar")
half=$((total / 2 + 77))
echo "== resume: bytes [0, $half) and [$half, $total) streamed separately"
"$bin" stream "$src" --catalog "$work/example.db" --length "$half" -o "$work/part1"
"$bin" stream "$src" --catalog "$work/example.db" --offset "$half" -o "$work/part2"
full_sum=$(sha256sum < "$work/full.tar" | cut -d' ' -f1)
joined_sum=$(cat "$work/part1" "$work/part2" | sha256sum | cut -d' ' -f1)
echo "full:   $full_sum"
echo "joined: $joined_sum"
[ "$full_sum" = "$joined_sum" ] || { echo "pieces do not join!" >&2; exit 1; }

echo "== tartape mount $src $mnt"
mkdir "$mnt"
"$bin" mount "$src" "$mnt" --catalog "$work/example.db"
ls -l "$mnt"
echo "== tar -tvf $mnt/archive.tar"
tar -tvf "$mnt/archive.tar"
mount_sum=$(sha256sum < "$mnt/archive.tar" | cut -d' ' -f1)
echo "mount:  $mount_sum"
[ "$mount_sum" = "$full_sum" ] || { echo "mount differs from stream!" >&2; exit 1; }
echo "== tartape umount $mnt"
"$bin" umount "$mnt"
echo "== done: every way of reading gave the same tape"
