"""The site inspection report (踏勘报告) as PDF, in Chinese (default) or English.

Built with ReportLab's platypus.  Chinese text uses ReportLab's built-in CID
font ``STSong-Light`` (Adobe-GB1; the PDF viewer supplies the glyphs), so no
font file is shipped or needed.  Photos are downscaled with Pillow to at most
``PHOTO_MAX_PX`` on the long side before embedding (the originals, with their
signed manifests, stay in the case file); each carries its GPS fix,
accuracy, capture time, device, SHA-256 and whether its signed manifest
verified when the report was made.
"""

from __future__ import annotations

import io
import logging
from dataclasses import dataclass, field
from datetime import datetime
from typing import Literal
from xml.sax.saxutils import escape
from zoneinfo import ZoneInfo

from PIL import Image as PILImage
from reportlab.lib import colors
from reportlab.lib.pagesizes import A4
from reportlab.lib.styles import ParagraphStyle
from reportlab.lib.units import mm
from reportlab.pdfbase import pdfmetrics
from reportlab.pdfbase.cidfonts import UnicodeCIDFont
from reportlab.platypus import Flowable, Image, KeepTogether, Paragraph, SimpleDocTemplate, Spacer, Table, TableStyle

log = logging.getLogger(__name__)

Lang = Literal["zh", "en"]
FONT = "STSong-Light"
PHOTO_MAX_PX = 1280
pdfmetrics.registerFont(UnicodeCIDFont(FONT))


@dataclass(frozen=True)
class ReportPhoto:
    evidence_id: int
    item_code: str | None
    data: bytes
    lat: float | None
    lon: float | None
    accuracy: float | None
    captured_at: datetime
    received_at: datetime
    device: str
    sha256: str
    verified: bool


@dataclass(frozen=True)
class ReportItem:
    code: str
    name: str
    result: str | None
    note: str | None
    evidence_ids: list[int]
    marked_by: str | None


@dataclass(frozen=True)
class ReportParticipant:
    name: str
    role: str
    joined_at: datetime | None
    duration_s: float | None


@dataclass
class ReportData:
    case_number: str
    matter_code: str
    matter_name: str
    applicant_name: str
    applicant_id_masked: str
    task_id: int
    session_id: int
    created_at: datetime
    completed_at: datetime | None
    generated_at: datetime
    generated_by: str
    location: tuple[float, float, float] | None
    location_at: datetime | None
    key_id: str
    items: list[ReportItem] = field(default_factory=list)
    participants: list[ReportParticipant] = field(default_factory=list)
    photos: list[ReportPhoto] = field(default_factory=list)


