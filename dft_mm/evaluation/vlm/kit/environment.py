"""Where VLMEvalKit runs: an interpreter that has the real ``vlmeval`` (PyPI ``ms-vlmeval``),
always in a subprocess.

A subprocess because importing ``vlmeval`` turns off SSL certificate checks for the whole
process (``ssl._create_default_https_context = ssl._create_unverified_context``). Which
interpreter (the first that applies):

1. ``kit_python`` (``--kit-python``) or ``$DFT_MM_VLMEVAL_PYTHON``;
2. this interpreter, when ``vlmeval`` is installed here (``pip install 'dft_mm[vlmeval]'``);
3. the kit's own environment that ``dft-mm eval vlm install-kit`` makes, by default
   ``<this environment>/vlmeval-kit`` (``make setup`` makes ``.venv/vlmeval-kit``).

The kit's own environment holds the ``vlmeval`` extra of dft_mm plus the torch, torchvision
and transformers versions installed beside dft_mm (dft_mm itself declares ranges), so it loads
checkpoints exactly as training wrote them. It shares this environment's packages rather than
a second copy of them (torch and its CUDA libraries are ~5 GB): a ``.pth`` line puts this
environment's site-packages *after* the kit's own, so pip installs into the kit only what this
environment lacks or pins differently (the kit's ``pandas<3``, its pydantic), and those win
there; this environment itself is not changed (its ``pip check`` stays clean).

Example::

    python = find_kit_python()
    run_kit_worker(python, ["evaluate", "--dataset", "WeMath", "--eval-file", "m_WeMath.xlsx", ...])
"""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from pathlib import Path

from dft_mm.errors import UserError

KIT_PYTHON_ENV = "DFT_MM_VLMEVAL_PYTHON"
KIT_EXTRA = "vlmeval"
# the packages the kit environment gets at this environment's versions (the kit would take the newest)
SHARED_PINS = ("torch", "torchvision", "transformers")
WORKER = Path(__file__).with_name("worker.py")
SHARED_PTH = "dft_mm_shared_packages.pth"  # in the kit's site-packages: this environment's, after the kit's


def default_kit_env() -> Path:
    """``<sys.prefix>/vlmeval-kit``: removed together with the environment dft_mm lives in."""
    return Path(sys.prefix) / "vlmeval-kit"


def _env_python(env: Path) -> Path:
    return env / ("Scripts/python.exe" if os.name == "nt" else "bin/python")


def kit_requirements() -> list[str]:
    """The ``vlmeval`` extra of dft_mm plus :data:`SHARED_PINS` at the versions installed here
    (without a local label such as ``+cu130``), e.g. ``["ms-vlmeval==0.0.20", "google-genai==2.8.0",
    "torch==2.14.1", ...]``."""
    from importlib.metadata import requires, version

    from packaging.requirements import Requirement

    extra = []
    for text in requires("dft_mm") or []:
        requirement = Requirement(text)
        if requirement.marker is not None and requirement.marker.evaluate({"extra": KIT_EXTRA}):
            extra.append(f"{requirement.name}{requirement.specifier}")
    if not extra:
        raise UserError(f"dft_mm's metadata has no [{KIT_EXTRA}] extra; reinstall dft_mm (pip install -e .)")
    return extra + [f"{name}=={version(name).split('+')[0]}" for name in SHARED_PINS]


def install_kit(env: str | Path | None = None, packages: list[str] | tuple[str, ...] = (), quiet: bool = False) -> Path:
    """Create (or update) the kit's environment; returns its interpreter. Idempotent.

    ``packages`` are installed too (e.g. ``["vllm"]`` for the kit's ``use_vllm``)."""
    env = Path(env) if env else default_kit_env()
    python = _env_python(env)
    if not python.exists():
        print(f"creating the VLMEvalKit environment {env}", flush=True)
        subprocess.run([sys.executable, "-m", "venv", str(env)], check=True)
    share_packages(python)
    command = [str(python), "-m", "pip", "install", *(["--quiet"] if quiet else []), *kit_requirements(), *packages]
    print("running:", " ".join(command), flush=True)
    if subprocess.run(command, check=False).returncode != 0:
        raise UserError(f"installing VLMEvalKit into {env} failed (command above); fix the error pip printed and rerun")
    return python


def share_packages(python: Path) -> Path:
    """Make this environment's site-packages visible to the kit's interpreter ``python``, after
    its own (a ``.pth`` file in the kit's site-packages); returns that file."""
    import sysconfig

    kit_site = subprocess.run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                              capture_output=True, text=True, check=True).stdout.strip()
    shared = Path(kit_site) / SHARED_PTH
    shared.write_text(sysconfig.get_paths()["purelib"] + "\n", encoding="utf-8")
    return shared


def find_kit_python(kit_python: str | Path | None = None) -> str:
    """The interpreter that runs VLMEvalKit (see the module docstring for the order)."""
    explicit = kit_python or os.environ.get(KIT_PYTHON_ENV)
    if explicit:
        if not Path(explicit).is_file():
            raise UserError(f"VLMEvalKit interpreter {explicit} (--kit-python / ${KIT_PYTHON_ENV}) does not exist")
        return str(explicit)
    if importlib.util.find_spec("vlmeval") is not None:
        return sys.executable
    managed = _env_python(default_kit_env())
    if managed.is_file():
        return str(managed)
    raise UserError(
        "VLMEvalKit is not installed: run `dft-mm eval vlm install-kit` (its own environment at "
        f"{default_kit_env()}), or `pip install 'dft_mm[vlmeval]'` here, or pass --kit-python PATH "
        "(an interpreter that has `vlmeval`)"
    )


def kit_environment(**overrides: str | None) -> dict[str, str]:
    """``os.environ`` with ``overrides`` applied (``None`` removes a variable)."""
    env = dict(os.environ)
    for key, value in overrides.items():
        if value is None:
            env.pop(key, None)
        else:
            env[key] = value
    return env


def run_kit_worker(python: str, args: list[str], *, env: dict[str, str] | None = None, cwd: str | Path | None = None,
                   what: str = "VLMEvalKit") -> None:
    """Run :mod:`~dft_mm.evaluation.vlm.kit.worker` (by path, so the kit's interpreter needs no dft_mm) with ``args``."""
    command = [python, str(WORKER), *args]
    print("running:", " ".join(command), flush=True)
    if subprocess.run(command, env=env, cwd=cwd, check=False).returncode != 0:
        raise UserError(f"{what} failed (command above; its log is printed above it)")
