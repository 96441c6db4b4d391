"""A scenario run on real ALSA: a QEMU VM with ``snd-aloop`` cards, this machine's root shared.

The VM (virtme-ng, ``vng``) boots a stock Debian kernel from the cache of :mod:`rig.vmkernel`
under QEMU's software emulation (TCG: a stock kernel does not boot on every ``/dev/kvm``), with
this machine's root filesystem shared read-only (``/tmp``, ``/etc``, ``/var``, ... writable
overlays that vanish with the VM) and ``out`` shared writable at the same path. Inside it
loads ``snd-aloop`` (one card per id in ``cards``: ``hw:Loopback`` is the hub, a second card
stands in for the speakers), then runs the scenario, a ``sh`` script, from ``out`` with:

* ``$OUT`` the shared folder, ``$PY`` this interpreter, ``$SRC`` the project's sources
  (``PYTHONPATH``), ``$HOME`` and the ``XDG_*`` folders private and empty;
* ``mark NAME`` appends ``NAME <guest uptime s>`` to ``$OUT/marks`` (timings inside the VM);
* ``reload_cards`` runs the ``modprobe`` of the start again (after an ``rmmod snd-aloop``);
* with ``launcher``, ``dc NAME ARGS...`` starts ``deskcast ARGS`` through :mod:`rig.vmlaunch`
  (imports done once: a start costs a fork, not 10-25 s of emulated Python), ``dc_wait NAME``
  prints its exit status when it ends, ``dc_stop NAME [SIGNAL]`` stops it (``TERM``).

What it leaves (``.vm/scenario.log``, its exit status, whatever it wrote to ``$OUT``) comes back
in a :class:`VmRun`, with what the VM cost: the wall time to boot (launch to the scenario's
first line), the emulator's CPU seconds, and, with ``calibrate``, how long a bare ``python -c
pass`` and ``deskcast --help`` take inside (``calibration``), so a real-time judgment can tell
the emulator's slowness from deskcast's. Python under TCG takes seconds to compile a module,
so the project's bytecode is compiled on the host first.

The guest keeps time by the instructions it runs (QEMU's ``-icount shift=0``: one emulated
instruction is one nanosecond of guest time), not by this machine's clock. Its CPU is then a
steady 1 GHz-instruction machine whatever else this machine does: the emulator waiting for a
core is invisible inside (with guest time following this machine's clock, a wait of ~0.1 s
made snd-aloop return an I/O error to a player, and trx-rx played 24 bad windows of ~120
while the other pytest worker ran tests beside it). A busy machine only makes the scenario
take longer in wall time (~3-4x its guest time here).
"""

from __future__ import annotations

import contextlib
import logging
import os
import resource
import shlex
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from rig.vmkernel import Kernel, VmUnavailableError, ensure_kernel

logger = logging.getLogger(__name__)

REPO = Path(__file__).resolve().parents[2]
SRC = REPO / "src"
TOOLS = ("qemu-system-x86_64", "busybox")
GUEST_TOOLS = ("aplay", "arecord", "modprobe")


class VmError(Exception):
    """The VM did not boot or did not finish: one line saying which, with the last words."""


@dataclass
class VmRun:
    out: Path
    returncode: int
    """The scenario's exit status."""
    log: str
    """The scenario's standard output and error."""
    boot_s: float
    """Host wall seconds from launching the VM to the scenario's first line."""
    wall_s: float
    cpu_s: float
    """CPU seconds the emulator (and virtme-ng around it) used, on all host cores."""
    marks: dict[str, float] = field(default_factory=dict)
    """``mark NAME`` lines: guest uptime in seconds (the last one of each name)."""
    calibration: dict[str, float] = field(default_factory=dict)
    """Seconds inside the VM: ``python -c pass`` and ``deskcast --help`` (one run each)."""

    def since(self, first: str, second: str) -> float:
        """Guest seconds between two marks."""
        return self.marks[second] - self.marks[first]

    def to_json(self) -> dict[str, Any]:
        return {**asdict(self), "out": str(self.out)}

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> VmRun:
        return cls(**{**data, "out": Path(data["out"])})


def _vng() -> str:
    found = shutil.which("vng", path=f"{Path(sys.executable).parent}{os.pathsep}"
                                      f"{os.environ.get('PATH', '')}")
    if found is None:
        raise VmUnavailableError("virtme-ng (vng) is not installed in this Python environment: "
                            "pip install virtme-ng (./bootstrap test does)")
    return found


def check_tools() -> None:
    missing = [t for t in (*TOOLS, *GUEST_TOOLS) if shutil.which(t) is None
               and not Path("/usr/sbin", t).exists() and not Path("/sbin", t).exists()]
    if missing:
        raise VmUnavailableError(f"the ALSA test VM needs {', '.join(missing)} (Debian "
                            "qemu-system-x86, busybox-static, alsa-utils, kmod)")
    _vng()


