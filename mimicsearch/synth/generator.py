"""Synthetic MIMIC-III: NOTEEVENTS.csv and DIAGNOSES_ICD.csv with v1.4's exact columns.

No machine here has MIMIC, so tests, demos and training runs need data shaped like it. Each
patient gets a latent story (admissions, real ICD-9 codes, home and inpatient medications with
doses, lab trends, procedures with laterality, devices, ECG and echo baselines) that every note
about them draws on, so a patient's consecutive notes share specific content, the signal
temporal-pair training and retrieval rely on. Categories follow MIMIC-III v1.4's proportions and
each writes in its own style and length. MIMIC's quirks are kept: `[**...**]` placeholders,
dates shifted to the 2100s, no CHARTTIME for discharge summaries, ECG and echo, no HADM_ID for
outpatient studies, ISERROR=1 rows, CATEGORY values with trailing spaces, and text full of commas,
quotes and newlines.

Only `random.Random.random()` draws numbers (Python keeps its sequence for a seed across
versions) and each patient has its own generator, so a seed gives byte-identical files.
"""
from __future__ import annotations

import bisect
import calendar
import csv
import math
import random
import re
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from datetime import date, datetime, timedelta
from pathlib import Path

from tqdm import tqdm

from ..fileio import atomic_open
from . import vocab as V

NOTE_COLUMNS = ("ROW_ID", "SUBJECT_ID", "HADM_ID", "CHARTDATE", "CHARTTIME", "STORETIME",
                "CATEGORY", "DESCRIPTION", "CGID", "ISERROR", "TEXT")
DIAGNOSIS_COLUMNS = ("ROW_ID", "SUBJECT_ID", "HADM_ID", "SEQ_NUM", "ICD9_CODE")
NOTES_FILE = "NOTEEVENTS.csv"
DIAGNOSES_FILE = "DIAGNOSES_ICD.csv"

CATEGORY_COUNTS = V.CATEGORY_COUNTS
DISCHARGE = "Discharge summary"
# Categories charted in MetaVision carry a caregiver id, a store time and, rarely, ISERROR=1.
METAVISION = frozenset({"Nursing", "Physician ", "Respiratory ", "Nutrition", "General",
                        "Rehab Services", "Social Work", "Case Management ", "Pharmacy",
                        "Consult"})
NO_CHARTTIME = frozenset({DISCHARGE, "ECG", "Echo"})
OUTPATIENT_SHARE = {"ECG": 0.12, "Radiology": 0.08}
ISERROR_RATE = 0.01
# Mean number of non-discharge notes per admission: one discharge summary per admission then
# makes up MIMIC's 2.9% of notes.
NOTES_PER_ADMISSION = 33.0


@dataclass(frozen=True)
class SynthSummary:
    """What `generate` wrote."""

    patients: int
    admissions: int
    notes: int
    diagnoses: int
    seed: int
    notes_by_category: dict[str, int]
    notes_path: str
    diagnoses_path: str

    def to_dict(self) -> dict:
        return asdict(self)


class _Rng(random.Random):
    """`random.Random` drawing only through `random()`, whose sequence Python keeps stable."""

    def pick(self, seq):
        return seq[int(self.random() * len(seq))]

    def chance(self, p: float) -> bool:
        return self.random() < p

    def between(self, lo: int, hi: int) -> int:
        return lo + int(self.random() * (hi - lo + 1))

    def real(self, lo: float, hi: float) -> float:
        return lo + (hi - lo) * self.random()

    def subset(self, seq, k: int) -> list:
        pool = list(seq)
        out = []
        for _ in range(min(k, len(pool))):
            out.append(pool.pop(int(self.random() * len(pool))))
        return out

    def normal(self) -> float:
        """Approximately standard normal (Irwin-Hall): plain additions, the same on every libm."""
        return sum(self.random() for _ in range(12)) - 6.0

    def poisson(self, lam: float) -> int:
        if lam > 30:
            return max(0, round(lam + math.sqrt(lam) * self.normal()))
        limit, k, p = math.exp(-lam), 0, self.random()
        while p > limit:
            k += 1
            p *= self.random()
        return k


class _Weighted:
    def __init__(self, weights: dict[str, float]):
        self.keys = list(weights)
        total, self.cum = 0.0, []
        for w in weights.values():
            total += w
            self.cum.append(total)
        self.total = total

    def draw(self, rng: _Rng) -> str:
        return self.keys[bisect.bisect_right(self.cum, rng.random() * self.total)]


_INPATIENT_CATEGORIES = _Weighted({k: v for k, v in CATEGORY_COUNTS.items() if k != DISCHARGE})
_DOSE_CHOICE = re.compile(r"\{([^{}|]+(?:\|[^{}|]+)+)\}")


# ---------------------------------------------------------------------------------------------
# The latent story


@dataclass
class _Admission:
    hadm_id: int
    index: int
    problem: V.Problem
    admit: datetime
    discharge: datetime
    los: float
    name: str
    unit: str
    service: str
    slots: dict
    codes: list[str]
    meds: list[str]
    labs: dict[str, tuple[float, float]]
    procedures: list[str]
    devices: list[str]
    course: list[str]
    hpi: list[str]
    ventilated: bool
    extubate_day: int
    ef: int
    cgids: list[int]
    antibiotics: list[str]
    infusions: list[str]
    dnr: bool


@dataclass
class _Patient:
    subject_id: int
    sex: str
    age: int
    dob: datetime
    chronic: list[V.Chronic]
    chronic_names: list[str]
    home_meds: list[str]
    allergies: list[str]
    occupation: str
    lives_with: str
    surgical_history: list[str]
    incidental: str
    ecg_rhythm: str
    ecg_features: list[str]
    height_in: int
    weight_kg: float
    slots: dict
    admissions: list[_Admission] = field(default_factory=list)

    @property
    def man(self) -> str:
        return "man" if self.sex == "M" else "woman"

    @property
    def he(self) -> str:
        return "he" if self.sex == "M" else "she"

    @property
    def his(self) -> str:
        return "his" if self.sex == "M" else "her"

    def age_at(self, when: datetime) -> str:
        age = self.age + (when - self.admissions[0].admit).days // 365
        return "[**Age over 90 **]" if age >= 90 else str(age)


def _fill(template: str, slots: dict) -> str:
    return template.format_map(slots) if "{" in template else template


def _choose_doses(rng: _Rng, text: str) -> str:
    return _DOSE_CHOICE.sub(lambda m: rng.pick(m.group(1).split("|")), text)


def _patient_slots(rng: _Rng) -> dict:
    side = rng.pick(("left", "right"))
    return {
        "cr_base": f"{rng.real(1.3, 2.2):.1f}", "pack_years": rng.between(10, 80),
        "quit_year": f"[**{rng.between(2100, 2140)}**]", "side": side,
        "nodule": rng.between(3, 9), "cyst": f"{rng.real(1.0, 4.5):.1f}",
        "cd4": rng.between(180, 900), "genotype": rng.pick(("1a", "1b", "2", "3")),
        "rai": rng.pick(("0", "I", "II")), "aneurysm_mm": rng.between(3, 7),
        "home_o2_chronic": rng.between(1, 4), "carotid_pct": rng.pick((50, 60, 70, 80)),
        "tx_year": rng.between(2080, 2140),
    }


def shift_old_dob(dob: date, age: int) -> date:
    """MIMIC shifts the birth date of patients over 89 by 300 years; a leap-day birth
    lands on 28 February where the shifted year has none."""
    year = dob.year - 300 + (age - 90)
    if (dob.month, dob.day) == (2, 29) and not calendar.isleap(year):
        dob = dob.replace(day=28)
    return dob.replace(year=year)


def _make_patient(rng: _Rng, subject_id: int, first_admit: datetime) -> _Patient:
    sex = "M" if rng.chance(0.56) else "F"
    age = min(95, max(19, int(65 + 15 * rng.normal())))
    slots = _patient_slots(rng)
    excluded = {"M": {"breast_ca_hx"}, "F": {"bph"}}[sex]
    chronic = [c for c in V.CHRONIC if c.key not in excluded and rng.chance(c.prevalence)]
    if any(c.key == "tobacco" for c in chronic):
        chronic = [c for c in chronic if c.key != "former_smoker"]
    home_meds = [_choose_doses(rng, med) for c in chronic
                 for med in rng.subset(c.meds, rng.between(1, max(1, len(c.meds))))]
    home_meds += rng.subset(("Docusate Sodium 100 mg PO BID", "Multivitamin PO daily",
                             "Vitamin D3 1000 units PO daily", "Senna 8.6 mg PO BID PRN",
                             "Fish oil 1000 mg PO daily", "Acetaminophen 500 mg PO q6h PRN"),
                            rng.between(0, 3))
    rhythm = _RHYTHMS.draw(rng)
    if any(c.key == "afib" for c in chronic):
        rhythm = "Atrial fibrillation"
    dob = first_admit - timedelta(days=int(age * 365.25) + rng.between(0, 364))
    if age >= 90:
        dob = shift_old_dob(dob, age)
    return _Patient(
        subject_id=subject_id, sex=sex, age=age, dob=dob, chronic=chronic,
        chronic_names=[_fill(rng.pick(c.names), slots) for c in chronic],
        home_meds=home_meds,
        allergies=rng.subset(V.ALLERGIES, rng.pick((0, 0, 1, 1, 1, 2, 3))),
        occupation=rng.pick(V.OCCUPATIONS), lives_with=rng.pick(V.LIVES_WITH),
        surgical_history=[_fill(s, slots)
                          for s in rng.subset(V.SURGICAL_HISTORY, rng.between(0, 3))],
        incidental=_fill(rng.pick(V.INCIDENTAL), slots),
        ecg_rhythm=rhythm, ecg_features=rng.subset(V.ECG_FEATURES, rng.between(1, 3)),
        height_in=rng.between(64, 74) if sex == "M" else rng.between(58, 69),
        weight_kg=round(rng.real(50, 125), 1), slots=slots,
    )


_RHYTHMS = _Weighted(dict(V.ECG_RHYTHMS))
_LOBES = ("right lower lobe", "left lower lobe", "right middle lobe", "right upper lobe",
          "left upper lobe", "lingula")
_VESSELS = ("LAD", "RCA", "LCx", "OM1", "D1", "PDA")
_WALL_MOTION = {"LAD": "anterior, anteroseptal and apical akinesis",
                "D1": "anterolateral hypokinesis", "RCA": "inferior and inferoseptal "
                "hypokinesis", "PDA": "basal inferior hypokinesis", "LCx": "inferolateral "
                "hypokinesis", "OM1": "lateral wall hypokinesis"}


