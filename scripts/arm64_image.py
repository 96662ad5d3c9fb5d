"""Build the arm64 (Raspberry Pi) image on an x86 machine with no registry.

    sudo .venv/bin/python scripts/arm64_image.py            # or: sudo make image-arm64
    sudo .venv/bin/python scripts/arm64_image.py --tag edgecode-arm64:v1 --rootfs-cache /var/tmp/arm64-rootfs.tar

Steps (root, dockerd, debootstrap, Debian's qemu-user-static and binfmt-support):

1. QEMU: ``qemu-aarch64`` registered with binfmt_misc with the F (fix binary) flag, so that arm64
   programs run in a chroot and in containers alike (:func:`enable_emulation` mounts binfmt_misc
   and enables the entry when Debian's packages are installed but the entry is not active).
2. The base: ``debootstrap --arch=arm64 --foreign --variant=minbase --include=python3 bookworm``
   (the first stage runs natively), then its second stage in a chroot, under QEMU. Bookworm's
   python3 is 3.11, like the cp311 wheels below. Only python3: no python3-venv, whose pip wheel
   pulls in ca-certificates, about a minute of emulated configuration.
3. ``docker load`` of a one-layer image whose config says linux/arm64/v8. (``docker import
   --platform linux/arm64`` would do, but engines before 23.0 stamp the host's architecture on
   an imported image whatever the flag says, and ``platform: linux/arm64`` then refuses it.)
4. Wheels, on the host: edgecode's own (pure Python), pip's, and every dependency for
   manylinux aarch64 / CPython 3.11 (``pip download --only-binary=:all: --platform ...``).
5. ``docker build -f deploy/Dockerfile`` on that base, with ``WHEELHOUSE`` pointing at those
   wheels, ``PIP_FROM=wheelhouse`` and ``COMPILE=imported`` (every RUN step runs under QEMU; see
   the Dockerfile). The image keeps the Dockerfile's contract: user 10001, ``ENTRYPOINT
   ["edgecode"]``, the gRPC health check; its architecture is arm64, inherited from the base.

The test (tests/e2e/test_arm64.py) calls these functions directly.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import io
import json
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DOCKERFILE = ROOT / "deploy" / "Dockerfile"
SUITE = "bookworm"
MIRROR = "http://deb.debian.org/debian"
BASE_TAG = "edgecode-base-arm64:local"
IMAGE_TAG = "edgecode-arm64:local"
#: The folder of the build context the Dockerfile's WHEELHOUSE names.
WHEELHOUSE = "wheelhouse-arm64"
BINFMT = Path("/proc/sys/fs/binfmt_misc")
#: bookworm's glibc is 2.36: every manylinux tag up to it fits (pip does not expand them itself).
PLATFORMS = ("manylinux2014_aarch64", *(f"manylinux_2_{m}_aarch64" for m in range(17, 37)))
PYTHON_VERSION = "3.11"
BUILD_ARGS = {"WHEELHOUSE": WHEELHOUSE, "PIP_FROM": "wheelhouse", "COMPILE": "imported"}

Log = Callable[[str], None]

EPILOG = f"""\
steps: (1) qemu-aarch64 registered with binfmt_misc (F flag); (2) the base {BASE_TAG}:
debootstrap --arch=arm64 --foreign {SUITE} minbase with python3, its second stage chrooted under
QEMU, loaded as a one-layer linux/arm64 image (skipped when the base image exists: it is the
cache; --rebuild-base redoes it); (3) aarch64 CPython {PYTHON_VERSION} wheels of edgecode and its
dependencies (pip download --only-binary=:all: --platform manylinux2014_aarch64 ...; needs PyPI);
(4) docker build -f deploy/Dockerfile with {" ".join(f"{k}={v}" for k, v in BUILD_ARGS.items())}.

