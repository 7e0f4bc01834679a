#!/bin/sh
# bwrap-exec.sh: run a command inside a nixsnake SIF image without apptainer.
#
#   sh bwrap-exec.sh [OPTIONS] IMAGE -- CMD [ARG...]
#
# Mounts the image's squashfs partition with squashfuse (a mount for this invocation
# only: in a user and mount namespace of its own where the node allows that, else on the
# host, unmounted on exit), builds the container's root with bubblewrap and runs CMD there,
# the way `apptainer exec --cleanenv` would. CMD's exit status is this script's exit
# status. POSIX sh, no Python: it runs once per Snakemake job.
#
# Options (each may be given as `--opt VALUE` or `--opt=VALUE`):
#   --bind SRC[:DST[:ro|rw]]  bind a host path (repeatable; apptainer's spec without
#                             ',' lists; paths must be absolute, without ':' ',' '^' or a
#                             newline and not ending in whitespace, like binds.py wants)
#   --pwd DIR                 working directory inside (default: the current directory,
#                             bound like apptainer binds it)
#   --pass NAME[=SOURCE]      set NAME inside to the value of NAME (or of SOURCE) in this
#                             script's environment, after 99-base.sh (like
#                             APPTAINERENV_NAME); unset stays unset. Values never appear
#                             on any command line.
#   --inject VAR              source the shell code held in the environment variable VAR
#                             inside, after 99-base.sh and the --pass values: the place and
#                             the way apptainer sources its /.inject-apptainer-env.sh. For
#                             the apptainer test stand-in (tests/standin), which writes that
#                             script like apptainer does; nixsnake itself never uses it
#   --nv                      NVIDIA GPUs: bind the host driver libraries (found with
#                             `ldconfig -p`) into /.singularity.d/libs and nvidia-smi & co.
#                             into /usr/bin; best effort, like apptainer --nv
#   --home SRC[:DST]          apptainer's --home: bind host directory SRC at DST (default
#                             SRC) and set HOME=DST inside (also with --contain)
#   --no-home                 do not bind $HOME
#   --contain                 like apptainer --contain: no $HOME, no current directory,
#                             private /tmp and /var/tmp, minimal /dev
#   --keep-env                like apptainer exec WITHOUT --cleanenv: the container starts
#                             from this script's environment, minus HOME, PATH,
#                             LD_LIBRARY_PATH, APPTAINER_* / SINGULARITY_* (the runtime's
#                             own settings), APPTAINERENV_* / SINGULARITYENV_* and the
#                             SOURCE variables of --pass; LANG is not reset to C
#
# What the container gets, mimicking apptainer's defaults with --cleanenv:
#   - the image's tree read-only: its root bound as a whole; a directory that must hold a
#     missing mount point is rebuilt as an "underlay" (an empty directory, a tmpfs at the
#     top level, with the image's entries bound into it; when a missing mount point lies in
#     no top-level directory of the image, / itself is one, its symlinks recreated), and
#     read-only afterwards;
#   - host /proc, /sys (ro), /dev, /tmp, /var/tmp, $HOME, the current directory, host
#     /etc/resolv.conf, /etc/hosts, /etc/localtime; the caller's passwd/group entry is
#     appended to the image's files when it is missing (non-root callers);
#   - environment: LANG=C, HOME, a default PATH, TERM and proxy variables, APPTAINER_NAME
#     & co. (with --keep-env: the host environment as described there, then HOME, PATH,
#     LD_LIBRARY_PATH and APPTAINER_NAME & co.); then /.singularity.d/env/*.sh are
#     sourced in order, and the --pass variables are set right after 99-base.sh (or at
#     once if the image has no env directory) -- exactly where apptainer injects
#     APPTAINERENV_* values. Images made by nixsnake hold that result (without a GPU) in
#     /.nixsnake/environment: then bwrap sets it and starts CMD itself, with no shell
#     inside, and adds the NVIDIA link directory to LD_LIBRARY_PATH when --nv bound the
#     driver (the env script adds it where it finds the driver). The scripts are sourced
#     instead when the image has env scripts that file does not stand for (an image
#     derived from ours), with --inject, or when CMD is not in the image.
#
# Exit status: CMD's own status (127: CMD is not in the image); otherwise 64 usage
# error, 66 image missing, 69 squashfuse/bwrap/FUSE unavailable, 70 not a squashfs/SIF
# image.
#
# Environment: NIXSNAKE_BWRAP_MOUNT=host mounts the image on the host even where the
# namespace would work. Names starting with _nx_ are this script's own.
#
# Known limits: with the mount on the host, a SIGKILL of this script leaves the squashfuse
# mount under ${TMPDIR:-/tmp}/nixsnake-bwrap.* behind (harmless, read-only; `fusermount3
# -u` removes it); in the namespace nothing is left but the empty directory
# ${TMPDIR:-/tmp}/nixsnake-bwrap-ns.UID, reused by the next job (a tmp cleaner that
# removes it while a job is between its mount and bwrap's start takes that job's image
# away). A SIGTERM sent to this script alone (not to its process group) does not stop
# CMD: it is noted and the script exits once CMD ends; in the namespace, neither does a
# SIGKILL of this script alone. Kill the process group, as a terminal's Ctrl-C and SLURM
# (the job's cgroup) do.