def _admission_slots(rng: _Rng, pt: _Patient, problem: V.Problem, los: float) -> dict:
    """Every specific an admission's notes repeat: laterality, sizes, doses, counts, values."""
    r, b = rng.real, rng.between
    side = pt.slots["side"] if rng.chance(0.3) else rng.pick(("left", "right"))
    other = "right" if side == "left" else "left"
    days = max(1, int(los))
    s = dict(pt.slots)
    s.update({
        "side": side, "Side": side.capitalize(), "SIDE": side.upper(), "other_side": other,
        "lobe": rng.pick(_LOBES), "vessel": rng.pick(_VESSELS), "pct": rng.pick((80, 90, 95,
                                                                                  99, 100)),
        "stent": f"{rng.pick(('2.5', '2.75', '3.0', '3.5', '4.0'))} x {b(8, 38)} mm "
                 f"{rng.pick(('Xience', 'Promus', 'Resolute', 'Synergy'))} drug eluting stent",
        "duration": rng.pick(("2 days", "3 days", "one week", "several hours", "4-5 days",
                              "two weeks", "1 day", "10 days")),
        "onset": f"{b(1, 12)}:{rng.pick(('00', '15', '30', '45'))} {rng.pick(('AM', 'PM'))}",
        "trop_peak": f"{r(0.2, 4.5):.2f}", "ck_peak": b(400, 4500), "weight_gain": b(4, 18),
        "pillows": b(2, 4), "bnp": b(2500, 25000), "uop": b(300, 1800), "net_neg": b(2, 9),
        "dry_weight": f"{pt.weight_kg - r(2, 8):.1f}", "cr_peak": f"{r(1.5, 3.0):.1f}",
        "tap_vol": b(6, 18) * 100, "hr_max": b(130, 185), "chads": b(1, 5),
        "inr_goal": f"{r(1.8, 2.9):.1f}", "residence": rng.pick(("home", "a nursing home",
                                                                 "rehab", "assisted living")),
        "tmax": f"{r(100.8, 104.2):.1f}", "lactate": f"{r(2.5, 7.5):.1f}",
        "sbp_low": rng.pick((60, 70, 80)), "ivf": b(2, 6), "pressor": b(3, 25),
        "kidney_r": f"{r(9.0, 12.0):.1f}", "kidney_l": f"{r(9.0, 12.0):.1f}",
        "organism": rng.pick(("E. coli", "MSSA", "Klebsiella", "Pseudomonas")),
        "pressor_off": b(2, min(4, days + 1)), "sputum": rng.pick(("yellow", "green", "rusty",
                                                                    "blood-tinged")),
        "spo2": b(78, 89), "node": b(9, 22), "ett": f"{rng.pick(('7.0', '7.5', '8.0'))} ETT",
        "extubated": b(2, max(2, min(6, days))), "o2": b(1, 4), "home_o2": b(1, 4),
        "abg": f"{r(7.18, 7.30):.2f}/{b(60, 95)}/{b(55, 80)}", "taper": rng.pick((5, 10, 14)),
        "nsaid": rng.pick(("ibuprofen 800 mg TID", "naproxen twice daily", ("daily aspirin "
                           "325 mg"))),
        "hct_low": f"{r(18, 25):.1f}", "lavage": b(3, 10) * 100, "prbc": b(2, 6),
        "ulcer_size": f"{r(0.8, 2.5):.1f}", "hpylori": rng.pick(("positive", "negative")),
        "meld": b(15, 32), "pmn": b(50, 900), "spleen": f"{r(13, 18):.1f}", "bands": b(2, 5),
        "glucose_adm": b(420, 850), "gap_adm": b(22, 35), "gap_close": b(8, 20),
        "nihss": b(6, 22), "nihss_d": b(1, 8), "tpa_time": f"{b(1, 11)}:{b(10, 59)}",
        "inr_adm": f"{r(2.4, 4.5):.1f}", "sdh_mm": b(6, 22), "shift": b(2, 9),
        "rvlv": f"{r(1.0, 1.6):.1f}", "anticoag": rng.pick(("apixaban", "rivaroxaban",
                                                             "warfarin")),
        "lipase": b(900, 8000), "stone": b(4, 14), "cbd": b(4, 11), "diet_day": b(2, 5),
        "grafts": b(2, 4), "ava": f"{r(0.5, 0.9):.1f}", "ava_grad": b(55, 95),
        "valve": rng.pick(("23 mm tissue valve", "25 mm bioprosthetic valve")),
        "k_adm": f"{r(6.2, 7.6):.1f}", "cr_adm": f"{r(3.4, 6.8):.1f}",
        "cr_dc": f"{r(1.8, 3.0):.1f}", "chemo": rng.pick(("carboplatin/pemetrexed",
                                                            "pembrolizumab")),
        "weight_loss": b(10, 35), "mass": f"{r(3.0, 8.5):.1f}", "vert": b(4, 12),
        "drinks": rng.pick(("a pint of vodka", "12 beers", "a fifth of whiskey", ("2 bottles of "
                            "wine"))),
        "ciwa": b(16, 32), "benzo_total": b(6, 40) * 10, "speed": b(25, 65),
        "ribs": rng.pick(("4th through 7th", "5th through 8th", "3rd through 6th",
                          "6th through 9th")),
        "chest_tube": rng.pick((20, 24, 28, 32)), "ct_out": b(3, 5),
        "prior_surgery": "appendectomy", "ng_out": b(5, 20) * 100, "sb_cm": f"{r(3.2, 5.5):.1f}",
        "flatus": b(3, 5), "activity": rng.pick(("gardening", "walking up stairs", "at church",
                                                 "in the shower", "shoveling snow")),
        "hr_low": b(24, 42), "pm_model": "Medtronic Adapta", "seizure_cause": "prior trauma",
        "sz_min": b(5, 30), "ef": 55,
    })
    for key, options in problem.slots.items():
        s[key] = _fill(rng.pick(options), s)
    return s


def _lab_baseline(pt: _Patient, name: str, rng: _Rng) -> float:
    _, lo, hi, _ = V.LABS[name]
    keys = {c.key for c in pt.chronic}
    if name == "Creatinine" and "ckd" in keys:
        return float(pt.slots["cr_base"])
    if name in ("Hemoglobin", "Hematocrit") and "anemia" in keys:
        return lo * 0.82
    if name == "Glucose" and "dm2" in keys:
        return rng.real(140, 220)
    return rng.real(lo, hi)


def _make_admission(rng: _Rng, pt: _Patient, index: int, hadm_id: int, admit: datetime,
                    problem: V.Problem) -> _Admission:
    los = max(1.0, problem.los_median * math.exp(0.55 * rng.normal()))
    slots = _admission_slots(rng, pt, problem, los)
    ef = rng.between(*problem.ef_range)
    if index > 0 and pt.admissions:
        ef = min(ef, pt.admissions[-1].ef + rng.between(-5, 5))
    slots["ef"] = ef
    slots["wall_motion"] = (_WALL_MOTION[slots["vessel"]] if problem.key in ("nstemi", "stemi",
                                                                             "cabg")
                            else "global hypokinesis" if ef < 40 else "normal regional wall "
                            "motion")
    codes = list(problem.codes) + [c for c in problem.optional_codes if rng.chance(0.45)]
    keys = {c.key for c in pt.chronic}
    for c in pt.chronic:
        if c.code not in codes and rng.chance(0.85):
            codes.append(c.code)
    if "afib" in keys and any("Warfarin" in m for m in pt.home_meds):
        codes.append("V5861")
    if "dm2" in keys and any("Insulin" in m for m in pt.home_meds):
        codes.append("V5867")
    if pt.age >= 85 and rng.chance(0.4) or problem.key == "lung_ca" and rng.chance(0.5):
        codes.append("V4986")
    if any(a.problem.key == "cabg" for a in pt.admissions):
        codes.append("V4581")
    if any(a.problem.key == "chb" for a in pt.admissions):
        codes.append("V4501")
    codes = list(dict.fromkeys(codes))
    labs = {}
    for name, (s0, s1, e0, e1) in problem.labs.items():
        labs[name] = (rng.real(s0, s1), rng.real(e0, e1))
    for name in ("Sodium", "Potassium", "Chloride", "Bicarbonate", "BUN", "Creatinine",
                 "Glucose", "WBC", "Hemoglobin", "Hematocrit", "Platelets", "INR", "Magnesium",
                 "Calcium", "Phosphate"):
        if name not in labs:
            base = _lab_baseline(pt, name, rng)
            labs[name] = (base, base * rng.real(0.92, 1.08))
    ventilated = rng.chance(problem.vent_prob)
    meds = [_fill(m, slots) for m in rng.subset(problem.meds, rng.between(3, len(problem.meds)))]
    n_units = 2 + rng.between(0, 2)
    return _Admission(
        hadm_id=hadm_id, index=index, problem=problem, admit=admit,
        discharge=admit + timedelta(days=los), los=los,
        name=_fill(rng.pick(problem.names), slots), unit=rng.pick(problem.units),
        service=rng.pick(problem.services), slots=slots, codes=codes,
        meds=meds,
        labs=labs,
        procedures=[_fill(p, slots) for p in rng.subset(problem.procedures,
                                                         rng.between(1, len(problem.procedures)))],
        devices=[_fill(d, slots) for d in problem.devices],
        course=[_fill(c, slots) for c in rng.subset(problem.course, max(
            2, len(problem.course) - 1))],
        hpi=[_fill(h, slots) for h in problem.hpi if rng.chance(0.8)] or [_fill(
            problem.hpi[0], slots)],
        ventilated=ventilated, extubate_day=int(slots["extubated"]) if ventilated else 0,
        ef=ef, cgids=[rng.between(14000, 21999) for _ in range(n_units * 3)],
        dnr="V4986" in codes,
        antibiotics=[m.split(" ")[0].lower() for m in meds
                     if any(w in m.lower() for w in _ANTIBIOTIC_STEMS)],
        infusions=[m for m in meds if "drip" in m.lower() or "mcg/kg/min" in m or "/hr" in m],
    )


_ANTIBIOTIC_STEMS = ("cillin", "cef", "vanco", "floxacin", "mycin", "metronidazole", "bactam",
                     "clinda", "penem", "sulfa")
_PROBLEM_FOLLOWUPS = {
    "nstemi": ("chf", "afib_rvr", "cabg", "nstemi"), "stemi": ("chf", "nstemi"),
    "chf": ("chf", "chf", "aki_hyperk", "afib_rvr"), "afib_rvr": ("stroke", "sdh", "chf"),
    "urosepsis": ("urosepsis", "pneumonia", "cellulitis"), "pneumonia": ("copd", "pneumonia"),
    "copd": ("copd", "pneumonia", "chf"), "ugib": ("ugib", "cirrhosis"),
    "cirrhosis": ("cirrhosis", "ugib", "etoh_withdrawal"), "dka": ("dka", "cellulitis"),
    "stroke": ("pneumonia", "seizure", "urosepsis"), "sdh": ("seizure", "hip_fx"),
    "hip_fx": ("pneumonia", "urosepsis", "pe"), "pe": ("pe", "lung_ca"),
    "pancreatitis": ("pancreatitis", "etoh_withdrawal"), "cabg": ("afib_rvr", "chf"),
    "avr": ("chf", "afib_rvr"), "aki_hyperk": ("aki_hyperk", "chf"),
    "lung_ca": ("lung_ca", "pe", "pneumonia"), "etoh_withdrawal": ("etoh_withdrawal",
                                                                   "cirrhosis", "pancreatitis"),
    "trauma": ("pneumonia", "trauma"), "sbo": ("sbo", "urosepsis"), "chb": ("chf", "afib_rvr"),
    "cellulitis": ("cellulitis", "urosepsis"), "seizure": ("seizure", "pneumonia"),
}
_PROBLEMS = {p.key: p for p in V.PROBLEMS}


def _story(rng: _Rng, subject_id: int, next_hadm: Callable[[], int]) -> _Patient:
    first = datetime(rng.between(2103, 2195), rng.between(1, 12), rng.between(1, 28),
                     rng.between(0, 23), rng.between(0, 59))
    pt = _make_patient(rng, subject_id, first)
    n_adm = rng.pick((1, 1, 1, 1, 1, 2, 2, 2, 3, 3))
    problem = rng.pick(V.PROBLEMS)
    admit = first
    for i in range(n_adm):
        pt.admissions.append(_make_admission(rng, pt, i, next_hadm(), admit, problem))
        admit = pt.admissions[-1].discharge + timedelta(days=rng.between(20, 900),
                                                        hours=rng.between(0, 23))
        problem = _PROBLEMS[rng.pick(_PROBLEM_FOLLOWUPS[problem.key])]
    return pt


# ---------------------------------------------------------------------------------------------
# Notes


@dataclass
class _Ctx:
    """One note being written: whose story, when, and the day of the stay it falls on."""

    pt: _Patient
    adm: _Admission
    when: datetime
    rng: _Rng
    inpatient: bool

    @property
    def day(self) -> int:
        return max(0, (self.when - self.adm.admit).days)

    @property
    def s(self) -> dict:
        return self.adm.slots

    def intubated(self) -> bool:
        return self.inpatient and self.adm.ventilated and self.day < self.adm.extubate_day

    def lab(self, name: str) -> float:
        start, end = self.adm.labs.get(name) or self._normal(name)
        if not self.inpatient:
            v = end
        else:
            tau = max(1.0, self.adm.los / 3)
            v = end + (start - end) * math.exp(-(self.when - self.adm.admit).total_seconds()
                                               / 86400 / tau)
        return v * (0.97 + 0.06 * self.rng.random())

    def _normal(self, name: str) -> tuple[float, float]:
        _, lo, hi, _ = V.LABS[name]
        v = (lo + hi) / 2
        return v, v

    def labf(self, name: str) -> str:
        return _fmt_lab(name, self.lab(name))


def _fmt_lab(name: str, v: float) -> str:
    dec = V.LABS[name][3]
    return f"{max(v, 0):.{dec}f}" if dec else str(round(max(v, 0)))


def _date(d: datetime) -> str:
    return f"[**{d.year}-{d.month}-{d.day}**]"


def _md(d: datetime) -> str:
    return f"[**{d.month}-{d.day}**]"


def _clock(d: datetime) -> str:
    h = d.hour % 12 or 12
    return f"{h}:{d.minute:02d} {'AM' if d.hour < 12 else 'PM'}"


_NAME_PATTERNS = ("Last Name (NamePattern1)", "Known lastname", "Name (NI)",
                  "First Name4 (NamePattern1)", "Last Name (un)", "First Name8 (NamePattern2)")
_DOC_PATTERNS = ("Doctor Last Name", "Last Name (STitle)", "First Name3 (LF)", "Name6 (MD)",
                 "Name8 (MD)", "Doctor First Name")


def _name(rng: _Rng) -> str:
    return f"[**{rng.pick(_NAME_PATTERNS)} {rng.between(10, 99999)}**]"


def _doc(rng: _Rng) -> str:
    return f"Dr. [**{rng.pick(_DOC_PATTERNS)} {rng.between(10, 9999)}**]"


def _phone(rng: _Rng) -> str:
    return f"[**Telephone/Fax (1) {rng.between(100, 9999)}**]"


_HOSPITAL = "[**Hospital1 18**]"


def _vitals(c: _Ctx) -> dict:
    r = c.rng
    afib = "fibrillation" in c.pt.ecg_rhythm
    hr = r.between(95, 125) if c.day < 1 and c.inpatient else r.between(62, 98)
    return {"hr": hr, "sbp": r.between(92, 150), "dbp": r.between(48, 85), "rr": r.between(12, 26),
            "spo2": r.between(92, 100), "temp": f"{r.real(97.2, 100.9):.1f}",
            "rhythm": "AF" if afib else "ST" if hr > 100 else r.pick(
                ("NSR", "SR", "NSR with occasional PVCs"))}


