"""What a case page shows, read back from the history: each recorded image's
preview beside the registered works nearest to it, and the verdict in the
words every face uses (:meth:`ScanResult.verdict_words`, and the model
report's sentence). No file path and no upload bytes leave this module: images
are named by the page routes that serve them."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

from mimicry.moderation.cases import Case
from mimicry.moderation.evidence import CaseEvidence, RecordedImage
from mimicry.results import ArtistFinding, Evidence, Match, ModelVerdict, ScanResult, SupportingSample

#: The most sample-and-work pairs a model case shows per artist (the strongest).
PAIRS_SHOWN = 12


@dataclass
class Picture:
    """One image on a page: where the page serves it (None: not available any
    more), its alt text, and its caption's lines."""

    url: str | None
    alt: str
    caption: list[str] = field(default_factory=list)


@dataclass
class Row:
    """One recorded image (an upload's image, or a model's sample) beside the
    works nearest to it, with the verdict's kind and words about it."""

    picture: Picture
    kind: str
    words: str
    works: list[Picture]


@dataclass
class CaseView:
    """Everything the case page shows besides the case itself."""

    scan_kind: str
    banner: str  # the verdict's kind (flagged, review, not-flagged...): its colour
    headline: str
    sentence: str
    rows: list[Row]
    warnings: list[str]
    uploader: str | None = None  # the hub's uploader of the scan behind the case (moderators see it)


def _evidence(d: dict[str, Any]) -> Evidence:
    return Evidence(int(d["work_id"]), d["artist"], d["sha256"], float(d["similarity"]))


def scan_result(d: dict[str, Any]) -> ScanResult:
    """A recorded ``ScanResult.to_dict`` as the result again (without its vector)."""
    matches = [Match(m["artist"], m["score"], [_evidence(e) for e in m.get("evidence", [])], m.get("normalised"),
                     m.get("flagged"), m.get("p_value"), m.get("flag_at")) for m in d.get("matches", [])]
    return ScanResult(d["image"], matches, d.get("error"), d.get("artist"), d.get("sha256"),
                      list(d.get("warnings", [])), d.get("image_p_value"), d.get("promise"))


def model_verdict(d: dict[str, Any]) -> ModelVerdict:
    """A recorded ``ModelVerdict.to_dict`` as the verdict again (without its vectors)."""
    findings = []
    for f in d.get("findings", []):
        pairs = [SupportingSample(p["sample"], p["p_value"], _evidence(p["nearest"]), p.get("index", -1))
                 for p in f.get("pairs", [])]
        findings.append(ArtistFinding(f["artist"], f["flagged"], f["p_value"], f["level"], f["supporting"],
                                      list(f.get("samples", [])), [_evidence(e) for e in f.get("nearest_works", [])],
                                      pairs, list(f.get("indices", [])), f.get("p_makers"),
                                      f.get("p_images_makers"), dict(f.get("p_tiers", {})), f.get("tier"),
                                      f.get("nearest_samples", 0)))
    return ModelVerdict(d["n_samples"], d["alpha"], list(d.get("artists", [])), findings, [],
                        list(d.get("warnings", [])), d.get("promise"), list(d.get("samples", [])),
                        list(d.get("inputs", [])), list(d.get("review", [])), d.get("review_alpha", 0.05),
                        dict(d.get("tiers", {})), dict(d.get("nearest", {})))


def work_picture(e: Evidence, known: Any) -> Picture:
    """A registered work as the page shows it (``known``: the index's works by id)."""
    url = f"/works/{e.work_id}/image" if e.work_id in known else None
    return Picture(url, f"Registered work #{e.work_id} by {e.artist}",
                   [f"work #{e.work_id}" + ("" if url else " (removed since)"),
                    f"{e.artist} · similarity {e.similarity:.3f}"])


def _upload_view(case: Case, result: dict[str, Any], images: list[RecordedImage], known: Any) -> CaseView:
    readable = [scan_result(r) for r in result.get("results", []) if r.get("error") is None and r.get("sha256")]
    rows = []
    for r, image in zip(readable, images):
        pos, preview = image.position, image.preview
        kind, words = r.verdict_words()
        works = [work_picture(e, known) for e in (r.matches[0].evidence if r.matches else [])]
        pic = Picture(f"/cases/{case.id}/images/{pos}" if preview else None, f"Recorded upload image {pos + 1}",
                      [f"upload image {pos + 1}", f"{len(r.matches)} artists compared"])
        rows.append(Row(pic, kind, words, works))
    rows.sort(key=lambda row: row.kind != "flagged")  # flagged images first, each group in upload order
    flagged = sum(row.kind == "flagged" for row in rows)
    headline = (f"Flagged as {', '.join(case.artists)}" if flagged else "Not flagged now")
    sentence = (f"{flagged} of the {len(rows)} recorded images of this upload are flagged; each is shown "
                f"beside the registered works nearest to it.")
    warnings = next((r.warnings for r in readable if r.warnings), [])
    return CaseView("image", "flagged" if flagged else "neutral", headline, sentence, rows, list(warnings))


def _model_view(case: Case, result: dict[str, Any], images: list[RecordedImage], known: Any) -> CaseView:
    from mimicry.report.render import _model_sentence

    v = model_verdict(result)
    by_pos = {i.position: i.preview for i in images}
    rows = []
    for f in v.findings:
        if f.tier is None and f.artist not in v.artists + v.review:
            continue
        for p in f.pairs[:PAIRS_SHOWN]:
            url = f"/cases/{case.id}/images/{p.index}" if by_pos.get(p.index) else None
            pic = Picture(url, f"Recorded sample {p.index + 1}", [f"sample {p.index + 1}",
                                                                  f"supports {f.artist}"])
            rows.append(Row(pic, f.tier or "review", f"image p-value {p.p_value:.2g} against {f.artist}",
                            [work_picture(p.nearest, known)]))
    if v.artists:
        banner, headline = "flagged", f"Imitates {', '.join(v.artists)}"
    elif v.review:
        banner, headline = "review", f"Review for {', '.join(v.review)}"
    else:
        banner, headline = "neutral", "Not at either tier now"
    return CaseView("model", banner, headline, _model_sentence(v), rows, list(v.warnings))


def case_view(ev: CaseEvidence, known: Any) -> CaseView:
    """The evidence of a case from the scan behind it (``known``: the index's
    works by id; a work removed since is shown as removed); a lookback's
    re-judged scan says so, with the lookback's artist and date."""
    view = (_model_view if ev.kind == "model" else _upload_view)(ev.case, ev.result, ev.images, known)
    view.uploader = ev.uploader
    lb = ev.result.get("lookback")
    if lb:  # a lookback's verdict on the recorded images, not the scan's at upload time
        when = time.strftime("%Y-%m-%d", time.gmtime(lb["at"]))
        view.sentence = f"Re-screened by a lookback for {lb['artist']} on {when}. {view.sentence}"
    return view