_TEXT: dict[str, dict[Lang, str]] = {
    "title": {"zh": "远程踏勘报告", "en": "Remote site inspection report"},
    "case": {"zh": "办件编号", "en": "Case"},
    "matter": {"zh": "事项", "en": "Matter"},
    "applicant": {"zh": "申请人", "en": "Applicant"},
    "task": {"zh": "踏勘任务", "en": "Inspection task"},
    "started": {"zh": "开始时间", "en": "Started"},
    "completed": {"zh": "完成时间", "en": "Completed"},
    "not_completed": {"zh": "未完成", "en": "not completed"},
    "location": {"zh": "现场位置", "en": "Site location"},
    "no_location": {"zh": "未上报", "en": "not reported"},
    "participants": {"zh": "参与人员", "en": "Participants"},
    "name": {"zh": "姓名", "en": "Name"},
    "role": {"zh": "角色", "en": "Role"},
    "joined": {"zh": "加入时间", "en": "Joined"},
    "duration": {"zh": "时长", "en": "Duration"},
    "checklist": {"zh": "踏勘清单结果", "en": "Checklist results"},
    "item": {"zh": "项目", "en": "Item"},
    "result": {"zh": "结果", "en": "Result"},
    "note": {"zh": "说明", "en": "Note"},
    "evidence": {"zh": "证据", "en": "Evidence"},
    "photos": {"zh": "现场照片", "en": "Site photos"},
    "unreadable": {
        "zh": "（照片无法解码，未能显示；原文件及其校验值见下）",
        "en": "(the photo cannot be decoded; the file and its checksum are listed below)",
    },
    "photo": {"zh": "照片", "en": "Photo"},
    "captured": {"zh": "拍摄时间", "en": "Taken"},
    "received": {"zh": "接收时间", "en": "Received"},
    "device": {"zh": "设备", "en": "Device"},
    "gps": {"zh": "GPS 坐标", "en": "GPS"},
    "accuracy": {"zh": "精度", "en": "accuracy"},
    "signature": {"zh": "签名校验", "en": "Signed manifest"},
    "verified": {"zh": "通过", "en": "verified"},
    "not_verified": {"zh": "未通过", "en": "FAILED"},
    "generated": {"zh": "生成于", "en": "Generated"},
    "by": {"zh": "生成人", "en": "by"},
    "key": {"zh": "签名密钥", "en": "signing key"},
    "pass": {"zh": "合格", "en": "pass"},
    "fail": {"zh": "不合格", "en": "fail"},
    "note_result": {"zh": "备注", "en": "note"},
    "unmarked": {"zh": "未评定", "en": "not marked"},
    "none": {"zh": "无", "en": "none"},
}
_ROLES: dict[str, dict[Lang, str]] = {
    "clerk": {"zh": "坐席", "en": "clerk"},
    "community_staff": {"zh": "帮办员", "en": "service point staff"},
    "expert": {"zh": "专家", "en": "expert"},
    "inspector": {"zh": "踏勘员", "en": "inspector"},
    "guest": {"zh": "访客", "en": "guest"},
    "admin": {"zh": "管理员", "en": "administrator"},
    "supervisor": {"zh": "负责人", "en": "supervisor"},
}


def result_label(result: str | None, lang: Lang) -> str:
    key = {"pass": "pass", "fail": "fail", "note": "note_result"}.get(result or "", "unmarked")
    return _TEXT[key][lang]


