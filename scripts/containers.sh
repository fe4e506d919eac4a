#!/usr/bin/env bash
# Set up Podman and build the two local images of nbflow's container tests. No registry is needed:
#   localhost/nbflow-busybox:latest    busybox-static and its applets (sh, echo, cat, ...)
#   localhost/nbflow-python-base:3.11  Debian bookworm (debootstrap) + python3 + nbflow's dependencies
# Usage: bash scripts/containers.sh [--require] [--rebuild]
#
# As root with apt-get, installs podman runc busybox-static debootstrap when one is missing, and
# writes the engine settings such machines need (runc, not crun; ulimits under the hard nofile
# limit) to /etc/containers/containers.conf, adding them to an existing file without touching its
# other settings (~/.config/containers/containers.conf when not root; nothing when CONTAINERS_CONF
# is set). The first run takes a few minutes (debootstrap); later runs take seconds: images that
# exist are kept, and the Python image's tree is cached in ${XDG_CACHE_HOME:-~/.cache}/nbflow/images.
#
# --require: a machine that cannot run containers is an error (scripts/test.sh passes it when CI is
#            set). Without it, that is only a message, and the container tests skip.
# --rebuild: build both images again, from nothing (the cached tree too).
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"

BUSYBOX_IMAGE=localhost/nbflow-busybox:latest
PYTHON_MINOR=3.11  # bookworm's python3: must be the host's, as tasks travel by value (cloudpickle)
PYTHON_BASE_IMAGE=localhost/nbflow-python-base:$PYTHON_MINOR
MIRROR="${NBFLOW_DEBIAN_MIRROR:-http://deb.debian.org/debian}"
CACHE="${XDG_CACHE_HOME:-$HOME/.cache}/nbflow/images"

require=0
rebuild=0
for arg in "$@"; do
    case "$arg" in
        --require) require=1 ;;
        --rebuild) rebuild=1 ;;
        -h|--help) sed -n '2,16p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
        *) echo "containers.sh: unknown argument $arg (see --help)" >&2; exit 2 ;;
    esac
done

say() { echo "==> $*"; }
warn() { echo "containers.sh: $*" >&2; }
# unavailable MESSAGE: this machine cannot run the container tests
unavailable() {
    warn "$*"
    if [ "$require" = 1 ]; then
        warn "containers are required (--require): failing"
        exit 1
    fi
    warn "the container tests will be skipped"
    exit 0
}
is_root() { [ "$(id -u)" = 0 ]; }

# The Python of the tests (the venv of scripts/test.sh, else PYTHON or python3)
if [ -x "$root/.venv/bin/python" ]; then
    hostpy="$root/.venv/bin/python"
else
    hostpy="${PYTHON:-python3}"
fi
host_minor="$("$hostpy" -c 'import sys; print("%d.%d" % sys.version_info[:2])' 2>/dev/null || echo '?')"

