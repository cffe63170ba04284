"""Screenshots of the three reports for the README, made from the demo's own
generated images (never from an evaluation set), in headless Chromium.

    python scripts/report_screenshots.py [--out docs]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT / "tests"), str(ROOT / "tests" / "report")]

from browser import browser, full_screenshot, page_facts  # noqa: E402


def shoot(path: Path, png: Path, width: int, max_height: int) -> None:
    with browser(width) as driver:
        facts = page_facts(driver, path)
        assert not facts["undecoded"], facts["undecoded"]
        height = full_screenshot(driver, png, width, max_height=max_height)
    print(f"{png}  {width}x{height}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--out", type=Path, default=ROOT / "docs")
    args = ap.parse_args()
    from mimicry.backbones import load_embedder
    from mimicry.demo import run_demo
    from mimicry.report import write_report
    from reports import demo_evaluation, demo_model, demo_scan

    work = Path(tempfile.mkdtemp(prefix="mimicry-shots-"))
    embedder = load_embedder("default", "cpu")
    result = run_demo(work / "demo", echo=lambda _: None, embedder=embedder)
    demo = (result, [], work / "demo")
    scan = write_report(demo_scan(demo, embedder)[0], work / "scan.html")
    model = write_report(demo_model(demo, embedder)[0], work / "model.html")
    evaluation, result = demo_evaluation(demo, embedder, work / "eval")
    held = result.metrics.get("background_flagged")
    if held is None or not held <= result.fpr_target:  # the showcase must show a promise that holds
        raise SystemExit(f"background_flagged {held} is above the {result.fpr_target:.0%} target: "
                         "not a showcase; fix the demo evaluation first")
    args.out.mkdir(parents=True, exist_ok=True)
    shoot(scan, args.out / "report-scan.png", 1280, 1500)
    shoot(scan, args.out / "report-scan-phone.png", 390, 1400)
    shoot(model, args.out / "report-model.png", 1280, 1500)
    shoot(evaluation, args.out / "report-evaluation.png", 1280, 1500)


if __name__ == "__main__":
    main()
