"""Lighthouse (mobile) scores of the main screens, signed in: login, workbench, pool board, customer page,
dashboard and recycle settings. Target: ≥ 95 in performance, accessibility, best practices and SEO.

The app runs under gunicorn (as in production, so compression and caching headers are real) on a throwaway
SQLite database filled by ``seed-demo``; a signed-in session cookie is passed to Lighthouse as a header.
Lighthouse comes from the npm registry into ``bench/lighthouse/`` (not committed) and drives Debian's
Chromium:

    (cd bench/lighthouse && npm install lighthouse@12)   # once
    python bench/lighthouse.py [--runs 1] [--keep]

Lighthouse is CPU heavy: run it alone. Prints one line per page and exits 1 when a score is under 95.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from http.cookiejar import CookieJar
from pathlib import Path
from urllib.parse import urlencode

ROOT = Path(__file__).resolve().parent.parent
LH = ROOT / "bench" / "lighthouse" / "node_modules" / "lighthouse" / "cli" / "index.js"
CHROMIUM = os.environ.get("CHROMIUM", shutil.which("chromium") or "/usr/bin/chromium")
CATEGORIES = ("performance", "accessibility", "best-practices", "seo")
PASSWORD = "demo1234"
TARGET = 95


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _seed(workdir: Path, env: dict) -> None:
    code = (
        "from crm import create_app\n"
        "from crm.extensions import db\n"
        "from crm.bootstrap import ensure_defaults\n"
        "from crm import clock\n"
        "from crm.demo import seed_demo\n"
        "app = create_app()\n"
        "with app.app_context():\n"
        "    db.create_all()\n"
        "    ensure_defaults(db.session, clock.now())\n"
        f"    seed_demo(db.session, customers=300, seed=2026, password={PASSWORD!r}, now=clock.now())\n"
        "    db.session.commit()\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, env=env, cwd=ROOT)


def _ids(env: dict) -> dict:
    code = (
        "import json\n"
        "from sqlalchemy import select\n"
        "from crm import create_app\n"
        "from crm.extensions import db\n"
        "from crm.models import Customer, Pool, Role, User\n"
        "app = create_app()\n"
        "with app.app_context():\n"
        "    manager = db.session.scalar(select(User).where(User.role == Role.MANAGER).order_by(User.id))\n"
        "    admin = db.session.scalar(select(User).where(User.role == Role.ADMIN).order_by(User.id))\n"
        "    pool = db.session.scalar(select(Pool).order_by(Pool.id))\n"
        "    owned = db.session.scalar(select(Customer.id).where(Customer.owner_id.is_not(None)).order_by(Customer.id))\n"
        "    print(json.dumps({'manager': manager.email, 'admin': admin.email, 'pool': pool.id, 'customer': owned}))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], check=True, env=env, cwd=ROOT, capture_output=True, text=True
    )
    return json.loads(out.stdout.strip().splitlines()[-1])


def _login(base: str, email: str) -> str:
    """Sign in through the login form; returns the Cookie header value."""
    jar = CookieJar()
    opener = urllib.request.build_opener(urllib.request.HTTPCookieProcessor(jar))
    page = opener.open(f"{base}/login").read().decode()
    token = re.search(r'name="csrf_token"[^>]*value="([^"]+)"', page).group(1)
    body = urlencode({"csrf_token": token, "email": email, "password": PASSWORD}).encode()
    opener.open(urllib.request.Request(f"{base}/login", data=body, method="POST"))
    cookie = "; ".join(f"{c.name}={c.value}" for c in jar)
    if "session" not in cookie:
        raise SystemExit(f"could not sign in as {email}")
    return cookie


def _lighthouse(url: str, cookie: str | None, out: Path) -> dict[str, int]:
    cmd = ["node", str(LH), url, "--quiet", "--output=json", f"--output-path={out}",
           f"--only-categories={','.join(CATEGORIES)}",
           "--chrome-flags=--headless=new --no-sandbox --disable-gpu --disable-dev-shm-usage"]  # fmt: skip
    if cookie:
        cmd.append("--extra-headers=" + json.dumps({"Cookie": cookie}))
    subprocess.run(cmd, check=True, env={**os.environ, "CHROME_PATH": CHROMIUM})
    report = json.loads(out.read_text())
    final = report.get("finalDisplayedUrl") or report.get("finalUrl") or ""
    if cookie and "/login" in final:
        raise SystemExit(f"{url} ended on the login page: the session cookie was not accepted")
    return {k: round(100 * (report["categories"][k]["score"] or 0)) for k in CATEGORIES}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--keep", action="store_true", help="keep the database and the JSON reports")
    parser.add_argument("--only", default="", help="run only the pages whose label contains this text")
    args = parser.parse_args()
    if not LH.exists():
        raise SystemExit("Lighthouse is missing: (cd bench/lighthouse && npm install lighthouse@12)")
    workdir = Path(tempfile.mkdtemp(prefix="crm_lighthouse_"))
    env = {**os.environ, "PYTHONPATH": str(ROOT), "DATABASE_URL": f"sqlite:///{workdir / 'lh.db'}",
           "CRM_INSTANCE_PATH": str(workdir / "instance"), "SECRET_KEY": "lighthouse-bench"}  # fmt: skip
    env.pop("REDIS_URL", None)
    _seed(workdir, env)
    ids = _ids(env)
    port = _free_port()
    base = f"http://127.0.0.1:{port}"
    server = subprocess.Popen(
        [sys.executable, "-m", "gunicorn", "-w", "2", "-b", f"127.0.0.1:{port}", "app:app"],
        cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        for _ in range(100):
            try:
                urllib.request.urlopen(f"{base}/healthz", timeout=1)
                break
            except OSError:
                time.sleep(0.2)
        cookie = _login(base, ids["manager"])
        admin_cookie = _login(base, ids["admin"])
        pages = [
            ("登录 login", "/login", None),
            ("工作台 workbench", "/", cookie),
            ("公海 pool board", f"/pools/{ids['pool']}", cookie),
            ("客户 customer page", f"/customers/{ids['customer']}", admin_cookie),
            ("看板 dashboard", "/reports/", cookie),
            ("回收规则 recycle settings", f"/recycle/pools/{ids['pool']}/rules", admin_cookie),
        ]
        worst = 100
        print(f"{'page':28} " + " ".join(f"{c[:13]:>14}" for c in CATEGORIES))
        for label, path, jar in [p for p in pages if args.only in p[0]]:
            scores = _lighthouse(
                base + path, jar, workdir / f"{path.strip('/').replace('/', '_') or 'home'}.json"
            )
            worst = min(worst, *scores.values())
            print(f"{label:28} " + " ".join(f"{scores[c]:>14}" for c in CATEGORIES), flush=True)
        print(f"lowest score {worst} (target ≥ {TARGET})")
        return 0 if worst >= TARGET else 1
    finally:
        server.terminate()
        server.wait(timeout=10)
        if args.keep:
            print(f"kept {workdir}")
        else:
            shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
