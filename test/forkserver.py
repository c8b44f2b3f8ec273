"""Start the CLI in processes forked from an interpreter that has already imported it.

A `python -m src.main` run on the tiny test data spends about two thirds of its CPU importing
torch, torchvision, Hydra and the project. The tests start some hundred such processes, so
`run_cli` and `spawn` fork them instead from one server per test worker that imported all of
that once (copy-on-write). The child is still a separate process running the real command
line: its own pid, signals, exit code, stdin/stdout/stderr pipes, working directory and
environment. Only the imports are shared. The server imports and never runs anything, so it
holds no threads and no state when it forks. `TEST_FRESH_PROCESSES=1` starts a fresh
interpreter for every run instead.
"""

from __future__ import annotations

import atexit
import json
import os
import selectors
import signal
import socket
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
PRELOAD = ("src.main", "src.eval", "src.predict", "torch.utils.tensorboard", "PIL.Image")
_RESET = (signal.SIGINT, signal.SIGTERM, signal.SIGCHLD, signal.SIGUSR1, signal.SIGHUP)


# ----------------------------------------------------------------------------- server side
def serve(fd: int) -> None:
    """Import, then fork one child per request; report each child's pid and exit code."""
    import importlib

    for name in PRELOAD:
        importlib.import_module(name)
    sock = socket.socket(fileno=fd)
    wake_r, wake_w = os.pipe()
    os.set_blocking(wake_w, False)
    signal.set_wakeup_fd(wake_w)
    signal.signal(signal.SIGCHLD, lambda *_: None)
    selector = selectors.DefaultSelector()
    selector.register(sock, selectors.EVENT_READ)
    selector.register(wake_r, selectors.EVENT_READ)
    sock.sendall(b'{"ready": true}')
    while True:
        for key, _ in selector.select():
            if key.fileobj is sock:
                message, fds, _, _ = socket.recv_fds(sock, 1 << 20, 3)
                if not message:
                    return  # the tests are done
                sys.stdout.flush(), sys.stderr.flush()
                pid = os.fork()
                if pid == 0:
                    for closing in (sock.fileno(), wake_r, wake_w):
                        os.close(closing)
                    _child(json.loads(message), fds)
                for passed in fds:
                    os.close(passed)
                sock.sendall(json.dumps({"id": json.loads(message)["id"], "pid": pid}).encode())
            else:
                os.read(wake_r, 4096)
                _reap(sock)


def _reap(sock: socket.socket) -> None:
    while True:
        try:
            pid, status = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return
        if pid == 0:
            return
        code = os.waitstatus_to_exitcode(status)
        sock.sendall(json.dumps({"exit": pid, "code": code}).encode())


def _child(request: dict[str, Any], fds: list[int]) -> None:
    """Become `python -m <module> <args>` in `cwd` with `env`; never returns."""
    import runpy
    import traceback

    signal.set_wakeup_fd(-1)
    for number in _RESET:
        signal.signal(number, signal.SIG_DFL)
    signal.signal(signal.SIGINT, signal.default_int_handler)
    for target, fd in zip((0, 1, 2), fds):
        os.dup2(fd, target)
        os.close(fd)
    env = request["env"]
    os.environ.clear()
    os.environ.update(env)
    os.chdir(request["cwd"])
    sys.path[:0] = [p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p]
    if env.get("PYTHONUNBUFFERED"):
        sys.stdout.reconfigure(line_buffering=True, write_through=True)
        sys.stderr.reconfigure(line_buffering=True, write_through=True)
    if env.get("OMP_NUM_THREADS", "").isdigit():
        import torch

        torch.set_num_threads(int(env["OMP_NUM_THREADS"]))
    if request.get("max_file_size"):  # a small disk: a write past it fails with EFBIG
        _limit_file_size(request["max_file_size"])
    sys.argv = [request["module"], *request["args"]]
    sys.modules.pop(request["module"], None)  # run as __main__, as `python -m` does
    code: Any = 0
    try:
        runpy.run_module(request["module"], run_name="__main__", alter_sys=True)
    except SystemExit as exit_:
        code = exit_.code
    except KeyboardInterrupt:
        traceback.print_exc()
        code = 128 + signal.SIGINT  # as an interpreter that dies of SIGINT reports itself
    except BaseException:
        traceback.print_exc()
        code = 1
    if code is not None and not isinstance(code, int):
        print(code, file=sys.stderr)
        code = 1
    try:
        threading._shutdown()  # type: ignore[attr-defined]  # join non-daemon threads
        atexit._run_exitfuncs()
        sys.stdout.flush()
        sys.stderr.flush()
    finally:
        os._exit(code or 0)


