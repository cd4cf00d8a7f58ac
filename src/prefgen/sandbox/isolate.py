"""Kernel isolation layers for the sandbox's child side: namespaces, a private root, capabilities,
rlimits and a seccomp filter.

Standard library only (ctypes calls into libc): it runs under `python -I -S`, where prefgen is not
importable. Every function raises OSError or IsolationError when a layer cannot be applied, and
the callers turn that into a refusal to run the code (fail closed), never into a weaker run.
"""

from __future__ import annotations

import ctypes
import errno
import os
import platform
import resource
import struct

CLONE_NEWNS, CLONE_NEWUTS, CLONE_NEWIPC = 0x20000, 0x4000000, 0x8000000
CLONE_NEWUSER, CLONE_NEWPID, CLONE_NEWNET = 0x10000000, 0x20000000, 0x40000000
CLONE_NEWCGROUP, CLONE_NEWTIME = 0x2000000, 0x80
NAMESPACE_FLAGS = (
    CLONE_NEWNS | CLONE_NEWUTS | CLONE_NEWIPC | CLONE_NEWUSER | CLONE_NEWPID | CLONE_NEWNET
) | (CLONE_NEWCGROUP | CLONE_NEWTIME)
MS_RDONLY, MS_NOSUID, MS_NODEV, MS_NOEXEC, MS_REMOUNT = 1, 2, 4, 8, 32
MS_BIND, MS_REC, MS_PRIVATE = 4096, 16384, 1 << 18
MNT_DETACH, AT_FDCWD, AT_RECURSIVE = 2, -100, 0x8000
MOUNT_ATTR_RDONLY, MOUNT_ATTR_NOSUID, MOUNT_ATTR_NODEV = 1, 2, 4
PR_SET_PDEATHSIG, PR_SET_DUMPABLE, PR_CAPBSET_DROP = 1, 4, 24
PR_SET_SECCOMP, PR_SET_NO_NEW_PRIVS, PR_CAP_AMBIENT = 22, 38, 47
PR_CAP_AMBIENT_CLEAR_ALL, SECCOMP_MODE_FILTER = 4, 2
CAP_VERSION_3 = 0x20080522
SYSTEM_DIRS = ("/usr", "/etc", "/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32")
DEVICES = ("null", "zero", "full", "random", "urandom")
AF_UNIX, AF_INET, AF_INET6 = 1, 2, 10

_libc = ctypes.CDLL(None, use_errno=True)


class IsolationError(Exception):
    """A required layer is unavailable on this host: the run is refused, not weakened."""


def _check(ret: int, what: str) -> None:
    if ret != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"{what}: {os.strerror(err)}")


def unshare(flags: int) -> None:
    _check(_libc.unshare(ctypes.c_int(flags)), "unshare")


def mount(source: str | None, target: str, fstype: str | None, flags: int, data=None) -> None:
    args = [s.encode() if s is not None else None for s in (source, target, fstype)]
    data = data.encode() if data else None
    _check(_libc.mount(*args, ctypes.c_ulong(flags), data), f"mount {target}")


def prctl(option: int, value: int = 0, arg3: int = 0) -> None:
    ulong = ctypes.c_ulong
    _check(_libc.prctl(option, ulong(value), ulong(arg3), ulong(0), ulong(0)), f"prctl {option}")


def _syscall(name: str, *args) -> int:
    ret = _libc.syscall(ctypes.c_long(_arch()["nr"][name]), *args)
    if ret < 0:
        err = ctypes.get_errno()
        raise OSError(err, f"{name}: {os.strerror(err)}")
    return ret


# ---- namespaces --------------------------------------------------------------------------------


def enter_namespaces() -> dict:
    """Unshare PID, network, IPC and UTS namespaces for our future children.

    As root with CAP_SYS_ADMIN this is done directly (each run then gets fresh uids). Otherwise,
    or when root lacks the capability (a container), inside a new user namespace that maps only
    our own uid. Raises IsolationError when neither works: without a PID and network namespace the
    code could reach the host's processes and network, so it must not run at all."""
    flags = CLONE_NEWPID | CLONE_NEWNET | CLONE_NEWIPC | CLONE_NEWUTS
    uid, gid = os.geteuid(), os.getegid()
    if uid == 0:
        try:
            unshare(flags)
            return {"mode": "root", "uid": 0}
        except OSError:
            pass  # root without CAP_SYS_ADMIN: try a user namespace as anyone would
    try:
        unshare(CLONE_NEWUSER | flags)
    except OSError as exc:
        raise IsolationError(
            f"cannot create namespaces as uid {uid} ({exc.strerror}): unprivileged user "
            "namespaces are disabled or blocked (seccomp profile) on this host"
        ) from None
    for name, text in (("setgroups", "deny"), ("uid_map", f"{uid} {uid} 1"),
                       ("gid_map", f"{gid} {gid} 1")):  # fmt: skip
        with open(f"/proc/self/{name}", "w") as f:
            f.write(text)
    return {"mode": "user namespace", "uid": uid}