def _lines_text(c: _Ctx) -> list[str]:
    out = []
    for d in c.adm.devices:
        dl = d.lower()
        if " ij " in f" {dl} " or "subclavian" in dl or "picc" in dl or "cordis" in dl:
            out.append(f"{d[0].upper()}{d[1:]} with tip in the "
                       f"{c.rng.pick(('mid SVC', 'distal SVC', 'cavoatrial junction'))}.")
        elif "chest tube" in dl:
            out.append(f"{d[0].upper()}{d[1:]} in unchanged position.")
        elif "pacemaker" in dl:
            out.append(f"{c.s['Side']} chest wall pacemaker with leads in the right atrium and "
                       "right ventricle.")
        elif "nasogastric" in dl or "feeding" in dl or "dobhoff" in dl:
            out.append("Enteric tube courses below the diaphragm, tip in the stomach.")
    if c.intubated():
        out.append(f"Endotracheal tube terminates {c.rng.real(2.5, 6.0):.1f} cm above the carina.")
    if any(a.problem.key in ("cabg", "avr") for a in c.pt.admissions if a.admit <= c.when):
        out.append("Median sternotomy wires are intact.")
    return out


def _radiology_slots(c: _Ctx) -> dict:
    s = dict(c.s)
    lines = _lines_text(c)
    s["lines"] = " ".join(lines) if lines else "No lines or tubes."
    s["lines_short"] = lines[0] if lines else "No acute change."
    s["heart_size"] = ("enlarged" if c.adm.ef < 35 else "mildly enlarged" if c.adm.ef < 50
                       else "normal")
    s["edema"] = ("moderate pulmonary edema" if c.adm.problem.key == "chf" and c.day < 3
                  else "mild pulmonary vascular congestion" if c.adm.ef < 40
                  else "no pulmonary edema")
    s["old_findings"] = f"Again seen is {c.pt.incidental}."
    return s


_RAD_REGION_FILLER = {
    "CHEST": ("The cardiomediastinal silhouette is {heart_size}.",
              "The aorta is {aorta}.", "There is no evidence of pneumothorax.",
              "Atelectasis at the {side} lung base is {atelectasis}.",
              "The hilar contours are {hila}.", "There is {edema}.",
              "Degenerative changes are noted in the thoracic spine.",
              "The upper abdomen is unremarkable.", "Again seen is {incidental}."),
    "HEAD": ("The ventricles and sulci are prominent, consistent with age-related atrophy.",
             "The visualized paranasal sinuses and mastoid air cells are well aerated.",
             "There is no fracture.", "The basal cisterns are patent.",
             "The gray-white matter differentiation is {gw}."),
    "ABDOMEN": ("The liver, spleen, adrenal glands and pancreas are {abd_organs}.",
                "There is no free air or free fluid.", "The bladder is {bladder}.",
                "Atherosclerotic calcifications of the abdominal aorta.",
                "The visualized lung bases show {side} basilar atelectasis.",
                "Degenerative changes of the lumbar spine."),
}


_CT_ORGANS = {
    "CHEST": (("LUNGS", ("Mild dependent atelectasis bilaterally.", "Centrilobular emphysema.",
                         "Again seen is {incidental}.", "No suspicious pulmonary nodule.")),
              ("AIRWAYS", ("The central airways are patent.", "Mild bronchial wall thickening.")),
              ("PLEURA", ("Small {side} pleural effusion.", "No pleural effusion.")),
              ("HEART AND MEDIASTINUM", ("Heart size is {heart_size}.", ("Coronary artery "
                                         "calcifications."), "No pericardial effusion.")),
              ("BONES", ("Degenerative changes of the thoracic spine.", ("No suspicious lytic or "
                         "sclerotic lesion.")))),
    "ABDOMEN": (("LIVER", ("Homogeneous enhancement without focal lesion.", ("Diffuse fatty "
                           "infiltration."))),
                ("GALLBLADDER", ("Cholelithiasis without wall thickening.", "Unremarkable.")),
                ("PANCREAS", ("Normal enhancement, no ductal dilation.", "Atrophic.")),
                ("SPLEEN", ("Normal in size.", "Splenomegaly to {spleen} cm.")),
                ("ADRENALS", ("Unremarkable.", "Small {side} adrenal nodule, likely adenoma.")),
                ("KIDNEYS", ("{cyst} cm simple cyst in the {side} kidney. No hydronephrosis.",
                             "Symmetric enhancement and excretion.")),
                ("BOWEL", ("Normal appendix.", ("Sigmoid diverticulosis without "
                           "diverticulitis."))),
                ("PELVIS", ("The bladder is {bladder}.", "No free fluid in the pelvis.")),
                ("BONES", ("Degenerative changes of the lumbar spine.", "No fracture."))),
}
_RAD_TECHNIQUE = {
    "CT": "TECHNIQUE:  Axial MDCT images were obtained {contrast}. Coronal and sagittal "
          "reformations were performed.",
    "MR": "TECHNIQUE:  Multiplanar T1, T2, FLAIR and diffusion weighted images of the brain "
          "were obtained {contrast}.",
    "UNILAT": "TECHNIQUE:  Grayscale, color and spectral Doppler ultrasound of the {side} "
              "lower extremity veins.",
    "RENAL": "TECHNIQUE:  Grayscale and color Doppler ultrasound of the kidneys.",
    "LIVER": "TECHNIQUE:  Grayscale and Doppler ultrasound of the abdomen.",
}


def _radiology(c: _Ctx) -> tuple[str, str]:
    r = c.rng
    studies = c.adm.problem.studies
    if not c.inpatient or r.chance(0.25):
        study = r.pick(V.RADIOLOGY_EXTRA)
    elif c.intubated() or (c.day > 0 and r.chance(0.5)):
        study = studies[0] if studies[0].description.startswith("CHEST (PORT") else r.pick(
            studies)
    else:
        study = r.pick(studies)
    s = _radiology_slots(c)
    s.update(aorta=r.pick(("tortuous", "unfolded and calcified", "normal in caliber")),
             atelectasis=r.pick(("unchanged", "slightly worse", "improved", "minimal")),
             hila=r.pick(("normal", "unremarkable", "prominent, likely vascular")),
             gw=r.pick(("preserved", "maintained")),
             abd_organs=r.pick(("unremarkable", "within normal limits")),
             bladder=r.pick(("decompressed by a Foley catheter", "normal", "distended")),
             incidental=c.pt.incidental, spleen=f"{r.real(13, 17):.1f}")
    desc = _fill(study.description, s)
    first = desc.split(" ")[0]
    contrasted = any(k in desc for k in ("W/CONTRAST", "W&W/O", "W & W/O"))
    s["contrast"] = ("following the administration of intravenous contrast" if contrasted
                     else "without intravenous contrast")
    if first in ("CHEST", "CTA") or "CHEST" in desc:
        region = "CHEST"
    elif "HEAD" in desc:
        region = "HEAD"
    elif first in ("CT", "ABDOMEN", "PORTABLE", "RENAL", "LIVER"):
        region = "ABDOMEN"
    else:
        region = ""
    reason = r.pick(study.reason)
    age = c.pt.age_at(c.when)
    cond = (f"{age} year old {c.pt.man} with {c.adm.name}"
            + (", intubated" if c.intubated() else "")
            + "".join(f", {x}" for x in r.subset(c.pt.chronic_names, r.between(0, 2))))
    findings = [_fill(f, s) for f in study.findings if r.chance(0.9)] or [_fill(
        study.findings[0], s)]
    if region:
        findings += [_fill(f, s) for f in r.subset(_RAD_REGION_FILLER[region], r.between(3, 7))]
    if first in ("CT", "CTA") and region in _CT_ORGANS:
        findings = findings[:len(study.findings)]
        findings += [f"\n {organ}:  " + _fill(r.pick(options), s)
                     for organ, options in _CT_ORGANS[region]]
    impression = [_fill(i, s) for i in r.subset(study.impression, r.between(1, 2))]
    if r.chance(0.4):
        impression.append(f"Unchanged {c.pt.incidental}.")
    clip = f"Clip # [**Clip Number (Radiology) {r.between(1000, 99999)}**]"
    prior = c.when - timedelta(days=r.between(1, 400))
    technique = _RAD_TECHNIQUE.get(first if first != "CTA" else "CT")
    lines = [
        f"{_date(c.when)} {_clock(c.when)}",
        f"     {desc:<60}{clip}",
        f"     Reason: {reason}",
        f"     Admitting Diagnosis: {c.adm.name.upper()}" if c.inpatient else
        "     Admitting Diagnosis: OUTPATIENT",
    ]
    if first in ("CT", "CTA", "MR"):
        lines.append(f"     Contrast: {r.pick(('OPTIRAY', 'OMNIPAQUE'))} Amt: {r.pick((100, 130))}"
                     if contrasted else "     Contrast: NONE")
    lines += [
        " " + "_" * 78,
        "[**Hospital 2**] MEDICAL CONDITION:",
        f"  {cond}",
        " REASON FOR THIS EXAMINATION:",
        f"  {reason}",
        " " + "_" * 78,
    ]
    if r.chance(0.3):
        lines += [(f"WET READ: {r.pick(('JXKc', 'BDa', 'MGt', 'SSp'))} "
                  f"{_date(c.when)} {_clock(c.when + timedelta(minutes=40))}"),
                  f"  {impression[0]}", " " + "_" * 78]
    lines += [
        "                                 FINAL REPORT",
        f" HISTORY:  {cond}, {reason}.",
        "",
    ]
    if technique:
        lines += [" " + _fill(technique, s), ""]
    lines += [
        f" COMPARISON:  {_date(prior)}." if r.chance(0.7) else " COMPARISON:  None.",
        "",
        " FINDINGS:  " + "  ".join(findings),
        "",
        " IMPRESSION:",
    ]
    lines += [f" {i + 1}.  {x}" for i, x in enumerate(impression)] if len(impression) > 1 else [
        f" {impression[0]}"]
    if r.chance(0.2):
        lines += ["", f" Findings were discussed with {_doc(r)} by telephone at {_clock(c.when)}."]
    return desc, "\n".join(lines) + "\n"


def _ecg(c: _Ctx) -> tuple[str, str]:
    r = c.rng
    rhythm = c.pt.ecg_rhythm
    feats = list(c.pt.ecg_features)
    if c.inpatient and c.adm.problem.ecg and (c.day < 2 or r.chance(0.4)):
        feats = [r.pick(c.adm.problem.ecg)] + feats
        if "fibrillation" in feats[0] or "paced" in feats[0].lower() or "heart block" in feats[0]:
            rhythm = ""
    if r.chance(0.3):
        feats = r.subset(feats, max(1, len(feats) - 1))
    prior = c.when - timedelta(days=r.between(1, 700))
    compare = r.pick(((f"Compared to the previous tracing of {_date(prior)} there is no "
                      "significant change."),
                      f"Since the previous tracing of {_date(prior)} the rate is faster.",
                      "No previous tracing available for comparison.",
                      (f"Compared to the previous tracing of {_date(prior)} the findings are "
                      "similar."), "Clinical correlation is suggested."))
    parts = ([rhythm] if rhythm else []) + feats + [compare]
    return "Report", ". ".join(p.rstrip(".") for p in parts) + ".\n"


def _ef_words(ef: int) -> str:
    return ("normal" if ef >= 55 else "mildly depressed" if ef >= 45 else
            "moderately depressed" if ef >= 30 else "severely depressed")


_ECHO_REASONS = ("Left ventricular function", "Congestive heart failure", "Shortness of breath",
                 "Aortic valve disease", "Atrial fibrillation", "Chest pain", "Endocarditis",
                 "Stroke")


