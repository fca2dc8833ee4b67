"""The process `sandbox.run_tests` starts: limits itself, guards writes, runs verl's APPS tester.

Run as `python -I sandbox_child.py` with the working directory set to a fresh temporary folder
and the task as JSON on stdin: {"code", "tests", "timeout_s", "cpu_s", "memory_bytes",
"file_bytes", "tester", "nonce"}. Prints one line `<nonce><json>` with verl's per-test results.

Order matters: the resource limits and the audit hook go in before any generated code runs,
and the hook cannot be removed from Python code once added (PEP 578).
"""

import importlib.util
import json
import os
import resource
import signal
import sys

# Events that start processes, signal other processes, load native code or open sockets.
FORBIDDEN_EVENTS = frozenset(
    {
        "os.system",
        "os.exec",
        "os.posix_spawn",
        "os.spawn",
        "os.fork",
        "os.forkpty",
        "subprocess.Popen",
        "os.kill",
        "os.killpg",
        "ctypes.dlopen",
        "ctypes.dlsym",
        "socket.connect",
        "socket.bind",
    }
)
# Events whose path arguments must all lie inside the working directory.
PATH_EVENTS = frozenset(
    {
        "os.remove",
        "os.rename",
        "os.rmdir",
        "os.mkdir",
        "os.symlink",
        "os.link",
        "os.truncate",
        "os.chmod",
        "os.chown",
        "os.utime",
        "os.listxattr",
        "os.setxattr",
        "os.removexattr",
        "shutil.rmtree",
        "shutil.copyfile",
        "shutil.copymode",
        "shutil.copystat",
        "shutil.copytree",
        "shutil.move",
        "shutil.make_archive",
        "shutil.unpack_archive",
        "os.chdir",
    }
)
WRITE_FLAGS = os.O_WRONLY | os.O_RDWR | os.O_APPEND | os.O_CREAT | os.O_TRUNC


def limit_resources(task: dict) -> None:
    resource.setrlimit(resource.RLIMIT_CPU, (task["cpu_s"], task["cpu_s"]))
    resource.setrlimit(resource.RLIMIT_AS, (task["memory_bytes"], task["memory_bytes"]))
    resource.setrlimit(resource.RLIMIT_FSIZE, (task["file_bytes"], task["file_bytes"]))
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))


def write_guard(workdir: str):
    join, normpath, fsdecode = os.path.join, os.path.normpath, os.fsdecode

    def inside(path) -> bool:
        if isinstance(path, int):  # an already opened descriptor: its open was checked
            return True
        full = normpath(join(workdir, fsdecode(path)))
        return full == workdir or full.startswith(workdir + os.sep)

    def guard(event: str, args: tuple) -> None:
        if event in FORBIDDEN_EVENTS:
            raise PermissionError(f"sandbox: {event} is not allowed")
        if event == "open":
            path, mode, flags = args
            writing = bool(mode and any(c in mode for c in "wax+")) or bool((flags or 0) & WRITE_FLAGS)
            if writing and path is not None and not inside(path):
                raise PermissionError(f"sandbox: writing {path!r} outside the working directory")
        elif event in PATH_EVENTS:
            for arg in args:
                if isinstance(arg, (str, bytes, os.PathLike)) and not inside(arg):
                    raise PermissionError(f"sandbox: {event} on {arg!r} outside the working directory")

    return guard


def load_tester(path: str):
    """verl's `prime_code/testing_util.py`, loaded from its file: importing it as
    `verl.utils.reward_score...` would first run `verl/__init__.py` (Ray, torch), seconds per test."""
    spec = importlib.util.spec_from_file_location("verl_prime_code_testing_util", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def on_alarm(signum, frame):
    raise TimeoutError("time limit per test exceeded")


def main() -> None:
    task = json.load(sys.stdin)
    limit_resources(task)
    tester = load_tester(task["tester"])
    results_out = os.fdopen(os.dup(1), "w")
    sys.stdout = sys.stderr = open(os.devnull, "w")  # noqa: SIM115 - held open for the child's whole life
    signal.signal(signal.SIGALRM, on_alarm)
    sys.addaudithook(write_guard(os.path.realpath(os.getcwd())))
    try:
        results, metadata = tester.run_test(task["tests"], test=task["code"], debug=False, timeout=task["timeout_s"])
    except BaseException as error:  # noqa: BLE001 - anything the program raises fails its case
        results, metadata = [-1], {"error": repr(error)}
    results_out.write(task["nonce"] + json.dumps({"results": results, "error": metadata.get("error")}, default=str))
    results_out.flush()


if __name__ == "__main__":
    main()