# ---- filesystem --------------------------------------------------------------------------------


def private_root(python_dirs: list[str], files: dict[str, str], tmp_mb: int, shm_mb: int) -> str:
    """Pivot into a fresh root: the system dirs and the Python install bound read-only, a small
    /dev, a private /tmp (the only writable place besides /dev/shm) and a fresh /proc. Nothing
    else of the host is reachable: no /home, /root, /run, /var, no host /tmp or /dev/shm, so no
    host Unix socket either. `files` are written under /sandbox (read-only afterwards)."""
    unshare(CLONE_NEWNS)
    mount(None, "/", None, MS_REC | MS_PRIVATE)  # nothing we mount propagates to the host
    sources = [d for d in SYSTEM_DIRS if os.path.lexists(d)]
    sources += [d for d in python_dirs if not any(_under(d, s) for s in sources)]
    keep = {d: os.open(d, os.O_PATH) for d in sources}  # before /tmp is covered below
    root = "/tmp"
    mount("tmpfs", root, "tmpfs", MS_NOSUID | MS_NODEV, "size=4m,mode=755")
    for path, fd in keep.items():
        target = root + path
        if os.path.islink(path):
            os.symlink(os.readlink(path), target)
        else:
            os.makedirs(target, 0o755, exist_ok=True)
            _bind_read_only(f"/proc/self/fd/{fd}", target)
        os.close(fd)
    _make_dev(root + "/dev", shm_mb)
    os.mkdir(root + "/tmp", 0o755)
    mount("tmpfs", root + "/tmp", "tmpfs", MS_NOSUID | MS_NODEV, f"size={tmp_mb}m,mode=1777")
    os.mkdir(root + "/tmp/work")
    os.chmod(root + "/tmp/work", 0o1777)
    os.makedirs(root + "/sandbox", 0o755)
    for name, text in files.items():
        with open(f"{root}/sandbox/{name}", "w") as f:
            f.write(text)
    os.mkdir(root + "/proc", 0o555)
    os.mkdir(root + "/.old")
    _syscall("pivot_root", root.encode(), (root + "/.old").encode())
    os.chdir("/")
    proc = _mount_proc()  # before the old root goes: the kernel wants a visible /proc to exist
    _check(_libc.umount2(b"/.old", MNT_DETACH), "umount old root")
    os.rmdir("/.old")
    mount(None, "/", None, MS_REMOUNT | MS_RDONLY | MS_NOSUID | MS_NODEV)
    bound = " ".join(p for p in keep if not os.path.islink("/" + p.lstrip("/")))
    return (
        f"isolated (private root; read-only: {bound}; writable: /tmp {tmp_mb} MB, "
        f"/dev/shm {shm_mb} MB; /proc: {proc})"
    )


def _under(path: str, base: str) -> bool:
    return path == base or path.startswith(base.rstrip("/") + "/")


def _bind_read_only(source: str, target: str) -> None:
    mount(source, target, None, MS_BIND | MS_REC)

    class MountAttr(ctypes.Structure):
        _fields_ = [(n, ctypes.c_uint64) for n in ("set", "clr", "propagation", "userns_fd")]

    attr = MountAttr(MOUNT_ATTR_RDONLY | MOUNT_ATTR_NOSUID | MOUNT_ATTR_NODEV, 0, 0, 0)
    try:  # one call makes the whole tree read-only, submounts (e.g. /etc/hosts) included
        _syscall("mount_setattr", AT_FDCWD, target.encode(), AT_RECURSIVE, ctypes.byref(attr),
                 ctypes.c_size_t(ctypes.sizeof(attr)))  # fmt: skip
        return
    except OSError as exc:
        if exc.errno not in (errno.ENOSYS, errno.EINVAL):
            raise
    for point in _mounts_under(target):  # kernels before 5.12: remount each mount point
        flags = MS_REMOUNT | MS_BIND | MS_RDONLY | MS_NOSUID | MS_NODEV
        st = os.statvfs(point)
        flags |= MS_NOEXEC if st.f_flag & os.ST_NOEXEC else 0
        mount(None, point, None, flags)