# -- 1. the packages ----------------------------------------------------------------------------
export PATH="$PATH:/usr/sbin:/sbin"  # runc and debootstrap, for a non-login root shell
# static_busybox: the image needs the static busybox (Debian's busybox package is not)
static_busybox() {
    if command -v dpkg-query >/dev/null; then
        [ "$(dpkg-query -W -f='${Status}' busybox-static 2>/dev/null)" = "install ok installed" ]
    else
        [ -x /bin/busybox ]
    fi
}
packages=()
command -v podman >/dev/null || packages+=(podman)
command -v runc >/dev/null || packages+=(runc)
static_busybox || packages+=(busybox-static)
command -v debootstrap >/dev/null || packages+=(debootstrap)
if [ ${#packages[@]} -gt 0 ]; then
    if is_root && command -v apt-get >/dev/null; then
        say "installing ${packages[*]} (apt)"
        log="$(mktemp)"
        if ! { DEBIAN_FRONTEND=noninteractive apt-get update -qq \
               && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${packages[@]}"; } >"$log" 2>&1; then
            cat "$log" >&2
            rm -f "$log"
            warn "apt-get install ${packages[*]} failed"
            exit 1
        fi
        rm -f "$log"
    elif ! command -v podman >/dev/null; then
        unavailable "podman is not installed, and installing it needs root and apt-get" \
            "(apt-get install podman runc busybox-static debootstrap)"
    else
        warn "missing ${packages[*]} (not root, or no apt-get): going on with what there is"
    fi
fi

# -- 2. the engine's settings -------------------------------------------------------------------
# runc: crun fails here with "cgroups in hybrid mode not supported". ulimits: Podman's default
# ones exceed the hard nofile limit (20000): "setrlimit RLIMIT_NOFILE: Operation not permitted".
configure_engine() {
    if [ -n "${CONTAINERS_CONF:-}" ]; then
        say "CONTAINERS_CONF=$CONTAINERS_CONF is set: the engine's settings are left to that file"
        return
    fi
    local conf
    if is_root; then
        conf=/etc/containers/containers.conf
    else
        conf="${XDG_CONFIG_HOME:-$HOME/.config}/containers/containers.conf"
    fi
    if [ ! -e "$conf" ]; then
        say "writing $conf (runtime runc, default ulimits nofile/nproc 1024:1024)"
        mkdir -p "$(dirname "$conf")"
        cat >"$conf.tmp.$$" <<'EOF'
# Written by nbflow's scripts/containers.sh: runc, as crun fails with "cgroups in hybrid mode
# not supported"; default ulimits under the hard nofile limit, as Podman's own fail with
# "setrlimit RLIMIT_NOFILE: Operation not permitted".
[containers]
default_ulimits = ["nofile=1024:1024", "nproc=1024:1024"]

[engine]
runtime = "runc"
EOF
        mv "$conf.tmp.$$" "$conf"
        return
    fi
    # An existing file: add only the settings it lacks, under its own tables (a second
    # [containers] header would be invalid TOML), keep a backup, check the result parses.
    if ! "$hostpy" -c 'import tomllib' 2>/dev/null; then
        warn "$conf exists and $hostpy has no tomllib (Python >= 3.11) to check it: not changed." \
            "It needs: [containers] default_ulimits = [\"nofile=1024:1024\", \"nproc=1024:1024\"]" \
            "and [engine] runtime = \"runc\""
        return
    fi
    "$hostpy" - "$conf" <<'PY'
import os, re, shutil, sys, tomllib

path = sys.argv[1]
WANT = {
    ("containers", "default_ulimits"): '["nofile=1024:1024", "nproc=1024:1024"]',
    ("engine", "runtime"): '"runc"',
}
with open(path, encoding="utf-8") as f:
    text = f.read()
try:
    data = tomllib.loads(text)
except tomllib.TOMLDecodeError as e:
    sys.exit(f"containers.sh: {path} is not valid TOML ({e}): not changed")
missing = [(t, k) for (t, k) in WANT if k not in data.get(t, {})]
if not missing:
    print(f"==> {path} sets default_ulimits and runtime already: kept as it is")
    sys.exit(0)
lines = text.splitlines(keepends=True)
if lines and not lines[-1].endswith("\n"):
    lines[-1] += "\n"
for table, key in missing:
    line = f"{key} = {WANT[table, key]}  # added by nbflow's scripts/containers.sh\n"
    header = re.compile(rf"^\s*\[\s*{table}\s*\]\s*(#.*)?$")
    at = next((i for i, s in enumerate(lines) if header.match(s)), None)
    if at is None:
        lines += [f"\n[{table}]\n", line]
    else:
        lines.insert(at + 1, line)
new = "".join(lines)
check = tomllib.loads(new)
assert all(k in check.get(t, {}) for (t, k) in WANT), new
backup = path + ".nbflow-backup"
if not os.path.exists(backup):
    shutil.copy2(path, backup)
tmp = f"{path}.tmp.{os.getpid()}"
with open(tmp, "w", encoding="utf-8") as f:
    f.write(new)
shutil.copymode(path, tmp)
os.replace(tmp, path)
print(f"==> added {', '.join(k for _, k in missing)} to {path} (the file as it was: {backup})")
PY
}
configure_engine

# -- 3. does the engine work? -------------------------------------------------------------------
if ! command -v podman >/dev/null; then
    unavailable "podman is not installed (apt-get install podman runc busybox-static debootstrap)"
fi
if ! out="$(podman info 2>&1 >/dev/null)"; then
    unavailable "podman does not work here (podman info): $out"
fi

# -- 4. localhost/nbflow-busybox:latest ---------------------------------------------------------
tmpdirs=()
cleanup() {
    set +e  # remove what can be removed
    local d m
    for d in "${tmpdirs[@]}"; do
        # nothing should be mounted in a build tree (a failed debootstrap can leave /proc)
        for m in $(awk -v d="$d" '$2 == d || index($2, d "/") == 1 {print $2}' /proc/mounts | sort -r); do
            umount -l "$m"
        done
        rm -rf --one-file-system "$d"
    done
}
trap cleanup EXIT

if [ "$rebuild" = 1 ]; then
    say "--rebuild: removing the images and the cached tree"
    for image in localhost/nbflow-python:test "$BUSYBOX_IMAGE" "$PYTHON_BASE_IMAGE"; do  # (the tests build the first on the second)
        if podman image exists "$image" && ! out="$(podman rmi "$image" 2>&1)"; then
            warn "cannot remove $image (containers, or images built on it, still use it): $out"
            exit 1
        fi
    done
    rm -f "$CACHE"/python-base-*.tar
fi

if podman image exists "$BUSYBOX_IMAGE"; then
    say "$BUSYBOX_IMAGE exists"
else
    busybox=/bin/busybox
    [ -x "$busybox" ] || unavailable "no $busybox (apt-get install busybox-static)"
    say "building $BUSYBOX_IMAGE from $busybox"
    tree="$(mktemp -d)"
    tmpdirs+=("$tree")
    mkdir -p "$tree"/{bin,etc,tmp,root,proc,sys,dev,var/tmp,usr}
    chmod 1777 "$tree/tmp" "$tree/var/tmp"
    cp "$busybox" "$tree/bin/busybox"
    # every applet (sh, echo, cat, ls, wc, sort, grep, sleep, id, env, ...) as a link in /bin
    for applet in $("$tree/bin/busybox" --list); do
        [ "$applet" = busybox ] || ln -s busybox "$tree/bin/$applet"
    done
    ln -s bin "$tree/sbin"
    ln -s ../bin "$tree/usr/bin"  # /usr/bin/env, for #! lines
    ln -s ../bin "$tree/usr/sbin"
    printf 'root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/bin/false\n' \
        >"$tree/etc/passwd"
    printf 'root:x:0:\nnogroup:x:65534:\n' >"$tree/etc/group"
    tar --numeric-owner --owner=0 --group=0 -C "$tree" -cf "$tree.tar" .
    tmpdirs+=("$tree.tar")
    if ! out="$(podman import --quiet --change 'CMD ["sh"]' --change 'LABEL org.nbflow.image=busybox' \
            "$tree.tar" "$BUSYBOX_IMAGE" 2>&1)"; then
        unavailable "podman cannot import an image here: $out"
    fi
fi
if ! out="$(podman run --rm --network=none "$BUSYBOX_IMAGE" sh -c 'echo ok' 2>&1)" || [ "$out" != ok ]; then
    case "$out" in
        *rlimit*) hint="the engine's settings need default_ulimits = [\"nofile=1024:1024\", \"nproc=1024:1024\"]" ;;
        *cgroups*) hint="the engine's settings need runtime = \"runc\"" ;;
        *) hint="is /bin/busybox the static one (busybox-static)?" ;;
    esac
    unavailable "podman cannot run a container here ($BUSYBOX_IMAGE sh -c 'echo ok'): $out ($hint)"
