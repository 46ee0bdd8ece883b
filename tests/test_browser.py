"""A person's path through the explorer, in a real browser: JupyterLab in headless Chromium.

Starts JupyterLab on 127.0.0.1 with a copy of notebooks/02_synthesis_explorer.ipynb (smoke
preset), opens it, waits for its kernel, runs all cells from the Run menu, then moves the AU12
slider with the keyboard and checks that the apex face (and only the apex) changes. Readiness
comes from the server's REST API (the notebook's session: kernel idle, page connected) and from
the notebook's own outputs, never from one JupyterLab release's status-bar text. Needs Debian's
chromium and chromium-driver (`bash tests/browser_setup.sh`); skipped without them unless CI is
set, where their absence is a failure.
"""

from __future__ import annotations

import base64
import io
import json
import os
import secrets
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path, PurePosixPath

import nbformat
import numpy as np
import pytest
from PIL import Image

import mielib

REPO = Path(__file__).resolve().parents[1]
NOTEBOOK = REPO / "notebooks" / "02_synthesis_explorer.ipynb"
CHROMIUM = Path("/usr/bin/chromium")
CHROMEDRIVER = Path("/usr/bin/chromedriver")
SERVER_START_S = 60  # JupyterLab start-up on a busy 2-core machine
RUN_ALL_S = 90  # kernel start plus every cell of the notebook in the smoke preset
WIDGET_S = 20  # one slider move: a kernel round trip and one face render

pytestmark = [pytest.mark.browser, pytest.mark.timeout(300)]


def _in_ci() -> bool:
    return os.environ.get("CI", "").strip().lower() not in ("", "0", "false", "no")


def _require_browser() -> None:
    """Skip (on a workstation) or fail (under CI) when the browser or Selenium is missing."""
    missing = [str(p) for p in (CHROMIUM, CHROMEDRIVER) if not os.access(p, os.X_OK)]
    try:
        import selenium  # noqa: F401
    except ImportError:
        missing.append("the selenium package (pip install -e '.[test]')")
    if missing:
        reason = f"browser test needs {', '.join(missing)}; install with `bash tests/browser_setup.sh`"
        if _in_ci():
            pytest.fail(reason + " (CI is set, so this is a failure, not a skip)")
        pytest.skip(reason)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _write_settings(settings: Path) -> None:
    """JupyterLab user settings for a quiet, predictable page."""
    files = {
        # No news or update toasts over the notebook.
        "@jupyterlab/apputils-extension/notification.jupyterlab-settings":
            {"fetchNews": "false", "checkForUpdates": False},
        # Keep every cell in the DOM (no virtual scrolling), so the widget is always findable.
        "@jupyterlab/notebook-extension/tracker.jupyterlab-settings": {"windowingMode": "none"},
    }
    for name, value in files.items():
        path = settings / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(value))


def _prepare_notebook(root: Path) -> Path:
    """Copy notebook 02 with the smoke preset, plus a last cell that reports the kernel's mielib."""
    nb = nbformat.read(NOTEBOOK, as_version=4)
    params = next(c for c in nb.cells if "parameters" in c.metadata.get("tags", []))
    assert 'preset = "small"' in params.source, "notebook 02's parameters cell no longer sets preset = \"small\""
    params.source = params.source.replace('preset = "small"', 'preset = "smoke"')
    nb.cells.append(nbformat.v4.new_code_cell(
        'import sys, mielib\nprint("KERNEL_MIELIB=" + mielib.__file__)\nprint("KERNEL_PYTHON=" + sys.executable)'))
    path = root / NOTEBOOK.name
    nbformat.write(nb, path)
    return path