def _mounts_under(target: str) -> list[str]:
    with open("/proc/self/mountinfo") as f:
        points = [line.split()[4].replace("\\040", " ") for line in f]
    return sorted({p for p in points if _under(p, target)}, key=len)


def _make_dev(dev: str, shm_mb: int) -> None:
    os.mkdir(dev, 0o755)
    mount("tmpfs", dev, "tmpfs", MS_NOSUID | MS_NOEXEC, "size=64k,mode=755")
    for name in DEVICES:
        open(f"{dev}/{name}", "w").close()
        mount(f"/dev/{name}", f"{dev}/{name}", None, MS_BIND)
    for name, target in (("fd", "/proc/self/fd"), ("stdin", "/proc/self/fd/0"),
                         ("stdout", "/proc/self/fd/1"), ("stderr", "/proc/self/fd/2")):  # fmt: skip
        os.symlink(target, f"{dev}/{name}")
    os.mkdir(f"{dev}/shm")
    mount("tmpfs", f"{dev}/shm", "tmpfs", MS_NOSUID | MS_NODEV | MS_NOEXEC,
          f"size={shm_mb}m,mode=1777")  # fmt: skip
    mount(None, dev, None, MS_REMOUNT | MS_RDONLY | MS_NOSUID | MS_NOEXEC)


def _mount_proc() -> str:
    """A /proc of the new PID namespace only; hidepid=2 hides other uids' processes."""
    flags = MS_NOSUID | MS_NODEV | MS_NOEXEC
    for options, label in (("hidepid=2", "fresh, hidepid=2"), (None, "fresh")):
        try:
            mount("proc", "/proc", "proc", flags, options)
            return label
        except OSError:
            pass
    # No proc mount allowed: an empty read-only /proc, so no host process is visible at all.
    mount("tmpfs", "/proc", "tmpfs", flags | MS_RDONLY, "size=4k,mode=555")
    return "empty (proc could not be mounted)"


# ---- credentials and limits --------------------------------------------------------------------


def set_limits(limits: dict) -> None:
    """Apply {RLIMIT name: value} as both soft and hard limit; "CPU" gets a 1 s hard margin."""
    for name, value in limits.items():
        hard = value + 1 if name == "CPU" else value
        resource.setrlimit(getattr(resource, "RLIMIT_" + name), (value, hard))


def drop_privileges(uid: int | None, gid: int | None) -> None:
    """No capabilities now or after any exec: empty bounding and ambient sets, then either a
    switch to `uid` (root mode) or an explicit capset to nothing (user namespace mode)."""
    cap = 0
    while cap < 64:
        try:
            prctl(PR_CAPBSET_DROP, cap)
        except OSError as exc:
            if exc.errno != errno.EINVAL:
                raise
            break  # past the last capability this kernel knows
        cap += 1
    prctl(PR_CAP_AMBIENT, PR_CAP_AMBIENT_CLEAR_ALL)
    if uid is not None:
        os.setgroups([])
        os.setgid(gid)
        os.setuid(uid)
    header = struct.pack("Ii", CAP_VERSION_3, 0)
    _syscall("capset", header, bytes(24))
    data = ctypes.create_string_buffer(24)
    _syscall("capget", header, data)
    if any(data.raw):
        raise IsolationError("capabilities remain after dropping them")
    if uid is not None:
        try:
            os.setuid(0)
        except OSError:
            pass
        else:
            raise IsolationError("could not drop root")


# ---- seccomp -----------------------------------------------------------------------------------

