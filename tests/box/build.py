"""A Raspberry Pi in a box: Pi OS userlands built with debootstrap and run through qemu-user, cached.

Raspberry Pi OS is Debian 12 "bookworm" with Python 3.11. Two boxes (``RECIPES``):

- ``pios64``: Pi OS 64-bit (arm64), edgecls installed as the README tells a Pi 4/5 user:
  ``pip install "edgecls-….whl[runtime]"`` in a venv; and, beside it, as it tells a Pi with a camera:
  apt's NumPy, OpenCV (with GStreamer) and videotestsrc (``python3-numpy``, ``python3-opencv``,
  ``gstreamer1.0-plugins-base``), a second venv with the system site packages (``~/edgecls-camera``), then
  ``pip install "edgecls-….whl[picamera]"`` (NumPy held at apt's 1.x, no pip OpenCV);
- ``pios32``: Pi OS 32-bit (armhf; ``uname -m`` answers armv7l): NumPy and OpenCV from apt
  (``python3-numpy``, ``python3-opencv``), a venv with the system site packages, then the same
  ``pip install "edgecls-….whl[runtime]"`` (tflite-runtime, no ONNX Runtime).

A box lives in ``~/.cache/edgecls/boxes/<name>-<key>/`` (``EDGECLS_BOX_CACHE`` moves it), ``key`` a digest
of its recipe, this file and the project's runtime requirements: it is built once (debootstrap, the
dependency install) and rebuilt only when one of those changes; older keys of the same box are removed.
A test session reinstalls only the edgecls wheel of the tree (``--no-deps --force-reinstall``).

Every command in a box runs in a mount namespace of its own (``unshare --mount --uts``) with ``/proc`` and
``/dev`` mounted and the box's name as host name, so nothing stays mounted when it ends. ``/sys`` is never
mounted: XNNPACK segfaults under qemu-user when it can read ``/sys`` (without it LiteRT uses its built-in
kernels). The Debian mirror is the one this machine's apt uses; pip inside gets this machine's CA bundle,
``resolv.conf`` and package index settings.

Command line (``make boxes``): ``python tests/box/build.py [pios64 pios32]`` builds what is missing and prints
each box's record (build times, sizes, resolved versions) as JSON.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import logging
import os
import re
import shlex
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import tomllib

log = logging.getLogger("edgecls.box")

ROOT = Path(__file__).resolve().parents[2]
SUITE = "bookworm"  # Raspberry Pi OS 12 is Debian 12
BOX_USER = "pi"
VENV = f"/home/{BOX_USER}/edgecls"  # the README's device venv, ~/edgecls
CAMERA_VENV = f"/home/{BOX_USER}/edgecls-camera"  # the README's "Pi with a camera" venv, ~/edgecls-camera
CAMERA_APT = ("python3-numpy", "python3-opencv", "gstreamer1.0-plugins-base")  # videotestsrc, videoconvert, appsink
HOST_CA = Path("/etc/ssl/certs/ca-certificates.crt")
BOX_CA = "/etc/edgecls-box/host-ca.crt"  # this machine's CA bundle, for pip in the box (PIP_CERT)
BUILD_TIMEOUT_S = 3600  # debootstrap and pip under emulation: minutes; an hour means something hangs
RECORD = "box.json"


class BoxUnavailable(Exception):
    """This machine cannot build or run a box (not root, no qemu-user/binfmt_misc, no debootstrap): a reason."""


class BoxBuildError(Exception):
    """A step of a box build failed: the step and the tail of its output."""


@dataclass(frozen=True)
class Recipe:
    """What a box is: a Debian architecture, what apt puts in it, how edgecls is installed."""

    name: str
    title: str
    debian_arch: str  # debootstrap --arch
    binfmt: str  # update-binfmts --enable NAME
    machine: str  # what platform.machine() answers inside
    apt: tuple[str, ...]  # debootstrap --include (with their dependencies)
    system_site_packages: bool  # the venv sees apt's Python packages
    target: str  # the edgecls target profile of the board it stands for
    camera: bool = False  # also CAMERA_VENV: edgecls[picamera] over apt's NumPy and OpenCV (CAMERA_APT)


COMMON_APT = ("python3", "python3-venv", "openssh-server", "procps")  # sshd: the device over SSH; procps: ps
RECIPES = {
    "pios64": Recipe(
        "pios64",
        "Pi OS 64-bit (arm64)",
        "arm64",
        "qemu-aarch64",
        "aarch64",
        (*COMMON_APT, *CAMERA_APT),
        False,
        "rpi5",
        camera=True,
    ),
    "pios32": Recipe(
        "pios32",
        "Pi OS 32-bit (armhf)",
        "armhf",
        "qemu-arm",
        "armv7l",
        (*COMMON_APT, "python3-numpy", "python3-opencv"),
        True,
        "rpi4",
    ),
}


# --- this machine -------------------------------------------------------------------------------------------


def cache_dir() -> Path:
    return Path(os.environ.get("EDGECLS_BOX_CACHE") or Path.home() / ".cache" / "edgecls" / "boxes")


def unavailable_reason(recipe: Recipe) -> str | None:
    """Why this machine cannot build and run ``recipe``'s box, or ``None`` (binfmt_misc is enabled on the way)."""
    if sys.platform != "linux" or os.uname().machine != "x86_64":
        return f"boxes are built on an x86_64 Linux machine, this is {sys.platform} {os.uname().machine}"
    if os.geteuid() != 0:
        return "building a box needs root (debootstrap, chroot, mount, binfmt_misc)"
    for tool, package in (
        ("debootstrap", "debootstrap"),
        ("update-binfmts", "binfmt-support"),
        (f"{recipe.binfmt}-static", "qemu-user-static"),
        ("unshare", "util-linux"),
        ("chroot", "coreutils"),
    ):
        if shutil.which(tool) is None:
            return f"{tool} not installed (apt-get install -y {package})"
    try:
        enable_binfmt(recipe.binfmt)
    except BoxUnavailable as exc:
        return str(exc)
    if not HOST_CA.is_file():
        return f"{HOST_CA} missing: pip in the box needs this machine's CA bundle (apt-get install -y ca-certificates)"
    try:
        debian_mirror()
    except BoxUnavailable as exc:
        return str(exc)
    return None