class Lab:
    """A JupyterLab server in a private temp world (config, runtime, settings, figures)."""

    def __init__(self, tmp: Path):
        self.tmp = tmp
        self.root = tmp / "root"
        self.root.mkdir()
        self.figures = tmp / "figures"
        self.notebook = _prepare_notebook(self.root)
        self.port = _free_port()
        self.token = secrets.token_hex(16)
        self.base = f"http://127.0.0.1:{self.port}"
        self.log_path = tmp / "jupyterlab.log"
        _write_settings(tmp / "lab-settings")
        env = dict(os.environ)
        # The kernel must import the same mielib as this test process (the repo's, normally).
        mielib_parent = str(Path(mielib.__file__).parent.parent)
        env["PYTHONPATH"] = os.pathsep.join([mielib_parent] + [p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p])
        env.update({
            "JUPYTER_CONFIG_DIR": str(tmp / "jupyter-config"),
            "JUPYTER_RUNTIME_DIR": str(tmp / "jupyter-runtime"),
            "JUPYTER_DATA_DIR": str(tmp / "jupyter-data"),
            "JUPYTERLAB_SETTINGS_DIR": str(tmp / "lab-settings"),
            "JUPYTERLAB_WORKSPACES_DIR": str(tmp / "lab-workspaces"),
            "IPYTHONDIR": str(tmp / "ipython"),
            "MIELIB_FIGURES": str(self.figures),  # never overwrite the committed figures
            "MIELIB_RESULTS": str(tmp / "results"),
        })
        cmd = [sys.executable, "-m", "jupyter", "lab", "--no-browser", "--ServerApp.open_browser=False",
               "--ServerApp.ip=127.0.0.1", f"--ServerApp.port={self.port}", "--ServerApp.port_retries=0",
               f"--ServerApp.root_dir={self.root}", f"--IdentityProvider.token={self.token}",
               "--LabApp.news_url=None", "--ServerApp.terminals_enabled=False",
               "--LabApp.check_for_updates_class=jupyterlab.NeverCheckForUpdate"]
        if hasattr(os, "geteuid") and os.geteuid() == 0:
            cmd.append("--allow-root")  # CI containers often run as root; the server is local only
        self.log = open(self.log_path, "wb")
        # Own process group: teardown can stop the server and the kernels it started, nothing else.
        self.proc = subprocess.Popen(cmd, cwd=self.root, env=env, stdout=self.log, stderr=subprocess.STDOUT,
                                     start_new_session=True)

    def log_tail(self, n: int = 4000) -> str:
        self.log.flush()
        return self.log_path.read_bytes()[-n:].decode(errors="replace")

    def api(self, endpoint: str):
        """The JSON of one of the server's REST endpoints (`/api/<endpoint>`, with the token), or None
        while the server does not answer it."""
        request = urllib.request.Request(f"{self.base}/api/{endpoint}", headers={"Authorization": f"token {self.token}"})
        try:
            with urllib.request.urlopen(request, timeout=2) as reply:
                return json.load(reply)
        except (urllib.error.URLError, ConnectionError, TimeoutError, ValueError):
            return None

    def notebook_kernel(self) -> dict | None:
        """The server's model of the notebook's kernel, from its session in `/api/sessions`
        (id, name, execution_state, connections), or None while the page has started none."""
        for session in self.api("sessions") or []:
            path = session.get("path") or (session.get("notebook") or {}).get("path", "")
            if PurePosixPath(path).name == self.notebook.name and session.get("kernel"):
                return session["kernel"]
        return None

    def wait_ready(self) -> None:
        deadline = time.monotonic() + SERVER_START_S
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                pytest.fail(f"JupyterLab exited with {self.proc.returncode}:\n{self.log_tail()}")
            if self.api("status") is not None:
                return
            time.sleep(0.3)
        pytest.fail(f"JupyterLab did not answer within {SERVER_START_S} s:\n{self.log_tail()}")

    def stop(self) -> None:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(timeout=5)
        self.log.close()


@pytest.fixture
def lab(tmp_path):
    _require_browser()
    server = Lab(tmp_path)
    try:
        server.wait_ready()
        yield server
    finally:
        server.stop()