needs: root, a running dockerd, and the Debian packages docker.io debootstrap
qemu-user-static binfmt-support (apt-get install -y --no-install-recommends ...).
run the result: docker run --rm --platform linux/arm64 {IMAGE_TAG} --version
a mixed amd64/arm64 cluster: docker-compose.arm64.yml; notes: docs/notes/arm64.md"""


class BuildError(RuntimeError):
    """A step failed; the message names the step and shows the end of its output."""


def run(command: Sequence[str], timeout: float = 1800, **kwargs: object) -> str:
    """Run ``command``; BuildError with the end of its output when it fails."""
    result = subprocess.run(
        list(command), capture_output=True, text=True, timeout=timeout, check=False, **kwargs
    )  # type: ignore[call-overload]
    if result.returncode != 0:
        raise BuildError(
            f"{' '.join(command)} exited with {result.returncode}:\n"
            f"{result.stdout[-2000:]}\n{result.stderr[-2000:]}"
        )
    return str(result.stdout)


def emulation_problem() -> str | None:
    """Why arm64 programs cannot run here, or None when they can (qemu-aarch64 enabled in
    binfmt_misc with the F flag: the interpreter is opened at registration, so it works inside
    chroots and containers that do not have it)."""
    entry = BINFMT / "qemu-aarch64"
    if not (BINFMT / "status").exists():
        return f"binfmt_misc is not mounted on {BINFMT}"
    if not entry.exists():
        return (
            f"{entry} does not exist: install qemu-user-static and binfmt-support, then "
            "`update-binfmts --enable qemu-aarch64`"
        )
    fields = dict(line.split(" ", 1) for line in entry.read_text().splitlines() if " " in line)
    state = entry.read_text().splitlines()[0].strip()
    if state != "enabled":
        return f"{entry} is {state}: `update-binfmts --enable qemu-aarch64`"
    if "F" not in fields.get("flags:", ""):
        return (
            f"{entry} lacks the F flag (flags: {fields.get('flags:', '').strip()!r}): "
            "containers could not find the interpreter; use Debian's qemu-user-static"
        )
    return None


def enable_emulation() -> None:
    """Mount binfmt_misc and enable qemu-aarch64 when Debian's packages are installed but the
    entry is not active (a container, or a host where binfmt-support never started)."""
    if not (BINFMT / "status").exists():
        run(["mount", "-t", "binfmt_misc", "binfmt_misc", str(BINFMT)])
    if (BINFMT / "qemu-aarch64").exists() or shutil.which("update-binfmts") is None:
        return
    try:
        run(["update-binfmts", "--enable", "qemu-aarch64"])
    except BuildError as exc:
        raise BuildError(
            "could not register qemu-aarch64 with binfmt_misc (apt-get install "
            f"qemu-user-static binfmt-support): {exc}"
        ) from exc


def build_rootfs(dest: Path, mirror: str = MIRROR, log: Log = print) -> dict[str, float]:
    """An arm64 bookworm minbase with python3 in ``dest`` (which must not exist); the seconds
    of each debootstrap stage."""
    problem = emulation_problem()
    if problem is not None:
        raise BuildError(f"arm64 emulation is not available: {problem}")
    started = time.monotonic()
    run(
        [
            "debootstrap",
            "--arch=arm64",
            "--foreign",
            "--variant=minbase",
            "--include=python3",
            SUITE,
            str(dest),
            mirror,
        ]
    )
    first = time.monotonic()
    log(f"[arm64] debootstrap first stage (native) {first - started:.0f} s")
    # dpkg's fsyncs buy nothing in a throw-away build tree; the setting leaves with the tree.
    unsafe_io = dest / "etc" / "dpkg" / "dpkg.cfg.d" / "edgecode-build-unsafe-io"
    unsafe_io.parent.mkdir(parents=True, exist_ok=True)
    unsafe_io.write_text("force-unsafe-io\n")
    run(["chroot", str(dest), "/debootstrap/debootstrap", "--second-stage"])
    unsafe_io.unlink()
    for deb in (dest / "var" / "cache" / "apt" / "archives").glob("*.deb"):
        deb.unlink()
    second = time.monotonic()
    log(f"[arm64] debootstrap second stage (QEMU) {second - first:.0f} s")
    machine = run(["chroot", str(dest), "/bin/uname", "-m"]).strip()
    if machine != "aarch64":
        raise BuildError(f"the arm64 rootfs runs as {machine!r}, not aarch64")
    return {"first_stage": first - started, "second_stage": second - first}


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as stream:
        for chunk in iter(lambda: stream.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def rootfs_tar(rootfs: Path, dest: Path) -> Path:
    """The rootfs as one tar (numeric owners, as a layer needs): the image's only layer, and a
    cache that :func:`load_base` can take again without a rebuild."""
    run(["tar", "--numeric-owner", "-C", str(rootfs), "-cf", str(dest), "."])
    return dest


def load_base(layer: Path, tag: str = BASE_TAG) -> str:
    """``docker load`` the tar ``layer`` as a one-layer linux/arm64/v8 image named ``tag``."""
    diff_id = f"sha256:{_sha256(layer)}"
    config = {
        "architecture": "arm64",
        "variant": "v8",
        "os": "linux",
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "config": {
            "Env": ["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"],
            "Cmd": ["/bin/sh"],
        },
        "rootfs": {"type": "layers", "diff_ids": [diff_id]},
        "history": [{"created_by": f"debootstrap --arch=arm64 --variant=minbase {SUITE}"}],
    }
    config_bytes = json.dumps(config, sort_keys=True).encode()
    config_name = f"{hashlib.sha256(config_bytes).hexdigest()}.json"
    manifest = [{"Config": config_name, "RepoTags": [tag], "Layers": ["layer/layer.tar"]}]
    # One output pipe (stderr into stdout), read after stdin is closed: no deadlock, and no
    # communicate() on a stdin already closed. The with-block closes the pipes whatever happens
    # (an unclosed pipe is a ResourceWarning when the Popen is collected).
    with subprocess.Popen(
        ["docker", "load"], stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.STDOUT
    ) as loader:
        assert loader.stdin is not None and loader.stdout is not None
        try:
            with tarfile.open(fileobj=loader.stdin, mode="w|") as archive:
                for name, data in (
                    (config_name, config_bytes),
                    ("manifest.json", json.dumps(manifest).encode()),
                ):
                    info = tarfile.TarInfo(name)
                    info.size = len(data)
                    archive.addfile(info, io.BytesIO(data))
                archive.add(str(layer), arcname="layer/layer.tar")
        except BrokenPipeError:
            pass  # docker load gave up: its output below says why
        finally:
            with contextlib.suppress(BrokenPipeError):
                loader.stdin.close()
        output = loader.stdout.read().decode(errors="replace")
        code = loader.wait(timeout=600)
    if code != 0:
        raise BuildError(f"docker load of {tag} failed: {output[-2000:]}")
    return tag


def download_wheels(dest: Path, project: Path = ROOT, python: str = sys.executable) -> list[str]:
    """Into ``dest``: edgecode's wheel, pip's, and every dependency for aarch64 / CPython 3.11
    (binary wheels only, nothing compiled); returns the file names."""
    dest.mkdir(parents=True, exist_ok=True)
    platform_flags = [flag for tag in PLATFORMS for flag in ("--platform", tag)]
    target = [
        "--only-binary=:all:",
        *platform_flags,
        "--python-version",
        PYTHON_VERSION,
        "--implementation",
        "cp",
        "--abi",
        f"cp{PYTHON_VERSION.replace('.', '')}",
    ]
    pip = [python, "-m", "pip"]
    run([*pip, "wheel", "-q", "--no-deps", str(project), "-w", str(dest)])
    run([*pip, "download", "-q", *target, "-d", str(dest), str(project), "pip"])
    names = sorted(p.name for p in dest.glob("*.whl"))
    foreign = [n for n in names if n.endswith(".whl") and ("x86_64" in n or "i686" in n)]
    if foreign:
        raise BuildError(f"x86 wheels in the arm64 wheelhouse: {foreign}")
    return names


def build_image(
    context: Path, base: str = BASE_TAG, tag: str = IMAGE_TAG, dockerfile: Path = DOCKERFILE
) -> str:
    """``docker build`` the edgecode image on the arm64 ``base``; ``context`` holds
    ``wheelhouse-arm64/`` (see :func:`download_wheels`)."""
    args = [f"--build-arg={k}={v}" for k, v in {"BASE_IMAGE": base, **BUILD_ARGS}.items()]
    run(["docker", "build", "-q", "-f", str(dockerfile), *args, "-t", tag, str(context)])
    architecture = run(["docker", "image", "inspect", "--format", "{{.Architecture}}", tag])
    if architecture.strip() != "arm64":
        raise BuildError(f"{tag} was built as {architecture.strip()!r}, not arm64")
    return tag


def build_base(
    work: Path,
    tag: str = BASE_TAG,
    mirror: str = MIRROR,
    cache: Path | None = None,
    log: Log = print,
) -> dict[str, float]:
    """The arm64 base image ``tag``; with ``cache`` (a tar from an earlier build) no debootstrap
    runs, and a fresh build is written there. Returns the seconds of each step."""
    seconds: dict[str, float] = {}
    if cache is not None and cache.is_file():
        log(f"[arm64] base from the cached rootfs {cache}")
        layer = cache
    else:
        rootfs = work / "rootfs"
        seconds |= build_rootfs(rootfs, mirror, log)
        layer = rootfs_tar(rootfs, cache if cache is not None else work / "rootfs.tar")
        shutil.rmtree(rootfs)
    started = time.monotonic()
    load_base(layer, tag)
    seconds["load"] = time.monotonic() - started
    log(f"[arm64] {tag} loaded in {seconds['load']:.0f} s")
    if cache is None:
        layer.unlink()
    return seconds


def base_exists(tag: str = BASE_TAG) -> bool:
    """True when the docker engine has ``tag`` as an arm64 image (the cached base)."""
    result = subprocess.run(
        ["docker", "image", "inspect", "--format", "{{.Architecture}}", tag],
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
    )
    return result.returncode == 0 and result.stdout.strip() == "arm64"


#: What each step needs, and the Debian package that provides it.
TOOLS = {
    "docker": "docker.io",
    "debootstrap": "debootstrap",
    "chroot": "coreutils",
    "tar": "tar",
}


def setup_problem(need_debootstrap: bool = True) -> str | None:
    """What this machine lacks to build the image (None: nothing), with what to install."""
    if os.geteuid() != 0:
        return "debootstrap, chroot and binfmt_misc need root: run it with sudo"
    tools = TOOLS if need_debootstrap else {"docker": TOOLS["docker"]}
    missing = sorted({package for tool, package in tools.items() if shutil.which(tool) is None})
    if missing:
        return f"missing programs: apt-get install {' '.join(missing)}"
    if shutil.which("update-binfmts") is None and not (BINFMT / "qemu-aarch64").exists():
        return (
            "no arm64 emulation: apt-get install qemu-user-static binfmt-support "
            "(registers qemu-aarch64 with binfmt_misc, F flag)"
        )
    return None


def build(
    tag: str = IMAGE_TAG,
    base_tag: str = BASE_TAG,
    work: Path | None = None,
    mirror: str = MIRROR,
    cache: Path | None = None,
    log: Log = print,
    rebuild_base: bool = False,
) -> dict[str, float]:
    """Every step above; the seconds each took. The base image is the cache: when ``base_tag``
    exists (arm64) and not ``rebuild_base``, no debootstrap runs."""
    reuse = not rebuild_base and base_exists(base_tag)
    problem = setup_problem(need_debootstrap=not reuse)
    if problem is not None:
        raise BuildError(problem)
    enable_emulation()
    problem = emulation_problem()
    if problem is not None:
        raise BuildError(f"arm64 emulation is not available: {problem}")
    with tempfile.TemporaryDirectory(prefix="edgecode-arm64-", dir=work) as scratch:
        folder = Path(scratch)
        if reuse:
            log(f"[arm64] base {base_tag} exists: no debootstrap (--rebuild-base to redo it)")
            seconds: dict[str, float] = {}
        else:
            seconds = build_base(folder, base_tag, mirror, cache, log)
        started = time.monotonic()
        wheels = download_wheels(folder / "context" / WHEELHOUSE)
        seconds["wheels"] = time.monotonic() - started
        log(f"[arm64] {len(wheels)} wheels in {seconds['wheels']:.0f} s")
        started = time.monotonic()
        build_image(folder / "context", base_tag, tag)
        seconds["image"] = time.monotonic() - started
        log(f"[arm64] {tag} built in {seconds['image']:.0f} s (RUN steps under QEMU)")
    return seconds


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0],
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--tag", default=IMAGE_TAG, help=f"the image (default {IMAGE_TAG})")
    parser.add_argument(
        "--base-tag", default=BASE_TAG, help=f"the debootstrap base image (default {BASE_TAG})"
    )
    parser.add_argument("--mirror", default=MIRROR, help=f"Debian mirror (default {MIRROR})")
    parser.add_argument("--work", type=Path, default=None, help="scratch folder (default: /tmp)")
    parser.add_argument(
        "--rootfs-cache",
        type=Path,
        default=None,
        help="a tar of the arm64 rootfs: used when it exists, written when it does not",
    )
    parser.add_argument(
        "--rebuild-base",
        action="store_true",
        help="run debootstrap again even when the base image exists",
    )
    args = parser.parse_args(argv)
    try:
        seconds = build(
            args.tag,
            args.base_tag,
            args.work,
            args.mirror,
            args.rootfs_cache,
            rebuild_base=args.rebuild_base,
        )
    except BuildError as exc:
        print(f"arm64_image: {exc}", file=sys.stderr)
        return 1
    total = sum(seconds.values())
    print(
        f"[arm64] {args.tag}: {total:.0f} s in all ({', '.join(f'{k} {v:.0f} s' for k, v in seconds.items())})"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