def compile_bytecode() -> None:
    """Write the project's .pyc files now: under emulation, compiling costs seconds per module
    (and the guest's view of the tree is read-only, so it could not keep them)."""
    subprocess.run([sys.executable, "-m", "compileall", "-q", "-j0", str(SRC)], check=True,
                   stdout=subprocess.DEVNULL)


def modprobe_args(cards: Sequence[str]) -> list[str]:
    n = len(cards)
    return ["modprobe", "snd-aloop", f"index={','.join(str(i) for i in range(n))}",
            f"enable={','.join(['1'] * n)}", f"id={','.join(cards)}"]


_PRELUDE = """\
mark() {{ echo "$1 $(cut -d' ' -f1 /proc/uptime)" >> "$OUT/marks"; }}
reload_cards() {{ {modprobe}; }}
"""

LAUNCH_HELPERS = r"""
dc() {
  n=$1; shift; rm -f "$n.pid" "$n.rc"
  { printf '%s\t%s' "$n" "$PWD"; for a in "$@"; do printf '\t%s' "$a"; done; echo; } \
    > "$LAUNCH_FIFO"
  while [ ! -f "$n.pid" ]; do sleep 0.05; done
}
dc_wait() { while [ ! -f "$1.rc" ]; do sleep 0.1; done; cat "$1.rc"; }
dc_stop() { kill -"${2:-TERM}" "$(cat "$1.pid")" 2>/dev/null; dc_wait "$1" > /dev/null; }
"""

_WRAPPER = """\
#!/bin/sh
VM="{vm}"
cut -d' ' -f1 /proc/uptime > "$VM/started"
unset PULSE_SERVER PULSE_RUNTIME_PATH PIPEWIRE_REMOTE DBUS_SESSION_BUS_ADDRESS DISPLAY
export OUT="{out}" PY="{py}" SRC="{src}" PYTHONPATH="{src}" PYTHONDONTWRITEBYTECODE=1
export HOME=/tmp/vmhome XDG_RUNTIME_DIR=/tmp/vmhome/run XDG_CONFIG_HOME=/tmp/vmhome/config
export XDG_STATE_HOME=/tmp/vmhome/state XDG_CACHE_HOME=/tmp/vmhome/cache
export PATH="{bindir}:/usr/sbin:/sbin:$PATH"
mkdir -p "$XDG_RUNTIME_DIR" "$XDG_CONFIG_HOME" "$XDG_STATE_HOME" "$XDG_CACHE_HOME"
chmod 700 "$XDG_RUNTIME_DIR"
ip link set lo up 2>/dev/null
now() {{ date +%s.%N; }}
if [ -n "{calibrate}" ]; then
  for what in "pass:$PY -c pass" "help:$PY -m deskcast --help"; do
    name=${{what%%:*}}; cmd=${{what#*:}}
    t0=$(now); $cmd >/dev/null 2>&1; t1=$(now)
    echo "$name $t0 $t1" >> "$VM/calibration"
  done
fi
if [ -n "{launcher}" ]; then
  export LAUNCH_FIFO=/tmp/vmhome/launch.fifo
  mkfifo "$LAUNCH_FIFO"
  export OPENBLAS_NUM_THREADS=1
  $PY "{launch}" "$LAUNCH_FIFO" "$VM/launcher.ready" 2> "$VM/launcher.log" &
  while [ ! -f "$VM/launcher.ready" ]; do
    kill -0 $! 2>/dev/null || {{ echo 98 > "$VM/rc"; exit 0; }}
    sleep 0.2
  done
fi
{modprobe} > "$VM/modprobe.log" 2>&1 || {{ echo 97 > "$VM/rc"; exit 0; }}
cd "$OUT"
cat "$VM/prelude.sh" "$VM/scenario.sh" > /tmp/vmhome/scenario.sh
sh /tmp/vmhome/scenario.sh > "$VM/scenario.log" 2>&1
echo $? > "$VM/rc"
[ -n "{launcher}" ] && echo quit > "$LAUNCH_FIFO"
sync
"""


QEMU_CLOCK = "-icount shift=0"
"""Guest time from the instruction count (see the module's docstring); with ``shift=0`` the
guest's ``python -c pass`` takes ~0.3 s and ``deskcast --help`` ~2 s of its own time (under
plain TCG, on this machine's clock: 1.5-3 s and 10-25 s)."""

EMULATOR_NICE = 10
"""The emulator's CPU priority on this machine: below the tests beside it, which judge audio
on this machine's clock; the guest does not notice (:data:`QEMU_CLOCK`), it only takes longer."""


def _read_pairs(path: Path) -> dict[str, float]:
    """``NAME VALUE`` lines, or ``NAME T0 T1`` (the best T1-T0 per name)."""
    found: dict[str, float] = {}
    if not path.exists():
        return found
    for line in path.read_text().splitlines():
        parts = line.split()
        if len(parts) == 2:
            found[parts[0]] = float(parts[1])
        elif len(parts) == 3:
            took = float(parts[2]) - float(parts[1])
            found[parts[0]] = min(took, found.get(parts[0], took))
    return found