fi
say "podman runs $BUSYBOX_IMAGE"

# -- 5. localhost/nbflow-python-base:3.11 -------------------------------------------------------
if [ "$host_minor" != "$PYTHON_MINOR" ]; then
    unavailable "the tests' Python ($hostpy) is $host_minor, and the image's (Debian bookworm) is" \
        "$PYTHON_MINOR: functions travel by value (cloudpickle), so they must be the same." \
        "Use a Python $PYTHON_MINOR venv (PYTHON=python$PYTHON_MINOR)."
fi
# nbflow's runtime dependencies, as pyproject.toml declares them
mapfile -t deps < <("$hostpy" - "$root/pyproject.toml" <<'PY'
import sys, tomllib
with open(sys.argv[1], "rb") as f:
    print("\n".join(tomllib.load(f)["project"]["dependencies"]))
PY
)
[ ${#deps[@]} -gt 0 ] || { warn "no dependencies read from pyproject.toml"; exit 1; }
deps_hash="$(printf '%s\n' "$PYTHON_MINOR" "${deps[@]}" | sha256sum | cut -c1-12)"
tarball="$CACHE/python-base-$PYTHON_MINOR-$deps_hash.tar"

image_hash() {
    podman image inspect --format '{{index .Labels "org.nbflow.deps"}}' "$PYTHON_BASE_IMAGE" 2>/dev/null || true
}

build_tree() {  # build_tree DIR: debootstrap, nbflow's dependencies, cleaned
    local dir="$1" log="$CACHE/debootstrap.log"
    is_root || unavailable "building $PYTHON_BASE_IMAGE needs root (debootstrap, chroot)," \
        "and there is no cached tree $tarball"
    command -v debootstrap >/dev/null \
        || unavailable "building $PYTHON_BASE_IMAGE needs debootstrap (apt-get install debootstrap)"
    say "debootstrap bookworm (minbase, python3, python3-pip) from $MIRROR: a few minutes (log: $log)"
    local start=$SECONDS
    if ! debootstrap --variant=minbase --include=python3,python3-pip bookworm "$dir" "$MIRROR" \
            >"$log" 2>&1; then
        tail -n 30 "$log" >&2
        warn "debootstrap failed (the whole log: $log)"
        exit 1
    fi
    say "debootstrap done in $((SECONDS - start))s"
    # a clean environment in the chroot: none of the host's PIP_* settings or paths
    in_root() { env -i PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
        HOME=/root LANG=C.UTF-8 chroot "$dir" "$@"; }
    local minor
    minor="$(in_root python3 -c 'import sys; print("%d.%d" % sys.version_info[:2])')"
    if [ "$minor" != "$PYTHON_MINOR" ]; then
        warn "bookworm's python3 is $minor, not $PYTHON_MINOR: the image would not match the tests' Python"
        exit 1
    fi
    say "installing ${deps[*]} into the tree (pip, in the chroot)"
    local pip=(python3 -m pip install --quiet --break-system-packages --no-cache-dir
               --root-user-action=ignore --disable-pip-version-check)
    mkdir -p "$dir/tmp/wheels"
    if "$hostpy" -m pip download --quiet --disable-pip-version-check --only-binary=:all: \
            --dest "$dir/tmp/wheels" "${deps[@]}" >"$CACHE/pip.log" 2>&1; then
        # the wheels came through the host's pip (its index, proxy and certificates)
        in_root "${pip[@]}" --no-index --find-links /tmp/wheels "${deps[@]}"
    else
        warn "the host's pip could not download the wheels ($CACHE/pip.log): pip in the chroot fetches them"
        cp /etc/resolv.conf "$dir/etc/resolv.conf"
        in_root "${pip[@]}" "${deps[@]}"
    fi
    in_root python3 -c 'import cloudpickle, yaml, jsonschema'
    in_root apt-get clean
    rm -rf "$dir"/tmp/wheels "$dir"/root/.cache "$dir"/var/lib/apt/lists/* "$dir"/var/cache/apt/* \
        "$dir"/var/log/*.log "$dir"/var/log/apt/* "$dir"/etc/resolv.conf "$dir"/etc/hostname
}

if podman image exists "$PYTHON_BASE_IMAGE" && [ "$(image_hash)" = "$deps_hash" ]; then
    say "$PYTHON_BASE_IMAGE exists"
else
    mkdir -p "$CACHE"
    if [ -s "$tarball" ]; then
        say "importing $PYTHON_BASE_IMAGE from the cached tree $tarball"
    else
        start=$SECONDS
        say "building $PYTHON_BASE_IMAGE (cached in $tarball)"
        tree="$(mktemp -d "$CACHE/build.XXXXXX")"
        tmpdirs+=("$tree" "$tarball.tmp")
        build_tree "$tree"
        say "packing the tree"
        tar --numeric-owner -C "$tree" --exclude='./dev/*' --exclude='./proc/*' --exclude='./sys/*' \
            -cf "$tarball.tmp" .
        mv "$tarball.tmp" "$tarball"
        find "$CACHE" -maxdepth 1 -name 'python-base-*.tar' ! -path "$tarball" -delete
        say "tree built in $((SECONDS - start))s"
    fi
    old="$(podman image inspect --format '{{.Id}}' "$PYTHON_BASE_IMAGE" 2>/dev/null || true)"
    if ! out="$(podman import --quiet --change 'CMD ["python3"]' --change 'ENV LANG=C.UTF-8' \
            --change "LABEL org.nbflow.deps=$deps_hash" --change "LABEL org.nbflow.python=$PYTHON_MINOR" \
            "$tarball" "$PYTHON_BASE_IMAGE" 2>&1)"; then
        unavailable "podman cannot import $tarball: $out"
    fi
    if [ -n "$old" ]; then  # the image it replaces (unless a container still uses it)
        podman rmi "$old" >/dev/null 2>&1 || true
    fi
fi
check='import sys, cloudpickle, yaml, jsonschema; print("%d.%d" % sys.version_info[:2])'
if ! out="$(podman run --rm --network=none "$PYTHON_BASE_IMAGE" python3 -c "$check" 2>&1)"; then
    warn "$PYTHON_BASE_IMAGE does not run python3 with nbflow's dependencies: $out"
    exit 1
fi
if [ "$out" != "$host_minor" ]; then
    warn "$PYTHON_BASE_IMAGE has Python $out, the tests $host_minor: they must be the same (cloudpickle)"
    exit 1
fi
say "podman runs $PYTHON_BASE_IMAGE (Python $out, as the tests)"
