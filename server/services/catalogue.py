"""The matter catalogue (事项清单): validation, import and export as YAML or CSV.

Import is an upsert by matter code inside the caller's transaction: either
the whole file applies or none of it.  Checklist items keep their ids when
their code survives, so documents already filed against them stay linked.
"""

from __future__ import annotations

import csv
import io
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator
from sqlalchemy.ext.asyncio import AsyncSession

from server.errors import Conflict, ValidationFailed
from server.storage.matters import MatterRepository
from server.storage.models import ChecklistItem, Matter
from server.structured_input import StructureRefused, check_structure, has_nul

MimeType = Literal["image/jpeg", "image/png", "image/webp", "application/pdf"]
MIME_TYPES: tuple[MimeType, ...] = ("image/jpeg", "image/png", "image/webp", "application/pdf")
MB = 1024 * 1024


class _Spec(BaseModel):
    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)


class ChecklistItemSpec(_Spec):
    code: str = Field(pattern=r"^[a-z0-9_]{1,64}$")
    name_zh: str = Field(min_length=1, max_length=200)
    name_en: str = Field(min_length=1, max_length=200)
    required: bool = True
    accepted_types: list[MimeType] = Field(default_factory=lambda: list(MIME_TYPES), min_length=1)
    max_size_mb: int = Field(default=10, ge=1, le=1024)


class InspectionItemSpec(_Spec):
    code: str = Field(pattern=r"^[a-z0-9_]{1,64}$")
    name_zh: str = Field(min_length=1, max_length=200)
    name_en: str = Field(min_length=1, max_length=200)


class MatterSpec(_Spec):
    code: str = Field(pattern=r"^[A-Z]{2,4}-\d{3}$")
    name_zh: str = Field(min_length=1, max_length=200)
    name_en: str = Field(min_length=1, max_length=200)
    department: str = Field(pattern=r"^[a-z_]{1,64}$")
    promised_days: int = Field(ge=0, le=365)
    remote_capable: bool = True
    needs_inspection: bool = False
    retention_days: int = Field(default=365, ge=1, le=36500)
    checklist: list[ChecklistItemSpec] = Field(default_factory=list, max_length=50)
    inspection_checklist: list[InspectionItemSpec] = Field(default_factory=list, max_length=100)

    @field_validator("checklist")
    @classmethod
    def _unique_items(cls, items: list[ChecklistItemSpec]) -> list[ChecklistItemSpec]:
        codes = [i.code for i in items]
        if len(codes) != len(set(codes)):
            raise ValueError("checklist item codes must be unique within a matter")
        return items


class CatalogueSpec(_Spec):
    version: Literal[1] = 1
    matters: list[MatterSpec] = Field(max_length=5000)

    @field_validator("matters")
    @classmethod
    def _unique_matters(cls, matters: list[MatterSpec]) -> list[MatterSpec]:
        codes = [m.code for m in matters]
        dupes = sorted({c for c in codes if codes.count(c) > 1})
        if dupes:
            raise ValueError(f"duplicate matter codes: {', '.join(dupes)}")
        return matters


def _invalid(exc: ValidationError) -> ValidationFailed:
    errors = [{"loc": ".".join(str(p) for p in e["loc"]), "message": e["msg"]} for e in exc.errors(include_url=False)]
    return ValidationFailed("the catalogue file is not valid", code="catalogue_invalid", details={"errors": errors})


def _check_text(text: str) -> None:
    if has_nul(text):
        raise ValidationFailed(
            "the catalogue file may not contain NUL characters",
            code="catalogue_invalid",
            details={"error": "nul_character"},
        )


def parse_yaml(text: str) -> CatalogueSpec:
    _check_text(text)
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ValidationFailed("not valid YAML", code="catalogue_invalid", details={"error": str(exc)}) from None
    except RecursionError:  # PyYAML composes and constructs nested nodes recursively
        raise ValidationFailed(
            "the catalogue file nests too deep", code="catalogue_invalid", details={"error": "too_deep"}
        ) from None
    try:
        check_structure(data)
    except StructureRefused as exc:
        raise ValidationFailed(
            str(exc), code="catalogue_invalid", details={"error": exc.reason, "at": exc.path}
        ) from None
    try:
        return CatalogueSpec.model_validate(data)
    except ValidationError as exc:
        raise _invalid(exc) from None


CSV_COLUMNS = (
    "code",
    "name_zh",
    "name_en",
    "department",
    "promised_days",
    "remote_capable",
    "needs_inspection",
    "retention_days",
    "item_code",
    "item_name_zh",
    "item_name_en",
    "item_required",
    "item_accepted_types",
    "item_max_size_mb",
)


def _bool(value: str) -> bool:
    if value.strip().lower() in ("true", "1", "yes", "是"):
        return True
    if value.strip().lower() in ("false", "0", "no", "否", ""):
        return False
    raise ValueError(f"not a boolean: {value!r}")