# Syscall numbers per architecture (x86_64: asm/unistd_64.h; aarch64: asm-generic/unistd.h).
_NR = {
    "x86_64": dict(
        clone=56,
        clone3=435,
        unshare=272,
        setns=308,
        mount=165,
        umount2=166,
        pivot_root=155,
        chroot=161,
        memfd_create=319,
        memfd_secret=447,
        shmget=29,
        msgget=68,
        mq_open=240,
        userfaultfd=323,
        bpf=321,
        perf_event_open=298,
        ptrace=101,
        process_vm_readv=310,
        process_vm_writev=311,
        kcmp=312,
        pidfd_getfd=438,
        pidfd_open=434,
        kill=62,
        tkill=200,
        tgkill=234,
        rt_sigqueueinfo=129,
        rt_tgsigqueueinfo=297,
        keyctl=250,
        add_key=248,
        request_key=249,
        open_by_handle_at=304,
        name_to_handle_at=303,
        io_uring_setup=425,
        io_uring_enter=426,
        io_uring_register=427,
        fanotify_init=300,
        quotactl=179,
        swapon=167,
        swapoff=168,
        reboot=169,
        kexec_load=246,
        kexec_file_load=320,
        init_module=175,
        finit_module=313,
        delete_module=176,
        acct=163,
        settimeofday=164,
        clock_settime=227,
        clock_adjtime=305,
        syslog=103,
        vhangup=153,
        move_pages=279,
        migrate_pages=256,
        fsopen=430,
        fsmount=432,
        fsconfig=431,
        fspick=433,
        move_mount=429,
        open_tree=428,
        mount_setattr=442,
        lookup_dcookie=212,
        sethostname=170,
        setdomainname=171,
        uselib=134,
        iopl=172,
        ioperm=173,
        nfsservctl=180,
        socket=41,
        socketpair=53,
        capget=125,
        capset=126,
    ),
    "aarch64": dict(
        clone=220,
        clone3=435,
        unshare=97,
        setns=268,
        mount=40,
        umount2=39,
        pivot_root=41,
        chroot=51,
        memfd_create=279,
        memfd_secret=447,
        shmget=194,
        msgget=186,
        mq_open=180,
        userfaultfd=282,
        bpf=280,
        perf_event_open=241,
        ptrace=117,
        process_vm_readv=270,
        process_vm_writev=271,
        kcmp=272,
        pidfd_getfd=438,
        pidfd_open=434,
        kill=129,
        tkill=130,
        tgkill=131,
        rt_sigqueueinfo=138,
        rt_tgsigqueueinfo=240,
        keyctl=219,
        add_key=217,
        request_key=218,
        open_by_handle_at=265,
        name_to_handle_at=264,
        io_uring_setup=425,
        io_uring_enter=426,
        io_uring_register=427,
        fanotify_init=262,
        quotactl=60,
        swapon=224,
        swapoff=225,
        reboot=142,
        kexec_load=104,
        kexec_file_load=294,
        init_module=105,
        finit_module=273,
        delete_module=106,
        acct=89,
        settimeofday=170,
        clock_settime=112,
        clock_adjtime=266,
        syslog=116,
        vhangup=58,
        move_pages=239,
        migrate_pages=238,
        fsopen=430,
        fsmount=432,
        fsconfig=431,
        fspick=433,
        move_mount=429,
        open_tree=428,
        mount_setattr=442,
        lookup_dcookie=18,
        sethostname=161,
        setdomainname=162,
        nfsservctl=42,
        socket=198,
        socketpair=199,
        capget=90,
        capset=91,
    ),
}
_AUDIT_ARCH = {"x86_64": 0xC000003E, "aarch64": 0xC00000B7}
# Refused outright. Namespaces and mounts: a new user namespace would allow an unbounded tmpfs
# and fresh mounts. memfd, SysV shm/msg, POSIX mq: memory outside the address-space limit.
# ptrace & co: reaching the tester's memory. io_uring: a side door past this filter. The rest is
# kernel administration no test needs.
DENIED = (
    "unshare setns mount umount2 pivot_root chroot fsopen fsmount fsconfig fspick move_mount "
    "open_tree mount_setattr memfd_create memfd_secret shmget msgget mq_open userfaultfd bpf "
    "perf_event_open ptrace process_vm_readv process_vm_writev kcmp pidfd_getfd keyctl add_key "
    "request_key open_by_handle_at name_to_handle_at io_uring_setup io_uring_enter "
    "io_uring_register fanotify_init quotactl swapon swapoff reboot kexec_load kexec_file_load "
    "init_module finit_module delete_module acct settimeofday clock_settime clock_adjtime syslog "
    "vhangup move_pages migrate_pages lookup_dcookie sethostname setdomainname uselib iopl "
    "ioperm nfsservctl"
).split()
SIGNAL_CALLS = ("kill", "tkill", "tgkill", "rt_sigqueueinfo", "rt_tgsigqueueinfo", "pidfd_open")
_RET_KILL, _RET_ALLOW, _RET_ERRNO = 0x80000000, 0x7FFF0000, 0x00050000
_LD_ABS, _JEQ, _JGE, _JSET, _RET = 0x20, 0x15, 0x35, 0x45, 0x06