def _echo(c: _Ctx) -> tuple[str, str]:
    r = c.rng
    ef = c.adm.ef
    s = c.s
    as_ = c.adm.problem.key == "avr" and c.when < c.adm.admit + timedelta(days=1)
    mr = r.pick(("Trace", "Mild (1+)", "Moderate (2+)")) if ef > 40 else r.pick(
        ("Moderate (2+)", "Moderate to severe (3+)"))
    lv = ("Severely depressed LVEF." if ef < 30 else "Moderately depressed LVEF." if ef < 40
          else "Mildly depressed LVEF." if ef < 50 else "Normal LV cavity size. Normal regional "
          "LV systolic function.")
    find = [
        "LEFT ATRIUM: " + r.pick(("Mild LA enlargement.", "Moderate LA enlargement.",
                                  "Normal LA size.")),
        "RIGHT ATRIUM/INTERATRIAL SEPTUM: Normal RA size. No ASD by 2D or color Doppler.",
        f"LEFT VENTRICLE: {lv} {s['wall_motion'].capitalize()}. LVEF = {ef}%.",
        "RIGHT VENTRICLE: " + r.pick(("Normal RV chamber size and free wall motion.",
                                      "Dilated RV cavity. RV hypokinesis.",
                                      "Mildly dilated RV cavity.")),
        "AORTA: Normal aortic diameter at the sinus level.",
        "AORTIC VALVE: " + (f"Severely thickened/deformed aortic valve leaflets. Severe AS (AoVA "
                            f"{s['ava']}cm2). Peak gradient {s['ava_grad']} mmHg." if as_ else
                            r.pick(("Three aortic valve leaflets. No AS. No AR.",
                                    "Mildly thickened aortic valve leaflets. Trace AR."))),
        f"MITRAL VALVE: Mildly thickened mitral valve leaflets. {mr} MR.",
        (f"TRICUSPID VALVE: Normal tricuspid valve leaflets. Mild PA systolic hypertension "
        f"(PASP {r.between(30, 60)} mmHg)."),
        "PULMONIC VALVE/PULMONARY ARTERY: Pulmonic valve not well seen.",
        "PERICARDIUM: " + r.pick(("No pericardial effusion.", "Small pericardial effusion.")),
    ]
    concl = [f"The left ventricular cavity size is {r.pick(('normal', 'mildly dilated'))}.",
             f"There is {s['wall_motion']}.", (f"Overall left ventricular systolic function is "
             f"{_ef_words(ef)} (LVEF = {ef}%)."),
             f"{mr} mitral regurgitation is seen."]
    if as_:
        concl.append(f"There is severe aortic valve stenosis (valve area {s['ava']} cm2).")
    if c.adm.index > 0 or r.chance(0.5):
        prior = c.adm.admit - timedelta(days=r.between(30, 900))
        concl.append(f"Compared with the prior study (images reviewed) of {_date(prior)}, "
                     + r.pick(("the findings are similar.", "LV function is worse.",
                               "the severity of mitral regurgitation has increased.")))
    text = "\n".join([
        "PATIENT/TEST INFORMATION:",
        f"Indication: {r.pick(_ECHO_REASONS)}. {c.adm.name.capitalize()}.",
        f"Height: (in) {c.pt.height_in}",
        f"Weight (lb): {int(c.pt.weight_kg * 2.2046)}",
        f"BSA (m2): {1.6 + (c.pt.weight_kg - 50) / 150:.2f} m2",
        f"BP (mm Hg): {r.between(90, 150)}/{r.between(45, 85)}",
        f"HR (bpm): {r.between(55, 120)}",
        f"Status: {'Inpatient' if c.inpatient else 'Outpatient'}",
        f"Date/Time: {_date(c.when)} at {c.when.hour:02d}:{c.when.minute:02d}",
        f"Test: {r.pick(('TTE (Complete)', 'TTE (Focused views)', 'TEE (Complete)'))}",
        "Doppler: Full Doppler and color Doppler",
        f"Contrast: {r.pick(('None', 'Definity'))}",
        f"Technical Quality: {r.pick(('Adequate', 'Suboptimal', 'Good'))}",
        "", "", "INTERPRETATION:", "", "Findings:", "",
        "\n\n".join(find), "",
        "Conclusions:",
        " ".join(concl), "",
        "IMPRESSION: " + r.pick((f"LVEF {ef}% with {s['wall_motion']}.",
                                 f"{mr} MR. LVEF {ef}%.")),
        "",
        (f"Electronically signed by {_doc(r)}, MD, Interpreting physician "
        f"[**Last Name (NamePattern4) {r.between(100, 9999)}**] {_date(c.when)} "
        f"{c.when.hour:02d}:{c.when.minute:02d}"),
    ])
    return "Report", text + "\n"


def _abx(c: _Ctx) -> list[str]:
    return c.adm.antibiotics


def _drips(c: _Ctx) -> list[str]:
    return c.adm.infusions


def _nursing_other(c: _Ctx) -> tuple[str, str]:
    r, s, v = c.rng, c.s, _vitals(c)
    key = c.adm.problem.key
    shift = r.pick(("NPN 7a-7p", "NPN 7p-7a", "Nursing progress note 0700-1900", "NPN 1900-0700",
                    "Nsg note", "MICU NPN", "CCU NPN 7p-7a"))
    neuro = ("sedated on propofol, opens eyes to voice, MAE, follows simple commands "
             "intermittently" if c.intubated() else
             r.pick(("A&Ox3, MAE, follows commands, pleasant and cooperative",
                     "alert, oriented x2, intermittently confused overnight, reoriented easily",
                     "lethargic but arousable, PERRL, MAE weakly")))
    if key == "stroke":
        neuro += f", {s['other_side']} sided weakness persists, {s['other_side']} facial droop"
    elif key == "etoh_withdrawal":
        neuro += f", CIWA {r.between(4, 25)}, tremulous, valium given per scale"
    elif key in ("sdh", "seizure"):
        neuro += f", neuro checks q1h, pupils {r.between(2, 4)}mm brisk, no seizure activity"
    resp = (f"remains intubated on CMV {r.between(400, 550)}x{r.between(12, 20)}, peep "
            f"{r.pick((5, 8, 10))}, fio2 {r.pick((40, 50, 60))}%. "
            f"sx for {r.pick(('small', 'mod', 'lg'))} "
            f"amts thick {r.pick(('tan', 'white', 'yellow'))} secretions" if c.intubated() else
            f"on {r.between(2, 6)}L NC, sats {v['spo2']}%. "
            f"LS {r.pick(('clear', 'coarse', 'crackles'))} "
            f"upper, diminished at {s['side']} base. "
            f"{r.pick(('strong', 'weak', 'non-productive'))} cough")
    if key == "trauma":
        resp += f". {s['side']} CT to sx, no air leak, {r.between(20, 200)}cc serosang output"
    drips = _drips(c)
    cv = (f"HR {v['hr'] - 10}-{v['hr'] + 5} {v['rhythm']}, "
          f"{r.pick(('no ectopy', 'occ PVCs', 'rare PACs'))}. SBP {v['sbp'] - 10}-{v['sbp'] + 10}"
          ". " + (f"{drips[0].split(' ')[0].lower()} gtt infusing as ordered. " if drips else "")
          + f"pulses palp, extremities {r.pick(('warm', 'cool', 'warm and dry'))}, "
          f"{r.pick(('1+', '2+', 'trace', 'no'))} edema")
    gi = r.pick(("abd soft, nontender, +BS", "abd softly distended, hypoactive BS",
                 "abd obese, soft, +BS x4")) + ". " + (
        "OGT to LCWS." if c.intubated() else r.pick(("tolerating po diet.", "npo for procedure.",
                                                      "taking sips, poor appetite."))) + (
        f" lactulose given, {r.between(1, 5)} loose stools." if key == "cirrhosis" else
        f" guaiac + stool x{r.between(1, 3)}." if key == "ugib" else
        f" last BM {_md(c.when - timedelta(days=r.between(0, 3)))}.")
    gu = (f"foley draining {r.pick(('clear yellow', 'amber', 'cloudy', 'dark amber'))} urine, "
          f"{r.between(20, 120)}cc/hr. BUN/Cr {c.labf('BUN')}/{c.labf('Creatinine')}")
    abx = _abx(c)
    idn = f"Tmax {v['temp']}. " + (f"on {'/'.join(abx[:2])}." if abx else "no abx.") + (
        f" f/u cx, {s['organism']} in {r.pick(('urine', 'blood', 'sputum'))}."
        if abx and r.chance(0.5) else "")
    lines = [
        f"{shift}:",
        (f"{c.pt.age_at(c.when)} yo {c.pt.sex} w/ hx " + ", ".join(c.pt.chronic_names)
         + f" adm with {c.adm.name}. home meds: "
         + ", ".join(m.split(" PO")[0] for m in r.subset(c.pt.home_meds, 3)) + "."
         if c.pt.chronic_names and r.chance(0.6) else ""),
        f"EVENTS: {r.pick(c.adm.course)}" if r.chance(0.5) else "",
        f"NEURO: {neuro}.",
        f"CV: {cv}.",
        f"RESP: {resp}.",
        f"GI: {gi}",
        f"GU: {gu}.",
        f"ID: {idn}",
    ]
    if any("Insulin" in m for m in c.adm.meds + c.pt.home_meds):
        lines.append(f"ENDO: FS {r.between(110, 260)}, covered with RISS.")
    if r.chance(0.6):
        lines.append(f"LABS: K {c.labf('Potassium')}, Hct {c.labf('Hematocrit')}, "
                     f"Mg {c.labf('Magnesium')}"
                     + (f", repleted with {r.pick(('40meq KCL', '2gm mag sulfate'))}."
                        if r.chance(0.5) else "."))
    lines.append("ACCESS: " + ", ".join(d for d in c.adm.devices) + ".")
    if r.chance(0.6):
        lines.append(f"PAIN: c/o {s['side']} {r.pick(('chest', 'flank', 'leg', 'hip', 'back'))} "
                     f"pain {r.between(2, 9)}/10, medicated with "
                     + r.pick(("morphine 2mg iv", "dilaudid 0.5mg iv", "oxycodone 5mg po",
                               "tylenol 650mg")) + " with good effect.")
    if r.chance(0.5):
        lines.append("SKIN: " + r.pick(("coccyx stage II, duoderm intact", "intact",
                                        "heels red, blanchable, boots on")) + ".")
    if r.chance(0.5):
        lines.append("ACTIVITY: " + r.pick(("turned and repositioned q2h",
                                            "OOB to chair with assist x2, tolerated well",
                                            "bedrest, logroll")) + ".")
    lines.append("SOCIAL: " + r.pick((
        (f"{r.pick(('wife', 'daughter', 'son', 'husband', 'niece'))} {_name(r)} called, updated "
        "on pt's condition"), "family in to visit, questions answered",
        "no contact from family this shift. HCP is " + r.pick(("daughter", "son", "spouse")),
        'pt tearful at times, states "I just want to get better"'))
        + ".")
    lines.append("PLAN: " + r.pick((
        f"cont to monitor, f/u {r.pick(('am labs', 'cultures', 'lytes'))}",
        f"{'wean vent as tolerated' if c.intubated() else 'OOB to chair'}, cont current plan",
        (f"{'DNR/DNI' if c.adm.dnr else 'FULL CODE'}. cont supportive care, emotional support to "
        "pt and family"))) + f". {r.pick(c.adm.course)}")
    return "Report", "\n".join(x for x in lines if x) + "\n"


_NURSING_DESCRIPTIONS = (("Nursing Progress Note", 0.7), ("Generic Note", 0.1),
                         ("Nursing Transfer Note", 0.1), ("Nursing Note", 0.1))
_NURSING_DESC = _Weighted(dict(_NURSING_DESCRIPTIONS))


def _aarp(c: _Ctx, title: str) -> list[str]:
    r, s, v = c.rng, c.s, _vitals(c)
    assess = r.subset((
        (f"HR {v['hr']} {v['rhythm']}, BP {v['sbp']}/{v['dbp']}, MAP "
        f"{(v['sbp'] + 2 * v['dbp']) // 3}"),
        f"pt with {c.adm.name}",
        f"{r.pick(c.adm.hpi)}",
        f"labs: Hct {c.labf('Hematocrit')}, K {c.labf('Potassium')}, Cr {c.labf('Creatinine')}",
        (f"{'intubated, sedated' if c.intubated() else 'on ' + str(r.between(1, 5)) + 'L NC'}, "
        f"RR {v['rr']}, sats {v['spo2']}%"),
        f"c/o pain {r.between(0, 8)}/10 at {s['side']} side",
        (f"UOP {r.between(15, 150)} cc/hr, net {r.pick(('+', '-'))}{r.between(100, 2500)} cc "
        "for LOS"),
        f"Tmax {v['temp']}, WBC {c.labf('WBC')}",
        f"{r.pick(c.pt.chronic_names)} at baseline" if c.pt.chronic_names else "no PMH",
        f"skin {r.pick(('intact', 'with stage II on coccyx', 'with ecchymosis on abdomen'))}",
    ), r.between(3, 6))
    action = r.subset([*c.adm.meds, *c.adm.procedures,
                       "MD aware", "repleted lytes per sliding scale", "frequent repositioning",
                       "emotional support to pt and family", "fall precautions maintained",
                       f"{r.pick(c.adm.devices)} site assessed, dressing changed",
                       "labs sent as ordered", "pain medication given as ordered"],
                      r.between(3, 5))
    response = r.subset(("VSS", "tolerating well", "no change", "improving",
                         f"HR now {v['hr'] - 8}, SBP {v['sbp'] + 5}", "awaiting results",
                         'pt states "my pain is much better"', "resting comfortably",
                         'pt asking "when can I go home?"'), r.between(1, 2))
    plan = r.subset((f"{r.pick(c.adm.course)}", "cont to monitor closely", "f/u AM labs",
                     f"{'wean sedation for SBT in AM' if c.intubated() else 'OOB to chair'}",
                     "notify MD with changes", f"{r.pick(c.adm.procedures)} as planned",
                     f"{'DNR/DNI' if c.adm.dnr else 'full code'}, update family"),
                    r.between(2, 4))
    return [title, "   Assessment:", *[f"   {a}" for a in assess], "   Action:",
            *[f"   {a}" for a in action], "   Response:", *[f"   {a}" for a in response],
            "   Plan:", *[f"   {p}" for p in plan], ""]


_GENERIC_NURSING_TITLES = ("Pain control (acute pain, chronic pain)", "Impaired Skin Integrity",
                           "Altered mental status (not Delirium)", "Alteration in Nutrition",
                           "Knowledge deficit", "Anxiety", "Risk for falls")


def _nursing(c: _Ctx) -> tuple[str, str]:
    r = c.rng
    lines = []
    titles = r.subset(c.adm.problem.nursing_titles, r.between(1, len(c.adm.problem.nursing_titles)))
    if c.intubated() and r.chance(0.7):
        titles.append("Respiratory failure, acute (not ARDS/[**Doctor Last Name 11**])")
    titles += r.subset(_GENERIC_NURSING_TITLES, r.between(0, 2))
    for t in titles:
        lines += _aarp(c, t)
    desc = _NURSING_DESC.draw(r)
    if desc == "Nursing Transfer Note":
        lines = [(f"TRANSFER NOTE: {c.pt.age_at(c.when)} yo {c.pt.sex} admitted with {c.adm.name}, "
                 f"transferred to {_HOSPITAL} {r.pick(('floor', 'step down unit'))} "
                 f"[**Hospital Ward Name {r.between(100, 999)}**]."),
                 "PMH: " + ", ".join(c.pt.chronic_names or ["none"]),
                 "Allergies: " + ", ".join(c.pt.allergies or ["NKDA"]), ""] + lines
    return desc, "\n".join(lines) + "\n"