# --- generated from snakemake_deploy_nixsnake by scripts/generate.py: do not edit ---
_nx_sif_offset=32768
_nx_env_file=/.nixsnake/environment
_nx_env_scripts='90-nixsnake.sh 99-base.sh'
_nx_bind_forbidden=',:^'
_nx_not_passable() { case $1 in BASHOPTS | BASH_ENV | CDPATH | ENV | EUID | GID | HOME | IFS | LD_LIBRARY_PATH | LINENO | OLDPWD | OPTARG | OPTIND | PATH | PPID | PS1 | PS2 | PS4 | PWD | SHELLOPTS | UID | APPTAINER* | SINGULARITY* | _nx_*) return 0 ;; esac; return 1; }
_nx_nv_lib() { case $1 in libcuda.so* | libcudadebugger.so* | libnvidia-*.so* | libnvcuvid.so* | libnvoptix.so* | libEGL_nvidia.so* | libGLESv1_CM_nvidia.so* | libGLESv2_nvidia.so* | libGLX_nvidia.so* | libvdpau_nvidia.so*) return 0 ;; esac; return 1; }
_nx_nv_bins='nvidia-smi nvidia-debugdump nvidia-persistenced nvidia-cuda-mps-control nvidia-cuda-mps-server'
_nx_nv_probe='libcuda.so.1 libnvidia-ml.so.1'
_nx_nv_link_dir=/.nixsnake/nvidia/libs
# --- end generated ---
# (_nx_sif_offset: where a nixsnake SIF's squashfs starts; plain squashfs files, offset 0,
# are accepted too. _nx_env_file: the image's environment as NAME=VALUE lines, standing
# for the env scripts _nx_env_scripts and no others. _nx_bind_forbidden: characters no bind path may hold. The
# _nx_not_passable: names --pass refuses. _nx_nv_lib, _nx_nv_bins: what --nv binds,
# the lists doctor's GPU check judges for this runtime. _nx_nv_probe: when --nv binds one
# of these, _nx_nv_link_dir goes on LD_LIBRARY_PATH, as the image's 90-nixsnake.sh does.)
_nx_default_path=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
_nx_nl='
'

_nx_die() { # _nx_die CODE MESSAGE [HINT]
    printf 'nixsnake bwrap-exec: error: %s\n' "$2" >&2
    [ -z "${3-}" ] || printf 'nixsnake bwrap-exec: hint: %s\n' "$3" >&2
    [ -z "$_nx_tell" ] || printf x >&9 # (said: the host run must not say it again)
    exit "$1"
}
_nx_warn() { printf 'nixsnake bwrap-exec: warning: %s\n' "$1" >&2; }

