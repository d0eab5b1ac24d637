#!/bin/sh
# edgecam bundle installer (written by `edgecam bundle`; see README.md in this directory).
#
#   sh install.sh [--prefix DIR] [--python PY] [--system-site-packages] [--no-systemd]
#                 [--user NAME] [--no-start] [--no-deps] [--extra-site DIR]
#   (--no-deps skips requirements.txt; --extra-site DIR adds DIR to the venv's path: for CI,
#    where the host's packages stand in for the device's. EDGECAM_SERVICE_MODE=systemd|user|process
#    overrides how the runner is supervised.)
#   sh install.sh --prefix DIR --rollback | --status [--wait S [--expect-telemetry]] | --start | --stop | --verify
#   (Before `current` is switched, the new release must pass `edgecam doctor --bundle`: it loads the
#    bundled model and explains a test frame. --status --wait S --expect-telemetry exits 3 when the
#    runner writes no telemetry within S seconds of its last (re)start.)
#
# Layout under --prefix (default: $HOME/edgecam):
#   releases/<bundle-id>/   the bundle's files + venv/   (one per installed bundle)
#   current -> releases/<id>, previous -> releases/<id>  (switched atomically)
#   data/                   the runner's working directory (telemetry, videos, snapshots)
#   run/edgecam.pid         pidfile in --no-systemd mode;  install.conf: how it was installed
set -eu

die() { echo "install.sh: error: $*" >&2; exit 1; }
say() { echo "install.sh: $*"; }

HERE=$(cd "$(dirname "$0")" && pwd -P)
PREFIX=${EDGECAM_PREFIX:-${HOME:-/root}/edgecam}
PYTHON=${EDGECAM_PYTHON:-python3}
ACTION=install
SYSTEMD=auto
SYSTEM_SITE=""
RUN_USER=""
NO_START=0
NO_DEPS=${EDGECAM_INSTALL_NO_DEPS:-0}
EXTRA_SITE=${EDGECAM_EXTRA_SITE:-}
WAIT=0
EXPECT_TELEMETRY=0
SERVICE=edgecam

while [ $# -gt 0 ]; do
    case "$1" in
        --prefix) [ $# -ge 2 ] || die "--prefix needs a directory"; PREFIX=$2; shift ;;
        --prefix=*) PREFIX=${1#*=} ;;
        --python) [ $# -ge 2 ] || die "--python needs an interpreter"; PYTHON=$2; shift ;;
        --python=*) PYTHON=${1#*=} ;;
        --user) [ $# -ge 2 ] || die "--user needs a name"; RUN_USER=$2; shift ;;
        --user=*) RUN_USER=${1#*=} ;;
        --extra-site) [ $# -ge 2 ] || die "--extra-site needs a directory"; EXTRA_SITE=$2; shift ;;
        --extra-site=*) EXTRA_SITE=${1#*=} ;;
        --wait) [ $# -ge 2 ] || die "--wait needs seconds"; WAIT=$2; shift ;;
        --wait=*) WAIT=${1#*=} ;;
        --expect-telemetry) EXPECT_TELEMETRY=1 ;;
        --system-site-packages) SYSTEM_SITE=1 ;;
        --no-systemd) SYSTEMD=no ;;
        --no-start) NO_START=1 ;;
        --no-deps) NO_DEPS=1 ;;
        --rollback) ACTION=rollback ;;
        --status) ACTION=status ;;
        --start) ACTION=start ;;
        --stop) ACTION=stop ;;
        --verify) ACTION=verify ;;
        -h|--help) sed -n '/^set -eu/q;2,$p' "$0"; exit 0 ;;
        *) die "unknown option '$1' (see --help)" ;;
    esac
    shift
done