_REACTIONS = ("Rash", "Hives", "Anaphylaxis", "Nausea/Vomiting", "Unknown", "Swelling",
              "Confusion/Delirium", "Angioedema")


def _allergy_lines(c: _Ctx, with_reaction: bool) -> list[str]:
    if not c.pt.allergies:
        return ["No Known Allergies to Drugs" if with_reaction else
                "Patient recorded as having No Known Allergies to Drugs"]
    if not with_reaction:
        return [" / ".join(c.pt.allergies)]
    return [f"{a}\n   {c.rng.pick(_REACTIONS)};" for a in c.pt.allergies]


_CHRONIC_PLANS = (
    "continued home {med}", ("home {med} held in setting of acute illness, restarted prior to "
    "discharge"), "stable, continued {med}", "no active issues, continued home regimen",
)


def _chronic_plan(c: _Ctx, i: int) -> str:
    chronic, name = c.pt.chronic[i], c.pt.chronic_names[i]
    meds = [m for m in c.pt.home_meds if any(m.startswith(x.split(" ")[0]) for x in chronic.meds)]
    med = meds[0] if meds else "regimen"
    return f"# {name[0].upper()}{name[1:]}: " + _fill(c.rng.pick(_CHRONIC_PLANS), {"med": med})


def _lab_table(c: _Ctx, names: tuple[str, ...], days: int) -> list[str]:
    out = []
    whens = [c.adm.admit + timedelta(days=d, hours=c.rng.between(2, 6)) for d in range(days)]
    out.append("            " + "  ".join(f"{_md(w)} {w.hour:02d}:{w.minute:02d}" for w in whens))
    for n in names:
        vals = []
        for w in whens:
            sub = _Ctx(c.pt, c.adm, w, c.rng, True)
            vals.append(_fmt_lab(n, sub.lab(n)))
        out.append(f"   {V.LAB_ABBREV[n]:<10}" + "  ".join(f"{v:>12}" for v in vals))
    return out


def _physician_history(c: _Ctx) -> list[str]:
    """HPI and history block that opens an admission note (progress notes skip it)."""
    r, pt, adm = c.rng, c.pt, c.adm
    if c.day > 0:
        return []
    return [
        " HPI:",
        f"   {pt.age_at(c.when)} yo {pt.sex} with "
        + (", ".join(pt.chronic_names) or "no significant PMH") + " who presents with "
        + _fill(r.pick(adm.problem.complaints), adm.slots) + ". "
        + " ".join(_hpi_sentence(pt, h, r) for h in adm.hpi),
        " Patient admitted from: " + r.pick(("[**Hospital1 1**] ER",
                                              "Transfer from other hospital", "Home")),
        " History obtained from Patient, Family / Friend, Medical records",
        " Past medical history:",
        " Family history:",
        " Social History:",
        *[f"   {h}" for h in pt.chronic_names + pt.surgical_history],
        "   " + r.pick(("Father", "Mother", "Brother")) + ": "
        + r.pick(("CAD", "DM", "Cancer", "Stroke")),
        f"   Occupation: {pt.occupation}",
        f"   Lives with: {pt.lives_with}",
        " Review of systems:",
        "   Constitutional: " + r.pick(("Fatigue", "Fever", "No(t) Fever")),
        "   Cardiovascular: " + r.pick(("Chest pain", "Edema", "No(t) Chest pain")),
        "   Respiratory: " + r.pick(("Cough, Dyspnea", "No(t) Cough", "Tachypnea")),
        "   Gastrointestinal: " + r.pick(("Nausea", "No(t) Abdominal pain", "Emesis")),
        "   Neurologic: " + r.pick(("No(t) Headache", "Confusion", "Weakness")),
    ]


def _physician(c: _Ctx) -> tuple[str, str]:
    r, s, v = c.rng, c.s, _vitals(c)
    pt, adm = c.pt, c.adm
    desc = r.pick(("Physician Resident Progress Note", "Intensivist Note",
                   "Physician Attending Progress Note", "Physician Resident Admission Note")
                  if c.day > 0 else ("Physician Resident Admission Note",
                                     "Physician Attending Admission Note - MICU",
                                     "Intensivist Note"))
    abx = _abx(c)
    drips = _drips(c)
    tmax = r.real(37.0, 38.9)
    events = r.subset([*adm.course, *(f"{p}" for p in adm.procedures),
                       "Overnight, patient was " + r.pick(("agitated, received haldol 2 mg",
                                                            "hypotensive to 80s, bolused 500cc",
                                                            "stable without events")),
                       (f"{r.pick(('BLOOD', 'URINE', 'SPUTUM'))} CULTURED - At {_date(c.when)} "
                       f"{c.when.hour:02d}:{c.when.minute:02d}")], r.between(2, 4))
    lines = [
        f"Chief Complaint:  {_fill(r.pick(adm.problem.complaints), s)}",
        *_physician_history(c),
        "   24 Hour Events:",
        *[f"   - {e}" for e in events],
        " Allergies:",
        *[f"   {a}" for a in _allergy_lines(c, True)],
        " Last dose of Antibiotics:",
        *([f"   {a.capitalize()} - {_date(c.when)} {r.between(0, 11):02d}:00 AM" for a in abx]
          or ["   None"]),
        " Infusions:",
        *([f"   {d}" for d in drips] or ["   None"]),
        " Other ICU medications:",
        "   " + r.pick(("Pantoprazole (Protonix)", "Heparin Sodium (Prophylaxis)", "Fentanyl",
                        "Lorazepam (Ativan)"))
        + f" - {_date(c.when)} {r.between(1, 11):02d}:{r.between(10, 59)} PM",
        " Other medications:",
        *[f"   {m}" for m in r.subset(pt.home_meds, len(pt.home_meds))],
        " Changes to medical and family history:",
        " Review of systems is unchanged from admission except as noted below",
        f" Flowsheet Data as of  {_date(c.when)} {c.when.hour:02d}:{c.when.minute:02d} AM",
        " Vital signs", " Hemodynamic monitoring", " Fluid balance",
        "                                                                  24 hours",
        "                                                               Since 12 AM",
        f"   Tmax: {tmax:.1f}\nC ({tmax * 9 / 5 + 32:.1f}",
        f"   Tcurrent: {tmax - 0.6:.1f}\nC ({(tmax - 0.6) * 9 / 5 + 32:.1f}",
        f"   HR: {v['hr']} ({v['hr'] - 12} - {v['hr'] + 15}) bpm",
        (f"   BP: {v['sbp']}/{v['dbp']}({(v['sbp'] + 2 * v['dbp']) // 3}) "
        f"{{{v['sbp'] - 20}/{v['dbp'] - 10}({v['dbp']}) - {v['sbp'] + 18}/{v['dbp'] + 12}"
        f"({v['dbp'] + 25})}} mmHg"),
        f"   RR: {v['rr']} ({v['rr'] - 4} - {v['rr'] + 8}) insp/min",
        f"   SpO2: {v['spo2']}%",
        f"   Heart rhythm: {pt.ecg_rhythm if c.day else 'ST (Sinus Tachycardia)'}",
        f"   Wgt (current): {pt.weight_kg:.1f} kg (admission): {pt.weight_kg + 2.1:.1f} kg",
        f"   Total In:             {r.between(800, 4500):,} mL    {r.between(200, 1200)} mL",
        f"   Total out:            {r.between(600, 4000):,} mL    {r.between(100, 900)} mL",
        "   PO:", f"   TF:                   {r.between(0, 1200)} mL",
        f"   IVF:                  {r.between(200, 3000):,} mL    {r.between(50, 800)} mL",
        f"   Blood products:       {r.pick(('0', '350', '700'))} mL",
        f"   Urine:                {r.between(400, 3500):,} mL    {r.between(100, 900)} mL",
        f"   NG:                   {r.between(0, 400)} mL",
        f"   Balance:              {r.between(-2500, 2500):,} mL",
        " Respiratory support",
    ]
    if c.intubated():
        lines += ["   O2 Delivery Device: Endotracheal tube",
                  "   Ventilator mode: CMV/ASSIST/AutoFlow",
                  f"   Vt (Set): {r.between(400, 550)} ({r.between(400, 550)} - 550) mL",
                  f"   RR (Set): {r.between(12, 22)}", f"   PEEP: {r.pick((5, 8, 10, 12))} cmH2O",
                  f"   FiO2: {r.pick((40, 50, 60, 80))}%",
                  (f"   ABG: {c.lab('pH') if 'pH' in adm.labs else r.real(7.30, 7.45):.2f}/"
                  f"{r.between(35, 60)}/{r.between(70, 140)}/{r.between(18, 28)}/0")]
    else:
        lines += [f"   O2 Delivery Device: {r.pick(('Nasal cannula', 'Face tent', 'None'))}"]
    lines += [
        " Physical Examination",
        "   General Appearance: " + r.pick(("No acute distress", ("Well nourished, Overweight / "
                                            "Obese"), "Thin, Anxious", "Intubated, sedated")),
        "   Eyes / Conjunctiva: PERRL",
        "   Head, Ears, Nose, Throat: Normocephalic" + (", Endotracheal tube, OG tube"
                                                       if c.intubated() else ""),
        "   Cardiovascular: (S1: Normal), (S2: Normal), (Murmur: "
        + r.pick(("No(t) Systolic, No(t) Diastolic", "Systolic")) + ")",
        ("   Peripheral Vascular: (Right radial pulse: Present), (Left radial pulse: Present), "
        f"(Right DP pulse: {r.pick(('Present', 'Diminished'))}), (Left DP pulse: "
        f"{r.pick(('Present', 'Diminished', 'Not assessed'))})"),
        ("   Respiratory / Chest: (Breath Sounds: "
         f"{r.pick(('Crackles', 'Diminished', 'Rhonchorous'))}"
        f" : {s['side']} base)"),
        "   Abdominal: Soft, Non-tender, Bowel sounds present",
        (f"   Extremities: Right: {r.pick(('Absent', 'Trace', '1+'))}, Left: "
        f"{r.pick(('Absent', 'Trace', '1+'))}"),
        "   Skin:  Warm",
        "   Neurologic: " + ("Responds to: Noxious stimuli, Movement: Not assessed, Sedated"
                             if c.intubated() else "Attentive, Follows simple commands, Responds "
                             "to: Verbal stimuli, Movement: Purposeful, Oriented (to): x3"),
        " Labs / Radiology",
    ]
    lab_names = tuple(dict.fromkeys(("WBC", "Hemoglobin", "Hematocrit", "Platelets",
                                     "Creatinine", "BUN", "Sodium", "Potassium", "Bicarbonate",
                                     "Glucose", *adm.problem.labs)))
    lines += _lab_table(c, lab_names, min(c.day + 1, 4))
    lines += [
        (f"   Other labs: PT / PTT / INR:{r.real(12, 18):.1f}/{r.real(25, 40):.1f}/"
        f"{c.labf('INR')}, Ca++:{c.labf('Calcium')} mg/dL, Mg++:{c.labf('Magnesium')} mg/dL, "
        f"PO4:{c.labf('Phosphate')} mg/dL"),
        (f"   Differential-Neuts:{r.real(60, 92):.1f} %, Band:{r.real(0, 8):.1f} %, "
        f"Lymph:{r.real(4, 25):.1f} %, Mono:{r.real(2, 9):.1f} %, Eos:{r.real(0, 3):.1f} %, "
        f"Lactic Acid:{c.labf('Lactate')} mmol/L, Albumin:{c.labf('Albumin')} g/dL, "
        f"LDH:{r.between(150, 450)} IU/L"),
        f"   Imaging: {_radiology(c)[1].split('FINDINGS:')[-1].strip()}",
        "   " + _micro(c).strip().replace("\n", "\n   "),
        f"   Microbiology: {s['organism']} in {r.pick(('blood', 'urine', 'sputum'))} culture "
        "from admission" if abx else "   Microbiology: no new data",
        " Assessment and Plan",
        f"   {pt.age_at(c.when)} yo {pt.sex} with "
        + (", ".join(pt.chronic_names[:4]) or "no significant PMH")
        + f" admitted with {adm.name}, HD #{c.day + 1}.",
        f"   # {adm.name.upper()}: "
        + " ".join(r.subset(adm.course, r.between(2, len(adm.course)))),
        *[f"   - {m}" for m in r.subset(adm.meds, r.between(2, len(adm.meds)))],
    ]
    for problem in r.subset(adm.problem.nursing_titles, 2):
        lines += [f"   # {problem}", f"   - {r.pick(adm.course)}",
                  f"   - {r.pick(adm.procedures)}" if r.chance(0.5) else "   - monitor"]
    for i in range(len(pt.chronic)):
        if r.chance(0.7):
            lines += [f"   {_chronic_plan(c, i)}", "   - " + r.pick((
                "continue home regimen", "monitor", "outpatient follow-up",
                f"recheck {r.pick(('lytes', 'CBC', 'LFTs'))} in AM"))]
    lines += [
        " ICU Care",
        "   Nutrition: " + ("tube feeds via OGT" if c.intubated() else r.pick(
            ("cardiac diet", "NPO after midnight", "clears, advance as tolerated",
             "diabetic diet"))),
        "   Glycemic Control:  Regular insulin sliding scale",
        "   Lines:",
        *[f"   {d} - {_date(adm.admit)} {r.between(1, 11):02d}:{r.between(10, 59)} PM"
          for d in adm.devices],
        "   Prophylaxis:",
        "   DVT: " + r.pick(("SQ UF Heparin", "Boots", "Systemic anticoagulation")),
        "   Stress ulcer: PPI",
        "   VAP:  HOB elevation, Mouth care, Daily wake up, RSBI" if c.intubated() else
        "   VAP: ",
        "   Communication:  with " + r.pick(("patient", "family", "HCP")),
        f"   Code status: {'DNR / DNI' if adm.dnr else 'Full code'}",
        "   Disposition: " + r.pick(("ICU", "Transfer to floor", "Remain in ICU")),
        "   Total time spent: " + str(r.between(30, 60)) + " minutes",
        "   Patient is critically ill",
    ]
    if r.chance(0.5):
        lines += ["   ------ Protected Section ------",
                  (f"   I saw and examined the patient, and was physically present with the ICU "
                  f"team for the key portions of the services provided. I agree with the note "
                  f"above, including the assessment and plan. {r.pick(adm.course)}"),
                  (f"   ------ Protected Section Addendum Entered By:{_doc(r)} on:{_date(c.when)} "
                  f"{_clock(c.when)} ------")]
    return desc, "\n".join(lines) + "\n"


