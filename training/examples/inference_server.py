"""Serve predictions from a runctl job's latest checkpoint of train.py's model, over HTTP.

The server downloads the job's latest complete snapshot (verified, like `runctl checkpoint
restore`), loads it with train.py's ``load_checkpoint`` and answers:

    GET  /health    200 {"status": "ok", "job", "seq", "step", ...}; 503 while no model is loaded
    POST /predict   {"inputs": [16 floats]} or {"inputs": [[16 floats], ...]} -> predictions
    POST /reload    picks up a newer snapshot without a restart ("already latest" otherwise)

    python training/examples/inference_server.py --job JOB [--store URL] [--port 8000]
    python training/examples/inference_server.py --job s3://bucket/prefix/jobs/JOB --reload-every 30
    INFERENCE_JOB=JOB uvicorn --factory --app-dir training/examples inference_server:create_app

``--job`` takes a job id (in ``--store``, else the default store: ``[checkpoint] store`` of
.runctl.toml, else .runctl/store here), a URL or path naming a job (``<store>/jobs/<id>``),
or a plain checkpoint file (or a folder of train.py's ckpt-*.json files). Needs fastapi and
uvicorn: ``pip install 'runctl[serve]'``.
"""

import argparse
import importlib.util
import logging
import math
import os
import re
import shutil
import signal
import sys
import tempfile
import threading
import time
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from runctl.errors import NotFoundError, RunctlError, UsageError

TRAIN_PY = Path(__file__).resolve().parents[1] / "train.py"
SERVE_HINT = "this example needs fastapi and uvicorn: pip install 'runctl[serve]'"
MAX_BATCH = 1024
WAIT_POLL_S = 2.0  # how often --wait looks for the first snapshot when --reload-every is not given

log = logging.getLogger("inference_server")


class ServeError(Exception):
    """A checkpoint that cannot be served (not train.py's model, unreadable)."""

    exit_code = 1