# Paths end up in a systemd unit and in sed replacements: keep them to a plain character set.
case "$PREFIX" in
    /*) ;;
    *) PREFIX=$(pwd -P)/$PREFIX ;;
esac
case "$PREFIX" in
    *[!A-Za-z0-9._/-]*) die "--prefix '$PREFIX' may only contain letters, digits and . _ / -; choose a plain path" ;;
esac
case "$WAIT" in *[!0-9]*|'') die "--wait takes whole seconds, got '$WAIT'" ;; esac
# --user becomes User= in a root systemd unit: a POSIX user name only (as `edgecam deploy` checks).
check_user() {
    case "$1" in
        '') ;;
        [!A-Za-z_]*|*[!A-Za-z0-9_.-]*) die "--user '$1' is not a POSIX user name (letters, digits, . _ -; not starting with '-' or a digit)" ;;
        *) [ ${#1} -le 32 ] || die "--user '$1' is longer than 32 characters" ;;
    esac
}
check_user "$RUN_USER"
case "$PYTHON" in *"
"*) die "--python must not contain a newline" ;; esac

# ---------------------------------------------------------------- manifest verification
sha256_check() {  # run in the bundle dir: verify MANIFEST.sha256 (or the list file given)
    if command -v sha256sum >/dev/null 2>&1; then
        sha256sum -c --quiet "${1:-MANIFEST.sha256}" >/dev/null 2>&1
    else
        "$PYTHON" - "${1:-MANIFEST.sha256}" <<'EOF'
import hashlib, sys
for line in open(sys.argv[1], encoding="utf-8"):
    digest, name = line.rstrip("\n").split("  ", 1)
    with open(name, "rb") as f:
        if hashlib.sha256(f.read()).hexdigest() != digest:
            sys.exit(1)
EOF
    fi
}

# verify_bundle DIR [strict]: every manifest entry matches; with "strict", the directory holds
# exactly the manifest's files (nothing added, no links).
verify_bundle() {
    dir=$1
    [ -f "$dir/MANIFEST.sha256" ] || die "'$dir' has no MANIFEST.sha256: not an edgecam bundle"
    if grep -Ev '^[0-9a-f]{64}  [A-Za-z0-9._+-][A-Za-z0-9._/+-]*$' "$dir/MANIFEST.sha256" >/dev/null \
        || grep -E '(^|/)\.\.(/|$)' "$dir/MANIFEST.sha256" >/dev/null; then
        die "MANIFEST.sha256 in '$dir' has a malformed or unsafe line; refusing the bundle"
    fi
    (cd "$dir" && sha256_check) \
        || die "checksum mismatch in '$dir': the bundle was modified or damaged in transit; nothing was installed. Rebuild it or upload it again."
    if [ "${2:-}" = strict ]; then
        [ -z "$(find "$dir" -type l)" ] || die "'$dir' contains symbolic links; a bundle never does. Refusing it."
        listed=$(sed 's/^[0-9a-f]*  //' "$dir/MANIFEST.sha256" | LC_ALL=C sort)
        found=$(cd "$dir" && find . -type f ! -path ./MANIFEST.sha256 | sed 's|^\./||' | LC_ALL=C sort)
        [ "$listed" = "$found" ] || die "'$dir' holds files that MANIFEST.sha256 does not list (or lacks listed ones); refusing the bundle"
    fi
}

# release_chose_plan REL: an installed release whose run.toml `doctor --choose-plan` rewrote
# (plan.json): every other file must match; the health check then checks run.toml against the
# digests plan.json records.
release_chose_plan() {
    [ -f "$1/plan.json" ] || return 1
    grep -v '  run\.toml$' "$1/MANIFEST.sha256" >"$1/.manifest.rest" || return 1
    rc=0; (cd "$1" && sha256_check .manifest.rest) || rc=1
    rm -f "$1/.manifest.rest"
    return $rc
}

bundle_id() {  # first 12 hex digits of the manifest's own sha256
    if command -v sha256sum >/dev/null 2>&1; then
        sha256sum "$1/MANIFEST.sha256" | cut -c1-12
    else
        "$PYTHON" -c 'import hashlib,sys; print(hashlib.sha256(open(sys.argv[1],"rb").read()).hexdigest()[:12])' "$1/MANIFEST.sha256"
    fi
}

# ---------------------------------------------------------------- helpers
swap_link() {  # swap_link TARGET NAME: point PREFIX/NAME at TARGET atomically
    ln -sfn "$1" "$PREFIX/.$2.tmp"
    if ! mv -T "$PREFIX/.$2.tmp" "$PREFIX/$2" 2>/dev/null; then
        "$PYTHON" -c 'import os,sys; os.replace(sys.argv[1], sys.argv[2])' "$PREFIX/.$2.tmp" "$PREFIX/$2"
    fi
}

conf_get() {  # conf_get KEY: value from install.conf (plain KEY=value lines, never sourced)
    [ -f "$PREFIX/install.conf" ] && sed -n "s/^$1=//p" "$PREFIX/install.conf" | tail -n 1 || true
}

lock() {
    mkdir -p "$PREFIX"
    mkdir "$PREFIX/.lock" 2>/dev/null \
        || die "another install is running in '$PREFIX' (or one was killed: remove '$PREFIX/.lock')"
    trap 'rmdir "$PREFIX/.lock" 2>/dev/null || true' EXIT
    trap 'exit 130' INT TERM
}

# How the runner is supervised: systemd (system unit, as root or with passwordless sudo),
# user (a systemd --user unit: no root needed), or process (background process + pidfile).
choose_mode() {
    case "${EDGECAM_SERVICE_MODE:-}" in
        systemd|user|process) echo "$EDGECAM_SERVICE_MODE"; return ;;
        '') ;;
        *) die "EDGECAM_SERVICE_MODE must be systemd, user or process, got '$EDGECAM_SERVICE_MODE'" ;;
    esac
    if [ "$SYSTEMD" = no ] || ! command -v systemctl >/dev/null 2>&1 || [ ! -d /run/systemd/system ]; then
        echo process
    elif [ "$(id -u)" = 0 ] || { command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; }; then
        echo systemd
    else
        echo user
    fi
}

service_mode() {
    m=$(conf_get SERVICE_MODE)
    if [ -n "$m" ]; then echo "$m"; else choose_mode; fi
}

ctl() {  # systemctl for the installed mode
    if [ "$(service_mode)" = user ]; then systemctl --user "$@"; else as_root systemctl "$@"; fi
}

as_root() {
    if [ "$(id -u)" = 0 ]; then "$@"; elif command -v sudo >/dev/null 2>&1; then sudo -n "$@"; else
        die "'$*' needs root: run install.sh as root, allow passwordless sudo, or use --no-systemd"
    fi
}

# ---------------------------------------------------------------- the runner without systemd
PIDFILE_REL=run/edgecam.pid
running_pid() {
    pidfile=$PREFIX/$PIDFILE_REL
    [ -f "$pidfile" ] || return 1
    pid=$(cat "$pidfile")
    case "$pid" in *[!0-9]*|'') return 1 ;; esac
    kill -0 "$pid" 2>/dev/null || return 1
    # Refuse to signal a recycled pid that is no longer our runner.
    if [ -r "/proc/$pid/cmdline" ] && ! tr '\0' ' ' <"/proc/$pid/cmdline" | grep -q edgecam; then
        return 1
    fi
    echo "$pid"
}

process_start() {
    mkdir -p "$PREFIX/run" "$PREFIX/data"
    if pid=$(running_pid); then say "runner already running (pid $pid)"; return 0; fi
    cd "$PREFIX/data"
    # Detached from this (possibly SSH) session, all descriptors redirected so ssh returns.
    if command -v setsid >/dev/null 2>&1; then DETACH="setsid"; else DETACH="nohup"; fi
    $DETACH "$PREFIX/current/venv/bin/edgecam" run --config "$PREFIX/current/run.toml" \
        </dev/null >>"$PREFIX/data/edgecam.log" 2>&1 &
    echo $! >"$PREFIX/$PIDFILE_REL"
    cd - >/dev/null
    say "runner started in the background (pid $(cat "$PREFIX/$PIDFILE_REL"), log $PREFIX/data/edgecam.log)"
}

process_stop() {
    if pid=$(running_pid); then
        kill "$pid" 2>/dev/null || true
        i=0
        while kill -0 "$pid" 2>/dev/null && [ $i -lt 50 ]; do sleep 0.2; i=$((i + 1)); done
        kill -0 "$pid" 2>/dev/null && kill -9 "$pid" 2>/dev/null || true
        say "runner stopped (pid $pid)"
    fi
    rm -f "$PREFIX/$PIDFILE_REL"
}

# ---------------------------------------------------------------- service control
render_unit() {
    [ -n "$RUN_USER" ] || RUN_USER=$(conf_get RUN_USER)
    check_user "$RUN_USER"
    if [ -n "$RUN_USER" ]; then user_line="User=$RUN_USER"; else
        user_line="# No User=: the service runs as root. Pass --user NAME to install.sh to change it."
    fi
    if [ "$(service_mode)" = user ]; then
        # A user manager runs units as its user: it cannot change user or groups, has no
        # network-online.target, and its mount sandboxing needs user namespaces.
        user_line="# A systemd --user unit: runs as $(id -un)."
        drop='/^User=/d;/^SupplementaryGroups=/d;/network-online.target/d;/^PrivateTmp=/d;/^ProtectSystem=/d'
        drop="$drop;s/^WantedBy=multi-user.target/WantedBy=default.target/"
    else
        drop=''
    fi
    sed -e "s|@PREFIX@|$PREFIX|g" -e "s|@USER_LINE@|$user_line|" -e "$drop" "$PREFIX/current/edgecam.service" \
        >"$PREFIX/.edgecam.service.tmp"
    mv "$PREFIX/.edgecam.service.tmp" "$PREFIX/edgecam.service"
}

service_restart() {
    case "$(service_mode)" in
        systemd)
            as_root cp "$PREFIX/edgecam.service" "/etc/systemd/system/$SERVICE.service"
            ctl daemon-reload
            ctl enable --quiet "$SERVICE"
            ctl stop "$SERVICE" 2>/dev/null || true
            mark_start
            ctl start "$SERVICE"
            say "systemd service '$SERVICE' enabled and restarted"
            ;;
        user)
            mkdir -p "$HOME/.config/systemd/user"
            cp "$PREFIX/edgecam.service" "$HOME/.config/systemd/user/$SERVICE.service"
            ctl daemon-reload
            ctl enable --quiet "$SERVICE"
            ctl stop "$SERVICE" 2>/dev/null || true
            mark_start
            ctl start "$SERVICE"
            say "systemd user service '$SERVICE' enabled and restarted (no root: to start it at boot without a login, run once: sudo loginctl enable-linger $(id -un))"
            ;;
        *)
            process_stop
            mark_start
            process_start
            ;;
    esac
}

# The runner's last (re)start, after the old runner stopped: telemetry newer than this file came
# from the release now running (an old run.jsonl is still there until the runner rotates it).
STARTED_REL=run/started
mark_start() { mkdir -p "$PREFIX/run" && : >"$PREFIX/$STARTED_REL"; }

runner_alive() {
    if [ "$(service_mode)" = process ]; then running_pid >/dev/null; else ctl is-active --quiet "$SERVICE"; fi
}

runner_log_tail() {  # the runner's last log lines, for the reason of a failure
    if [ "$(service_mode)" = process ]; then
        tail -n 15 "$PREFIX/data/edgecam.log" 2>/dev/null || true
    elif [ "$(service_mode)" = user ]; then
        journalctl --user -u "$SERVICE" -n 15 --no-pager -o cat 2>/dev/null || true
    else
        as_root journalctl -u "$SERVICE" -n 15 --no-pager -o cat 2>/dev/null || true
    fi
}

# fresh_telemetry FILE: FILE has data written since the runner's last start.
fresh_telemetry() {
    [ -s "$1" ] || return 1
    [ -f "$PREFIX/$STARTED_REL" ] || return 0
    [ -n "$(find "$1" -newer "$PREFIX/$STARTED_REL" 2>/dev/null)" ]
}

# health_check REL: the release loads its bundled model and explains a test frame, before
# `current` may point at it. On failure nothing is switched and the running release stays.
health_check() {
    # A bundle with several precision plans: the device times them and runs the fastest (plan.json).
    choose=""; [ -f "$1/plans.json" ] && choose=--choose-plan
    say "health check: $1/venv/bin/edgecam doctor --bundle $1${choose:+ $choose}"
    # shellcheck disable=SC2086  # $choose is one flag or nothing
    if report=$(cd "$PREFIX/data" && "$1/venv/bin/edgecam" doctor --bundle "$1" --repeats 1 $choose 2>&1); then
        printf '%s\n' "$report" | grep -E '^\[ ok \] (interpreter|plan|model) ' | sed 's/^/install.sh:   /' || true
        return 0
    fi
    printf '%s\n' "$report" | sed 's/^/install.sh:   /' >&2
    cur=$(readlink "$PREFIX/current" 2>/dev/null || true)
    die "health check failed: release $(basename "$1") cannot explain a test frame (see the [FAIL] lines above); current stays at ${cur:-nothing} and the running release was not touched"
}

service_stop() {
    if [ "$(service_mode)" = process ]; then process_stop; else ctl stop "$SERVICE"; fi
}

telemetry_path() {  # the [run] log key of the current run.toml, relative to data/
    log=$(sed -n 's/^log *= *"\(.*\)" *$/\1/p' "$PREFIX/current/run.toml" | head -n 1)
    [ -n "$log" ] || return 1
    case "$log" in /*) echo "$log" ;; *) echo "$PREFIX/data/$log" ;; esac
}

show_status() {
    [ -L "$PREFIX/current" ] || die "nothing is installed in '$PREFIX'"
    say "current  -> $(readlink "$PREFIX/current")"
    [ -L "$PREFIX/previous" ] && say "previous -> $(readlink "$PREFIX/previous")"
    if [ "$(service_mode)" != process ]; then
        ctl status "$SERVICE" --no-pager --lines=5 || true
    elif pid=$(running_pid); then
        say "runner: running (pid $pid, no systemd)"
    else
        say "runner: not running (no systemd); last log lines:"
        tail -n 5 "$PREFIX/data/edgecam.log" 2>/dev/null || true
    fi
    if tel=$(telemetry_path); then
        i=0
        while ! fresh_telemetry "$tel" && [ $i -lt $((WAIT * 5)) ]; do
            # A runner that already died will not write any: stop waiting (after a 1 s grace).
            if [ "$EXPECT_TELEMETRY" = 1 ] && [ $i -ge 5 ] && ! runner_alive; then break; fi
            sleep 0.2; i=$((i + 1))
        done
        if fresh_telemetry "$tel"; then
            say "first telemetry lines ($tel):"
            head -n 3 "$tel" | cut -c1-240
            return 0
        fi
        say "no telemetry yet in $tel"
    elif [ "$EXPECT_TELEMETRY" = 1 ]; then
        # No log configured: the best sign of health left is a runner still alive after WAIT.
        sleep "$WAIT"
        if runner_alive; then say "runner alive after $WAIT s (run.toml sets no log to watch)"; return 0; fi
    fi
    if [ "$EXPECT_TELEMETRY" = 1 ]; then
        if runner_alive; then why="sent no telemetry within $WAIT s"; else why="stopped without sending telemetry"; fi
        echo "install.sh: the runner of $(readlink "$PREFIX/current") $why; its last log lines:" >&2
        runner_log_tail | cut -c1-300 | sed 's/^/install.sh:   /' >&2
        exit 3
    fi
}

# ---------------------------------------------------------------- install
do_install() {
    [ ! -f "$HERE/.complete" ] || die "'$HERE' is an installed release; install from an extracted bundle (here use --rollback, --status, --start or --stop)"
    verify_bundle "$HERE" strict
    id=$(bundle_id "$HERE")
    lock
    mkdir -p "$PREFIX/releases" "$PREFIX/data" "$PREFIX/run"
    rel=$PREFIX/releases/$id
    [ -n "$SYSTEM_SITE" ] || SYSTEM_SITE=$(sed -n 's/^EDGECAM_SYSTEM_SITE_PACKAGES=//p' "$HERE/bundle.env")
    if [ -f "$rel/.complete" ] && { (verify_bundle "$rel") >/dev/null 2>&1 || release_chose_plan "$rel"; }; then
        say "release $id is already installed: reusing it"
    else
        rm -rf "$rel"
        mkdir "$rel"
        (cd "$HERE" && sed 's/^[0-9a-f]*  //' MANIFEST.sha256 | while IFS= read -r f; do
            mkdir -p "$rel/$(dirname "$f")" && cp -p "$f" "$rel/$f"
        done)
        cp -p "$HERE/MANIFEST.sha256" "$rel/MANIFEST.sha256"
        verify_bundle "$rel"
        venv_flags=""
        [ "$SYSTEM_SITE" = 1 ] && venv_flags=--system-site-packages
        # An --extra-site that has pip lends it to the venv (CI: no 3 s ensurepip per release).
        [ -n "$EXTRA_SITE" ] && [ -d "$EXTRA_SITE/pip" ] && venv_flags="$venv_flags --without-pip"
        say "creating the virtual environment ($PYTHON $venv_flags)"
        # shellcheck disable=SC2086  # flags split on purpose; paths are checked to be plain above
        "$PYTHON" -m venv $venv_flags "$rel/venv" || die "'$PYTHON -m venv' failed: install python3-venv (apt) or pass --python"
        if [ -n "$EXTRA_SITE" ]; then
            site=$("$rel/venv/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')
            echo "$EXTRA_SITE" >"$site/edgecam-extra-site.pth"
        fi
        pip="$rel/venv/bin/python -m pip --disable-pip-version-check --no-input -q"
        offline=""
        [ -d "$rel/wheels" ] && offline="--no-index --find-links $rel/wheels"
        if [ "$NO_DEPS" != 1 ]; then
            say "installing requirements.txt${offline:+ offline from wheels/}"
            # shellcheck disable=SC2086
            $pip install $offline -r "$rel/requirements.txt" || die "installing the requirements failed (see pip's message above)"
        fi
        # The wheel's own dependency list is not used: requirements.txt is the pinned device set.
        # --ignore-installed: an edgecam visible through --extra-site (CI) must not satisfy this.
        $pip install --no-index --no-deps --ignore-installed "$rel"/dist/*.whl || die "installing the edgecam wheel failed"
        "$rel/venv/bin/edgecam" --version >/dev/null || die "the installed edgecam does not start"
        touch "$rel/.complete"
        say "release $id installed in $rel"
    fi
    health_check "$rel"
    old=$(readlink "$PREFIX/current" 2>/dev/null || true)
    if [ "$old" != "releases/$id" ]; then
        [ -n "$old" ] && swap_link "$old" previous
        swap_link "releases/$id" current
        say "current -> releases/$id${old:+ (previous -> $old)}"
    fi
    # Keep only the current and previous releases.
    keep_prev=$(readlink "$PREFIX/previous" 2>/dev/null || true)
    for d in "$PREFIX"/releases/*; do
        [ -d "$d" ] || continue
        r=releases/$(basename "$d")
        [ "$r" = "releases/$id" ] || [ "$r" = "$keep_prev" ] || rm -rf "$d"
    done
    if [ -z "$RUN_USER" ]; then
        if [ "$(id -u)" != 0 ]; then RUN_USER=$(id -un); else RUN_USER=${SUDO_USER:-}; fi
    fi
    mode=$(choose_mode)
    old_mode=$(conf_get SERVICE_MODE)
    if [ -n "$old_mode" ] && [ "$old_mode" != "$mode" ]; then
        say "supervision changes from $old_mode to $mode: stopping the $old_mode runner"
        service_stop || true
    fi
    printf 'SERVICE_MODE=%s\nRUN_USER=%s\nPYTHON=%s\n' "$mode" "$RUN_USER" "$PYTHON" >"$PREFIX/.install.conf.tmp"
    mv "$PREFIX/.install.conf.tmp" "$PREFIX/install.conf"
    render_unit
    if [ "$NO_START" = 1 ]; then say "--no-start: not (re)starting the runner"; else service_restart; fi
}

do_rollback() {
    lock
    prev=$(readlink "$PREFIX/previous" 2>/dev/null || true)
    cur=$(readlink "$PREFIX/current" 2>/dev/null || true)
    [ -n "$prev" ] && [ -f "$PREFIX/$prev/.complete" ] \
        || die "no previous release to roll back to in '$PREFIX' (only one bundle was ever installed)"
    swap_link "$prev" current
    swap_link "$cur" previous
    say "rolled back: current -> $prev (previous -> $cur)"
    render_unit
    service_restart
}

case "$ACTION" in
    verify) verify_bundle "$HERE" strict; say "bundle $(bundle_id "$HERE") verified" ;;
    install) do_install ;;
    rollback) do_rollback ;;
    status) show_status ;;
    start) lock; service_restart ;;
    stop) lock; service_stop ;;
esac