def enable_binfmt(name: str) -> None:
    """Mount binfmt_misc and enable qemu-user's entry ``name``: the kernel then runs ARM programs through qemu."""
    misc = Path("/proc/sys/fs/binfmt_misc")
    if not (misc / "register").exists():
        mounted = subprocess.run(
            ["mount", "-t", "binfmt_misc", "binfmt_misc", str(misc)], capture_output=True, text=True
        )
        # Another box's build (a thread of ``main``) may have mounted it between the check and this mount.
        if mounted.returncode != 0 and not (misc / "register").exists():
            raise BoxUnavailable(f"cannot mount binfmt_misc at {misc}: {mounted.stderr.strip()}")
    entry = misc / name
    if not entry.is_file() or "enabled" not in entry.read_text():
        enabled = subprocess.run(["update-binfmts", "--enable", name], capture_output=True, text=True)
        if enabled.returncode != 0 or not entry.is_file():
            raise BoxUnavailable(f"update-binfmts --enable {name} failed: {(enabled.stderr or enabled.stdout).strip()}")
    flags = re.search(r"^flags: *(\S*)", entry.read_text(), re.MULTILINE)
    if flags is None or "F" not in flags.group(1):
        # Without F the kernel looks for the interpreter inside the chroot, where it is not.
        raise BoxUnavailable(f"binfmt entry {name} lacks the F (fix binary) flag; reinstall qemu-user-static")


def debian_mirror(sources: Path = Path("/etc/apt")) -> str:
    """The URI this machine's apt uses for Debian ``SUITE`` (deb822 ``.sources`` first, then ``sources.list``)."""
    for path in sorted((sources / "sources.list.d").glob("*.sources")):
        for stanza in re.split(r"\n\s*\n", path.read_text()):
            fields = {}
            for line in stanza.splitlines():
                key, colon, value = line.partition(":")
                if colon and not line.startswith(("#", " ")):
                    fields[key.strip().lower()] = value.split()
            if "deb" in fields.get("types", []) and SUITE in fields.get("suites", []) and fields.get("uris"):
                return fields["uris"][0]
    for path in [sources / "sources.list", *sorted((sources / "sources.list.d").glob("*.list"))]:
        if path.is_file():
            for line in path.read_text().splitlines():
                words = [word for word in re.sub(r"\[[^]]*\]", "", line).split()]
                if len(words) >= 3 and words[0] == "deb" and words[2] == SUITE:
                    return words[1]
    raise BoxUnavailable(f"no Debian {SUITE} mirror in this machine's apt sources ({sources})")


