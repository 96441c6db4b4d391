"""A stock Debian kernel for the test VM (:mod:`rig.vm`), unpacked into a cache folder.

The package is fetched with ``apt-get download`` and unpacked with ``dpkg-deb -x``: nothing is
installed, so the machine running the tests never gets a new boot kernel. ``depmod -b`` then
writes the module index (a Debian package leaves that to its post-install script), so
``modprobe snd-aloop`` works inside the VM.

``python tests/rig/vmkernel.py`` fetches it when the cache has none (``./bootstrap test`` does);
the cache is ``$DESKCAST_VM_CACHE``, else ``${XDG_CACHE_HOME:-~/.cache}/deskcast-test-vm``.
"""

from __future__ import annotations

import os
import platform
import re
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

META_PACKAGE = "linux-image-amd64"
"""Debian's "the current kernel" package; its dependency names the versioned image."""
NEEDED_MODULE = "kernel/sound/drivers/snd-aloop.ko"


class VmUnavailableError(Exception):
    """A piece the VM needs is missing; the message says which and how to get it, in one line."""


@dataclass(frozen=True)
class Kernel:
    version: str  # e.g. 6.1.0-57-amd64
    root: Path  # the unpacked package: boot/, lib/modules/VERSION/

    @property
    def image(self) -> Path:
        return self.root / "boot" / f"vmlinuz-{self.version}"

    @property
    def moddir(self) -> Path:
        return self.root / "lib" / "modules" / self.version


def cache_dir() -> Path:
    if os.environ.get("DESKCAST_VM_CACHE"):
        return Path(os.environ["DESKCAST_VM_CACHE"])
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "deskcast-test-vm"


def _complete(root: Path) -> Kernel | None:
    kernel = Kernel(root.name, root)
    needed = (kernel.image, kernel.moddir / "modules.dep", kernel.moddir / NEEDED_MODULE)
    return kernel if all(path.is_file() for path in needed) else None


def cached_kernel(cache: Path | None = None) -> Kernel | None:
    """The newest complete kernel in the cache (a folder is renamed into place only once it
    is unpacked and indexed), or None."""
    cache = cache or cache_dir()
    found = [k for d in sorted(cache.glob("*-amd64")) if (k := _complete(d)) is not None]
    return found[-1] if found else None


def _run(args: list[str], what: str, cwd: Path | None = None) -> str:
    try:
        done = subprocess.run(args, cwd=cwd, capture_output=True, text=True, timeout=900,
                              check=False)
    except FileNotFoundError:
        raise VmUnavailableError(f"{what}: {args[0]} is not installed") from None
    except subprocess.TimeoutExpired:
        raise VmUnavailableError(f"{what}: {args[0]} took more than 15 minutes") from None
    if done.returncode != 0:
        last = (done.stderr.strip().splitlines() or ["(no message)"])[-1]
        raise VmUnavailableError(f"{what}: {' '.join(args)} failed: {last}")
    return done.stdout


def kernel_package() -> str:
    """The versioned image package ``linux-image-amd64`` depends on now."""
    out = _run(["apt-cache", "depends", "--important", META_PACKAGE],
               f"finding the Debian kernel package ({META_PACKAGE})")
    names = re.findall(r"Depends:\s*(linux-image-[0-9][^\s<>]*)", out)
    if not names:
        raise VmUnavailableError(f"apt-cache knows no {META_PACKAGE}: run apt-get update (the test "
                            "VM boots a Debian kernel fetched with apt-get download)")
    return str(names[0])


def fetch_kernel(cache: Path | None = None) -> Kernel:
    """Download the current Debian kernel package and unpack it into the cache (not install)."""
    if platform.machine() != "x86_64":
        raise VmUnavailableError(f"the test VM boots an amd64 kernel; this machine is "
                            f"{platform.machine()}")
    cache = cache or cache_dir()
    package = kernel_package()
    version = package.removeprefix("linux-image-")
    cache.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=cache, prefix=".fetch-") as tmp:
        work = Path(tmp)
        _run(["apt-get", "download", package], f"downloading {package}", cwd=work)
        debs = sorted(work.glob(f"{package}_*.deb"))
        if not debs:
            raise VmUnavailableError(f"apt-get download {package} left no .deb")
        unpacked = work / version
        _run(["dpkg-deb", "-x", str(debs[0]), str(unpacked)], f"unpacking {debs[0].name}")
        depmod = shutil.which("depmod") or "/usr/sbin/depmod"
        _run([depmod, "-a", "-b", str(unpacked), version], "indexing the kernel's modules (kmod)")
        if _complete(unpacked) is None:
            raise VmUnavailableError(f"{package} has no {NEEDED_MODULE} (snd-aloop)")
        final = cache / version
        if final.exists():
            shutil.rmtree(final)
        unpacked.rename(final)
    kernel = _complete(final)
    assert kernel is not None
    return kernel


def ensure_kernel(cache: Path | None = None) -> Kernel:
    return cached_kernel(cache) or fetch_kernel(cache)


def main() -> int:
    try:
        kernel = ensure_kernel()
    except VmUnavailableError as err:
        print(f"vmkernel: {err}", file=sys.stderr)
        return 2
    print(kernel.image)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
