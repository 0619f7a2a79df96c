"""Concurrent-users load test of the lab page: N real browser sessions at once on one local server.

    .venv/bin/python scripts/load_test.py --sessions 10 --out results/benchmarks/load_10_sessions_cpu.json

One headless Chromium (Debian's, Playwright cannot download one here), one context per session, all
driven concurrently with asyncio against 127.0.0.1 only. Each session opens the lab, uploads its own
real X-ray (every other one as a DICOM) and then sets its own ε, so every session asks for different
work at the same time, and what it finally shows depends on a setting changed after the image.
Cross-talk is judged against the engine itself, not against the page: after
the server has stopped, this script recomputes each session's image, attack and purifications with
`core` at the slider values that session showed, and a session counts as cross-talk when its
readings, perturbation norms or "Original" picture (fetched from the server and matched to the
nearest of all sessions' images) are not its own. Nothing identifying is put on the page for this.

Privacy is checked on the same run: file names and DICOM patient tags carry a random canary, the
server's output is kept in memory and searched for it, and the files under the repository, the
working directory, $HOME and the temp dir are listed before and after. Excluded from that listing,
by design: the report this script writes, the browser's own scratch dir (its profile and $HOME,
under a known temp path) and Python's __pycache__ bytecode. The work is bounded by --timeout (a
watchdog kills the server and exits 124) and the server started here is always stopped. Run it
under `taskset -c 1` on a shared 2-core machine so a job on the other core is left alone.
"""

from __future__ import annotations

import asyncio
import io
import json
import math
import os
import platform
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
import uuid
from dataclasses import dataclass, field
from pathlib import Path

from playwright.async_api import Error as PlaywrightError
from playwright.async_api import TimeoutError as PlaywrightTimeout

from core.data.locations import XRAY_TRAIN_DIR

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))  # the pages package of this checkout, for the engine-side check
DATA = XRAY_TRAIN_DIR
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
INTERACTIONS = ("open", "upload", "eps")
EPS_STEP = 0.005  # the lab's ε slider step; 0.03 (its default) is left out so every session moves it
EPS_VALUES = [round(EPS_STEP * k, 3) for k in range(1, 21) if k != 6]
SERVER_FLAGS = ["--server.headless=true", "--server.address=127.0.0.1", "--browser.gatherUsageStats=false", "--server.fileWatcherType=none"]
SETTLED = "[data-testid='stApp'][data-test-script-state='notRunning']"
BUSY = "[data-testid='stApp']:not([data-test-script-state='notRunning'])"
NO_SKELETON = "document.querySelectorAll(\"[data-testid='stSkeleton']\").length === 0"
MEDIA_PATH = "/media/"
SHOWN_IMAGES = "[data-testid='stMain'] [data-testid='stImage'] img"
PANEL_HEADS = ("Original", "Adversarial")  # then the lab's default purifiers, pages.common.DEFAULT_DEFENSE
PICTURE_TOLERANCE = 0.03  # mean |Δ| in [0, 1] of the served JPEG vs the engine's image; other X-rays are ~0.1+
# The server and this check run the same attack in different processes: float noise can flip a few
# of PGD's sign() steps (measured: L2 2.92 on the page vs 2.903 recomputed, a one-shot reading 84 %
# vs 82 %). Cross-talk shows another session's image and readings, far outside these margins.
PERCENT_TOLERANCE = 3
L2_RELATIVE_TOLERANCE = 0.01


@dataclass
class Job:
    """One upload by one session in one round, with its own ε."""

    session: int
    round: int
    name: str
    data: bytes
    mime: str
    eps: float


@dataclass
class SessionLog:
    errors: list[str] = field(default_factory=list)
    latencies: list[tuple[str, float]] = field(default_factory=list)
    superseded_media: list[str] = field(default_factory=list)
    shown: list[tuple[Job, dict]] = field(default_factory=list)