def _last_words(text: str, n: int = 3) -> str:
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    return " | ".join(lines[-n:]) or "(nothing)"


def run_scenario(script: str, out: Path, *, cards: Sequence[str] = ("Loopback",),
                 timeout_s: float = 300.0, cpus: int = 1, memory: str = "1G",
                 calibrate: bool = False, launcher: bool = False, kernel: Kernel | None = None,
                 env: Mapping[str, str] | None = None) -> VmRun:
    """Boot the VM, run ``script`` (``sh``) inside with ``cards`` loaded, power off.

    Raises :class:`VmUnavailableError` for a missing piece (tool, kernel), :class:`VmError` when
    the VM does not boot or overruns ``timeout_s`` (then it is killed)."""
    check_tools()
    kernel = kernel or ensure_kernel()
    compile_bytecode()
    out = out.resolve()
    vm = out / ".vm"
    vm.mkdir(parents=True, exist_ok=True)
    for stale in ("started", "rc", "calibration", "scenario.log", "launcher.ready"):
        (vm / stale).unlink(missing_ok=True)
    (out / "marks").unlink(missing_ok=True)
    modprobe = shlex.join(modprobe_args(cards))
    exports = "".join(f"export {k}={shlex.quote(v)}\n" for k, v in (env or {}).items())
    (vm / "prelude.sh").write_text(_PRELUDE.format(modprobe=modprobe)
                                   + (LAUNCH_HELPERS if launcher else "") + exports)
    (vm / "scenario.sh").write_text(script)
    (vm / "wrapper.sh").write_text(_WRAPPER.format(
        vm=vm, out=out, py=sys.executable, src=SRC, bindir=Path(sys.executable).parent,
        calibrate="1" if calibrate else "", modprobe=modprobe,
        launcher="1" if launcher else "", launch=Path(__file__).with_name("vmlaunch.py")))
    # A --exec script runs as the guest's root whoever runs the tests (virtme-ng's default),
    # so modprobe works; the guest's root can write only to its overlays and to out.
    args = [_vng(), "--run", str(kernel.image), "--disable-kvm", "--force-9p",
            "--cpus", str(cpus), "--memory", memory, "--rwdir", str(out),
            "--exec", f"sh {vm / 'wrapper.sh'}", "--qemu-opts", QEMU_CLOCK]
    path = f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    launched = time.time()
    start = time.monotonic()
    proc = subprocess.Popen(args, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, errors="replace",
                            start_new_session=True, env={**os.environ, "PATH": path})
    with contextlib.suppress(PermissionError, ProcessLookupError):  # before vng starts qemu
        os.setpriority(os.PRIO_PROCESS, proc.pid, EMULATOR_NICE)
    try:
        stdout, stderr = proc.communicate(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        stdout, stderr = proc.communicate()
        (vm / "vng.log").write_text(stdout + stderr)
        state = "ran the scenario" if (vm / "started").exists() else "did not boot"
        raise VmError(f"the test VM {state} but did not finish in {timeout_s:.0f} s and was "
                      f"killed; scenario: {_last_words(_read(vm / 'scenario.log'))}") from None
    wall = time.monotonic() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    (vm / "vng.log").write_text(stdout + stderr)
    if not (vm / "started").exists():
        raise VmError(f"the test VM did not boot (vng exit {proc.returncode}): "
                      f"{_last_words(stdout + stderr)}")
    if not (vm / "rc").exists():
        raise VmError(f"the test VM stopped before the scenario finished: "
                      f"{_last_words(_read(vm / 'scenario.log') + stdout + stderr)}")
    rc = int((vm / "rc").read_text().strip() or "1")
    if rc == 97:
        raise VmError(f"modprobe snd-aloop failed in the test VM: "
                      f"{_last_words(_read(vm / 'modprobe.log'))}")
    if rc == 98:
        raise VmError(f"the deskcast launcher died in the test VM: "
                      f"{_last_words(_read(vm / 'launcher.log'))}")
    started_uptime = float((vm / "started").read_text().split()[0])
    booted = (vm / "started").stat().st_mtime - launched  # written through 9p: host clock
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    run = VmRun(out, rc, _read(vm / "scenario.log"), booted, wall, cpu,
                _read_pairs(out / "marks"), _read_pairs(vm / "calibration"))
    logger.info("VM: boot %.1f s (guest uptime %.1f s), %.1f s wall, %.1f s CPU, calibration %s",
                run.boot_s, started_uptime, wall, cpu, run.calibration)
    return run


def _read(path: Path) -> str:
    try:
        return path.read_text(errors="replace")
    except FileNotFoundError:
        return ""