def parse_csv(text: str) -> CatalogueSpec:
    """One row per checklist item; matter columns repeat (a matter with no items has empty item columns).

    The inspection checklist is not representable in CSV; use YAML for it.
    """
    _check_text(text)
    reader = csv.DictReader(io.StringIO(text.lstrip("\ufeff")))
    if reader.fieldnames is None or set(CSV_COLUMNS) - set(reader.fieldnames):
        raise ValidationFailed(
            "CSV header must have the catalogue columns",
            code="catalogue_invalid",
            details={"expected": list(CSV_COLUMNS), "got": reader.fieldnames},
        )
    matters: dict[str, dict[str, Any]] = {}
    try:
        for row in reader:
            m = matters.setdefault(
                row["code"],
                {
                    "code": row["code"],
                    "name_zh": row["name_zh"],
                    "name_en": row["name_en"],
                    "department": row["department"],
                    "promised_days": int(row["promised_days"]),
                    "remote_capable": _bool(row["remote_capable"]),
                    "needs_inspection": _bool(row["needs_inspection"]),
                    "retention_days": int(row["retention_days"]),
                    "checklist": [],
                },
            )
            if row["item_code"]:
                m["checklist"].append(
                    {
                        "code": row["item_code"],
                        "name_zh": row["item_name_zh"],
                        "name_en": row["item_name_en"],
                        "required": _bool(row["item_required"]),
                        "accepted_types": [t for t in row["item_accepted_types"].split(";") if t],
                        "max_size_mb": int(row["item_max_size_mb"]),
                    }
                )
    except (ValueError, TypeError, KeyError) as exc:
        raise ValidationFailed(
            "a CSV row is not valid",
            code="catalogue_invalid",
            details={"line": reader.line_num, "error": str(exc)},
        ) from None
    try:
        return CatalogueSpec.model_validate({"matters": list(matters.values())})
    except ValidationError as exc:
        raise _invalid(exc) from None


def to_spec(matter: Matter, items: list[ChecklistItem]) -> MatterSpec:
    return MatterSpec(
        code=matter.code,
        name_zh=matter.name_zh,
        name_en=matter.name_en,
        department=matter.department_code,
        promised_days=matter.promised_days,
        remote_capable=matter.remote_capable,
        needs_inspection=matter.needs_inspection,
        retention_days=matter.retention_days,
        checklist=[
            ChecklistItemSpec(
                code=i.code,
                name_zh=i.name_zh,
                name_en=i.name_en,
                required=i.required,
                accepted_types=list(i.accepted_types),
                max_size_mb=max(1, i.max_size // MB),
            )
            for i in items
        ],
        inspection_checklist=[InspectionItemSpec.model_validate(x) for x in matter.inspection_checklist],
    )


async def export_spec(s: AsyncSession) -> CatalogueSpec:
    repo = MatterRepository(s)
    matters = list(await repo.all())
    items = await repo.checklists([m.id for m in matters])
    return CatalogueSpec(matters=[to_spec(m, items[m.id]) for m in matters])


def dump_yaml(spec: CatalogueSpec) -> str:
    return yaml.safe_dump(spec.model_dump(mode="json"), allow_unicode=True, sort_keys=False)


def dump_csv(spec: CatalogueSpec) -> str:
    out = io.StringIO()
    writer = csv.writer(out)
    writer.writerow(CSV_COLUMNS)
    for m in spec.matters:
        base = [
            m.code,
            m.name_zh,
            m.name_en,
            m.department,
            m.promised_days,
            m.remote_capable,
            m.needs_inspection,
            m.retention_days,
        ]
        if not m.checklist:
            writer.writerow([*base, "", "", "", "", "", ""])
        for i in m.checklist:
            writer.writerow(
                [*base, i.code, i.name_zh, i.name_en, i.required, ";".join(i.accepted_types), i.max_size_mb]
            )
    return out.getvalue()


async def import_spec(s: AsyncSession, spec: CatalogueSpec) -> dict[str, int]:
    """Upsert every matter of ``spec``; returns counts of created and updated matters."""
    repo = MatterRepository(s)
    created = updated = 0
    for m in spec.matters:
        existing = await repo.by_code(m.code)
        row = existing or Matter(code=m.code)
        row.name_zh, row.name_en = m.name_zh, m.name_en
        row.department_code = m.department
        row.promised_days = m.promised_days
        row.remote_capable = m.remote_capable
        row.needs_inspection = m.needs_inspection
        row.retention_days = m.retention_days
        row.inspection_checklist = [i.model_dump() for i in m.inspection_checklist]
        row.active = True
        if existing is None:
            await repo.add(row)
            created += 1
        else:
            updated += 1
            in_use = await repo.items_with_documents(row.id) - {i.code for i in m.checklist}
            if in_use:
                raise Conflict(
                    "checklist items with filed documents cannot be removed",
                    code="checklist_item_in_use",
                    details={"matter": m.code, "items": sorted(in_use)},
                )
        await repo.replace_checklist(
            row.id,
            [
                ChecklistItem(
                    code=i.code,
                    name_zh=i.name_zh,
                    name_en=i.name_en,
                    required=i.required,
                    accepted_types=list(i.accepted_types),
                    max_size=i.max_size_mb * MB,
                )
                for i in m.checklist
            ],
        )
    return {"created": created, "updated": updated}