def host_pip_environment() -> dict[str, str]:
    """How this machine's pip reaches its package index, as environment for pip in the box.

    ``index-url`` and ``extra-index-url`` from ``pip config`` (files and ``PIP_*`` variables) where they are
    http(s) (a ``file://`` index of this machine is not in the box), the proxy variables, and ``PIP_CERT``
    pointing at this machine's CA bundle copied into the box.
    """
    listed = subprocess.run([sys.executable, "-m", "pip", "config", "list"], capture_output=True, text=True)
    settings: dict[str, list[str]] = {}
    for line in listed.stdout.splitlines():
        key, equals, value = line.partition("=")
        option = key.rpartition(".")[2]
        if equals and option in ("index-url", "extra-index-url"):
            urls = [url for url in value.strip().strip("'\"").split() if url.startswith(("http://", "https://"))]
            settings.setdefault(option, [])
            settings[option] += [url for url in urls if url not in settings[option]]
    environment = {"PIP_CERT": BOX_CA, "PIP_DISABLE_PIP_VERSION_CHECK": "1", "PIP_DEFAULT_TIMEOUT": "180"}
    if settings.get("index-url"):
        environment["PIP_INDEX_URL"] = settings["index-url"][0]
    if settings.get("extra-index-url"):
        environment["PIP_EXTRA_INDEX_URL"] = " ".join(settings["extra-index-url"])
    for name in ("http_proxy", "https_proxy", "no_proxy", "HTTP_PROXY", "HTTPS_PROXY", "NO_PROXY"):
        if os.environ.get(name):
            environment[name] = os.environ[name]
    return environment


def runtime_requirements() -> dict[str, object]:
    """What the dependency install of a box depends on in pyproject.toml."""
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    return {
        "dependencies": project.get("dependencies", []),
        "runtime": project["optional-dependencies"]["runtime"],
        "picamera": project["optional-dependencies"]["picamera"],
        "requires-python": project.get("requires-python"),
    }


def recipe_key(recipe: Recipe) -> str:
    """16 hex digits of the recipe, this builder and the runtime requirements: a change to any rebuilds the box."""
    digest = hashlib.sha256()
    digest.update(json.dumps({"recipe": asdict(recipe), "suite": SUITE, **runtime_requirements()}).encode())
    digest.update(Path(__file__).read_bytes())
    return digest.hexdigest()[:16]


def build_wheel(out: Path) -> Path:
    """The edgecls wheel of this tree (what a user downloads), built into ``out``."""
    out.mkdir(parents=True, exist_ok=True)
    for old in out.glob("edgecls-*.whl"):
        old.unlink()
    command = [sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(out), str(ROOT)]
    built = subprocess.run(command, capture_output=True, text=True)
    if built.returncode != 0:
        raise BoxBuildError(f"building the edgecls wheel failed: {built.stderr[-2000:]}")
    return next(out.glob("edgecls-*.whl"))