def load_train_module(path: Path = TRAIN_PY):
    """train.py, loaded by path: its load_checkpoint, predict and INPUTS define the model."""
    spec = importlib.util.spec_from_file_location("inference_server_train", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def parse_inputs(inputs: Any, width: int) -> tuple[list[list[float]], bool]:
    """``(rows, single)`` from one vector or a batch of vectors; ValueError saying what is wrong."""
    if not isinstance(inputs, list) or not inputs:
        got = "an empty list" if inputs == [] else f"{_what(inputs)}"
        raise ValueError(f"inputs: expected {width} numbers or a list of {width}-number lists, got {got}")
    single = not isinstance(inputs[0], list)
    rows = [inputs] if single else inputs
    if len(rows) > MAX_BATCH:
        raise ValueError(f"inputs: at most {MAX_BATCH} vectors a request, got {len(rows)}")
    for i, row in enumerate(rows):
        where = "inputs" if single else f"inputs[{i}]"
        if not isinstance(row, list):
            raise ValueError(f"{where}: expected a list of {width} numbers, got {_what(row)}")
        if len(row) != width:
            raise ValueError(f"{where}: expected {width} numbers, got {len(row)}")
        for j, v in enumerate(row):
            if not _is_finite_number(v):
                raise ValueError(f"{where}[{j}]: expected a finite number, got {_what(v)}")
    return [[float(v) for v in row] for row in rows], single


def _is_finite_number(value: Any) -> bool:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return False
    try:
        return math.isfinite(value)
    except OverflowError:  # an integer too large for a float
        return False


def _what(value: Any) -> str:
    if isinstance(value, list):
        return f"a list of {len(value)}"
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        text = repr(value)
        return text if len(text) <= 24 else text[:21] + "..."
    return "null" if value is None else f"a {type(value).__name__}"


@dataclass(frozen=True)
class Model:
    """One loaded checkpoint; never changed after loading, replaced whole on a reload."""

    params: dict
    step: int
    job: str | None
    seq: int | None
    checkpoint: str
    version: tuple  # what "already latest" compares

    def describe(self) -> dict:
        return {"job": self.job, "seq": self.seq, "step": self.step, "checkpoint": self.checkpoint}


class JobSource:
    """A job's snapshots in a store: the parts of runctl.checkpoints.fetch_latest, so that a
    poll that finds nothing new reads one manifest and no checkpoint file."""

    def __init__(self, target: str, store: str | None, cache: Path) -> None:
        from runctl.checkpoints import open_snapshots

        self.snaps = open_snapshots(target, store=store)
        self.cache = cache
        self.name = self.snaps.url
        self._restored: set[str] = set()  # the files this source put in the cache

    def newer(self, version: tuple | None) -> tuple[Path, tuple, str | None, int | None] | None:
        from runctl.checkpoints import jobs_hint, latest_or, restore_into

        try:
            latest = latest_or(self.snaps)
        except NotFoundError as exc:
            if self.snaps.store.list_dirs("jobs/"):
                raise NotFoundError(f"{exc}; {jobs_hint(self.snaps.store)}") from exc
            raise
        if version == ("seq", latest.seq):
            return None
        fetched = restore_into(self.snaps, self.cache, latest.seq)  # unchanged files are kept
        files = {f.path for f in latest.files}
        for stale in self._restored - files:  # the older snapshots' files, not needed any more
            (self.cache / stale).unlink(missing_ok=True)
        self._restored = files
        if fetched.newest is None:
            raise ServeError(f"snapshot {latest.seq} at {self.snaps.url} holds no checkpoint file")
        job = re.search(r"(?:^|/)jobs/([^/]+)/checkpoints/", latest.url)
        return fetched.newest, ("seq", latest.seq), job[1] if job else None, latest.seq


class FileSource:
    """A plain checkpoint file, or a folder of ckpt-*.json files (its newest is served)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.name = str(path)

    def newer(self, version: tuple | None) -> tuple[Path, tuple, str | None, int | None] | None:
        path = self.path
        if path.is_dir():
            files = sorted(path.glob("ckpt-*.json"))  # the order train.load_checkpoint uses
            if not files:
                raise ServeError(f"no ckpt-*.json checkpoint in {path}")
            path = files[-1]
        try:
            st = path.stat()
        except OSError as exc:
            raise ServeError(f"cannot read checkpoint {path}: {exc.strerror}") from exc
        found = ("file", str(path), st.st_mtime_ns, st.st_size)
        return None if found == version else (path, found, None, None)


def open_source(target: str, store: str | None, cache: Path):
    path = Path(target)
    if path.suffix == ".json" and "://" not in target and not path.exists():
        raise ServeError(f"no such checkpoint file: {target}")
    if path.is_file() or (path.is_dir() and any(path.glob("ckpt-*.json"))):
        if store:
            raise UsageError(f"{target} is a checkpoint, not a job: --store does not apply")
        return FileSource(path)
    return JobSource(target, store, cache)


class ModelHolder:
    """The model being served. Requests read ``current`` once and use that model to the end;
    a reload builds the new model aside and swaps the one reference (atomic in Python)."""

    def __init__(self, source, train) -> None:
        self.source = source
        self.train = train
        self.current: Model | None = None
        self.last_error: str | None = None
        self._lock = threading.Lock()  # one reload at a time (POST /reload and the poller)

    @property
    def width(self) -> int:
        return self.train.INPUTS

    def reload(self) -> dict:
        with self._lock:
            old = self.current
            try:
                found = self.source.newer(old.version if old else None)
                if found is None:
                    self.last_error = None
                    return {"reloaded": False, "detail": "already latest", "current": old.describe()}
                model = self._load(*found)
            except (RunctlError, ServeError) as exc:
                self.last_error = str(exc)
                raise
            self.current = model
            self.last_error = None
            log.info("serving %s (was %s)", _label(model), _label(old) if old else "nothing")
            return {"reloaded": True, "old": old.describe() if old else None, "new": model.describe()}

    def _load(self, path: Path, version: tuple, job: str | None, seq: int | None) -> Model:
        try:
            state = self.train.load_checkpoint(path)
            params = state["params"]
            if len(params["w1"][0]) != self.width or len(params["w2"]) != len(params["w1"]):
                raise ValueError("layer sizes differ from train.py's")
            return Model(params=params, step=int(state["step"]), job=job, seq=seq, checkpoint=path.name,
                         version=version)
        except (OSError, ValueError, KeyError, IndexError, TypeError) as exc:
            raise ServeError(f"{path} is not a checkpoint of train.py's model: "
                             f"{type(exc).__name__}: {exc}") from exc


def _label(model: Model) -> str:
    where = f"job {model.job} snapshot {model.seq}, " if model.seq is not None else ""
    return f"{where}step {model.step} ({model.checkpoint})"


class Poller:
    """Reloads every ``every`` seconds in a thread; a failure is logged and the model kept."""

    def __init__(self, holder: ModelHolder, every: float) -> None:
        self.holder, self.every = holder, every
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True, name="checkpoint-poller")

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=30)

    def _loop(self) -> None:
        reported = None  # the same failure is logged once, not on every poll
        while not self._stop.wait(self.every):
            try:
                self.holder.reload()
                reported = None
            except (RunctlError, ServeError) as exc:
                if str(exc) != reported:
                    log.warning("reload failed, still serving %s: %s",
                                _label(self.holder.current) if self.holder.current else "nothing", exc)
                reported = str(exc)
            except Exception:  # keep polling whatever happens
                log.exception("reload failed")


def build_app(holder: ModelHolder, *, reload_every: float | None = None, on_shutdown=None):
    from fastapi import FastAPI, HTTPException
    from fastapi.responses import JSONResponse
    from pydantic import BaseModel, Field

    @asynccontextmanager
    async def lifespan(_app):
        poller = Poller(holder, reload_every) if reload_every else None
        if poller:
            poller.start()
        try:
            yield
        finally:
            if poller:
                poller.stop()
            if on_shutdown:
                on_shutdown()

    app = FastAPI(title="runctl inference server (train.py's model)", lifespan=lifespan)

    class PredictRequest(BaseModel):
        inputs: Any = Field(description=f"{holder.width} numbers, or a list of such vectors")

    def loaded() -> Model:
        model = holder.current
        if model is None:
            raise HTTPException(503, f"no model loaded yet: {holder.last_error or 'loading'}")
        return model

    @app.get("/health")
    def health():
        model = holder.current
        if model is None:
            return JSONResponse({"status": "waiting", "detail": holder.last_error or "loading"}, status_code=503)
        return {"status": "ok", **model.describe(), "source": holder.source.name}

    @app.post("/predict")
    def predict(request: PredictRequest):
        model = loaded()  # this request's model, whatever a reload does meanwhile
        try:
            rows, single = parse_inputs(request.inputs, holder.width)
        except ValueError as exc:
            raise HTTPException(422, str(exc)) from None
        outputs = [holder.train.predict(model.params, row) for row in rows]
        if not all(math.isfinite(y) for y in outputs):
            raise HTTPException(422, "inputs too large: the output is not a finite number")
        answer = {"prediction": outputs[0]} if single else {"predictions": outputs}
        return {**answer, "step": model.step, "seq": model.seq}

    @app.post("/reload")
    def reload():
        try:
            return holder.reload()
        except (RunctlError, ServeError) as exc:
            kept = f"; still serving {_label(holder.current)}" if holder.current else ""
            raise HTTPException(503, f"reload failed: {exc}{kept}") from None

    return app


def make_server(job: str, store: str | None = None, *, reload_every: float | None = None,
                cache: str | None = None, wait: bool = False, train_py: Path = TRAIN_PY):
    """The app and its model holder; loads the first model now unless ``wait``. The cache
    folder (a temporary one unless given) is removed when the app shuts down."""
    folder = Path(cache) if cache else Path(tempfile.mkdtemp(prefix="inference-server-"))

    def cleanup():
        if not cache:
            shutil.rmtree(folder, ignore_errors=True)

    try:
        holder = ModelHolder(open_source(job, store, folder), load_train_module(train_py))
        if not wait:
            holder.reload()
        else:
            reload_every = reload_every or WAIT_POLL_S
            try:
                holder.reload()
            except (NotFoundError, ServeError) as exc:  # not there yet: the poller keeps looking
                log.info("waiting for a checkpoint: %s", exc)
    except BaseException:
        cleanup()
        raise
    return build_app(holder, reload_every=reload_every, on_shutdown=cleanup), holder


def create_app():
    """App factory for ``uvicorn --factory``, configured by INFERENCE_JOB, INFERENCE_STORE,
    INFERENCE_RELOAD_EVERY, INFERENCE_CACHE and INFERENCE_WAIT=1."""
    job = os.environ.get("INFERENCE_JOB")
    if not job:
        _fail("set INFERENCE_JOB to a job id, a URL naming a job, or a checkpoint file", 2)
    every = os.environ.get("INFERENCE_RELOAD_EVERY")
    try:
        app, _holder = make_server(job, os.environ.get("INFERENCE_STORE") or None,
                                   reload_every=float(every) if every else None,
                                   cache=os.environ.get("INFERENCE_CACHE") or None,
                                   wait=os.environ.get("INFERENCE_WAIT", "") not in ("", "0"))
    except (RunctlError, ServeError) as exc:
        _fail(str(exc), exc.exit_code)
    return app


def _fail(message: str, code: int):
    print(f"inference_server: {message}", file=sys.stderr)
    raise SystemExit(code)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--job", required=True, help="job id, URL or path naming a job, or a checkpoint file")
    parser.add_argument("--store", help="store of the job id (default: the configured store, else .runctl/store)")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8000)
    parser.add_argument("--reload-every", type=float, metavar="SECONDS", help="look for a newer snapshot this often")
    parser.add_argument("--cache", help="folder to download snapshots into (default: a temporary one)")
    parser.add_argument("--wait", action="store_true",
                        help="start without a checkpoint (503 until the job's first snapshot appears)")
    args = parser.parse_args(argv)
    if args.reload_every is not None and args.reload_every <= 0:
        parser.error("--reload-every must be more than 0")
    try:
        import fastapi  # noqa: F401
        import uvicorn
    except ImportError:
        print(f"inference_server: {SERVE_HINT}", file=sys.stderr)
        return 2
    logging.basicConfig(level=logging.INFO, format="%(levelname)s:     %(message)s")
    started = time.monotonic()
    try:
        app, holder = make_server(args.job, args.store, reload_every=args.reload_every, cache=args.cache,
                                  wait=args.wait)
    except (RunctlError, ServeError) as exc:
        print(f"inference_server: {exc}", file=sys.stderr)
        return exc.exit_code
    if holder.current:
        log.info("loaded %s in %.2fs", _label(holder.current), time.monotonic() - started)

    # uvicorn shuts down gracefully on SIGTERM / Ctrl-C, then raises the signal again: land
    # it here, so that a SIGTERM ends with exit code 0 and Ctrl-C with 130, not a traceback.
    stopped: list[int] = []
    previous = {sig: signal.signal(sig, lambda s, _f: stopped.append(s)) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        uvicorn.run(app, host=args.host, port=args.port, log_level="info")
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    return 130 if signal.SIGINT in stopped else 0


if __name__ == "__main__":
    sys.exit(main())