def canary_dicom(gray, canary: str) -> bytes:
    """A DICOM of a uint8 image whose PatientName and PatientID are `canary`, built in memory only."""
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import (
        ExplicitVRLittleEndian,
        SecondaryCaptureImageStorage,
        generate_uid,
    )

    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = SecondaryCaptureImageStorage
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID, ds.SOPInstanceUID = meta.MediaStorageSOPClassUID, meta.MediaStorageSOPInstanceUID
    ds.PatientName = ds.PatientID = canary
    ds.Modality, ds.Rows, ds.Columns = "CR", *gray.shape
    ds.SamplesPerPixel, ds.PhotometricInterpretation, ds.PixelRepresentation = 1, "MONOCHROME2", 0
    ds.BitsAllocated, ds.BitsStored, ds.HighBit = 8, 8, 7
    ds.PixelData = gray.tobytes()
    buffer = io.BytesIO()
    ds.save_as(buffer, enforce_file_format=True)
    return buffer.getvalue()


def plan(sessions: int, rounds: int, data_dir: Path, canary: str) -> list[Job]:
    """Distinct real X-rays from the train folder (alternating classes; the lab's own gallery comes from
    the test cohort, so an upload is never mistaken for the sample it replaces) and distinct ε; odd
    jobs go up as canary DICOMs."""
    import numpy as np
    from PIL import Image

    per_class = [sorted((data_dir / cls).glob("*.jpeg")) for cls in ("NORMAL", "PNEUMONIA")]
    jobs = []
    for index in range(sessions * rounds):
        data = per_class[index % 2][index // 2].read_bytes()
        name, mime = f"{canary}-{index}.jpeg", "image/jpeg"
        if index % 2:
            data = canary_dicom(np.asarray(Image.open(io.BytesIO(data)).convert("L")), canary)
            name, mime = f"{canary}-{index}.dcm", "application/dicom"
        jobs.append(Job(index % sessions, index // sessions, name, data, mime, EPS_VALUES[index % len(EPS_VALUES)]))
    return jobs


# ---- the server and its memory ----------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def start_server(port: int, log: list[str]) -> subprocess.Popen:
    """The app as a Space runs it; no file watcher (the checkout's .venv overflows inotify)."""
    process = subprocess.Popen(
        [sys.executable, "app.py", f"--server.port={port}", *SERVER_FLAGS],
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    process.reader = threading.Thread(target=lambda: log.extend(process.stdout), daemon=True)  # in memory only
    process.reader.start()
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and process.poll() is None:
        try:
            if urllib.request.urlopen(f"http://127.0.0.1:{port}/_stcore/health", timeout=2).read() == b"ok":
                return process
        except OSError:
            time.sleep(0.5)
    stop_server(process)
    raise RuntimeError("the Streamlit server did not report healthy within 120 s")


def stop_server(process: subprocess.Popen | None) -> None:
    """SIGTERM to the server's own process group (it started a new session), SIGKILL after 20 s."""
    if process is None:
        return
    if process.poll() is None:
        os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait(timeout=20)
    process.reader.join(timeout=10)  # the last lines of its log


def process_tree(pid: int) -> list[int]:
    """The process and its descendants; threads and processes that end while this runs are skipped."""
    pids, index = [pid], 0
    while index < len(pids):
        for children in Path(f"/proc/{pids[index]}/task").glob("*/children"):
            try:
                pids += [int(child) for child in children.read_text().split()]
            except (FileNotFoundError, ProcessLookupError):
                continue
        index += 1
    return pids


def memory_mb(pid: int, field_name: str) -> float:
    """VmRSS or VmHWM summed over the process and its children, in MB."""
    total = 0
    for member in process_tree(pid):
        for line in Path(f"/proc/{member}/status").read_text().splitlines():
            if line.startswith(field_name + ":"):
                total += int(line.split()[1])
    return round(total / 1024, 1)


def cpu_seconds(pids: list[int]) -> float:
    """User + system CPU time of these processes and of their reaped children. A process that ended
    since it was listed (Chromium starts and ends helpers all the time) is skipped."""
    total = 0
    for member in pids:
        try:
            fields = Path(f"/proc/{member}/stat").read_text().rsplit(")", 1)[1].split()
        except (FileNotFoundError, ProcessLookupError):
            continue
        total += sum(int(value) for value in fields[11:15])  # utime, stime, cutime, cstime
    return round(total / os.sysconf("SC_CLK_TCK"), 1)


# ---- privacy: files before and after -------------------------------------------------------


def list_files(roots: list[Path]) -> set[str]:
    found = set()
    for root in roots:
        for folder, _, files in os.walk(root):
            if "__pycache__" not in folder:  # the interpreter's bytecode of imported modules
                found.update(os.path.join(folder, name) for name in files)
    return found


def contains(path: Path, text: str) -> bool:
    """Whether a (new) file holds `text`; a file that vanished or cannot be read holds nothing we can see."""
    try:
        return text.encode() in path.read_bytes()
    except OSError:
        return False


# ---- the browser sessions ----------------------------------------------------------------------


async def settle(page, timeout_ms: float) -> float:
    """Wait until no run is in flight for a second (a queued rerun may follow); the moment it settled."""
    while True:
        await page.wait_for_selector(SETTLED, timeout=timeout_ms)
        await page.wait_for_function(NO_SKELETON, timeout=timeout_ms)
        settled = time.perf_counter()
        try:
            await page.wait_for_selector(BUSY, timeout=1000)
        except PlaywrightTimeout:  # quiet for a second
            return settled


async def rerun(page, timeout_ms: float) -> float:
    """After an action: the rerun must be seen to start, then to end."""
    await page.wait_for_selector(BUSY, timeout=min(60_000, timeout_ms))
    return await settle(page, timeout_ms)


async def sliders(page) -> dict[str, float]:
    values = {}
    for slider in await page.locator("[data-testid='stSlider']").all():
        label = (await slider.inner_text()).splitlines()[0]
        values[label] = float(await slider.get_by_role("slider").get_attribute("aria-valuetext"))
    return values


def percent_value(shown: str) -> float:
    """A percentage as the page shows it (core.lab.shown_percent: '80%', or '>99%' / '<1%' at the
    ends) as a number, the ends at 99.5 and 0.5, so a page and the engine compare within the tolerance."""
    return {">99%": 99.5, "<1%": 0.5}.get(shown) or float(shown.rstrip("%"))


async def displayed(page, context) -> dict:
    """What the session shows: readings, norms, image origin, slider values and the Original picture."""
    import numpy as np
    from PIL import Image

    texts = await page.locator("[data-testid='stMain'] [data-testid='stMarkdownContainer']").all_inner_texts()
    badges = [text.split(" · ")[:2] for text in texts if text.split(" · ")[0] in ("NORMAL", "PNEUMONIA")]
    norms = next((text for text in texts if text.startswith("L∞ ")), "")
    captions = await page.locator("[data-testid='stCaptionContainer']").all_inner_texts()
    original = page.locator("[data-testid='stImage']").filter(has=page.get_by_text("Original", exact=True))
    response = await context.request.get(await original.locator("img").get_attribute("src"))
    return {
        "badges": [(name, percent_value(percent)) for name, percent in badges],
        "linf": float(norms.split()[1]) if norms else None,
        "l2": float(norms.split()[4]) if norms else None,
        "origin": next((c for c in captions if c.startswith("Image:")), ""),
        "sliders": await sliders(page),
        "picture": np.asarray(Image.open(io.BytesIO(await response.body())).convert("L"), dtype=np.float32) / 255,
    }


async def drive(browser, base: str, session: int, jobs: list[Job], log: SessionLog, action_ms: float) -> None:
    context = await browser.new_context(viewport={"width": 1400, "height": 1000})
    context.set_default_timeout(action_ms)  # ten page loads at once on one core take longer than Playwright's 30 s
    page = await context.new_page()
    page.on("pageerror", lambda error: log.errors.append(f"session {session}: page error: {error}"))

    def console(message) -> None:
        if message.type != "error":
            return
        text = f"session {session}: console error: {message.text} {message.location.get('url')}"
        # Streamlit drops a run's images when the next run of that session ends: an image of a run
        # that a quicker rerun has superseded can 404 (streamlit/streamlit#9264 and older). Counted
        # apart; an image missing from the settled page is an error (checked after every round).
        (log.superseded_media if MEDIA_PATH in text else log.errors).append(text)

    page.on("console", console)

    async def timed(action: str, work) -> None:
        start = time.perf_counter()
        log.latencies.append((action, await work - start))

    try:

        async def open_lab() -> float:
            """Home, then the lab at once; each part is also logged on its own ("home", "lab")."""
            start = time.perf_counter()
            await page.goto(base)  # from the home page: a deep link makes the frontend probe /lab/_stcore/* (404)
            home = await settle(page, action_ms)
            sidebar = page.locator("[data-testid='stSidebarNav']")
            await sidebar.get_by_role("link", name="Attack & purify lab", exact=True).click()  # not home's "start here" link
            await page.wait_for_selector("[data-testid='stSlider']", timeout=action_ms)
            lab = await settle(page, action_ms)
            log.latencies.extend([("home", home - start), ("lab", lab - home)])
            return lab

        async def set_eps(eps: float) -> float:
            slider = page.locator("[data-testid='stSlider']", has_text="Budget").get_by_role("slider")
            presses = round((eps - float(await slider.get_attribute("aria-valuetext"))) / EPS_STEP)
            await slider.focus()
            for _ in range(abs(presses)):
                await page.keyboard.press("ArrowRight" if presses > 0 else "ArrowLeft")
            return await rerun(page, action_ms) if presses else time.perf_counter()

        async def upload(job: Job) -> float:
            payload = {"name": job.name, "mimeType": job.mime, "buffer": job.data}
            await page.locator("[data-testid='stFileUploaderDropzoneInput']").set_input_files(payload)
            return await rerun(page, action_ms)

        await timed("open", open_lab())
        for job in jobs:
            await timed("upload", upload(job))  # then ε: the final view depends on a setting changed after the image
            await timed("eps", set_eps(job.eps))
            for test_id in ("stException", "stAlertContentError", "stAlertContentWarning"):
                if count := await page.locator(f"[data-testid='{test_id}']").count():
                    log.errors.append(f"session {session} round {job.round}: {count} × {test_id}")
            if missing := await page.eval_on_selector_all(SHOWN_IMAGES, "images => images.filter(i => !(i.complete && i.naturalWidth > 0)).length"):
                log.errors.append(f"session {session} round {job.round}: {missing} image(s) not shown on the settled page")
            log.shown.append((job, await displayed(page, context)))
    except (PlaywrightError, ValueError, OSError) as error:  # a timeout or a failed step: the others go on
        log.errors.append(f"session {session}: {type(error).__name__}: {str(error).splitlines()[0]}")
    finally:
        await context.close()


async def browse(base: str, jobs: list[Job], logs: list[SessionLog], scratch: Path, action_ms: float, server: int | None) -> tuple[str, float]:
    """Every session at once; returns the browser version and the CPU seconds the browsers used (they
    share this machine's cores with the server: a visitor on their own machine would not wait for them)."""
    from playwright.async_api import async_playwright

    os.environ["TMPDIR"] = str(scratch)  # the Playwright driver puts the browser profile in its temp dir
    async with async_playwright() as playwright:
        browser = await playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, env={**os.environ, "HOME": str(scratch)})
        try:
            await asyncio.gather(
                *(drive(browser, base, index, [job for job in jobs if job.session == index], log, action_ms) for index, log in enumerate(logs))
            )
            skip = {os.getpid(), *(process_tree(server) if server else [])}
            return f"Chromium {browser.version}", cpu_seconds([pid for pid in process_tree(os.getpid()) if pid not in skip])
        finally:
            await browser.close()


# ---- the engine's own answer, and the comparison ---------------------------------------------


def engine_views(shown: list[tuple[Job, dict]]) -> list[dict]:
    """What `core` gives for each job at the slider values its session showed (the lab's defaults:
    the recommended defense's classifier, PGD-10, grey-box), formatted the way the page formats it."""
    import numpy as np

    from core.attacks import AttackConfig
    from core.io import load_image, to_model_input, to_pil
    from core.lab import attack_image, perturbation_norms, purify_image, read, shown_percent
    from core.models import create_classifier
    from core.purifiers import create_purifier
    from pages.common import DEFAULT_DEFENSE, DEFAULT_RECON_STEPS, RECOMMENDED, purifier_variants

    model = create_classifier(RECOMMENDED.classifier).eval()
    views = []
    for job, page in shown:
        values = {label.split()[0]: value for label, value in page["sliders"].items()}
        eps, depth, t_star = values["Budget"], int(values["Blur"]), values["t*"]
        image = to_model_input(load_image(job.data), model.image_size)
        blur = create_purifier("cold_blur", depth=depth)
        attacked = attack_image(model, image, AttackConfig(name="pgd", eps=eps, steps=10), threat="grey", purifier=blur, eot=1)
        adversarial = attacked.image
        variants = purifier_variants(depth, t_star, DEFAULT_RECON_STEPS)
        purifiers = [create_purifier(variants[label][0], **dict(variants[label][1])) for label in DEFAULT_DEFENSE]
        images = [image, adversarial, *(purify_image(p, adversarial, seed=0).image for p in purifiers)]
        readings = [read(model, x)[0] for x in images]
        norms = perturbation_norms(attacked.clean, adversarial)
        views.append(
            {
                "badges": [(r.class_name, percent_value(shown_percent(r.confidence))) for r in readings],
                "linf": norms["linf"],
                "l2": norms["l2"],
                "eps": eps,
                "job": job,
                "picture": np.asarray(to_pil(image).convert("L"), dtype=np.float32) / 255,
            }
        )
    return views


def mismatches(page: dict, own: dict, everyone: list[dict]) -> list[str]:
    """Why `page` is not `own`'s result (within the float-noise margins above), or []."""
    problems = []
    if abs(own["eps"] - own["job"].eps) > 1e-9:
        problems.append(f"ε shown is {own['eps']}, this session set {own['job'].eps}")
    if "your upload" not in page["origin"] or "threat model grey" not in page["origin"]:
        problems.append(f"caption is not the grey-box view of an upload: {page['origin'][:60]!r}")
    from pages.common import DEFAULT_DEFENSE

    panels = (*PANEL_HEADS, *DEFAULT_DEFENSE)
    if len(page["badges"]) != len(panels):
        problems.append(f"{len(page['badges'])} readings shown, {len(panels)} expected")
    for panel, (name, percent), (own_name, own_percent) in zip(panels, page["badges"], own["badges"], strict=False):
        if name != own_name or abs(percent - own_percent) > PERCENT_TOLERANCE:
            problems.append(f"{panel}: shows {name} {percent}%, engine gives {own_name} {own_percent}%")
    if page["linf"] is None or abs(page["linf"] - own["linf"]) > 0.0015 or abs(page["l2"] - own["l2"]) > max(0.015, L2_RELATIVE_TOLERANCE * own["l2"]):
        problems.append(f"norms shown L∞ {page['linf']} L2 {page['l2']}, engine {own['linf']:.4f} {own['l2']:.3f}")
    distances = [float(abs(page["picture"] - view["picture"]).mean()) if page["picture"].shape == view["picture"].shape else math.inf for view in everyone]
    nearest = min(range(len(everyone)), key=distances.__getitem__)
    if everyone[nearest] is not own or distances[nearest] > PICTURE_TOLERANCE:
        problems.append(f"Original picture is nearest to job of session {everyone[nearest]['job'].session} (mean |Δ| {distances[nearest]:.3f})")
    return problems


def summary(seconds: list[float]) -> dict:
    """Nearest-rank percentiles, in seconds."""
    ordered = sorted(seconds)
    if not ordered:
        return {"n": 0}
    rank = {q: ordered[max(0, math.ceil(q * len(ordered)) - 1)] for q in (0.5, 0.95)}
    return {"n": len(ordered), "p50": round(rank[0.5], 2), "p95": round(rank[0.95], 2), "max": round(ordered[-1], 2)}


def versions() -> dict:
    from importlib.metadata import version

    return {name: version(name) for name in ("streamlit", "torch", "playwright", "pydicom", "numpy", "pillow")} | {"python": platform.python_version()}


def git_commit() -> str:
    """HEAD, and whether the tree differed from it, as every other output's provenance says them."""
    from core.results import git_commit as head
    from core.results import git_dirty

    return head() + (" (dirty tree)" if git_dirty() else "")


def main() -> int:
    from benchmarks.options import REPORTS_DIR, BenchmarkParser, check_report_out, positive_int  # torch-free

    parser = BenchmarkParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sessions", type=positive_int, default=10)
    parser.add_argument("--rounds", type=positive_int, default=1, help="uploads (each with its own ε) per session")
    parser.add_argument("--url", help="an already running server on this machine (default: start one)")
    parser.add_argument("--data", type=Path, default=DATA, help="train/ folder with NORMAL/ and PNEUMONIA/")
    parser.add_argument("--out", type=Path, help=f"JSON report (default {REPORTS_DIR}/load_<sessions>_sessions_cpu.json), its config beside it")
    parser.add_argument("--overwrite", action="store_true", help="replace a report purifylab did not write (no NAME.config.json beside it)")
    parser.add_argument("--timeout", type=float, default=1200, help="hard limit for the whole run, seconds")
    parser.add_argument("--action-timeout", type=float, default=300, help="limit for one page action, seconds")
    parser.add_argument("--torch-threads", type=positive_int, default=1, help="OMP_NUM_THREADS for the server and the check")
    args = parser.parse_args()
    if args.url and not args.url.startswith(("http://127.", "http://localhost", "http://[::1]")):
        parser.error("--url must be a loopback address: this load test never leaves the machine")
    os.environ["OMP_NUM_THREADS"] = str(args.torch_threads)  # before torch is imported, here and in the server
    from benchmarks.environment import write_report  # imports torch: after OMP_NUM_THREADS

    args.out = args.out or REPORTS_DIR / f"load_{args.sessions}_sessions_cpu.json"
    check_report_out(args, parser)
    out = args.out.resolve()
    started = time.perf_counter()
    server: subprocess.Popen | None = None

    def hard_stop() -> None:
        print(f"load test: hard timeout after {args.timeout:.0f} s", file=sys.stderr, flush=True)
        stop_server(server)
        os._exit(124)

    watchdog = threading.Timer(args.timeout, hard_stop)
    watchdog.daemon = True
    watchdog.start()

    canary = f"PLCANARY{uuid.uuid4().hex[:16]}"
    jobs = plan(args.sessions, args.rounds, args.data, canary)
    roots = sorted({REPO, Path.cwd(), Path.home(), Path(tempfile.gettempdir())})
    scratch = Path(tempfile.mkdtemp(prefix="purifylab-load-browser-"))
    before = list_files(roots)
    server_log: list[str] = []
    logs = [SessionLog() for _ in range(args.sessions)]
    errors: list[str] = []
    memory: dict = {}
    browser_version, browser_cpu, cpu = None, None, None
    try:
        if args.url:
            base = args.url.rstrip("/")
        else:
            port = free_port()
            server, base = start_server(port, server_log), f"http://127.0.0.1:{port}"
            memory["rss_before_mb"] = memory_mb(server.pid, "VmRSS")
        try:
            browser_version, browser_cpu = asyncio.run(
                asyncio.wait_for(browse(base, jobs, logs, scratch, args.action_timeout * 1000, server and server.pid), args.timeout * 0.7)
            )
        except TimeoutError:
            errors.append(f"timeout: the sessions did not finish within {args.timeout * 0.7:.0f} s")
        if server is not None:
            memory |= {"rss_after_mb": memory_mb(server.pid, "VmRSS"), "peak_rss_mb": memory_mb(server.pid, "VmHWM")}
            cpu = {"server": cpu_seconds(process_tree(server.pid)), "browsers": browser_cpu}
    finally:
        stop_server(server)
    browse_seconds = time.perf_counter() - started

    shown = [item for log in logs for item in log.shown]
    views = engine_views(shown)
    cross_talk = []
    for (job, page), own in zip(shown, views, strict=True):
        if problems := mismatches(page, own, views):
            cross_talk.append({"session": job.session, "round": job.round, "eps": job.eps, "problems": problems})
    errors += [error for log in logs for error in log.errors]
    errors += [f"session {job.session} round {job.round}: no result read" for job in jobs if not any(job is done for done, _ in shown)]
    new_files = sorted(path for path in list_files(roots) - before if path != str(out) and not path.startswith(str(scratch) + os.sep))
    shutil.rmtree(scratch, ignore_errors=True)
    with_canary = [path for path in new_files if contains(Path(path), canary)]
    latencies = [item for log in logs for item in log.latencies]
    import torch

    report = {
        "sessions": args.sessions,
        "rounds": args.rounds,
        "uploads": len(shown),
        "server": args.url or " ".join(["python app.py", *SERVER_FLAGS]),
        "errors": errors,
        "error_count": len(errors),
        "superseded_media_404": sum(len(log.superseded_media) for log in logs),
        "cross_talk": len(cross_talk),
        "cross_talk_details": cross_talk,
        "eps_per_job": [job.eps for job in jobs],
        "dicom_uploads": sum(job.mime == "application/dicom" for job in jobs),
        "latency_note": "seconds from an action to its page settling (no run in flight for 1 s), every session at once; "
        "open = home page, then the lab link (includes loading the models), home and lab its two parts; "
        "eps = ε moved after the upload; all = open, upload and eps",
        "latency_s": {"all": summary([s for a, s in latencies if a in INTERACTIONS])}
        | {action: summary([s for a, s in latencies if a == action]) for action in ("open", "home", "lab", "upload", "eps")},
        "wall_s": {"sessions_and_server": round(browse_seconds, 1), "total": round(time.perf_counter() - started, 1)},
        "server_memory": memory or None,
        "cpu_s": cpu,
        "privacy": {
            "new_files": new_files,
            "new_files_with_canary": with_canary,
            "roots": [str(root) for root in roots],
            "excluded": [str(out), f"{scratch}{os.sep} (the browser's profile, temp dir and $HOME)", "__pycache__/"],
            "canary_in_server_log": None if args.url else any(canary in line for line in server_log),
            "server_log_lines": None if args.url else len(server_log),
        },
        "machine": {
            "cpu_count": os.cpu_count(),
            "cpus_usable": len(os.sched_getaffinity(0)),
            "torch_threads": torch.get_num_threads(),
            "platform": platform.platform(),
        },
        "git_commit": git_commit(),
        "versions": versions() | {"chromium": browser_version},
    }
    write_report(out, report, args)
    print(
        json.dumps(
            {k: report[k] for k in ("sessions", "error_count", "superseded_media_404", "cross_talk", "latency_s", "server_memory", "cpu_s")}
            | {"new_files": len(new_files), "canary_in_server_log": report["privacy"]["canary_in_server_log"]}
        )
    )
    watchdog.cancel()
    return 0 if not errors and not cross_talk and not new_files and not report["privacy"]["canary_in_server_log"] else 1


if __name__ == "__main__":
    sys.exit(main())