_DC_INSTRUCTIONS = (
    ("You were admitted to the hospital with {name}. {course0} Please take all of your "
    "medications as prescribed and keep all of your follow up appointments."),
    "The following changes were made to your medications: {changes}",
    ("Please call your doctor or return to the emergency department if you experience chest pain, "
    "shortness of breath, fevers greater than 101, chills, lightheadedness, worsening abdominal "
    "pain, nausea or vomiting that prevents you from keeping down food or medications, blood in "
    "your stool or urine, or any other symptoms that concern you."),
    ("Weigh yourself every morning, call your doctor if your weight goes up more than 3 lbs. "
    "Adhere to a 2 gm sodium diet and a fluid restriction of 1.5 L per day."),
    ("Do not drive or operate heavy machinery while taking narcotic pain medication. Do not drink "
     "alcohol. Continue to use your incentive spirometer 10 times an hour while awake."),
    ("It was a pleasure taking care of you at [**Hospital1 18**]. During this admission the "
     "following tests were done: {tests}. Some results were still pending at the time of "
     "discharge and will be followed up by your primary care physician."),
    ("Please resume all of your home medications except as noted above. Bring this list of "
     "medications to every appointment. If you have any questions about your medications, "
     "please ask your pharmacist or call your doctor. You should not take any over the counter "
     "medications such as ibuprofen, naproxen or aspirin-containing products unless you have "
     "discussed them with your doctor."),
)


_PANEL_CORE = frozenset({"WBC", "Hematocrit", "Hemoglobin", "Platelets", "Glucose", "BUN",
                         "Creatinine", "Sodium", "Potassium", "Chloride", "Bicarbonate",
                         "Calcium", "Phosphate", "Magnesium"})


def _flagged(sub: _Ctx, name: str) -> str:
    """A lab as MIMIC's discharge summaries print it: abnormal values carry a `*`."""
    v = sub.lab(name)
    _, lo, hi, _ = V.LABS[name]
    return f"{V.LAB_ABBREV[name]}-{_fmt_lab(name, v)}{'*' if v < lo or v > hi else ''}"


def _panel_line(c: _Ctx, when: datetime, kind: str) -> str:
    sub = _Ctx(c.pt, c.adm, when, c.rng, True)
    r = c.rng
    stamp = f"{_date(when)} {when.hour:02d}:{when.minute:02d}{'AM' if when.hour < 12 else 'PM'}"
    if kind == "cbc":
        hct = sub.lab("Hematocrit")
        return (f"{stamp} BLOOD {_flagged(sub, 'WBC')} RBC-{hct / 9:.2f}* "
                f"Hgb-{hct / 3:.1f}* Hct-{hct:.1f}* MCV-{r.between(80, 99)} "
                f"MCH-{r.real(27, 33):.1f} MCHC-{r.real(32, 35):.1f} "
                f"RDW-{r.real(12.5, 17):.1f} {_flagged(sub, 'Platelets')}")
    if kind == "chem":
        return (f"{stamp} BLOOD " + " ".join(_flagged(sub, n) for n in (
            "Glucose", "BUN", "Creatinine", "Sodium", "Potassium", "Chloride", "Bicarbonate"))
            + f" AnGap-{r.between(8, 20)}")
    if kind == "diff":
        return (f"{stamp} BLOOD Neuts-{r.real(60, 92):.1f}* Lymphs-{r.real(4, 25):.1f}* "
                f"Monos-{r.real(2, 9):.1f} Eos-{r.real(0, 3):.1f} Baso-{r.real(0, 1):.1f}\n"
                f"{stamp} BLOOD PT-{r.real(11, 19):.1f} PTT-{r.real(24, 40):.1f} "
                f"{_flagged(sub, 'INR')}\n"
                f"{stamp} BLOOD ALT-{r.between(10, 60)} AST-{r.between(12, 70)} "
                f"AlkPhos-{r.between(40, 140)} TotBili-{r.real(0.2, 1.4):.1f}\n"
                f"{stamp} URINE Color-{r.pick(('Yellow', 'Straw', 'Amber'))} "
                f"Appear-{r.pick(('Clear', 'Hazy', 'Cloudy'))} Sp {r.real(1.005, 1.030):.3f} "
                f"Blood-{r.pick(('NEG', 'TR', 'MOD'))} Nitrite-{r.pick(('NEG', 'POS'))} "
                f"Protein-{r.pick(('NEG', '30', '100'))} Glucose-NEG Ketone-NEG "
                f"Leuks-{r.pick(('NEG', 'SM', 'LG'))}")
    extra = [n for n in c.adm.problem.labs if n not in _PANEL_CORE]
    return f"{stamp} BLOOD " + " ".join(_flagged(sub, n) for n in [
        *extra, "Calcium", "Phosphate", "Magnesium"])


def _micro(c: _Ctx) -> str:
    r, adm = c.rng, c.adm
    out = []
    for specimen in r.subset(("BLOOD CULTURE", "URINE CULTURE", "SPUTUM", "MRSA SCREEN",
                              "C. difficile DNA amplification assay"), r.between(1, 4)):
        when = adm.admit + timedelta(days=r.between(0, max(0, int(adm.los) - 1)))
        grew = _abx(c) and specimen != "MRSA SCREEN" and r.chance(0.5)
        out.append(f"{_date(when)} {specimen} "
                   + (f"**FINAL REPORT {_date(when + timedelta(days=2))}**: "
                      f"{adm.slots['organism'].upper()}. >100,000 ORGANISMS/ML. Sensitivities: "
                      "CEFTRIAXONE S, CIPROFLOXACIN R, GENTAMICIN S, MEROPENEM S, "
                      "PIPERACILLIN/TAZO S, TRIMETHOPRIM/SULFA R." if grew else
                      "No growth." if r.chance(0.7) else "Pending."))
    return "\nMICROBIOLOGY:\n" + "\n".join(out) + "\n"


_HPI_VERBS = frozenset({"presented", "was", "received", "reports", "admits", "developed", "noted",
                        "found", "brought", "takes", "slipped", "drinks", "sent", "recently",
                        "underwent", "had"})


def _hpi_sentence(pt: _Patient, phrase: str, r: _Rng) -> str:
    if phrase.split(" ", 1)[0] in _HPI_VERBS:
        subject = pt.he.capitalize() if r.chance(0.6) else "The patient"
        return f"{subject} {phrase}."
    return f"{phrase[0].upper()}{phrase[1:]}."


def _lab_trends(c: _Ctx) -> str:
    """Sentences that follow each of the admission's problem labs from admission to discharge."""
    adm, r = c.adm, c.rng
    out = []
    for name in adm.problem.labs:
        first = _Ctx(c.pt, adm, adm.admit, r, True).labf(name)
        mid_when = adm.admit + timedelta(days=adm.los / 2)
        mid = _Ctx(c.pt, adm, mid_when, r, True).labf(name)
        last = _Ctx(c.pt, adm, adm.discharge, r, True).labf(name)
        out.append(r.pick(((f"{name} was {first} on admission, {mid} on {_date(mid_when)} and "
                           f"{last} at discharge."),
                           f"{name} trended {first} -> {mid} -> {last}.",
                           f"{name} {first} on presentation, {last} on the day of discharge.")))
    return " ".join(out)


def _daily_course(c: _Ctx) -> list[str]:
    adm, r, pt = c.adm, c.rng, c.pt
    labs = list(adm.problem.labs) or ["Creatinine"]
    out = []
    for d in range(min(int(adm.los) + 1, 10)):
        sub = _Ctx(pt, adm, adm.admit + timedelta(days=d, hours=6), r, True)
        name = r.pick(labs)
        state = ("remained intubated" if sub.intubated() else
                 r.pick(("was hemodynamically stable", "was afebrile", "had an uneventful day",
                         "was more alert", "required PRN pain medication",
                         "ambulated with physical therapy")))
        out.append(f"On HD #{d + 1} ({_date(sub.when)}) the patient {state}; {name} "
                   f"{sub.labf(name)}, WBC {sub.labf('WBC')}."
                   + (f" {r.pick(adm.course)}" if r.chance(0.35) else ""))
    return out


