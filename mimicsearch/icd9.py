"""ICD-9-CM diagnosis chapters: the coarse label the hierarchical loss shares between notes."""
from __future__ import annotations

# (first three-digit category, last, chapter id): the 17 chapters of ICD-9-CM, then the two
# supplementary classifications, external causes (E) and health-status factors (V).
CHAPTER_RANGES: tuple[tuple[int, int, str], ...] = (
    (1, 139, "001-139"),    # infectious and parasitic diseases
    (140, 239, "140-239"),  # neoplasms
    (240, 279, "240-279"),  # endocrine, nutritional, metabolic, immunity
    (280, 289, "280-289"),  # blood and blood-forming organs
    (290, 319, "290-319"),  # mental disorders
    (320, 389, "320-389"),  # nervous system and sense organs
    (390, 459, "390-459"),  # circulatory system
    (460, 519, "460-519"),  # respiratory system
    (520, 579, "520-579"),  # digestive system
    (580, 629, "580-629"),  # genitourinary system
    (630, 679, "630-679"),  # pregnancy, childbirth, puerperium
    (680, 709, "680-709"),  # skin and subcutaneous tissue
    (710, 739, "710-739"),  # musculoskeletal system and connective tissue
    (740, 759, "740-759"),  # congenital anomalies
    (760, 779, "760-779"),  # perinatal conditions
    (780, 799, "780-799"),  # symptoms, signs, ill-defined conditions
    (800, 999, "800-999"),  # injury and poisoning
)
CHAPTERS: tuple[str, ...] = tuple(c for _, _, c in CHAPTER_RANGES) + ("E", "V")
CHAPTER_INDEX = {c: i for i, c in enumerate(CHAPTERS)}


def chapter(code: str) -> str | None:
    """Chapter id of a MIMIC ICD9_CODE (no decimal point: '4019', 'V3001', 'E8798'), or None
    for a code that is empty or not ICD-9 shaped."""
    code = str(code).strip().upper().replace(".", "")
    if not code:
        return None
    if code[0] in "EV":
        return code[0] if code[1:2].isdigit() else None
    if len(code) < 3 or not code[:3].isdigit():
        return None
    category = int(code[:3])
    for low, high, name in CHAPTER_RANGES:
        if low <= category <= high:
            return name
    return None  # category 000 does not exist


def chapters(codes) -> list[str]:
    """Sorted distinct chapters of some codes, in CHAPTERS order; unknown codes are skipped."""
    found = {c for c in map(chapter, codes) if c is not None}
    return sorted(found, key=CHAPTER_INDEX.__getitem__)
