"""A fake SLURM (``sbatch``, ``sacct``, ``scancel``, ``srun``) that runs submitted scripts on this machine.

It speaks the protocol submitit's SLURM executor uses: ``sbatch SCRIPT`` answers ``Submitted batch job ID``;
``sacct -o JobID,State,NodeList --parsable2 -j ID ...`` answers a ``|``-separated table; ``scancel ID`` ends a
job; the script's ``srun --unbuffered --output F --error F COMMAND`` runs the command with SLURM's ``%j``/``%t``
file patterns expanded. Every submitted script is kept as ``$FAKE_SLURM_DIR/<id>.sh`` for the tests to read.
A job whose ``--job-name`` contains ``$FAKE_SLURM_FAIL`` fails at once (exit 1, no result), as a job killed by
the cluster does; with ``$FAKE_SLURM_HOLD`` set, jobs stay PENDING until ``scancel``. :func:`install` writes the
four commands into a folder for ``PATH``.
"""

import os
import re
import signal
import subprocess
import sys
from pathlib import Path

COMMANDS = ("sbatch", "sacct", "scancel", "srun")


def install(folder: Path) -> Path:
    """Write the fake commands into ``folder`` (executable scripts that run this file) and return it."""
    folder.mkdir(parents=True, exist_ok=True)
    for name in COMMANDS:
        script = folder / name
        script.write_text(f"#!{sys.executable}\nimport sys\nsys.path.insert(0, {str(Path(__file__).parent)!r})\n"
                          f"import fake_slurm\nsys.exit(fake_slurm.main({name!r}, sys.argv[1:]))\n")
        script.chmod(0o755)
    return folder


def _state_dir() -> Path:
    return Path(os.environ["FAKE_SLURM_DIR"])


def _sbatch(args) -> int:
    script = Path(args[-1])
    folder = _state_dir()
    folder.mkdir(parents=True, exist_ok=True)
    job_id = str(1000 + len(list(folder.glob("*.sh"))))
    text = script.read_text()
    (folder / f"{job_id}.sh").write_text(text)
    name = re.search(r"^#SBATCH --job-name=(.*)$", text, re.M)
    fail = os.environ.get("FAKE_SLURM_FAIL")
    command = ["bash", "-c", "exit 1"] if fail and name and fail in name.group(1) else ["bash", str(script)]
    env = {**os.environ, "SLURM_JOB_ID": job_id, "SLURM_NTASKS": "1", "SLURM_JOB_NUM_NODES": "1", "SLURM_NODEID": "0",
           "SLURM_PROCID": "0", "SLURM_LOCALID": "0", "SLURM_JOB_NODELIST": "localhost"}
    if os.environ.get("FAKE_SLURM_HOLD"):
        (folder / f"{job_id}.state").write_text("PENDING")
        print(f"Submitted batch job {job_id}")
        return 0
    (folder / f"{job_id}.state").write_text("RUNNING")
    # A detached runner: the job outlives this command, as a SLURM job does.
    runner = (f"import subprocess, sys; code = subprocess.call({command!r}); "
              f"open({str(folder / (job_id + '.state'))!r}, 'w').write('COMPLETED' if code == 0 else 'FAILED')")
    process = subprocess.Popen([sys.executable, "-c", runner], env=env, start_new_session=True,
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    (folder / f"{job_id}.pid").write_text(str(process.pid))
    print(f"Submitted batch job {job_id}")
    return 0


def _sacct(args) -> int:
    ids = [args[i + 1] for i, arg in enumerate(args) if arg == "-j"]
    print("JobID|State|NodeList")
    for job_id in ids:
        state = _state_dir() / f"{job_id}.state"
        if state.is_file():
            print(f"{job_id}|{state.read_text().strip()}|localhost")
    return 0


def _scancel(args) -> int:
    for job_id in (a for a in args if a.isdigit()):
        pid = _state_dir() / f"{job_id}.pid"
        if pid.is_file():
            try:
                os.killpg(int(pid.read_text()), signal.SIGKILL)
            except ProcessLookupError:
                pass
        if (_state_dir() / f"{job_id}.state").is_file():
            (_state_dir() / f"{job_id}.state").write_text("CANCELLED")
    return 0


def _srun(args) -> int:
    files = {}
    while args and args[0].startswith("--"):
        option = args.pop(0)
        if option in ("--output", "--error"):
            files[option] = args.pop(0).replace("%j", os.environ["SLURM_JOB_ID"]).replace("%t", "0")
    with open(files["--output"], "a") as out, open(files.get("--error", files["--output"]), "a") as err:
        return subprocess.call(args, stdout=out, stderr=err)


def main(name: str, args) -> int:
    return {"sbatch": _sbatch, "sacct": _sacct, "scancel": _scancel, "srun": _srun}[name](list(args))