def render(data: ReportData, lang: Lang = "zh", timezone: str = "Asia/Shanghai") -> bytes:
    """The PDF bytes of the report (blocking: run it in a worker thread)."""
    tz = ZoneInfo(timezone)

    def t(key: str) -> str:
        return _TEXT[key][lang]

    def when(at: datetime | None) -> str:
        return at.astimezone(tz).strftime("%Y-%m-%d %H:%M:%S") if at else "-"

    body = ParagraphStyle("body", fontName=FONT, fontSize=9.5, leading=13, wordWrap="CJK")
    small = ParagraphStyle("small", parent=body, fontSize=8, leading=10.5)
    h1 = ParagraphStyle("h1", parent=body, fontSize=17, leading=22, spaceAfter=6)
    h2 = ParagraphStyle("h2", parent=body, fontSize=12.5, leading=17, spaceBefore=8, spaceAfter=4)

    def para(text: str, style: ParagraphStyle = body) -> Paragraph:
        return Paragraph(escape(text), style)

    def grid(rows: list[list[str]], widths: list[float], header: bool = True) -> Table:
        table = Table([[para(c, small) for c in r] for r in rows], colWidths=widths, repeatRows=1 if header else 0)
        style = [
            ("GRID", (0, 0), (-1, -1), 0.4, colors.grey),
            ("VALIGN", (0, 0), (-1, -1), "TOP"),
        ]
        if header:
            style.append(("BACKGROUND", (0, 0), (-1, 0), colors.HexColor("#e8eef5")))
        table.setStyle(TableStyle(style))
        return table

    def gps(lat: float | None, lon: float | None, acc: float | None) -> str:
        if lat is None or lon is None:
            return t("none")
        return f"{lat:.6f}, {lon:.6f} ({t('accuracy')} ±{acc or 0:.0f} m)"

    story: list[object] = [para(t("title"), h1)]
    loc = data.location
    facts = [
        [t("case"), data.case_number],
        [t("matter"), f"{data.matter_code} {data.matter_name}"],
        [t("applicant"), f"{data.applicant_name} ({data.applicant_id_masked})"],
        [t("task"), f"#{data.task_id} (session {data.session_id})"],
        [t("started"), when(data.created_at)],
        [t("completed"), when(data.completed_at) if data.completed_at else t("not_completed")],
        [
            t("location"),
            f"{gps(loc[0], loc[1], loc[2])} @ {when(data.location_at)}" if loc else t("no_location"),
        ],
    ]
    story.append(grid(facts, [35 * mm, 135 * mm], header=False))

    story.append(para(t("participants"), h2))
    rows = [[t("name"), t("role"), t("joined"), t("duration")]]
    for p in data.participants:
        duration = f"{p.duration_s:.0f} s" if p.duration_s is not None else "-"
        rows.append([p.name, _ROLES.get(p.role, {}).get(lang, p.role), when(p.joined_at), duration])
    story.append(grid(rows, [55 * mm, 35 * mm, 45 * mm, 35 * mm]))

    story.append(para(t("checklist"), h2))
    rows = [[t("item"), t("result"), t("note"), t("evidence")]]
    for i in data.items:
        evidence = ", ".join(f"#{e}" for e in i.evidence_ids) or t("none")
        rows.append([f"{i.name} ({i.code})", result_label(i.result, lang), i.note or "", evidence])
    story.append(grid(rows, [60 * mm, 22 * mm, 63 * mm, 25 * mm]))

    if data.photos:
        story.append(para(t("photos"), h2))
    for photo in data.photos:
        image: Flowable = _image(photo.data) or para(t("unreadable"), small)
        caption = [
            [t("photo"), f"#{photo.evidence_id}" + (f" ({photo.item_code})" if photo.item_code else "")],
            [t("gps"), gps(photo.lat, photo.lon, photo.accuracy)],
            [t("captured"), when(photo.captured_at)],
            [t("received"), when(photo.received_at)],
            [t("device"), photo.device],
            ["SHA-256", photo.sha256],
            [t("signature"), t("verified") if photo.verified else t("not_verified")],
        ]
        story.append(KeepTogether([image, Spacer(1, 2 * mm), grid(caption, [30 * mm, 140 * mm], header=False)]))
        story.append(Spacer(1, 5 * mm))

    story.append(Spacer(1, 4 * mm))
    story.append(
        para(
            f"{t('generated')} {when(data.generated_at)} · {t('by')} {data.generated_by} · {t('key')} {data.key_id}",
            small,
        )
    )
    out = io.BytesIO()
    title = f"{t('title')} {data.case_number}"
    doc = SimpleDocTemplate(
        out, pagesize=A4, leftMargin=20 * mm, rightMargin=20 * mm, topMargin=18 * mm, bottomMargin=18 * mm, title=title
    )
    doc.build(story)
    return out.getvalue()


def _image(data: bytes) -> Image | None:
    """The photo scaled for the page; None if it does not decode (a bad photo must not cost the whole report)."""
    try:
        with PILImage.open(io.BytesIO(data)) as original:
            im = original.convert("RGB")
    except (OSError, SyntaxError, ValueError, EOFError, PILImage.DecompressionBombError):
        log.warning("inspection report: a photo of %d bytes does not decode; listed without its picture", len(data))
        return None
    im.thumbnail((PHOTO_MAX_PX, PHOTO_MAX_PX))
    buf = io.BytesIO()
    im.save(buf, "JPEG", quality=85)
    width, height = im.size
    buf.seek(0)
    max_w, max_h = 170 * mm, 110 * mm
    scale = min(max_w / width, max_h / height)
    return Image(buf, width=width * scale, height=height * scale)