@pytest.fixture
def browser(lab, tmp_path):
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--window-size=1500,1300",
                "--disable-gpu", "--no-first-run", f"--user-data-dir={tmp_path / 'chromium-profile'}"):
        options.add_argument(arg)
    # An explicit driver path: Selenium Manager never looks for (or downloads) a driver.
    driver = webdriver.Chrome(service=Service(executable_path=str(CHROMEDRIVER)), options=options)
    driver.set_page_load_timeout(60)
    driver.set_script_timeout(WIDGET_S)
    try:
        yield driver
    finally:
        driver.quit()


def _image_bytes(driver, css: str, strict: bool = True) -> bytes | None:
    """The bytes behind an <img> (ipywidgets serves them as a blob: URL, revoked on each update,
    so a read racing an update can fail: `strict=False` then returns None to retry)."""
    script = """
        const [css, done] = arguments;
        const img = document.querySelector(css);
        if (!img || !img.src) { done(null); return; }
        fetch(img.src).then(r => r.arrayBuffer()).then(buf => {
            let s = ''; const b = new Uint8Array(buf);
            for (let i = 0; i < b.length; i++) s += String.fromCharCode(b[i]);
            done(btoa(s));
        }).catch(e => done('error:' + e));
    """
    data = driver.execute_async_script(script, css)
    if not strict and (not data or data.startswith("error:")):
        return None
    assert data and not data.startswith("error:"), f"could not read image {css}: {data}"
    return base64.b64decode(data)


def _pixels(png: bytes) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(png)).convert("RGB"), dtype=np.int16)


def _outputs_text(driver) -> str:
    return "\n".join(e.text for e in driver.find_elements("css selector", ".jp-OutputArea-output"))