_nx_q() { # _nx_q VALUE: set _nx_r to VALUE as one single-quoted shell word
    _nx_s=$1
    _nx_r=
    while :; do
        case $_nx_s in
        *\'*)
            _nx_r=$_nx_r${_nx_s%%\'*}\'\\\'\'
            _nx_s=${_nx_s#*\'}
            ;;
        *)
            _nx_r=\'$_nx_r$_nx_s\'
            return 0
            ;;
        esac
    done
}

_nx_env() { # _nx_env LIST NAME VALUE: add NAME=VALUE to LIST (pre or post) twice:
    # as shell code for the inner shell (_nx_LIST) and as bwrap words (_nx_LISTw)
    _nx_q "$3"
    eval "_nx_$1=\"\${_nx_$1}$2=\$_nx_r; export $2\$_nx_nl\"; _nx_${1}w=\"\${_nx_${1}w} --setenv $2 \$_nx_r\""
}

_nx_abs() { # _nx_abs WHAT PATH: reject what apptainer's --bind grammar cannot carry
    case $2 in
    /*) ;;
    *) _nx_die 64 "$1 must be an absolute path: '$2'" ;;
    esac
    case $2 in
    *["$_nx_bind_forbidden"]* | *"$_nx_nl"*) _nx_die 64 "$1 must not contain any of '$_nx_bind_forbidden' or a newline: '$2'" ;;
    *[[:space:]]) _nx_die 64 "$1 must not end in whitespace (apptainer's --bind trims it): '$2'" ;;
    esac
}

# --- a private mount ------------------------------------------------------------------------
# The caller's real uid and effective gid (id -u, id -g), without a fork; in the namespace
# below, the host's (handed down: there they read 0). _nx_tell: this is the run in the
# namespace and has not yet told the host run (fd 9) that it took the job over.
# _nx_noint: SIGINT is blocked or ignored here, and so in squashfuse (see _nx_userns).
_nx_tell=
_nx_sig=
_nx_noint=
if [ -z "${_nx_in_ns-}" ]; then
    _nx_uid=
    _nx_gid=
    while read -r _nx_a _nx_b _nx_c _nx_rest; do
        case $_nx_a in
        Uid:) _nx_uid=$_nx_b ;;
        Gid:) _nx_gid=$_nx_c ;;
        SigBlk: | SigIgn:) # (SIGINT is bit 1 of the mask's last hex digit)
            case ${_nx_b#"${_nx_b%?}"} in [2367abefABEF]) _nx_noint=1 ;; esac
            [ "$_nx_a" = SigBlk: ] || break
            ;;
        esac
    done </proc/self/status
    [ -n "$_nx_uid" ] || _nx_uid=$(id -u)
    [ -n "$_nx_gid" ] || _nx_gid=$(id -g)
else
    exec 2>&7 7>&- # (stderr, kept from unshare's own messages)
    _nx_tell=1
fi

# Where the kernel lets users mount FUSE in a user namespace of their own, this script runs
# again in a new user and mount namespace (unshare) and mounts the image there: the mount
# is seen by no other process on the node, needs no setuid fusermount3 to make or undo,
# and cannot outlive the job -- squashfuse unmounts itself a second or two after the job's
# last file in the image is closed (its idle timeout), after a SIGKILL too. Elsewhere (no
# unshare, user namespaces or FUSE in them off, a squashfuse without `timeout`, a plain
# squashfs image, SIGINT ignored or blocked, NIXSNAKE_BWRAP_MOUNT=host) the image is
# mounted on the host, as before.
# The run in the namespace writes one byte to fd 9 once it has mounted the image (or
# failed with an error of its own): without that byte, this run goes on on the host.
_nx_userns() { # can the namespace work here? (only builtins: no fork)
    [ "${NIXSNAKE_BWRAP_MOUNT-}" != host ] || return 1
    # squashfuse 0.1.105 ends on its idle timeout only if SIGINT reaches it: with SIGINT
    # ignored (a background job of a script, nohup) or blocked, it would never end
    [ -z "$_nx_noint" ] || return 1
    command -v unshare >/dev/null 2>&1 && command -v squashfuse_ll >/dev/null 2>&1 || return 1
    [ -r /dev/fuse ] && [ -w /dev/fuse ] || return 1
    for _nx_f in max_user_namespaces=0 unprivileged_userns_clone=0 apparmor_restrict_unprivileged_userns=1; do
        for _nx_d in /proc/sys/user /proc/sys/kernel; do
            { read -r _nx_v <"$_nx_d/${_nx_f%=*}"; } 2>/dev/null || continue
            [ "$_nx_v" != "${_nx_f#*=}" ] || return 1
        done
    done
}
# Note the signal and carry on: CMD (in the same process group) gets it too, and we
# exit with CMD's status once it ends. Caught (not ignored) signals are reset to their
# default in CMD, so Ctrl-C still stops CMD and an interactive shell still ignores it.
_nx_note_signals() {
    trap '_nx_sig=130' INT
    trap '_nx_sig=129' HUP
    trap '_nx_sig=143' TERM
}
if [ -z "${_nx_in_ns-}" ] && _nx_userns; then
    _nx_note_signals
    _nx_rc=0
    _nx_ok=
    # (exec: no shell in between that a signal could end while the job goes on -- bash
    # forks for a command with redirections in $(...))
    {
        _nx_ok=$(
            export _nx_in_ns=1 _nx_uid _nx_gid
            exec unshare --user --map-root-user --mount /bin/sh "$0" "$@" 7>&2 2>/dev/null 9>&1 1>&8 8>&-
        ) || _nx_rc=$?
    } 8>&1
    [ -z "$_nx_ok" ] || exit "$_nx_rc"
    # a signal while the namespace was tried (the job did not start): stop here
    [ -z "$_nx_sig" ] || exit "$_nx_sig"
    trap - INT HUP TERM
fi

_nx_binds=      # lines "src:dst:mode"
_nx_pwd=
_nx_nv=
_nx_home=1
_nx_contain=
_nx_keepenv=
_nx_home_src=   # --home SRC[:DST]
_nx_home_dst=
_nx_passfrom=$_nx_nl # SOURCE variables of --pass (not forwarded with --keep-env)
_nx_post=       # the --pass variables (set after 99-base.sh; see _nx_env)
_nx_postw=
_nx_inject=     # --inject VAR
_nx_image=

while [ "$#" -gt 0 ]; do
    _nx_opt=$1
    _nx_val=
    _nx_has=
    case $_nx_opt in
    --*=*)
        _nx_val=${_nx_opt#*=}
        _nx_opt=${_nx_opt%%=*}
        _nx_has=1
        ;;
    esac
    case $_nx_opt in
    --bind | --pwd | --pass | --home | --inject)
        if [ -z "$_nx_has" ]; then
            [ "$#" -ge 2 ] || _nx_die 64 "option $_nx_opt needs a value"
            _nx_val=$2
            shift
        fi
        shift
        ;;
    --nv | --no-home | --contain | --keep-env | --help | -h)
        [ -z "$_nx_has" ] || _nx_die 64 "option $_nx_opt takes no value"
        shift
        ;;
    --)
        _nx_die 64 "missing IMAGE before '--'"
        ;;
    -*)
        _nx_die 64 "unknown option: $_nx_opt"
        ;;
    *)
        _nx_image=$1
        shift
        break
        ;;
    esac
    case $_nx_opt in
    --bind)
        _nx_src=${_nx_val%%:*}
        case $_nx_val in *:*) _nx_rest=${_nx_val#*:} ;; *) _nx_rest= ;; esac
        _nx_dst=${_nx_rest%%:*}
        case $_nx_rest in *:*) _nx_mode=${_nx_rest#*:} ;; *) _nx_mode=rw ;; esac
        [ -n "$_nx_dst" ] || _nx_dst=$_nx_src
        case $_nx_mode in
        ro | rw) ;;
        *) _nx_die 64 "bind '$_nx_val': options must be 'ro' or 'rw', got '$_nx_mode'" ;;
        esac
        _nx_abs "bind source" "$_nx_src"
        _nx_abs "bind destination" "$_nx_dst"
        _nx_binds=$_nx_binds$_nx_src:$_nx_dst:$_nx_mode$_nx_nl
        ;;
    --pwd)
        case $_nx_val in
        /*) ;;
        *) _nx_die 64 "--pwd must be an absolute path: '$_nx_val'" ;;
        esac
        _nx_pwd=$_nx_val
        ;;
    --pass)
        _nx_name=${_nx_val%%=*}
        _nx_from=${_nx_val#*=}
        for _nx_v in "$_nx_name" "$_nx_from"; do
            case $_nx_v in
            '' | [0-9]* | *[!A-Za-z0-9_]*) _nx_die 64 "--pass: not a variable name: '$_nx_v'" ;;
            esac
            [ "$_nx_from" != "$_nx_name" ] || break
        done
        ! _nx_not_passable "$_nx_name" ||
            _nx_die 64 "--pass: variable '$_nx_name' cannot be passed into the container"
        case $_nx_from in _nx_*) _nx_die 64 "--pass: cannot read '$_nx_from'" ;; esac
        [ "$_nx_from" = "$_nx_name" ] || _nx_passfrom=$_nx_passfrom$_nx_from$_nx_nl
        eval "_nx_isset=\${$_nx_from+x}"
        [ -z "$_nx_isset" ] || eval "_nx_env post $_nx_name \"\$$_nx_from\""
        ;;
    --inject)
        case $_nx_val in
        '' | [0-9]* | *[!A-Za-z0-9_]* | _nx_*) _nx_die 64 "--inject: not a variable name: '$_nx_val'" ;;
        esac
        _nx_inject=$_nx_val
        _nx_passfrom=$_nx_passfrom$_nx_val$_nx_nl
        ;;
    --home)
        _nx_home_src=${_nx_val%%:*}
        case $_nx_val in *:*) _nx_home_dst=${_nx_val#*:} ;; *) _nx_home_dst=$_nx_home_src ;; esac
        _nx_abs "--home source" "$_nx_home_src"
        _nx_abs "--home destination" "$_nx_home_dst"
        [ -d "$_nx_home_src" ] || _nx_die 64 "--home: not a directory: '$_nx_home_src'"
        ;;
    --keep-env) _nx_keepenv=1 ;;
    --nv) _nx_nv=1 ;;
    --no-home) _nx_home= ;;
    --contain) _nx_contain=1 ;;
    --help | -h)
        sed -n '2,/^$/s/^# \{0,1\}//p' "$0"
        [ -z "$_nx_tell" ] || printf x >&9
        exit 0
        ;;
    esac
done

[ -n "$_nx_image" ] || _nx_die 64 "usage: bwrap-exec.sh [OPTIONS] IMAGE -- CMD [ARG...]"
[ "${1-}" = -- ] || _nx_die 64 "expected '--' after IMAGE, got '${1-}'"
shift
[ "$#" -gt 0 ] || _nx_die 64 "no command given after '--'"

case $_nx_image in
/*) ;;
*) _nx_image=${PWD:-$(pwd)}/$_nx_image ;;
esac
[ -f "$_nx_image" ] || _nx_die 66 "image not found: $_nx_image"

# --- tools ----------------------------------------------------------------------------
command -v bwrap >/dev/null 2>&1 ||
    _nx_die 69 "required tool 'bwrap' not found" \
        "install bubblewrap (Debian: apt-get install bubblewrap), or use the apptainer runtime"
if command -v squashfuse_ll >/dev/null 2>&1; then
    _nx_fuse=squashfuse_ll
elif command -v squashfuse >/dev/null 2>&1; then
    _nx_fuse=squashfuse
else
    _nx_die 69 "required tool 'squashfuse' not found" \
        "install squashfuse (Debian: apt-get install squashfuse fuse3), or use the apptainer runtime"
fi

# --- signals and cleanup ----------------------------------------------------------------
_nx_run=
_nx_etc= # directory of the passwd/group copies, made only when needed
_nx_mnt=
_nx_mounted=
_nx_cleanup() {
    if [ -n "$_nx_mounted" ]; then
        if fusermount3 -u "$_nx_mnt" 2>/dev/null || fusermount -u "$_nx_mnt" 2>/dev/null ||
            umount "$_nx_mnt" 2>/dev/null || fusermount3 -uz "$_nx_mnt" 2>/dev/null ||
            fusermount -uz "$_nx_mnt" 2>/dev/null; then
            _nx_mounted=
        else
            _nx_warn "could not unmount $_nx_mnt; leaving it in place"
            _nx_run=
        fi
    fi
    # never rm -r while the image may still be mounted below it
    if [ -n "$_nx_run" ] && [ -z "$_nx_mounted" ]; then
        rm -rf "$_nx_run" ${_nx_etc:+"$_nx_etc"}
        _nx_run=
        _nx_etc=
    elif [ -n "$_nx_etc" ]; then
        rm -rf "$_nx_etc"
        _nx_etc=
    fi
}
trap '_nx_cleanup' EXIT
_nx_note_signals

if [ -n "${_nx_in_ns-}" ]; then
    # The mount point: one directory per user under TMPDIR, reused by every job (the mount
    # on it is in this namespace only; on the host it stays empty). squashfuse_ll's
    # `timeout`: it unmounts itself once nothing in the image has been open for a second,
    # so fd 5 holds the image's root open until bwrap ends; squashfuse gets none of the
    # job's descriptors (it outlives the job by that second).
    # (mkdir may lose a race with another job's: the directory is there all the same)
    _nx_mnt=${TMPDIR:-/tmp}/nixsnake-bwrap-ns.$_nx_uid
    { [ -d "$_nx_mnt" ] || mkdir -m 700 "$_nx_mnt" || [ -d "$_nx_mnt" ]; } 2>/dev/null &&
        [ ! -L "$_nx_mnt" ] && [ -O "$_nx_mnt" ] &&
        squashfuse_ll -o "offset=$_nx_sif_offset,timeout=1" "$_nx_image" "$_nx_mnt" </dev/null >/dev/null 2>&1 \
            3>&- 4>&- 5>&- 6>&- 8>&- 9>&- &&
        { exec 5<"$_nx_mnt"; } 2>/dev/null || exit 1 # (nothing said: the host run mounts it)
    # fd 5 holds the image open, if it is still mounted: squashfuse may have timed out on a
    # stalled node before the open, which then holds the empty directory (nothing in it)
    _nx_f=
    for _nx_f in "$_nx_mnt"/* "$_nx_mnt"/.[!.]*; do
        [ ! -e "$_nx_f" ] || break
        _nx_f=
    done
    [ -n "$_nx_f" ] || exit 1
    printf x >&9
    exec 9>&-
    _nx_tell=
else
    # The mount point: a new directory (mkdir fails on anything already there, a symlink
    # included), named after this process; mktemp only if that name is taken (one fork).
    _nx_d=${TMPDIR:-/tmp}/nixsnake-bwrap.$$
    if mkdir -m 700 "$_nx_d" 2>/dev/null; then
        _nx_run=$_nx_d
    else
        _nx_run=$(mktemp -d "${TMPDIR:-/tmp}/nixsnake-bwrap.XXXXXX") ||
            { _nx_run= && _nx_die 70 "cannot create a temporary directory under ${TMPDIR:-/tmp}"; }
    fi
    _nx_mnt=$_nx_run

    # --- image ----------------------------------------------------------------------------
    # Mount at the SIF's partition offset first: squashfuse checks the superblock itself. Only
    # when that fails is the magic read (dd) to tell a plain squashfs (offset 0) and a broken
    # image from a file that is no image at all.
    _nx_offset=$_nx_sif_offset
    _nx_mount() { _nx_err=$("$_nx_fuse" -o "offset=$_nx_offset" "$_nx_image" "$_nx_mnt" 2>&1); }
    if ! _nx_mount; then
        if [ "$(dd if="$_nx_image" bs=4 skip=$((_nx_sif_offset / 4)) count=1 2>/dev/null)" = hsqs ]; then
            false # a squashfs where a SIF's is, that does not mount
        elif [ "$(dd if="$_nx_image" bs=4 count=1 2>/dev/null)" = hsqs ]; then
            _nx_offset=0
            _nx_mount
        else
            _nx_die 70 "$_nx_image: not a nixsnake image (no squashfs at byte $_nx_sif_offset)" \
                "rebuild it with 'nixsnake build'"
        fi || _nx_die 69 "mounting $_nx_image with $_nx_fuse failed: $_nx_err" \
            "FUSE must work on this node (/dev/fuse and a setuid fusermount3); apt-get install fuse3"
    fi
    _nx_mounted=1
fi

# --- mounts after the image, in order: "kind<TAB>src<TAB>dst" lines ------------------------
_nx_tab='	'
_nx_extra=
_nx_add() { # (a mount already listed -- /tmp bound again as a bind or the workdir -- once)
    case $_nx_nl$_nx_extra in
    *"$_nx_nl$1$_nx_tab$2$_nx_tab$3$_nx_nl"*) ;;
    *) _nx_extra=$_nx_extra$1$_nx_tab$2$_nx_tab$3$_nx_nl ;;
    esac
}

_nx_add bind /proc /proc
_nx_add ro-bind /sys /sys
if [ -n "$_nx_contain" ]; then
    _nx_add dev - /dev
    _nx_add tmpfs - /tmp
    _nx_add tmpfs - /var/tmp
    _nx_home=
else
    _nx_add dev-bind /dev /dev
    [ ! -d /tmp ] || _nx_add bind /tmp /tmp
    [ ! -d /var/tmp ] || _nx_add bind /var/tmp /var/tmp
fi
_nx_homedir=${HOME:-/}
if [ -n "$_nx_home_src" ]; then
    # apptainer --home: the given directory is HOME inside and is bound even with --contain
    _nx_homedir=$_nx_home_dst
    _nx_add bind "$_nx_home_src" "$_nx_home_dst"
elif [ -n "$_nx_home" ] && [ "$_nx_homedir" != / ] && [ -d "$_nx_homedir" ]; then
    case $_nx_homedir in
    *"$_nx_nl"*) ;;
    *) _nx_add bind "$_nx_homedir" "$_nx_homedir" ;;
    esac
fi
for _nx_f in /etc/resolv.conf /etc/hosts /etc/localtime; do
    [ ! -e "$_nx_f" ] || _nx_add ro-bind "$_nx_f" "$_nx_f"
done
if [ "$_nx_uid" != 0 ]; then
    # apptainer appends the caller's entry to the image's passwd/group ("config passwd")
    for _nx_db in passwd group; do
        [ -f "$_nx_mnt/etc/$_nx_db" ] || continue
        if [ "$_nx_db" = passwd ]; then
            _nx_id=$_nx_uid
        else
            _nx_id=$_nx_gid
        fi
        # the image's file, read once: is the id there, and its text for the copy
        _nx_have=
        _nx_text=
        while IFS= read -r _nx_l || [ -n "$_nx_l" ]; do
            _nx_text=$_nx_text$_nx_l$_nx_nl
            case $_nx_l in *:*:*)
                _nx_c=${_nx_l#*:}
                _nx_c=${_nx_c#*:}
                [ "${_nx_c%%:*}" != "$_nx_id" ] || _nx_have=1
                ;;
            esac
        done <"$_nx_mnt/etc/$_nx_db"
        [ -z "$_nx_have" ] || continue
        _nx_line=$(getent "$_nx_db" "$_nx_id" 2>/dev/null) || continue
        if [ -z "$_nx_etc" ]; then
            _nx_etc=$(mktemp -d "${TMPDIR:-/tmp}/nixsnake-bwrap-etc.XXXXXX") || { _nx_etc= && continue; }
        fi
        printf '%s%s\n' "$_nx_text" "$_nx_line" >"$_nx_etc/$_nx_db" &&
            _nx_add ro-bind "$_nx_etc/$_nx_db" "/etc/$_nx_db"
    done
fi
_nx_chdir=$_nx_pwd
if [ -z "$_nx_pwd" ] && [ -z "$_nx_contain" ]; then
    # apptainer binds the current directory unless it is / or a system directory
    _nx_cwd=${PWD:-$(pwd)}
    case $_nx_cwd in
    / | /proc | /proc/* | /sys | /sys/* | /dev | /dev/* | /nix | /nix/* | /etc | /etc/* | /usr | /usr/* | \
        /bin | /bin/* | /sbin | /sbin/* | /lib | /lib/* | /lib64 | /lib64/* | /.singularity.d | \
        /.singularity.d/* | /.nixsnake | /.nixsnake/* | *"$_nx_nl"*) ;;
    *)
        # (when --home already binds it there, one mount is enough)
        [ "$_nx_cwd" = "$_nx_home_dst" ] && [ "$_nx_cwd" = "$_nx_home_src" ] ||
            _nx_add bind "$_nx_cwd" "$_nx_cwd"
        _nx_chdir=$_nx_cwd
        ;;
    esac
fi
_nx_nvlib= # --nv bound a library of _nx_nv_probe
if [ -n "$_nx_nv" ]; then
    _nx_found=
    if [ -n "$_nx_contain" ]; then
        for _nx_f in /dev/nvidia*; do
            [ ! -e "$_nx_f" ] || _nx_add dev-bind "$_nx_f" "$_nx_f"
        done
    fi
    # the libraries apptainer's nvliblist.conf names, 64-bit entries of the host's ld cache
    _nx_ldc=
    for _nx_f in ldconfig /sbin/ldconfig /usr/sbin/ldconfig; do
        if command -v "$_nx_f" >/dev/null 2>&1; then
            _nx_ldc=$("$_nx_f" -p 2>/dev/null) && break
        fi
    done
    _nx_seen=$_nx_nl
    _nx_oldifs=$IFS
    IFS=$_nx_nl
    set -f
    for _nx_line in $_nx_ldc; do # (the name first: most lines are not NVIDIA's)
        _nx_name=${_nx_line#"${_nx_line%%[! $_nx_tab]*}"}
        _nx_nv_lib "${_nx_name%% *}" || continue
        _nx_name=${_nx_name%% *}
        case $_nx_line in
        *x86-64*" => /"* | *AArch64*" => /"* | *64bit*" => /"* | *ppc64*" => /"*) ;;
        *) continue ;;
        esac
        _nx_path=${_nx_line##* => }
        case $_nx_seen in *"$_nx_nl$_nx_name$_nx_nl"*) continue ;; esac
        [ -e "$_nx_path" ] || continue
        _nx_seen=$_nx_seen$_nx_name$_nx_nl
        _nx_add ro-bind "$_nx_path" "/.singularity.d/libs/$_nx_name"
        _nx_found=1
        case " $_nx_nv_probe " in *" $_nx_name "*) _nx_nvlib=1 ;; esac
    done
    # the tools, found on PATH like `command -v` would (without a fork per tool)
    IFS=$_nx_oldifs
    for _nx_f in $_nx_nv_bins; do
        IFS=:
        for _nx_d in $PATH; do
            case $_nx_d in /*) ;; *) continue ;; esac # (relative entries: not the driver's)
            [ -f "$_nx_d/$_nx_f" ] && [ -x "$_nx_d/$_nx_f" ] || continue
            _nx_add ro-bind "$_nx_d/$_nx_f" "/usr/bin/$_nx_f"
            break
        done
        IFS=$_nx_oldifs
    done
    set +f
    [ -n "$_nx_found" ] || _nx_warn "--nv: no NVIDIA driver libraries found in the host's ldconfig cache"
fi
_nx_oldifs=$IFS
IFS=$_nx_nl
set -f
for _nx_b in $_nx_binds; do
    _nx_src=${_nx_b%%:*}
    _nx_rest=${_nx_b#*:}
    _nx_dst=${_nx_rest%:*}
    if [ "${_nx_rest##*:}" = ro ]; then _nx_add ro-bind "$_nx_src" "$_nx_dst"; else _nx_add bind "$_nx_src" "$_nx_dst"; fi
done
set +f
IFS=$_nx_oldifs

# mount points the image lacks: their parent directories get an underlay. (One below an
# earlier mount's destination is made in that mount, not in the image: /tmp/x after /tmp.)
_nx_missing=
_nx_top= # a missing mount point not inside a top-level directory of the image: / is an underlay
_nx_done=$_nx_nl
_nx_oldifs=$IFS
IFS=$_nx_nl
set -f
for _nx_l in $_nx_extra; do
    _nx_dst=${_nx_l##*"$_nx_tab"}
    _nx_d=${_nx_dst%/*}
    while [ -n "$_nx_d" ]; do
        case $_nx_done in *"$_nx_nl$_nx_d$_nx_nl"*) break ;; esac
        _nx_d=${_nx_d%/*}
    done
    if [ -z "$_nx_d" ] && [ ! -e "$_nx_mnt$_nx_dst" ] && [ ! -L "$_nx_mnt$_nx_dst" ]; then
        _nx_missing=$_nx_missing$_nx_dst$_nx_nl
        _nx_c=${_nx_dst#/}
        _nx_c=/${_nx_c%%/*} # its top-level directory, which must be the image's own
        if [ "$_nx_c" = "$_nx_dst" ] || [ -L "$_nx_mnt$_nx_c" ] || [ ! -d "$_nx_mnt$_nx_c" ]; then
            _nx_top=1
        fi
    fi
    _nx_done=$_nx_done$_nx_dst$_nx_nl
done
set +f
IFS=$_nx_oldifs

_nx_needs_underlay() { # is a missing mount point strictly below $1?
    _nx_r=1
    _nx_oldifs=$IFS
    IFS=$_nx_nl
    set -f
    for _nx_d in $_nx_missing; do
        case $_nx_d in "$1"/*) _nx_r=0 && break ;; esac
    done
    set +f
    IFS=$_nx_oldifs
    return $_nx_r
}

# bwrap's arguments, each one single-quoted (_nx_q) into one string, become its argv
# with one eval at the end: no file to write, no fork.
_nx_argv=
_nx_arg() {
    for _nx_w do
        _nx_q "$_nx_w"
        _nx_argv="$_nx_argv $_nx_r"
    done
}

_nx_lay() { # _nx_lay DIR: mount the image's entries of DIR ("" = the root)
    set -- "$_nx_mnt$1"/* "$_nx_mnt$1"/.[!.]* "$_nx_mnt$1"/..?*
    for _nx_e do
        [ -e "$_nx_e" ] || [ -L "$_nx_e" ] || continue
        _nx_t=${_nx_e#"$_nx_mnt"}
        case $_nx_t in /proc | /sys | /dev) continue ;; esac
        if [ -L "$_nx_e" ]; then
            _nx_arg --symlink "$(readlink "$_nx_e")" "$_nx_t"
        elif [ -d "$_nx_e" ] && _nx_needs_underlay "$_nx_t"; then
            _nx_arg --dir "$_nx_t"
            _nx_lay "$_nx_t"
        else
            _nx_arg --ro-bind "$_nx_e" "$_nx_t"
        fi
    done
}
# (in the namespace this script runs as its root: the job gets the caller's ids back)
[ -z "${_nx_in_ns-}" ] || _nx_arg --unshare-user --uid "$_nx_uid" --gid "$_nx_gid"
if [ -n "$_nx_keepenv" ]; then
    # apptainer without --cleanenv forwards the host environment except its own settings
    # and the variables it always sets itself. awk lists the exported names (POSIX sh
    # cannot); bwrap unsets the excluded ones, so values never reach a command line.
    _nx_names=$(awk 'BEGIN { for (k in ENVIRON) print k }') ||
        _nx_die 69 "awk failed listing the environment (needed by --keep-env)"
    _nx_oldifs=$IFS
    IFS=$_nx_nl
    set -f
    for _nx_v in $_nx_names; do
        case $_nx_v in
        HOME | PATH | LD_LIBRARY_PATH | APPTAINER_* | SINGULARITY_* | APPTAINERENV_* | \
            SINGULARITYENV_* | _nx_*)
            _nx_arg --unsetenv "$_nx_v"
            ;;
        *)
            case $_nx_passfrom in *"$_nx_nl$_nx_v$_nx_nl"*) _nx_arg --unsetenv "$_nx_v" ;; esac
            ;;
        esac
    done
    set +f
    IFS=$_nx_oldifs
else
    _nx_arg --clearenv
fi
_nx_remount=
if [ -n "$_nx_top" ]; then
    _nx_lay "" # / is an empty directory with the image's entries bound into it
else
    # the image's root as it is (its symlinks included); a top-level directory that
    # must hold a missing mount point becomes an underlay on a tmpfs, read-only at the end
    # (the top-level directories of the missing mount points, each once)
    _nx_arg --ro-bind "$_nx_mnt" /
    _nx_oldifs=$IFS
    IFS=$_nx_nl
    set -f
    for _nx_t in $_nx_missing; do
        _nx_t=${_nx_t#/}
        _nx_t=/${_nx_t%%/*}
        case $_nx_nl$_nx_remount in *"$_nx_nl$_nx_t$_nx_nl"*) continue ;; esac
        _nx_remount=$_nx_remount$_nx_t$_nx_nl
        _nx_arg --tmpfs "$_nx_t"
        set +f
        IFS=$_nx_oldifs
        _nx_lay "$_nx_t"
        IFS=$_nx_nl
        set -f
    done
    set +f
    IFS=$_nx_oldifs
fi

_nx_oldifs=$IFS
IFS=$_nx_nl
set -f
for _nx_l in $_nx_extra; do
    _nx_kind=${_nx_l%%"$_nx_tab"*}
    _nx_rest=${_nx_l#*"$_nx_tab"}
    _nx_src=${_nx_rest%%"$_nx_tab"*}
    _nx_dst=${_nx_rest#*"$_nx_tab"}
    case $_nx_kind in
    dev | tmpfs) _nx_arg "--$_nx_kind" "$_nx_dst" ;;
    *) _nx_arg "--$_nx_kind" "$_nx_src" "$_nx_dst" ;;
    esac
done
set +f
IFS=$_nx_oldifs
while [ -n "$_nx_remount" ]; do
    _nx_arg --remount-ro "${_nx_remount%%"$_nx_nl"*}"
    _nx_remount=${_nx_remount#*"$_nx_nl"}
done
[ -z "$_nx_top" ] || _nx_arg --remount-ro / # (else / is the image's root, bound read-only)
[ -z "$_nx_chdir" ] || _nx_arg --chdir "$_nx_chdir"

# --- environment --------------------------------------------------------------------------
# Before the image's env scripts: what apptainer --cleanenv starts from (with --keep-env,
# what it sets on top of the forwarded host environment).
_nx_pre=
_nx_prew=
_nx_env pre HOME "$_nx_homedir"
[ -n "$_nx_keepenv" ] || _nx_env pre LANG C
_nx_env pre PATH "$_nx_default_path"
_nx_env pre LD_LIBRARY_PATH /.singularity.d/libs
for _nx_v in TERM http_proxy HTTP_PROXY https_proxy HTTPS_PROXY no_proxy NO_PROXY all_proxy \
    ALL_PROXY ftp_proxy FTP_PROXY; do
    eval "_nx_isset=\${$_nx_v+x}"
    [ -z "$_nx_isset" ] || eval "_nx_env pre $_nx_v \"\$$_nx_v\""
done
for _nx_v in APPTAINER SINGULARITY; do
    _nx_env pre "${_nx_v}_CONTAINER" "$_nx_image"
    _nx_env pre "${_nx_v}_NAME" "${_nx_image##*/}"
done

# Images made by nixsnake carry the env scripts' result as NAME=VALUE lines: then bwrap
# sets the whole environment itself (--setenv, read from a pipe: values never reach a
# command line) and starts CMD directly -- no /bin/sh inside, no script read through the
# image mount, one program start less per job. Other images (and --inject, which needs a
# shell) take the general path: /bin/sh inside sources /.singularity.d/env/*.sh.
_nx_imgw=
_nx_fast=
if [ -z "$_nx_inject" ] && [ -f "$_nx_mnt$_nx_env_file" ] && [ ! -L "$_nx_mnt$_nx_env_file" ]; then
    _nx_fast=1
    # an image derived from ours with env scripts of its own: the file does not say it all
    for _nx_f in "$_nx_mnt"/.singularity.d/env/*; do
        case " $_nx_env_scripts " in *" ${_nx_f##*/} "*) ;; *) _nx_fast= ;; esac
    done
