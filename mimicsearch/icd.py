"""Diagnosis chapters of ICD-9-CM and ICD-10-CM in one scheme: the coarse label the
hierarchical loss, AUROC, silhouettes and patient-search calibration share between notes.

MIMIC-III codes in ICD-9; MIMIC-IV in both (`icd_version` 9 or 10, switching in 2015). The
scheme is ICD-9-CM's 17 chapters plus E and V. Each ICD-10-CM chapter maps to the ICD-9
chapter of the same body system (ICD10_RANGES): D50-D89 (blood, immune) to 280-289, the
eye and ear chapters with the nervous system to 320-389 as ICD-9 groups them, external
causes V00-Y99 to E, health-status factors Z00-Z99 to V. U00-U85 (codes for special
purposes, e.g. U07.1 COVID-19) has no ICD-9 counterpart and no chapter.
"""
from __future__ import annotations

from .schema import SchemaError

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


# (first three-character category, last, chapter id in the ICD-9 scheme): ICD-10-CM's
# chapters 1-21 in order, compared as text ('O9A' sorts after 'O99').
ICD10_RANGES: tuple[tuple[str, str, str], ...] = (
    ("A00", "B99", "001-139"),  # 1 certain infectious and parasitic diseases
    ("C00", "D49", "140-239"),  # 2 neoplasms
    ("D50", "D89", "280-289"),  # 3 blood, blood-forming organs, immune mechanism
    ("E00", "E89", "240-279"),  # 4 endocrine, nutritional and metabolic
    ("F01", "F99", "290-319"),  # 5 mental, behavioral, neurodevelopmental
    ("G00", "G99", "320-389"),  # 6 nervous system
    ("H00", "H59", "320-389"),  # 7 eye and adnexa
    ("H60", "H95", "320-389"),  # 8 ear and mastoid process
    ("I00", "I99", "390-459"),  # 9 circulatory system
    ("J00", "J99", "460-519"),  # 10 respiratory system
    ("K00", "K95", "520-579"),  # 11 digestive system
    ("L00", "L99", "680-709"),  # 12 skin and subcutaneous tissue
    ("M00", "M99", "710-739"),  # 13 musculoskeletal and connective tissue
    ("N00", "N99", "580-629"),  # 14 genitourinary system
    ("O00", "O9A", "630-679"),  # 15 pregnancy, childbirth, puerperium
    ("P00", "P96", "760-779"),  # 16 perinatal period
    ("Q00", "Q99", "740-759"),  # 17 congenital malformations
    ("R00", "R99", "780-799"),  # 18 symptoms, signs, abnormal findings
    ("S00", "T88", "800-999"),  # 19 injury, poisoning
    ("V00", "Y99", "E"),        # 20 external causes of morbidity
    ("Z00", "Z99", "V"),        # 21 factors influencing health status
)
VERSIONS = (9, 10)


def chapter(code: str, version: int = 9) -> str | None:
    """Chapter id of a diagnosis code without its decimal point (ICD-9: '4019', 'V3001',
    'E8798'; ICD-10: 'I509', 'O9A11', 'Z9911'), or None for a code that is empty, not
    shaped like its revision's codes, or outside every chapter."""
    if version == 10:
        return _chapter10(code)
    if version != 9:
        raise ValueError(f"ICD version {version!r}; valid: {list(VERSIONS)}")
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


def _chapter10(code: str) -> str | None:
    code = str(code).strip().upper().replace(".", "")
    if len(code) < 3 or not code[0].isalpha() or not code[1].isdigit():
        return None
    category = code[:3]
    for low, high, name in ICD10_RANGES:
        if low <= category <= high:
            return name
    return None


def parse_version(value, where: str) -> int:
    """An icd_version value (9, 10, '9', '10.0') as an int; anything else is an error naming
    `where` (file and line)."""
    try:
        v = float(str(value).strip())
    except ValueError:
        v = None
    if v not in (9.0, 10.0):
        raise SchemaError(f"{where}: icd_version {value!r}; valid: 9 or 10")
    return int(v)


def chapters(codes, versions=None) -> list[str]:
    """Sorted distinct chapters of some codes (ICD-9 unless `versions` gives each one's),
    in CHAPTERS order; unknown codes are skipped."""
    codes = list(codes)
    versions = [9] * len(codes) if versions is None else list(versions)
    found = {c for c in map(chapter, codes, versions) if c is not None}
    return sorted(found, key=CHAPTER_INDEX.__getitem__)