def test_explorer_responds_to_an_au_slider_in_jupyterlab(lab, browser, tmp_path):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys
    from selenium.webdriver.support import expected_conditions as EC
    from selenium.webdriver.support.ui import WebDriverWait

    start = time.monotonic()
    driver = browser

    def wait(seconds, condition, what):
        try:
            return WebDriverWait(driver, seconds, poll_frequency=0.2).until(condition)
        except Exception as exc:
            driver.save_screenshot(str(tmp_path / "failure.png"))
            pytest.fail(f"timed out after {seconds} s waiting for {what} ({type(exc).__name__}); screenshot "
                        f"{tmp_path / 'failure.png'}\noutputs:\n{_outputs_text(driver)[-2000:]}\n"
                        f"sessions: {lab.api('sessions')}\nserver log:\n{lab.log_tail(2000)}")

    # Open the notebook copy as a person would, and wait for its kernel.
    driver.get(f"{lab.base}/lab/tree/{lab.notebook.name}?token={lab.token}")
    wait(60, EC.presence_of_element_located((By.CSS_SELECTOR, ".jp-NotebookPanel .jp-Cell")), "the notebook to open")
    # The kernel is ready when the server's session for this notebook has a kernel that reports
    # idle and (where the server counts them) the page holds a websocket to it, so Run All goes to
    # a live kernel. The server's REST API, not a status-bar text that JupyterLab releases reword.
    def kernel_ready(_):
        kernel = lab.notebook_kernel()
        ready = kernel and kernel.get("execution_state") == "idle" and kernel.get("connections", 1) >= 1
        return kernel if ready else None

    wait(60, kernel_ready, "the notebook's kernel to start (idle and connected, per /api/sessions)")

    # Run > Run All Cells.
    menu = wait(10, lambda d: [e for e in d.find_elements(By.CSS_SELECTOR, ".lm-MenuBar-item") if e.text.strip() == "Run"],
                "the Run menu")
    menu[0].click()
    run_all = "//li[contains(@class, 'lm-Menu-item')][.//*[contains(@class, 'lm-Menu-itemLabel')][normalize-space()='Run All Cells']]"
    wait(10, EC.element_to_be_clickable((By.XPATH, run_all)), "Run > Run All Cells").click()

    # The last cell prints which mielib and Python the kernel used; it runs after everything else.
    def all_cells_ran(d):
        # A "Select Kernel" dialog would mean the kernel was lost; accept its default as a person would.
        for button in d.find_elements(By.CSS_SELECTOR, ".jp-Dialog .jp-mod-accept"):
            button.click()
        text = _outputs_text(d)
        # Run All stops at a failing cell, so a traceback ends the wait too (and fails below).
        return text if "KERNEL_PYTHON=" in text or "Traceback (most recent call last)" in text else None

    text = wait(RUN_ALL_S, all_cells_ran, "all cells to run")
    assert "Traceback (most recent call last)" not in text, f"a cell failed:\n{text[-3000:]}"
    assert "Error displaying widget" not in text, f"the widget manager failed:\n{text[-3000:]}"
    reported = dict(line.split("=", 1) for line in text.splitlines() if line.startswith("KERNEL_"))
    assert Path(reported["KERNEL_MIELIB"]).resolve() == (REPO / "mielib" / "__init__.py").resolve(), reported
    assert Path(reported["KERNEL_PYTHON"]).resolve() == Path(sys.executable).resolve(), reported
    assert (lab.figures / "fig4_micro_grid.png").is_file(), "notebook 02 saved no fig4_micro_grid.png"

    # The live widget (not the static fallback image) is on the page, in its neutral state.
    apex_css, onset_css, diff_css = "img.mielib-apex", "img.mielib-onset", "img.mielib-diff"
    wait(WIDGET_S, lambda d: d.find_elements(By.CSS_SELECTOR, apex_css), "the explorer widget")
    description = driver.find_element(By.CSS_SELECTOR, ".mielib-description")
    assert "neutral" in description.text, description.text
    apex0, onset0, diff0 = (_image_bytes(driver, css) for css in (apex_css, onset_css, diff_css))
    assert np.array_equal(_pixels(apex0), _pixels(onset0)), "with every AU at 0 the apex should equal the onset"

    # Move AU12 (lip corner puller) to its maximum with the keyboard, as a person can.
    slider = driver.find_element(By.CSS_SELECTOR, ".mielib-au-AU12")
    driver.execute_script("arguments[0].scrollIntoView({block: 'center'});", slider)
    handle = slider.find_element(By.CSS_SELECTOR, ".noUi-handle")
    handle.click()
    handle.send_keys(Keys.END)
    wait(WIDGET_S, lambda d: "AU12=1.00" in d.find_element(By.CSS_SELECTOR, ".mielib-description").text,
         "the AU description to show AU12=1.00")
    wait(WIDGET_S, lambda d: _image_bytes(d, apex_css, strict=False) not in (None, apex0), "the apex image to change")
    assert slider.find_element(By.CSS_SELECTOR, ".widget-readout").text.strip() == "1.00"

    apex1, onset1, diff1 = (_image_bytes(driver, css) for css in (apex_css, onset_css, diff_css))
    change = np.abs(_pixels(apex1) - _pixels(apex0)).max(axis=-1)
    assert (change > 8).sum() >= 20, "moving AU12 to 1 barely changed the rendered face"
    assert onset1 == onset0, "the onset (neutral) face must not change with the AU sliders"
    assert _pixels(diff1).sum() > _pixels(diff0).sum(), "the difference image should light up"

    driver.execute_script("document.querySelector('.mielib-explorer').scrollIntoView({block: 'start'});")
    time.sleep(0.3)  # let the scroll settle before the picture
    driver.save_screenshot(str(tmp_path / "explorer.png"))
    print(f"screenshot: {tmp_path / 'explorer.png'}; browser test took {time.monotonic() - start:.1f} s")


def test_missing_browser_skips_on_a_workstation_and_fails_under_ci(monkeypatch, tmp_path):
    me = sys.modules[__name__]  # patch this module's globals, which _require_browser reads

    monkeypatch.setattr(me, "CHROMIUM", tmp_path / "no-chromium")
    monkeypatch.delenv("CI", raising=False)
    with pytest.raises(pytest.skip.Exception, match="browser_setup.sh"):
        me._require_browser()
    monkeypatch.setenv("CI", "true")
    with pytest.raises(pytest.fail.Exception, match="CI is set"):
        me._require_browser()