def _discharge(c: _Ctx) -> tuple[str, str]:
    r, s, pt, adm = c.rng, c.s, c.pt, c.adm
    he = pt.he
    pmh = pt.chronic_names + pt.surgical_history
    hpi = (f"{pt.age_at(adm.admit)} year old {pt.man} with "
           + (", ".join(pt.chronic_names) or "no significant past medical history")
           + f" who presents with {_fill(r.pick(adm.problem.complaints), s)}. "
           + " ".join(_hpi_sentence(pt, h, r) for h in adm.hpi)
           + f" In the ED, initial vitals were T {r.real(97, 102):.1f} HR {r.between(70, 130)} "
           f"BP {r.between(80, 170)}/{r.between(40, 95)} RR {r.between(14, 30)} "
           f"O2 sat {r.between(85, 100)}% on {r.pick(('RA', '2L NC', 'NRB'))}. "
           + f"{he.capitalize()} was admitted to the {adm.unit} for further management."
           + "\n\nROS: " + r.pick((("Denies headache, vision changes, rhinorrhea, congestion, "
                                    "sore throat, cough, chest pain, abdominal pain, nausea, "
                                    "vomiting, diarrhea, constipation, BRBPR, melena, "
                                    "hematochezia, dysuria, hematuria."),
                                    ("Positive as per HPI, otherwise 10-point review of systems "
                                    "negative."), "Unable to obtain given mental status.")))
    if adm.index > 0:
        prev = pt.admissions[adm.index - 1]
        hpi += (f" Of note, {he} was recently admitted {_date(prev.admit)} - "
                f"{_date(prev.discharge)} with {prev.name}, at which time "
                + prev.course[0][0].lower() + prev.course[0][1:])
    days = max(1, int(adm.los))
    panels = []
    for d in sorted({*range(min(days, 6)), days // 2, days - 1}):
        when = adm.admit + timedelta(days=d, hours=r.between(3, 7), minutes=r.between(0, 59))
        kinds = ("cbc", "chem", "diff", "other") if d == 0 else ("cbc", "chem", "other")
        panels += [_panel_line(c, when, k) for k in kinds]
    course = [f"# {adm.name.capitalize()}: " + " ".join(adm.course) + " "
              + " ".join(_hpi_sentence(pt, h, r) for h in r.subset(adm.hpi, 2))
              + " During this admission the patient was treated with " + ", ".join(adm.meds)
              + ". Procedures: " + "; ".join(adm.procedures) + ". " + _lab_trends(c)]
    course += [f"# {t}: " + " ".join(r.subset(adm.course, 2)) for t in
               r.subset(adm.problem.nursing_titles, 2)]
    course += [f"# {V.ICD9[code]}: " + r.pick((
        "Monitored closely and managed supportively.", "Treated as above with improvement.",
        "Resolved by the time of discharge.", "Will need outpatient follow-up.")) + " "
        + r.pick(adm.course) for code in adm.problem.optional_codes if code in adm.codes]
    course.append("Day by day: " + " ".join(_daily_course(c)))
    course += [_chronic_plan(c, i) + ". " + r.pick((
        "No changes were made to this regimen.", "Will need outpatient follow-up with PCP.",
        "Stable throughout this admission.", "Dose adjusted given renal function."))
        for i in range(len(pt.chronic))]
    course += ["# FEN: " + r.pick(("Electrolytes repleted as needed.",
                                   "Cardiac heart healthy diet.", "Diet advanced as tolerated.")),
               "# PPx: " + r.pick(("SC heparin, PPI, bowel regimen.",
                                    "Pneumoboots, home PPI.")),
               f"# Code: {'DNR/DNI' if adm.dnr else 'Full code'} (confirmed with patient)",
               (f"# Communication: {r.pick(('wife', 'husband', 'daughter', 'son', 'HCP'))} "
               f"{_name(r)} {_phone(r)}")]
    dc_meds = [m for m in pt.home_meds if r.chance(0.85)] + [
        m for m in adm.meds if "IV" not in m and "drip" not in m and r.chance(0.6)]
    studies = []
    for study in adm.problem.studies:
        sl = _radiology_slots(c)
        studies.append(f"{_date(adm.admit + timedelta(days=r.between(0, days - 1)))} "
                       f"{_fill(study.description, sl)}: "
                       + " ".join(_fill(f, sl) for f in study.findings)
                       + " IMPRESSION: " + _fill(study.impression[0], sl))
    for _ in range(r.between(1, 3)):
        sub = _Ctx(pt, adm, adm.admit + timedelta(days=r.real(0, adm.los)), r, True)
        desc, report = _radiology(sub)
        studies.append(f"{_date(sub.when)} {desc}:\n" + report.split("FINAL REPORT")[-1].strip())
    studies.append(f"ECG {_date(adm.admit)}: " + _ecg(c)[1].strip())
    if r.chance(0.6):
        echo = _echo(_Ctx(pt, adm, adm.admit + timedelta(days=1), r, True))[1]
        studies.append(f"TTE {_date(adm.admit + timedelta(days=1))}:\n"
                       + echo.split("Conclusions:")[-1].split("Electronically")[0].strip())
    changes = "; ".join(f"STARTED {m}" for m in dc_meds[-2:]) or "none"
    disposition = r.pick(("Home", "Home With Service", "Extended Care", "Extended Care"))
    sections = [
        (f"Admission Date:  {_date(adm.admit)}              Discharge Date:   "
        f"{_date(adm.discharge)}\n"),
        f"Date of Birth:  {_date(pt.dob)}             Sex:   {pt.sex}\n",
        f"Service: {adm.service}\n",
        "Allergies:\n" + "\n".join(_allergy_lines(c, False)) + "\n",
        f"Attending:{_name(r)}.\n",
        f"Chief Complaint:\n{_fill(r.pick(adm.problem.complaints), s)}\n",
        "Major Surgical or Invasive Procedure:\n" + "\n".join(adm.procedures) + "\n\n",
        f"History of Present Illness:\n{hpi}\n",
        "Past Medical History:\n" + ("\n".join(
            f"- {p}" + r.pick(("", "", f", diagnosed [**{adm.admit.year - r.between(1, 20)}**]",
                               f", followed by {_doc(r)}", " (stable)"))
            for p in pmh) or "none") + "\n",
        "Social History:\n"
        + f"{he.capitalize()} {pt.lives_with}. "
        f"Works as a {pt.occupation}. "
        + (f"Smoked {s['pack_years']} pack-years. " if any(c_.key in ("tobacco", "former_smoker")
                                                          for c_ in pt.chronic) else
           "Denies tobacco. ")
        + ("Drinks heavily. " if any(c_.key == "etoh" for c_ in pt.chronic) else
           "Occasional alcohol. ") + "No illicit drugs.\n",
        "Family History:\n" + r.pick(("Father with MI in his 60s. Mother with breast cancer.",
                                      "Non-contributory.", ("Mother with diabetes and "
                                      "hypertension. Brother with colon cancer at 55."),
                                      "No family history of early MI or sudden cardiac death.")) +
        "\n",
        "Physical Exam:\nOn admission:\n"
        f"VS: T {r.real(97, 101):.1f} BP {r.between(90, 160)}/{r.between(50, 90)} "
        f"HR {r.between(60, 120)} RR {r.between(12, 28)} O2 {r.between(88, 100)}%\n"
        "GEN: " + r.pick(("ill appearing, in moderate distress", "elderly, NAD",
                          "well appearing, comfortable")) + "\n"
        "HEENT: NC/AT, PERRLA, EOMI, MMM, OP clear\n"
        "NECK: " + r.pick(("JVP at 12 cm", "JVP flat", "supple, no LAD")) + "\n"
        "CV: " + r.pick(("RRR, no m/r/g", "irregularly irregular, III/VI SEM at RUSB",
                         "RRR, II/VI holosystolic murmur at apex")) + "\n"
        f"LUNGS: {r.pick(('crackles', 'decreased breath sounds', 'wheezes'))} at the "
        f"{s['side']} base\n"
        "ABD: soft, NT/ND, +BS\n"
        f"EXT: {r.pick(('no c/c/e', '2+ pitting edema bilaterally', '1+ edema to the knees'))}\n"
        "NEURO: " + (f"{s['other_side']} hemiparesis, aphasic" if adm.problem.key == "stroke"
                     else "A&Ox3, CN II-XII intact, moves all extremities") + "\n"
        "\nOn discharge:\n"
        f"VS: T {r.real(97, 99):.1f} BP {r.between(100, 140)}/{r.between(55, 85)} "
        f"HR {r.between(60, 95)} RR {r.between(12, 20)} O2 {r.between(93, 100)}% RA\n"
        f"Weight {pt.weight_kg:.1f} kg\nGEN: NAD\nLUNGS: "
        + r.pick(("clear bilaterally", f"few crackles at the {s['side']} base")) + "\nEXT: "
        + r.pick(("warm, no edema", f"{s['side']} leg incision c/d/i", "trace edema")) + "\n",
        "Pertinent Results:\n" + "\n".join(panels) + "\n\n" + "\n\n".join(studies) + "\n"
        + _micro(c) + "\n",
        "Brief Hospital Course:\n" + hpi.split(". ")[0] + ".\n\n" + "\n\n".join(course) + "\n",
        "Medications on Admission:\n" + "\n".join(f"{i + 1}. {m}" for i, m in
                                                   enumerate(pt.home_meds)) + "\n",
        "Discharge Medications:\n" + "\n".join(
            f"{i + 1}. {m.split(' PO ')[0]} Tablet Sig: One (1) Tablet PO "
            f"{m.split(' PO ')[1] if ' PO ' in m else 'DAILY (Daily)'}.\n"
            f"Disp:*{r.pick((30, 60, 90))} Tablet(s)* Refills:*{r.between(0, 3)}*"
            for i, m in enumerate(dc_meds)) + "\n",
        f"Discharge Disposition:\n{disposition}\n",
        "Transitional issues:\n" + "\n".join(f"- {x}" for x in r.subset(
            [*adm.course, "Recheck CBC and chem-7 in 1 week",
             f"Follow up final read of {r.pick(adm.problem.studies).description}",
             f"Follow up {pt.incidental} on outpatient imaging",
             f"{'DNR/DNI' if adm.dnr else 'Full code'} confirmed"], 4)) + "\n",
        (f"Facility:\n[**Hospital {r.between(100, 9999)}**] - [**Location (un) "
         f"{r.between(10, 999)}**]\n" if disposition == "Extended Care" else ""),
        f"Discharge Diagnosis:\nPrimary:\n{adm.name}\n\nSecondary:\n"
        + "\n".join(V.ICD9[code] for code in adm.codes[1:6]) + "\n",
        "Discharge Condition:\nMental Status: " + r.pick(("Clear and coherent.",
                                                          "Confused - sometimes.")) +
        "\nLevel of Consciousness: Alert and interactive.\nActivity Status: "
        + r.pick(("Ambulatory - Independent.",
                  "Ambulatory - requires assistance or aid (walker or cane).",
                  "Out of Bed with assistance to chair or wheelchair.")) + "\n",
        "Discharge Instructions:\n" + "\n\n".join(
            _fill(t, {"name": adm.name, "course0": adm.course[0], "changes": changes,
                      "tests": ", ".join(st.description for st in adm.problem.studies)})
            for t in _DC_INSTRUCTIONS) + "\n",
        "Followup Instructions:\n" + "\n".join(
            f"Provider: {_name(r)}, MD Phone:{_phone(r)} Date/Time:"
            f"{_date(adm.discharge + timedelta(days=r.between(5, 40)))} {r.between(8, 16)}:00"
            for _ in range(r.between(1, 4))) + "\n",
        "\n\n                             " + f"{_name(r)} MD {r.between(1000, 9999)}\n\n"
        f"Completed by:{_date(adm.discharge)}",
    ]
    return "Report", "\n".join(sections) + "\n"


def _addendum(c: _Ctx) -> tuple[str, str]:
    r, adm = c.rng, c.adm
    text = (f"Name:  {_name(r)}                  Unit No:   [**Numeric Identifier "
            f"{r.between(1000, 99999)}**]\n\n"
            f"Admission Date:  {_date(adm.admit)}              Discharge Date:   "
            f"{_date(adm.discharge)}\n\nDate of Birth:  {_date(c.pt.dob)}             Sex:   "
            f"{c.pt.sex}\n\nService: {adm.service}\n\nAddendum:\n"
            f"{r.pick(adm.course)} {r.pick(adm.course)} Please note the following change to the "
            f"discharge medications: {r.pick(adm.meds)}.\n\nDischarge Disposition:\n"
            f"{r.pick(('Home', 'Extended Care'))}\n\n{_name(r)} MD {r.between(1000, 9999)}\n\n"
            f"Completed by:{_date(adm.discharge)}")
    return "Addendum", text + "\n"


def _respiratory(c: _Ctx) -> tuple[str, str]:
    r, s = c.rng, c.s
    if c.intubated():
        body = [(f"Pt remains intubated with {s['ett']} secured at {r.between(21, 25)} cm at the "
                "lip."),
                (f"Vent settings: AC {r.between(400, 550)}x{r.between(12, 20)}, PEEP "
                f"{r.pick((5, 8, 10))}, FiO2 {r.pick(('0.4', '0.5', '0.6'))}."),
                f"Peak/plateau pressures {r.between(22, 38)}/{r.between(15, 28)} cmH2O.",
                (f"BS {r.pick(('coarse', 'diminished', 'clear'))} bilaterally, diminished at the "
                f"{s['side']} base. Suctioned for {r.pick(('small', 'moderate', 'large'))} "
                f"amounts of thick {r.pick(('tan', 'white', 'yellow'))} secretions."),
                f"ABG {r.real(7.30, 7.46):.2f}/{r.between(35, 55)}/{r.between(70, 140)}.",
                f"RSBI {r.between(40, 120)}. Cuff leak present.",
                f"Pt with {c.adm.name}; {r.pick(c.adm.course)}",
                "Plan: " + r.pick(("SBT in AM if mental status allows.", ("Wean FiO2 as tolerated "
                                   "for sats > 92%."), "Continue current settings.")) +
                " Will continue to follow."]
    else:
        body = [(f"Pt on {r.pick(('2L NC', '4L NC', '40% face tent', 'BiPAP 10/5 overnight'))}, "
                f"SpO2 {r.between(90, 99)}%, RR {r.between(14, 28)}."),
                f"Nebs given: {r.pick(('albuterol/atrovent q4h', 'albuterol q2h PRN', 'none'))}.",
                (f"BS {r.pick(('clear', 'with scattered wheezes', 'coarse'))}, diminished at the "
                f"{s['side']} base; {r.pick(('strong', 'weak'))} productive cough."),
                f"Known {c.adm.name}. {r.pick(c.adm.course)}",
                "Incentive spirometry encouraged. Will continue to follow."]
    return "Respiratory Care Shift Note", "Respiratory Care:\n" + "\n".join(body) + "\n"


def _nutrition(c: _Ctx) -> tuple[str, str]:
    r, pt = c.rng, c.pt
    ibw = 50 + 2.3 * (pt.height_in - 60) if pt.sex == "M" else 45.5 + 2.3 * (pt.height_in - 60)
    kcal = int(pt.weight_kg * 25)
    lines = [
        "Subjective",
        "   " + r.pick(("Pt intubated/sedated", "Pt reports poor appetite", "Pt NPO")),
        "Objective", "   Height", "   Admit weight", "   Daily weight", "   Ideal body weight",
        "   % IBW", "   Usual body weight", "   BMI",
        f"   {pt.height_in} inch", f"   {pt.weight_kg:.1f} kg", f"   {pt.weight_kg - 1.2:.1f} kg",
        f"   {ibw:.1f} kg", f"   {pt.weight_kg / ibw * 100:.0f}%",
        f"   {pt.weight_kg / (pt.height_in * 0.0254) ** 2:.1f}",
        f"   Diagnosis: {c.adm.name}",
        "   PMHx: " + ", ".join(pt.chronic_names or ["none"]),
        "   Food allergies and intolerances: none known",
        "   Pertinent medications: " + ", ".join(m.split(" ")[0] for m in c.adm.meds),
        "   Labs:", (f"   Glucose {c.labf('Glucose')} mg/dL, BUN {c.labf('BUN')} mg/dL, "
        f"Creatinine {c.labf('Creatinine')} mg/dL, Potassium {c.labf('Potassium')} mEq/L, "
        f"Magnesium {c.labf('Magnesium')} mg/dL, Phosphorus {c.labf('Phosphate')} mg/dL"),
        "   Current diet order / nutrition support: "
        + ("Tube feeds: Replete with fiber @ goal 60 mL/hr via OGT" if c.intubated()
           else r.pick(("Cardiac/Consistent Carbohydrate", "NPO", "Clears"))),
        "Assessment of Nutritional Status",
        (f"   {r.pick(('At risk due to', 'Malnutrition in the context of'))} "
        f"{r.pick(('acute illness', 'NPO status', 'poor PO intake'))}"),
        "Estimated Nutritional Needs",
        f"   Calories: {kcal}-{int(kcal * 1.2)} (25-30 kcal/kg)",
        f"   Protein: {int(pt.weight_kg * 1.2)}-{int(pt.weight_kg * 1.5)} g (1.2-1.5 g/kg)",
        "   Fluid: per team",
        "Recommendations / Plan:",
        "   1. " + r.pick(("Advance diet as tolerated.", ("Start tube feeds at 10 mL/hr, advance "
                            "by 10 mL q4h to goal."), "Add Ensure Plus TID.")),
        "   2. Monitor weight, I/Os, labs.",
        f"   3. Will follow up per protocol, pager # [**Pager number {r.between(1000, 9999)}**]",
    ]
    return "Nutrition", "\n".join(lines) + "\n"


def _general(c: _Ctx) -> tuple[str, str]:
    r, adm = c.rng, c.adm
    kind = r.pick(("Family Meeting Note", "ICU Event Note", "Generic Note"))
    if kind == "Family Meeting Note":
        text = (f"Family meeting held with {r.pick(('wife', 'husband', 'children', 'HCP'))} "
                f"{_name(r)} and {_doc(r)}. Discussed {adm.name} and hospital course to date: "
                f"{' '.join(adm.course[:2])} Family expressed understanding. "
                f"Code status {'changed to DNR/DNI' if adm.dnr else 'remains full code'}. "
                "Will readdress goals of care in 48-72 hours.")
    elif kind == "ICU Event Note":
        text = (f"Called to bedside at {_clock(c.when)} for "
                + r.pick(("hypotension", "desaturation", "new rapid atrial fibrillation",
                          "agitation")) + ". "
                f"Pt with {adm.name}. {r.pick(adm.hpi).capitalize()}. Exam notable for "
                + r.pick((f"crackles at the {adm.slots['side']} base", "tachycardia",
                          "diaphoresis")) + ". "
                f"Plan: {r.pick(adm.meds)}, recheck labs, CXR.")
    else:
        text = (f"{r.pick(adm.course)} Spoke with {_doc(r)} regarding plan. "
                f"{r.pick(adm.procedures)} scheduled.")
    return kind, f"Title: {kind}\n{text}\n"


def _rehab(c: _Ctx) -> tuple[str, str]:
    r, pt, adm, s = c.rng, c.pt, c.adm, c.s
    kind = r.pick(("Physical Therapy", "Occupational Therapy"))
    text = "\n".join([
        f"{kind}", "Evaluation",
        f"Medical Diagnosis: {adm.name}",
        f"Reason of Referral: {r.pick(('Eval and treat', 'Mobility', 'D/C planning'))}",
        (f"History of Present Illness / Subjective Complaint: {pt.age_at(c.when)} yo {pt.sex} "
        f"admitted with {adm.name}. {r.pick(adm.course)}"),
        "PMH: " + ", ".join(pt.chronic_names + pt.surgical_history or ["none"]),
        f"Social / Occupational History: {pt.lives_with}. {pt.occupation}.",
        (f"Living Environment: {r.pick(('House', 'Apartment', 'Facility'))}, "
        f"{r.between(0, 14)} stairs to enter"),
        "Prior Level of Functioning: " + r.pick(("Independent with all mobility",
                                                 "Ambulates with cane", "Ambulates with walker")),
        (f"Pain: {r.between(0, 8)}/10 {s['side']} "
        f"{r.pick(('hip', 'chest wall', 'leg', 'shoulder'))}"),
        f"ROM: WFL except {s['side']} {r.pick(('LE', 'UE'))}",
        f"Strength: {s['side']} LE {r.pick(('3-/5', '3+/5', '4/5'))}, {s['other_side']} LE 5/5",
        ("Mobility: Bed mobility min assist; sit to stand mod assist; ambulated "
        f"{r.between(5, 150)} ft with rolling walker"),
        ("Assessment: Pt presents with impaired functional mobility, decreased activity tolerance, "
        "increased fall risk."),
        (f"Plan: PT {r.between(3, 5)}-{r.between(5, 7)}x/week; recommend "
        f"{r.pick(('rehab', 'home with services', 'home with PT'))} at discharge."),
    ])
    return f"{kind} Evaluation", text + "\n"


def _social_work(c: _Ctx) -> tuple[str, str]:
    r, pt, adm = c.rng, c.pt, c.adm
    text = (f"Social Work Assessment\nPt is a {pt.age_at(c.when)} yo {pt.man} admitted with "
            f"{adm.name}. Pt {pt.lives_with} and worked as a {pt.occupation}. "
            f"Met with pt and {r.pick(('wife', 'daughter', 'son', 'husband', 'sister'))} "
            f"{_name(r)} ({_phone(r)}). "
            + r.pick(("Family is coping appropriately with pt's illness.",
                      "Family expressed significant stress; provided supportive counseling.",
                      "Pt with limited supports; discussed resources."))
            + f" Insurance: {r.pick(('Medicare', 'Medicaid', 'private'))}. "
            + ("Provided information on substance abuse treatment programs. "
               if any(ch.key == "etoh" for ch in pt.chronic) else "")
            + "SW will continue to follow for support and discharge planning.\n")
    return "Social Work Progress Note", text


def _case_management(c: _Ctx) -> tuple[str, str]:
    r, pt, adm = c.rng, c.pt, c.adm
    text = (f"Case Management Initial Assessment\nAdmitted {_date(adm.admit)} with {adm.name}. "
            f"Pt {pt.lives_with}. PCP {_doc(r)}. "
            f"Anticipated discharge: {r.pick(('home', 'home with VNA', 'rehab', 'SNF'))} in "
            f"{r.between(1, 5)} days. Services in place: "
            f"{r.pick(('none', 'VNA', 'homemaker', 'home O2'))}. "
            f"Insurance {r.pick(('Medicare A/B', 'Medicaid', 'BCBS'))} verified.\n")
    return "Case Management Note", text


def _pharmacy(c: _Ctx) -> tuple[str, str]:
    r, adm = c.rng, c.adm
    med = r.pick(adm.meds)
    return "Pharmacy Note", (
        f"Clinical Pharmacy Note\nConsulted for dosing of {med.split(' ')[0]}. Wt "
        f"{c.pt.weight_kg} kg, Cr {c.labf('Creatinine')}. Current regimen: {med}. "
        f"Trough {r.real(8, 22):.1f} on {_date(c.when)}. Recommend "
        f"{r.pick(('no change', 'extending interval', 'decreasing dose by 25%'))}. "
        "Will follow levels.\n")


def _consult(c: _Ctx) -> tuple[str, str]:
    r, pt, adm = c.rng, c.pt, c.adm
    service = r.pick(("Cardiology", "Renal", "Infectious Disease", "Hepatology", "Neurology"))
    return f"{service} Consult", (
        f"{service} Consult Note\nReason for consult: {adm.name}\nHPI: "
        + " ".join(adm.hpi) + f"\nPMH: {', '.join(pt.chronic_names or ['none'])}\n"
        f"Meds: {'; '.join(adm.meds)}\nAssessment/Recs: {' '.join(adm.course[:3])} "
        f"Will follow. {_doc(r)}, pager [**Numeric Identifier {r.between(100, 999)}**]\n")


_WRITERS: dict[str, Callable[[_Ctx], tuple[str, str]]] = {
    "Nursing/other": _nursing_other, "Radiology": _radiology, "Nursing": _nursing, "ECG": _ecg,
    "Physician ": _physician, "Discharge summary": _discharge, "Echo": _echo,
    "Respiratory ": _respiratory, "Nutrition": _nutrition, "General": _general,
    "Rehab Services": _rehab, "Social Work": _social_work, "Case Management ": _case_management,
    "Pharmacy": _pharmacy, "Consult": _consult,
}


# ---------------------------------------------------------------------------------------------
# Writing

NOTES_PER_DAY = 5.6
_HADM_PRIME = 99991   # HADM_ID = 100000 + an affine permutation mod this prime, like MIMIC's range
_SUBJECT_PRIME = 99989


def _schedule(rng: _Rng, pt: _Patient) -> list[tuple[datetime, int, str, _Admission, bool]]:
    """When each of a patient's notes is written, its category, and the admission it is about."""
    out = []
    for adm in pt.admissions:
        for _ in range(rng.poisson(NOTES_PER_DAY * adm.los)):
            cat = _INPATIENT_CATEGORIES.draw(rng)
            if cat in OUTPATIENT_SHARE and rng.chance(OUTPATIENT_SHARE[cat]):
                gap = timedelta(days=rng.between(3, 365), hours=rng.between(0, 23),
                                minutes=rng.between(0, 59))
                when = adm.admit - gap if rng.chance(0.5) else adm.discharge + gap
                out.append((when, len(out), cat, adm, False))
                continue
            start = 0.0 if cat != "ECG" or rng.chance(0.5) else None
            offset = rng.real(0, 0.25) if start is None else rng.real(0, adm.los)
            out.append((adm.admit + timedelta(days=offset), len(out), cat, adm, True))
        if rng.chance(0.95):
            out.append((adm.discharge, len(out), DISCHARGE, adm, True))
        if rng.chance(0.05):
            out.append((adm.discharge + timedelta(days=rng.between(0, 3)), len(out), DISCHARGE,
                        adm, True))
    out.sort(key=lambda t: (t[0], t[1]))
    return out


def _patient_rows(rng: _Rng, pt: _Patient) -> tuple[list[list], list[list]]:
    notes, diagnoses = [], []
    seen_ds: set[int] = set()
    for when, _, cat, adm, inpatient in _schedule(rng, pt):
        ctx = _Ctx(pt, adm, when, rng, inpatient)
        if cat == DISCHARGE and adm.hadm_id in seen_ds:
            desc, text = _addendum(ctx)
        else:
            desc, text = _WRITERS[cat](ctx)
            if cat == DISCHARGE:
                seen_ds.add(adm.hadm_id)
        mv = cat in METAVISION
        notes.append([
            pt.subject_id, adm.hadm_id if inpatient else "", when.strftime("%Y-%m-%d"),
            "" if cat in NO_CHARTTIME else when.strftime("%Y-%m-%d %H:%M:%S"),
            (when + timedelta(minutes=rng.between(2, 240))).strftime("%Y-%m-%d %H:%M:%S")
            if mv else "",
            cat, desc, rng.pick(adm.cgids) if mv else "",
            "1" if mv and rng.chance(ISERROR_RATE) else "", text,
        ])
    for adm in pt.admissions:
        for seq, code in enumerate(adm.codes, 1):
            diagnoses.append([pt.subject_id, adm.hadm_id, seq, code])
    return notes, diagnoses


def generate(patients: int, out_dir: str | Path, seed: int = 0,
             progress: bool = False) -> SynthSummary:
    """Write NOTEEVENTS.csv and DIAGNOSES_ICD.csv for `patients` synthetic patients.

    The same `patients` and `seed` give byte-identical files; each file appears complete or not
    at all.
    """
    if isinstance(patients, bool) or not isinstance(patients, int) or patients < 1:
        raise ValueError(f"patients must be a positive integer, got {patients!r}")
    if isinstance(seed, bool) or not isinstance(seed, int):
        raise TypeError(f"seed must be an integer, got {seed!r}")
    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise NotADirectoryError(f"output path exists and is not a directory: {out}")
    out.mkdir(parents=True, exist_ok=True)
    ids = _Rng(f"mimicsearch-synth:{seed}:ids")
    ha, hb = ids.between(1, _HADM_PRIME - 1), ids.between(0, _HADM_PRIME - 1)
    sa, sb = ids.between(1, _SUBJECT_PRIME - 1), ids.between(0, _SUBJECT_PRIME - 1)
    n_adm = 0

    def next_hadm() -> int:
        nonlocal n_adm
        k, n_adm = n_adm, n_adm + 1
        return 100000 + (ha * k + hb) % _HADM_PRIME if k < _HADM_PRIME else 200000 + k

    counts = dict.fromkeys(CATEGORY_COUNTS, 0)
    note_id = diag_id = 0
    with atomic_open(out / NOTES_FILE, "w", newline="", encoding="utf-8") as nf, \
            atomic_open(out / DIAGNOSES_FILE, "w", newline="", encoding="utf-8") as df:
        nw = csv.writer(nf, quoting=csv.QUOTE_MINIMAL, lineterminator="\n")
        dw = csv.writer(df, quoting=csv.QUOTE_MINIMAL, lineterminator="\n")
        nw.writerow(NOTE_COLUMNS)
        dw.writerow(DIAGNOSIS_COLUMNS)
        for i in tqdm(range(patients), desc="synth", unit="patient", disable=not progress):
            rng = _Rng(f"mimicsearch-synth:{seed}:{i}")
            subject = 2 + (sa * i + sb) % _SUBJECT_PRIME if i < _SUBJECT_PRIME else 100000 + i
            pt = _story(rng, subject, next_hadm)
            notes, diagnoses = _patient_rows(rng, pt)
            for row in notes:
                note_id += 1
                counts[row[5]] += 1
                nw.writerow([note_id, *row])
            for row in diagnoses:
                diag_id += 1
                dw.writerow([diag_id, *row])
    return SynthSummary(
        patients=patients, admissions=n_adm, notes=note_id, diagnoses=diag_id, seed=seed,
        notes_by_category=counts, notes_path=str(out / NOTES_FILE),
        diagnoses_path=str(out / DIAGNOSES_FILE),
    )