def _arch() -> dict:
    machine = platform.machine()
    if machine not in _NR:
        raise IsolationError(f"no seccomp filter for architecture {machine}")
    return {"nr": _NR[machine], "audit": _AUDIT_ARCH[machine], "x32": machine == "x86_64"}


def seccomp_filter(protected_pids: list[int]) -> bytes:
    """The BPF program: refuse DENIED, namespace flags in clone, clone3 (ENOSYS: glibc falls back
    to clone, whose flags we can see), signals and pidfds aimed at `protected_pids` (pid 1 and
    the tester: kernel permission checks alone do not separate them in a user namespace), every
    socket family but Unix and IP (AF_VSOCK would reach a VM's host past the network namespace),
    the x32 ABI, and any other architecture (killed)."""
    arch = _arch()
    nr = arch["nr"]
    prog: list[tuple[int, int, int, int]] = []

    def ret(value: int) -> None:
        prog.append((_RET, 0, 0, value))

    def deny(code: int) -> int:
        return _RET_ERRNO | code

    prog.append((_LD_ABS, 0, 0, 4))  # seccomp_data.arch
    prog.append((_JEQ, 1, 0, arch["audit"]))
    ret(_RET_KILL)
    prog.append((_LD_ABS, 0, 0, 0))  # seccomp_data.nr
    if arch["x32"]:
        prog.append((_JGE, 0, 1, 0x40000000))
        ret(deny(errno.EPERM))
    for name in DENIED:
        if name in nr:
            prog.append((_JEQ, 0, 1, nr[name]))
            ret(deny(errno.EPERM))
    prog.append((_JEQ, 0, 1, nr["clone3"]))
    ret(deny(errno.ENOSYS))
    # clone: refuse any namespace flag in its first argument (low 32 bits hold all of them).
    prog += [(_JEQ, 0, 4, nr["clone"]), (_LD_ABS, 0, 0, 16), (_JSET, 0, 1, NAMESPACE_FLAGS)]
    ret(deny(errno.EPERM))
    ret(_RET_ALLOW)
    values = sorted({1, *protected_pids} | {(-p) & 0xFFFFFFFF for p in (1, *protected_pids)})
    for name in SIGNAL_CALLS:
        targets = values + [0xFFFFFFFF] if name == "kill" else values  # kill(-1): everyone
        prog += [(_JEQ, 0, len(targets) + 3, nr[name]), (_LD_ABS, 0, 0, 16)]
        prog += [(_JEQ, len(targets) - i, 0, v) for i, v in enumerate(targets)]
        ret(_RET_ALLOW)
        ret(deny(errno.EPERM))
    families = (AF_UNIX, AF_INET, AF_INET6)
    for name in ("socket", "socketpair"):
        prog += [(_JEQ, 0, len(families) + 3, nr[name]), (_LD_ABS, 0, 0, 16)]
        prog += [(_JEQ, len(families) - i, 0, f) for i, f in enumerate(families)]
        ret(deny(errno.EAFNOSUPPORT))
        ret(_RET_ALLOW)
    ret(_RET_ALLOW)
    return b"".join(struct.pack("HBBI", *ins) for ins in prog)


def install_seccomp(protected_pids: list[int]) -> int:
    """Load the filter into this (single-threaded) process; it is inherited by every child and
    kept across exec. Needs no_new_privs first. Returns the number of instructions."""
    program = seccomp_filter(protected_pids)
    count = len(program) // 8
    buf = ctypes.create_string_buffer(program, len(program))

    class SockFprog(ctypes.Structure):
        _fields_ = [("len", ctypes.c_ushort), ("filter", ctypes.c_void_p)]

    fprog = SockFprog(count, ctypes.addressof(buf))
    _check(_libc.prctl(PR_SET_SECCOMP, ctypes.c_ulong(SECCOMP_MODE_FILTER), ctypes.byref(fprog),
                       ctypes.c_ulong(0), ctypes.c_ulong(0)), "seccomp")  # fmt: skip
    return count