# ----------------------------------------------------------------------------- test side
class ForkedProcess:
    """The part of `subprocess.Popen` the tests use, for a child of the fork server."""

    def __init__(self, server: ForkServer, pid: int, args: list[str], pipes: dict[str, Any]):
        self.server, self.pid, self.args = server, pid, args
        self.stdout, self.stderr = pipes.get("stdout"), pipes.get("stderr")
        self.returncode: int | None = None

    def poll(self) -> int | None:
        self.returncode = self.server.exit_code(self.pid, block=False)
        return self.returncode

    def wait(self, timeout: float | None = None) -> int:
        code = self.server.exit_code(self.pid, block=True, timeout=timeout)
        if code is None:
            raise subprocess.TimeoutExpired(self.args, timeout or 0)
        self.returncode = code
        return code

    def communicate(self, timeout: float | None = None) -> tuple[str | None, str | None]:
        out: dict[str, str] = {}
        readers = [
            threading.Thread(target=lambda n=name, f=f: out.__setitem__(n, f.read()), daemon=True)
            for name, f in (("out", self.stdout), ("err", self.stderr))
            if f is not None
        ]
        for reader in readers:
            reader.start()
        self.wait(timeout)
        for reader in readers:
            reader.join(timeout)
        for pipe in (self.stdout, self.stderr):
            if pipe is not None:
                pipe.close()
        return out.get("out"), out.get("err")

    def send_signal(self, number: int) -> None:
        if self.poll() is None:
            os.kill(self.pid, number)

    def terminate(self) -> None:
        self.send_signal(signal.SIGTERM)

    def kill(self) -> None:
        self.send_signal(signal.SIGKILL)


class ForkServer:
    """One server process per test worker; requests go over a Unix socket with the pipes' fds."""

    def __init__(self) -> None:
        mine, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}
        code = f"import sys; sys.path[:0] = [{str(REPO / 'test')!r}]; import forkserver; "
        code += f"forkserver.serve({theirs.fileno()})"
        self.process = subprocess.Popen(
            [sys.executable, "-c", code], cwd=REPO, env=env, pass_fds=[theirs.fileno()]
        )
        theirs.close()
        self.sock = mine
        assert json.loads(self.sock.recv(1 << 16)) == {"ready": True}
        self.lock = threading.Condition()
        self.pids: dict[int, int] = {}
        self.codes: dict[int, int] = {}
        self.next_id = 0
        threading.Thread(target=self._listen, daemon=True).start()

    def _listen(self) -> None:
        while message := self.sock.recv(1 << 16):
            reply = json.loads(message)
            with self.lock:
                if "exit" in reply:
                    self.codes[reply["exit"]] = reply["code"]
                else:
                    self.pids[reply["id"]] = reply["pid"]
                self.lock.notify_all()

    def exit_code(self, pid: int, block: bool, timeout: float | None = None) -> int | None:
        with self.lock:
            if block:
                self.lock.wait_for(lambda: pid in self.codes, timeout)
            return self.codes.get(pid)

    def start(
        self,
        module: str,
        args: list[str],
        cwd: str | Path,
        env: dict[str, str],
        capture: str,
        max_file_size: int = 0,
    ) -> ForkedProcess:
        ends: list[int] = [os.open(os.devnull, os.O_RDONLY)]
        pipes: dict[str, Any] = {}
        for name in ("stdout", "stderr"):
            if capture == "merged" and name == "stderr":
                ends.append(os.dup(ends[-1]))
            elif capture:
                read, write = os.pipe()
                pipes[name] = open(read, encoding="utf-8", errors="replace")  # noqa: SIM115
                ends.append(write)
            else:
                ends.append(os.dup(1 if name == "stdout" else 2))
        with self.lock:
            self.next_id += 1
            request_id = self.next_id
        request = {"id": request_id, "module": module, "args": args, "cwd": str(cwd), "env": env}
        request["max_file_size"] = max_file_size
        socket.send_fds(self.sock, [json.dumps(request).encode()], ends)
        for end in ends:
            os.close(end)
        with self.lock:
            self.lock.wait_for(lambda: request_id in self.pids, 60)
            pid = self.pids.pop(request_id)
        return ForkedProcess(self, pid, [sys.executable, "-m", module, *args], pipes)


Started = ForkedProcess | subprocess.Popen  # what `start` gives: either behaves as a Popen
_server: ForkServer | None = None


def start(
    module: str,
    args: list[str],
    cwd: str | Path,
    env: dict[str, str],
    capture: str = "separate",
    fresh: bool = False,
    max_file_size: int = 0,
) -> Started:
    """`python -m module args` as a fork of the preloaded server (or fresh, when asked), with
    `capture` "separate" (stdout and stderr pipes), "merged" (stderr into stdout) or "". `fresh`
    for a run whose environment changes what an import reads (torch's compiler settings);
    `max_file_size` in bytes, for a disk that fills up."""
    global _server
    if fresh or os.environ.get("TEST_FRESH_PROCESSES") == "1":
        out = subprocess.PIPE if capture else None
        err = subprocess.STDOUT if capture == "merged" else out
        command = [sys.executable, "-m", module, *args]
        limit = max_file_size or None
        return subprocess.Popen(
            command,
            cwd=cwd,
            env=env,
            stdout=out,
            stderr=err,
            text=True,
            preexec_fn=limit and (lambda: _limit_file_size(limit)),
        )
    if _server is None:
        _server = ForkServer()
    return _server.start(module, args, cwd, env, capture, max_file_size)


def _limit_file_size(limit: int) -> None:
    import resource

    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))