fi
_nx_imgpath=
if [ -n "$_nx_fast" ]; then
    _nx_c=0
    while IFS= read -r _nx_l; do
        case $_nx_l in
        [A-Za-z_]*=*) ;;
        *) _nx_fast= && break ;; # not written by nixsnake: let the env scripts decide
        esac
        _nx_n=${_nx_l%%=*}
        case $_nx_n in *[!A-Za-z0-9_]*) _nx_fast= && break ;; esac
        _nx_v=${_nx_l#*=}
        if [ "$_nx_n" = LD_LIBRARY_PATH ] && [ -n "$_nx_nvlib" ]; then
            _nx_v=${_nx_v:+$_nx_v:}$_nx_nv_link_dir
        fi
        [ "$_nx_n" != PATH ] || _nx_imgpath=$_nx_v
        _nx_q "$_nx_v"
        _nx_imgw="$_nx_imgw --setenv $_nx_n $_nx_r"
        # (bwrap takes at most 9000 arguments, --args words included)
        _nx_c=$((_nx_c + 1)) && [ "$_nx_c" -le 2000 ] || { _nx_fast= && break; }
    done <"$_nx_mnt$_nx_env_file"
fi
if [ -n "$_nx_fast" ]; then
    # bwrap starts CMD itself, and a CMD it cannot start would exit 1: a CMD not in the
    # image takes the shell path, whose "not found" exits 127. (Looked up in the mount
    # without following the entry: the image's symlinks are absolute, into its own store.)
    _nx_fast=
    case $1 in
    /*) [ ! -e "$_nx_mnt$1" ] && [ ! -L "$_nx_mnt$1" ] || _nx_fast=1 ;;
    */*) ;;
    *)
        _nx_oldifs=$IFS
        IFS=:
        set -f
        for _nx_d in $_nx_imgpath; do
            case $_nx_d in /*) ;; *) continue ;; esac
            if [ -f "$_nx_mnt$_nx_d/$1" ] || [ -L "$_nx_mnt$_nx_d/$1" ]; then
                _nx_fast=1
                break
            fi
        done
        set +f
        IFS=$_nx_oldifs
        ;;
    esac
fi

# Runs inside as /bin/sh: fd 8 holds the starting environment, fd 9 the --pass values.
_nx_inner='. /proc/self/fd/8
exec 8<&-
if [ -d /.singularity.d/env ]; then
    for _nx_f in /.singularity.d/env/*.sh; do
        [ -f "$_nx_f" ] || continue
        . "$_nx_f"
        [ "$_nx_f" != /.singularity.d/env/99-base.sh ] || . /proc/self/fd/9
    done
else
    . /proc/self/fd/9
fi
exec 9<&-
unset _nx_f
exec "$@"'

if [ -n "$_nx_inject" ]; then # (after the --pass values, as one more script part)
    eval "_nx_post=\$_nx_post\${$_nx_inject-}\$_nx_nl"
fi

[ -z "$_nx_sig" ] || exit "$_nx_sig"
if [ -n "$_nx_fast" ]; then
    # bwrap reads its --setenv words from fd 7 (the pipe); fd 6 keeps this script's stdin
    eval "set --$_nx_argv"' --args 7 --die-with-parent -- "$@"'
    [ -e /proc/self/fd/0 ] || exec </dev/null
    {
        eval "printf '%s\0'$_nx_prew$_nx_imgw$_nx_postw" | bwrap "$@" 7<&0 0<&6 6<&- 5<&-
    } 6<&0
else
    # (HOME for bwrap itself: without --chdir it falls back to it, as on the path above)
    _nx_q "$_nx_homedir"
    eval "set --$_nx_argv --setenv HOME $_nx_r"' --die-with-parent /bin/sh -c "$_nx_inner" nixsnake-exec "$@"'
    bwrap "$@" 5<&- 8<<_NX_PRE_ 9<<_NX_POST_
$_nx_pre
_NX_PRE_
$_nx_post
_NX_POST_
fi
_nx_rc=$?
_nx_cleanup
exit "$_nx_rc"