# --- a box ----------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Box:
    recipe: Recipe
    path: Path  # <cache>/<name>-<key>

    @property
    def root(self) -> Path:
        return self.path / "root"

    @property
    def record(self) -> dict:
        """The build's record: times, sizes, the versions pip resolved."""
        return json.loads((self.path / RECORD).read_text())

    def host_path(self, path_in_box: str) -> Path:
        return self.root / path_in_box.lstrip("/")

    def command(self, argv: Sequence[str], *, user: str = BOX_USER, env: dict[str, str] | None = None) -> list[str]:
        """The host command that runs ``argv`` in the box as ``user``, with a clean environment plus ``env``."""
        home = "/root" if user == "root" else f"/home/{user}"
        system = "/usr/local/sbin:/usr/sbin:/sbin:" if user == "root" else ""
        environment = {"PATH": f"{VENV}/bin:{system}/usr/local/bin:/usr/bin:/bin", "HOME": home, "LANG": "C.UTF-8"}
        environment.update(env or {})
        setup = (
            'mount -t proc proc "$0/proc" && mount --bind /dev "$0/dev" && '
            f"hostname {shlex.quote(self.recipe.name)} && "
            f'exec chroot --userspec={user}:{user} "$0" /usr/bin/env -i "$@"'
        )
        assignments = [f"{key}={value}" for key, value in environment.items()]
        return ["unshare", "--mount", "--uts", "sh", "-c", setup, str(self.root), *assignments, *argv]

    def run(
        self,
        argv: Sequence[str],
        *,
        user: str = BOX_USER,
        env: dict[str, str] | None = None,
        timeout: float = 600,
        check: bool = True,
        step: str = "",
    ) -> subprocess.CompletedProcess:
        completed = subprocess.run(
            self.command(argv, user=user, env=env), capture_output=True, text=True, timeout=timeout, check=False
        )
        if check and completed.returncode != 0:
            output = (completed.stdout + completed.stderr)[-3000:]
            raise BoxBuildError(
                f"{self.recipe.name}: {step or shlex.join(argv)} failed ({completed.returncode}): {output}"
            )
        return completed

    def install_wheel(self, wheel: Path) -> float:
        """Reinstall the edgecls wheel alone (``--no-deps --force-reinstall``): seconds it took."""
        staged = self.host_path(f"/tmp/{wheel.name}")
        shutil.copyfile(wheel, staged)
        staged.chmod(0o644)
        started = time.monotonic()
        try:
            self.run(
                [
                    f"{VENV}/bin/pip",
                    "install",
                    "-q",
                    "--no-deps",
                    "--force-reinstall",
                    "--no-cache-dir",
                    f"/tmp/{wheel.name}",
                ],
                env={"PIP_DISABLE_PIP_VERSION_CHECK": "1"},
                step="reinstalling the edgecls wheel",
            )
        finally:
            staged.unlink(missing_ok=True)
        return time.monotonic() - started


def get_box(name: str, *, wheel_dir: Path | None = None) -> Box:
    """The box ``name``, built first when the cache holds none for its recipe (locked against a parallel build)."""
    recipe = RECIPES[name]
    reason = unavailable_reason(recipe)
    if reason:
        raise BoxUnavailable(reason)
    cache = cache_dir()
    cache.mkdir(parents=True, exist_ok=True)
    box = Box(recipe, cache / f"{name}-{recipe_key(recipe)}")
    with _locked(cache / f"{name}.lock"):
        if not (box.path / RECORD).is_file():
            for stale in cache.glob(f"{name}-*"):
                if stale != _partial(box):  # another recipe's box; a build of this recipe resumes
                    _remove(stale)
            with tempfile.TemporaryDirectory(prefix="edgecls-box-wheel-") as scratch:
                _build(box, build_wheel(wheel_dir or Path(scratch)))
    return box


@contextlib.contextmanager
def _locked(path: Path) -> Iterator[None]:
    with path.open("w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _remove(path: Path) -> None:
    """Delete a box folder; refused while anything is mounted inside it (``rm`` would follow a bind mount)."""
    inside = [line.split()[1] for line in Path("/proc/mounts").read_text().splitlines() if len(line.split()) > 1]
    mounted = [point for point in inside if point == str(path) or point.startswith(f"{path}/")]
    if mounted:
        raise BoxBuildError(f"{path} still has mounts ({', '.join(mounted[:3])}); unmount them, then retry")
    subprocess.run(["rm", "-rf", "--one-file-system", str(path)], check=True)


def _partial(box: Box) -> Path:
    """Where ``box`` is built. Kept once its debootstrap finished (``debootstrap.json``): a later step's failure
    does not cost the userland again."""
    return box.path.with_name(box.path.name + ".partial")


def _build(box: Box, wheel: Path) -> None:
    recipe, partial = box.recipe, _partial(box)
    building = Box(recipe, partial)
    record: dict[str, object] = {"name": recipe.name, "title": recipe.title, "key": box.path.name.rsplit("-", 1)[1]}
    userland = partial / "debootstrap.json"
    if not userland.is_file():
        if partial.exists():
            _remove(partial)
        partial.mkdir(parents=True)
        mirror = debian_mirror()
        log.info("%s: debootstrap %s %s from %s", recipe.name, recipe.debian_arch, SUITE, mirror)
        started = time.monotonic()
        options = [f"--arch={recipe.debian_arch}", "--variant=minbase", f"--include={','.join(recipe.apt)}"]
        command = ["unshare", "--mount", "debootstrap", *options, SUITE, str(building.root), mirror]
        _step(command, "debootstrap", partial / "debootstrap.log")
        userland.write_text(json.dumps({"debootstrap_s": round(time.monotonic() - started, 1)}))
    record.update(json.loads(userland.read_text()))
    for folder in (VENV, CAMERA_VENV):  # a failed install's venvs: made again
        if building.host_path(folder).exists():
            shutil.rmtree(building.host_path(folder))

    shutil.copyfile("/etc/resolv.conf", building.host_path("/etc/resolv.conf"))
    building.host_path(BOX_CA).parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(HOST_CA, building.host_path(BOX_CA))
    building.host_path(BOX_CA).chmod(0o644)
    if building.run(["id", BOX_USER], user="root", check=False).returncode != 0:
        building.run(["useradd", "--create-home", "--shell", "/bin/sh", BOX_USER], user="root", step="useradd")
    # '*': no password, yet not a locked account ('!', useradd's default), which sshd refuses even a key for.
    building.run(["usermod", "--password", "*", BOX_USER], user="root", step="usermod")
    venv = ["python3", "-m", "venv", *(["--system-site-packages"] if recipe.system_site_packages else []), VENV]
    building.run(venv, step="python3 -m venv")
    shutil.copyfile(wheel, building.host_path(f"/tmp/{wheel.name}"))
    pip_env = host_pip_environment()
    record["pip_index"] = {key: value for key, value in pip_env.items() if "INDEX" in key} or "pip's default (PyPI)"
    started = time.monotonic()
    install = [f"{VENV}/bin/pip", "install", "--no-cache-dir", f"/tmp/{wheel.name}[runtime]"]
    installed = building.run(install, env=pip_env, timeout=BUILD_TIMEOUT_S, step="pip install edgecls[runtime]")
    record["pip_install_s"] = round(time.monotonic() - started, 1)
    (partial / "pip-install.log").write_text(installed.stdout + installed.stderr)
    if recipe.camera:
        record["camera"] = _build_camera_venv(building, wheel, pip_env, partial / "pip-install-camera.log")
    building.host_path(f"/tmp/{wheel.name}").unlink()

    listed = building.run([f"{VENV}/bin/pip", "list", "--format=json"], step="pip list")
    record["packages"] = {item["name"].lower(): item["version"] for item in json.loads(listed.stdout)}
    probe = building.run(
        [f"{VENV}/bin/python", "-c", "import platform; print(platform.machine(), platform.python_version())"]
    )
    record["machine"], record["python"] = probe.stdout.split()
    if record["machine"] != recipe.machine:
        raise BoxBuildError(f"{recipe.name}: Python in the box answers {record['machine']}, expected {recipe.machine}")
    record["venv_mb"] = _size_mb(building.host_path(VENV))
    record["root_mb"] = _size_mb(building.root)
    record["dpkg_mb"], record["dpkg_packages"] = _dpkg_mb(building)
    record["built"] = time.strftime("%Y-%m-%dT%H:%M:%S")
    (partial / RECORD).write_text(json.dumps(record, indent=2) + "\n")
    partial.rename(box.path)
    log.info(
        "%s: built in %.0f s (debootstrap) + %.0f s (pip)",
        recipe.name,
        record["debootstrap_s"],
        record["pip_install_s"],
    )


# What the camera venv's Python imports, and from where: NumPy and OpenCV must be apt's (/usr/lib/python3).
CAMERA_PROBE = """
import json, cv2, numpy
print(json.dumps({"numpy": numpy.__version__, "numpy_file": numpy.__file__, "cv2": cv2.__version__,
    "cv2_file": cv2.__file__, "gstreamer": bool(cv2.videoio_registry.hasBackend(cv2.CAP_GSTREAMER))}))
"""


def _build_camera_venv(box: Box, wheel: Path, pip_env: dict[str, str], log_file: Path) -> dict[str, object]:
    """The README's "Pi with a camera" install in ``box``: a venv with the system site packages, then
    ``edgecls[picamera]``. Its record: seconds, what pip installed into the venv, what NumPy and OpenCV import."""
    box.run(["python3", "-m", "venv", "--system-site-packages", CAMERA_VENV], step="python3 -m venv (camera)")
    started = time.monotonic()
    install = [f"{CAMERA_VENV}/bin/pip", "install", "--no-cache-dir", f"/tmp/{wheel.name}[picamera]"]
    installed = box.run(install, env=pip_env, timeout=BUILD_TIMEOUT_S, step="pip install edgecls[picamera]")
    log_file.write_text(installed.stdout + installed.stderr)
    seconds = round(time.monotonic() - started, 1)
    listed = box.run([f"{CAMERA_VENV}/bin/pip", "list", "--local", "--format=json"], step="pip list (camera)")
    probe = box.run([f"{CAMERA_VENV}/bin/python", "-c", CAMERA_PROBE], step="camera venv probe")
    return {
        "pip_install_s": seconds,
        "venv_packages": {item["name"].lower(): item["version"] for item in json.loads(listed.stdout)},
        "imports": json.loads(probe.stdout),
        "venv_mb": _size_mb(box.host_path(CAMERA_VENV)),
    }


def _step(command: list[str], step: str, log_file: Path) -> None:
    with log_file.open("w") as output:
        completed = subprocess.run(command, stdout=output, stderr=subprocess.STDOUT, timeout=BUILD_TIMEOUT_S)
    if completed.returncode != 0:
        tail = log_file.read_text()[-3000:]
        raise BoxBuildError(f"{step} failed ({completed.returncode}), see {log_file}: {tail}")


def _size_mb(path: Path) -> float:
    du = subprocess.run(["du", "-s", "--one-file-system", "--block-size=1", str(path)], capture_output=True, text=True)
    return round(int(du.stdout.split()[0]) / 1e6, 1)


def _dpkg_mb(box: Box) -> tuple[float, int]:
    """Installed size of every Debian package in the box (dpkg's figures, KiB) in MB, and how many there are."""
    listed = box.run(["dpkg-query", "-W", "-f", "${Installed-Size}\\n"], step="dpkg-query")
    sizes = [int(line) for line in listed.stdout.split() if line.isdigit()]
    return round(sum(sizes) * 1024 / 1e6, 1), len(sizes)


def is_built(name: str) -> bool:
    """Whether the cache holds ``name``'s box for its current recipe (nothing is built or checked beyond that)."""
    recipe = RECIPES[name]
    return (cache_dir() / f"{name}-{recipe_key(recipe)}" / RECORD).is_file()


def start_background_build(names: Sequence[str] = tuple(RECIPES)) -> subprocess.Popen | None:
    """Build the boxes not yet cached in a niced process of its own, logging to ``<cache>/build.log``.

    ``None`` when every box is cached or this machine cannot build one (the tests then skip, saying why).
    ``get_box`` waits for it through the boxes' locks. Started when a test session has collected the box tests,
    which run last: the build fills the cores the rest of the suite leaves idle.
    """
    missing = [name for name in names if not is_built(name) and unavailable_reason(RECIPES[name]) is None]
    if not missing:
        return None
    cache_dir().mkdir(parents=True, exist_ok=True)
    with (cache_dir() / "build.log").open("w") as log_file:
        command = ["nice", "-n", "10", sys.executable, str(Path(__file__).resolve()), *missing]
        return subprocess.Popen(command, stdout=log_file, stderr=subprocess.STDOUT, start_new_session=True)


def main(argv: Sequence[str] | None = None) -> int:
    """Build the boxes named (default: all) at once: each is one emulated dpkg or pip at a time, one core."""
    from concurrent.futures import ThreadPoolExecutor

    logging.basicConfig(level=logging.INFO, format="%(message)s", stream=sys.stderr)
    names = list(argv if argv is not None else sys.argv[1:]) or list(RECIPES)
    unknown = [name for name in names if name not in RECIPES]
    if unknown:
        print(f"error: unknown box {unknown[0]!r}; boxes: {', '.join(RECIPES)}", file=sys.stderr)
        return 2

    def one(name: str) -> tuple[str, dict | None, str]:
        started = time.monotonic()
        try:
            box = get_box(name)
        except BoxUnavailable as exc:
            return name, None, f"skipped {name}: {exc}"
        except (BoxBuildError, subprocess.SubprocessError, OSError) as exc:
            return name, None, f"error: {name}: {exc}"
        return name, {**box.record, "path": str(box.path), "get_box_s": round(time.monotonic() - started, 1)}, ""

    with ThreadPoolExecutor(max_workers=len(names)) as pool:
        outcomes = list(pool.map(one, names))
    for _name, _record, message in outcomes:
        if message:
            print(message, file=sys.stderr)
    print(json.dumps({name: record for name, record, _ in outcomes if record}, indent=2))
    return 1 if any(message.startswith("error") for _, _, message in outcomes) else 0


if __name__ == "__main__":
    sys.exit(main())
