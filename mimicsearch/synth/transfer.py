"""A second synthetic MIMIC-III corpus, written independently of `generator.py`: the test of
whether what a model learned transfers.

A model fine-tuned on one generator's notes can learn that generator (its templates, its
section order, its phrases) instead of what makes two notes the same patient's. This corpus
shares nothing with the training generator but the file format: its own conditions and
their synonyms and abbreviations, its own medication names (generic and brand), note types
written in other layouts (SOAP progress notes, shift narratives, structured radiology
reports, consults, discharge summaries with problem-based courses), sections in varying
order, typos, and lengths from a line to several pages. A patient still has a story
(conditions with ICD-9 codes, medications, devices, social facts, a few lab trends) that
recurs across its notes in different words, and problem lists, assessments and discharge
diagnoses name the admission's conditions, so diagnosis AUROC has signal to find.

Never train, tune or choose a checkpoint on it: `mimicsearch synth --style transfer`.
"""
from __future__ import annotations

import csv
import random
from datetime import datetime, timedelta
from pathlib import Path

from tqdm import tqdm

from ..fileio import atomic_open
from .generator import DIAGNOSES_FILE, DIAGNOSIS_COLUMNS, NOTE_COLUMNS, NOTES_FILE, SynthSummary

# condition: (ICD-9 code, ways a clinician writes it, drugs for it, tests it prompts)
CONDITIONS = {
    "heart failure": ("4280", ["CHF", "congestive heart failure", "HFrEF", "systolic HF",
                               "decompensated heart failure"],
                      ["furosemide", "Lasix", "carvedilol", "spironolactone"], ["BNP"]),
    "atrial fibrillation": ("42731", ["AF", "afib", "atrial fibrillation", "AFib w/ RVR"],
                            ["apixaban", "Eliquis", "diltiazem", "metoprolol tartrate"],
                            ["INR"]),
    "COPD": ("49121", ["COPD exacerbation", "AECOPD", "chronic obstructive lung disease"],
             ["tiotropium", "Spiriva", "prednisone", "albuterol nebs"], ["pCO2"]),
    "pneumonia": ("486", ["PNA", "pneumonia", "CAP", "lobar infiltrate"],
                  ["ceftriaxone", "azithromycin", "Zosyn"], ["procalcitonin"]),
    "sepsis": ("99591", ["sepsis", "septic picture", "SIRS w/ source"],
               ["vancomycin", "meropenem", "norepinephrine"], ["lactate"]),
    "acute kidney injury": ("5849", ["AKI", "acute renal failure", "ARF", "rising Cr"],
                            ["IV fluids", "sodium bicarbonate"], ["creatinine"]),
    "diabetes": ("25000", ["DM2", "type 2 diabetes", "NIDDM", "T2DM"],
                 ["metformin", "insulin glargine", "Lantus", "sliding scale insulin"],
                 ["A1c", "glucose"]),
    "DKA": ("25013", ["DKA", "diabetic ketoacidosis", "anion gap acidosis"],
            ["insulin drip", "potassium repletion"], ["anion gap", "glucose"]),
    "GI bleed": ("5789", ["UGIB", "GI bleed", "melena", "hematemesis"],
                 ["pantoprazole", "Protonix", "octreotide"], ["hemoglobin"]),
    "cirrhosis": ("5715", ["cirrhosis", "ESLD", "liver disease w/ ascites"],
                  ["lactulose", "rifaximin", "Xifaxan", "nadolol"], ["bilirubin", "ammonia"]),
    "stroke": ("43491", ["CVA", "ischemic stroke", "L MCA infarct", "acute stroke"],
               ["aspirin", "atorvastatin", "Lipitor", "clopidogrel"], ["LDL"]),
    "NSTEMI": ("41071", ["NSTEMI", "non-ST elevation MI", "type 1 MI", "ACS"],
               ["heparin gtt", "ticagrelor", "Brilinta", "nitroglycerin"], ["troponin"]),
    "pulmonary embolism": ("41519", ["PE", "pulmonary embolus", "saddle embolus"],
                           ["enoxaparin", "Lovenox", "rivaroxaban", "Xarelto"], ["D-dimer"]),
    "hip fracture": ("82020", ["hip fx", "femoral neck fracture", "intertrochanteric fx"],
                     ["oxycodone", "acetaminophen", "enoxaparin"], ["hemoglobin"]),
    "UTI": ("5990", ["UTI", "cystitis", "urosepsis", "pyelo"],
            ["nitrofurantoin", "ciprofloxacin", "cefepime"], ["UA"]),
    "hypertension": ("4019", ["HTN", "hypertension", "elevated BP"],
                     ["lisinopril", "amlodipine", "Norvasc", "hydrochlorothiazide"], []),
    "CKD": ("5853", ["CKD stage 3", "chronic kidney disease", "CKD"],
            ["sevelamer", "calcitriol"], ["creatinine", "phosphorus"]),
    "delirium": ("2930", ["delirium", "acute encephalopathy", "AMS", "confusion"],
                 ["quetiapine", "Seroquel", "haloperidol"], []),
    "alcohol withdrawal": ("2910", ["EtOH withdrawal", "alcohol withdrawal", "DTs"],
                           ["lorazepam", "Ativan", "thiamine", "phenobarbital"], ["CIWA"]),
    "hyponatremia": ("2761", ["hyponatremia", "low Na", "SIADH"],
                     ["fluid restriction", "salt tabs", "tolvaptan"], ["sodium"]),
    "cellulitis": ("6826", ["cellulitis", "LE cellulitis", "skin/soft tissue infection"],
                   ["cefazolin", "Keflex", "doxycycline"], ["WBC"]),
    "asthma": ("49392", ["asthma exacerbation", "reactive airway disease", "status asthmaticus"],
               ["fluticasone-salmeterol", "Advair", "montelukast"], ["peak flow"]),
    "anemia": ("2859", ["anemia", "low Hgb", "symptomatic anemia"],
               ["ferrous sulfate", "pRBC transfusion", "epoetin"], ["hemoglobin"]),
    "pancreatitis": ("5770", ["acute pancreatitis", "gallstone pancreatitis"],
                     ["hydromorphone", "Dilaudid", "lactated Ringer's"], ["lipase"]),
}
LABS = {"BNP": (900, 400, "pg/mL"), "INR": (2.4, 0.6, ""), "pCO2": (58, 8, "mmHg"),
        "procalcitonin": (3.1, 1.5, "ng/mL"), "lactate": (3.4, 1.2, "mmol/L"),
        "creatinine": (2.1, 0.6, "mg/dL"), "A1c": (9.1, 1.3, "%"), "glucose": (240, 70, ""),
        "anion gap": (22, 4, ""), "hemoglobin": (7.6, 1.1, "g/dL"), "bilirubin": (4.2, 1.8, ""),
        "ammonia": (95, 25, ""), "LDL": (151, 30, ""), "troponin": (1.8, 1.0, "ng/mL"),
        "D-dimer": (3.2, 1.1, ""), "UA": (0, 0, ""), "phosphorus": (5.6, 0.8, ""),
        "CIWA": (14, 5, ""), "sodium": (124, 3, "mEq/L"), "WBC": (16.5, 3.5, "K/uL"),
        "peak flow": (180, 40, "L/min"), "lipase": (1400, 600, "U/L")}
DEVICES = ["R IJ central line", "L PICC", "Foley catheter", "NG tube",
           "pacemaker (dual chamber)", "AICD", "R chest port", "G-tube", "L AV fistula", "tracheostomy",
           "insulin pump", "R BKA prosthesis", "LVAD", "J-tube", "cardiac stents x2"]
LIVES = ["lives alone in an apartment", "lives with her husband", "lives with his wife",
         "lives with daughter", "resides at a nursing facility", "lives with partner",
         "homeless, stays at a shelter", "lives with son and grandchildren"]
HABITS = ["former smoker, 40 pack-years", "smokes 1 ppd", "never smoker",
          "drinks 6 beers daily", "quit alcohol 5 yrs ago", "uses cannabis", "no tobacco/EtOH"]
WORK = ["retired bus driver", "retired teacher", "construction worker", "accountant",
        "nurse's aide", "veteran", "unemployed", "chef", "retired machinist", "farmer"]
ALLERGIES = ["PCN (hives)", "sulfa (rash)", "NKDA", "codeine (nausea)", "iodinated contrast",
             "latex", "ACE inhibitors (angioedema)", "shellfish"]
TYPOS = {"patient": "pateint", "with": "wtih", "the": "teh", "history": "hx", "and": "&",
         "continue": "cont", "improved": "improoved", "pressure": "presure"}
FILLERS = ["Seen and examined.", "Discussed with team.", "Plan reviewed with patient.",
           "Pt resting comfortably.", "No acute events overnight.", "Family updated by phone.",
           "Will follow.", "Pain controlled.", "Tolerating diet.", "Ambulating with assist."]
CATEGORIES = [("Nursing/other", 0.34), ("Radiology", 0.22), ("Nursing", 0.12),
              ("Physician ", 0.1), ("ECG", 0.08), ("Discharge summary", 0.0),
              ("Consult", 0.05), ("Respiratory ", 0.04), ("Pharmacy", 0.03), ("Rehab Services",
                                                                               0.02)]
SYSTEMS = {
    "Neuro": ["A&O x3, MAE", "sedated on propofol, RASS -2", "confused overnight, reoriented",
              "PERRL, follows commands", "CIWA monitoring"],
    "CV": ["NSR 70s-80s", "afib 100-120s", "SBP 90s-110s", "+2 pedal edema", "on pressors"],
    "Resp": ["LS clear bilat", "crackles at bases", "diminished RLL", "sats 92-95% on 2L",
             "coughing up thick yellow sputum"],
    "GI": ["abd soft, NT/ND", "+BS, tolerating clears", "NPO for procedure", "BM x1, guaiac +",
           "nausea relieved by zofran"],
    "GU": ["Foley to gravity", "voiding via urinal", "UOP 40-60cc/hr", "oliguric", "hematuria"],
    "Skin": ["stage 2 sacral decub", "intact", "L heel blister", "incision c/d/i"],
    "ID": ["Tmax 38.4", "afebrile", "cultures pending", "blood cx NGTD"],
}
_SUBJECT_BASE = 300_000
_HADM_BASE = 700_000


class _Story:
    """One patient's facts, each told in words drawn anew in every note."""

    def __init__(self, r: random.Random, subject: int):
        self.subject = subject
        self.age = r.randint(24, 91)
        self.sex = r.choice("MF")
        self.chronic = r.sample(["hypertension", "diabetes", "CKD", "COPD", "asthma",
                                 "atrial fibrillation", "heart failure", "cirrhosis", "anemia"],
                                r.randint(1, 3))
        self.device = r.choice(DEVICES) if r.random() < 0.6 else None
        self.lives, self.habit, self.work = r.choice(LIVES), r.choice(HABITS), r.choice(WORK)
        self.allergy = r.choice(ALLERGIES)
        self.pcp = f"Dr. {r.choice(['Okafor', 'Lindqvist', 'Ramos', 'Chen', 'Petrov', 'Haddad'])}"
        self.admissions = []

    def he(self) -> str:
        return "he" if self.sex == "M" else "she"


def _say(r: random.Random, condition: str) -> str:
    return r.choice(CONDITIONS[condition][1])


def _drug(r: random.Random, condition: str) -> str:
    return r.choice(CONDITIONS[condition][2])


def _lab(r: random.Random, name: str, day: int) -> str:
    mean, sd, unit = LABS[name]
    if name == "UA":
        return "UA: " + r.choice(["+LE, +nitrite, >50 WBC", "large LE, many bacteria"])
    value = mean + sd * (r.random() * 2 - 1) - 0.15 * day * sd
    value = round(value, 1) if mean < 50 else int(value)
    return f"{name} {value}{(' ' + unit) if unit and r.random() < 0.5 else ''}"


def _typos(r: random.Random, text: str, rate: float) -> str:
    words = text.split(" ")
    return " ".join(TYPOS.get(w, w) if r.random() < rate else w for w in words)


def _problems(r: random.Random, adm: dict, pt: _Story) -> list[str]:
    items = [adm["primary"], *adm["secondary"], *pt.chronic]
    return list(dict.fromkeys(items))


def _progress(r, pt, adm, day) -> str:
    """A SOAP progress note."""
    sections = {
        "S": f"{r.choice(['Pt reports', 'Patient states', 'Complains of', 'Per pt,'])} "
             f"{r.choice(['feeling better', 'ongoing dyspnea', 'mild pain', 'poor sleep', 'nausea'])}"
             f". {r.choice(FILLERS)}",
        "O": f"T {round(36.5 + r.random() * 2, 1)} HR {r.randint(58, 128)} BP "
             f"{r.randint(88, 172)}/{r.randint(48, 96)} SpO2 {r.randint(86, 100)}%. "
             + "; ".join(_lab(r, lab, day) for lab in adm["labs"][:3])
             + (f". {pt.device} in place" if pt.device and r.random() < 0.6 else ""),
        "A/P": " ".join(f"#{i + 1} {_say(r, c)}: {r.choice(['on', 'cont', 'started', 'titrating'])}"
                        f" {_drug(r, c)}." for i, c in enumerate(_problems(r, adm, pt)[:4])),
    }
    sections["Meds"] = ", ".join(dict.fromkeys(_drug(r, c) for c in _problems(r, adm, pt)))
    sections["PMH"] = ", ".join(_say(r, c) for c in pt.chronic) + (
        f"; {pt.device}" if pt.device else "")
    order = ["S", "O", "Meds", "A/P"] if r.random() < 0.7 else r.sample(list(sections), 5)
    head = r.choice(["MICU progress note", "Medicine PN", "Hospitalist daily note",
                     f"HD#{day + 1}"])
    return head + "\n" + "\n".join(f"{k}: {sections[k]}" for k in order)


def _shift(r, pt, adm, day) -> str:
    """A nursing shift narrative, abbreviation-heavy."""
    bits = [f"{pt.age}{pt.sex.lower()} w/ {_say(r, adm['primary'])}",
            f"{r.choice(['A&Ox3', 'A&Ox1', 'lethargic', 'calm, cooperative'])}",
            f"on {r.choice(['RA', '2L NC', '4L NC', 'BiPAP', 'vent AC 450x14'])}",
            f"{_drug(r, adm['primary'])} given per order",
            f"{r.choice(['UOP adequate', 'UOP 30cc/hr', 'voiding qs', 'Foley draining'])}",
            *( [f"{pt.device} site c/d/i"] if pt.device and r.random() < 0.7 else []),
            r.choice(FILLERS)]
    if r.random() < 0.5:
        bits.append(f"family ({pt.lives.split(' ', 2)[-1]}) visited")
    middle = bits[1:]
    r.shuffle(middle)
    text = (f"{r.choice(['7a-7p', '7p-7a', 'Day shift', 'Night RN note'])}: "
            + ". ".join([bits[0], *middle]) + ".")
    if r.random() < 0.6:  # a head-to-toe block, systems in any order
        systems = r.sample(list(SYSTEMS), r.randint(3, len(SYSTEMS)))
        text += "\n" + "\n".join(f"{name}: {r.choice(SYSTEMS[name])}" for name in systems)
        text += f"\nPlan: {r.choice(FILLERS)} Monitor {', '.join(adm['labs'][:2])}."
    return text


def _radiology(r, pt, adm, day) -> str:
    exam = {"pneumonia": "CHEST PA/LAT", "heart failure": "PORTABLE CXR",
            "stroke": "CT HEAD W/O CONTRAST", "pulmonary embolism": "CTA CHEST",
            "hip fracture": "XR PELVIS/HIP", "pancreatitis": "CT ABD/PELVIS W CONTRAST",
            "cirrhosis": "RUQ ULTRASOUND", "GI bleed": "CT ABDOMEN"}.get(
        adm["primary"], r.choice(["PORTABLE CXR", "CT CHEST", "KUB"]))
    finding = {"pneumonia": "right lower lobe consolidation", "heart failure":
               "vascular congestion and small bilateral effusions", "stroke":
               "hypodensity in the left MCA territory", "pulmonary embolism":
               "filling defects in segmental pulmonary arteries", "hip fracture":
               "displaced femoral neck fracture", "pancreatitis": "peripancreatic stranding",
               "cirrhosis": "nodular liver with moderate ascites"}.get(
        adm["primary"], r.choice(["no acute process", "mild atelectasis", "unchanged"]))
    lines = [f"EXAM: {exam}",
             (f"INDICATION: {pt.age} y/o {'man' if pt.sex == 'M' else 'woman'} with "
              f"{_say(r, adm['primary'])}, eval"),
             "COMPARISON: " + r.choice(["none", "prior study", f"{day} days earlier"]),
             f"FINDINGS: {finding.capitalize()}."
             + (f" {pt.device.capitalize()} is noted." if pt.device and r.random() < 0.5 else ""),
             f"IMPRESSION: {r.choice(['', '1. '])}{finding.capitalize()}."]
    return "\n".join(lines)


def _ecg(r, pt, adm, day) -> str:
    rhythm = "atrial fibrillation" if "atrial fibrillation" in _problems(r, adm, pt) else \
        r.choice(["sinus rhythm", "sinus tachycardia", "sinus bradycardia"])
    return (f"{rhythm.capitalize()}, rate {r.randint(50, 130)}. "
            + r.choice(["Nonspecific ST-T changes.", "LVH by voltage.", "No acute ST changes.",
                        "QTc prolonged at 510."])
            + (" Paced rhythm." if pt.device and "pacemaker" in pt.device else ""))


def _consult(r, pt, adm, day) -> str:
    service = r.choice(["Cardiology", "Nephrology", "GI", "ID", "Pulmonary", "Psychiatry"])
    return (f"{service} consult. Reason: {_say(r, adm['primary'])}. HPI: {pt.age} yo with "
            f"PMH {', '.join(_say(r, c) for c in pt.chronic)} admitted with "
            f"{_say(r, adm['primary'])}. Social: {pt.lives}; {pt.habit}; {pt.work}. "
            f"Allergies: {pt.allergy}. Recs: {_drug(r, adm['primary'])}; "
            + "; ".join(_lab(r, lab, day) for lab in adm["labs"][:2])
            + f". Thank you for this consult, will follow. PCP {pt.pcp}.")


def _short(r, pt, adm, day, kind) -> str:
    if kind == "Respiratory ":
        return (f"RT: {r.choice(['nebs given', 'MDI teaching', 'weaning trial'])}, "
                f"{r.choice(['BBS coarse', 'wheezes', 'clear'])}; {_say(r, adm['primary'])}.")
    if kind == "Pharmacy":
        c = r.choice(_problems(r, adm, pt))
        return (f"Pharmacy note: {_drug(r, c)} for {_say(r, c)}; renal dosing reviewed. "
                f"Allergy {pt.allergy}.")
    return (f"PT eval: {pt.age}{pt.sex} {r.choice(['min assist', 'mod assist', 'indep'])} "
            f"transfers; {pt.lives}. Dx {_say(r, adm['primary'])}.")


def _discharge(r, pt, adm, day) -> str:
    problems = _problems(r, adm, pt)
    course = "\n".join(f"# {_say(r, c)}: {r.choice(['treated with', 'managed with', 'given'])} "
                       f"{_drug(r, c)}; {_lab(r, r.choice(adm['labs']), day)} at discharge."
                       for c in problems)
    meds = ", ".join(dict.fromkeys(_drug(r, c) for c in problems))
    parts = [(f"Admission Date: [**{adm['start']:%Y-%m-%d}**]  Discharge Date: "
              f"[**{adm['end']:%Y-%m-%d}**]"),
             f"Service: {r.choice(['MEDICINE', 'MICU', 'CCU', 'SURGERY'])}",
             f"Allergies: {pt.allergy}",
             f"Chief Complaint: {_say(r, adm['primary'])}",
             (f"History of Present Illness: {pt.age} year old "
              f"{'male' if pt.sex == 'M' else 'female'}"
              f" with {', '.join(_say(r, c) for c in pt.chronic)} presenting with "
              f"{_say(r, adm['primary'])}. {pt.he().capitalize()} {pt.lives}; {pt.habit}."),
             f"Hospital Course by problem:\n{course}",
             f"Discharge Medications: {meds}",
             "Discharge Diagnoses:\nPrimary: " + _say(r, adm["primary"]) + "\nSecondary: "
             + ", ".join(_say(r, c) for c in problems[1:]),
             f"Followup: {pt.pcp} in 1-2 weeks."]
    if pt.device:
        parts.insert(5, f"Lines/devices: {pt.device}")
    return "\n\n".join(parts)


WRITERS = {"Physician ": _progress, "Nursing/other": _shift, "Nursing": _shift,
           "Radiology": _radiology, "ECG": _ecg, "Consult": _consult,
           "Discharge summary": _discharge}


def _patient(r: random.Random, pt: _Story, next_hadm) -> tuple[list[list], list[list]]:
    notes, diagnoses = [], []
    start = datetime(2110, 1, 1) + timedelta(days=r.randint(0, 365 * 80))
    kinds, weights = zip(*[(c, w) for c, w in CATEGORIES if w > 0])
    for a in range(r.randint(1, 3)):
        primary = r.choice([c for c in CONDITIONS if c not in pt.chronic])
        secondary = r.sample([c for c in CONDITIONS if c not in (primary, *pt.chronic)],
                             r.randint(0, 2))
        los = r.randint(2, 14)
        adm = {"hadm": next_hadm(), "primary": primary, "secondary": secondary,
               "start": start, "end": start + timedelta(days=los)}
        adm["labs"] = list(dict.fromkeys(
            lab for c in (primary, *secondary, *pt.chronic) for lab in CONDITIONS[c][3])) or [
            "WBC", "hemoglobin"]
        r.shuffle(adm["labs"])
        for seq, c in enumerate([primary, *secondary, *pt.chronic], 1):
            diagnoses.append([pt.subject, adm["hadm"], seq, CONDITIONS[c][0]])
        n_notes = r.randint(6, 30)
        for j in range(n_notes):
            day = int(los * j / n_notes)
            when = start + timedelta(days=day, hours=r.randint(0, 23), minutes=r.randint(0, 59))
            kind = r.choices(kinds, weights)[0]
            writer = WRITERS.get(kind)
            text = writer(r, pt, adm, day) if writer else _short(r, pt, adm, day, kind)
            if r.random() < 0.3:
                text += " " + " ".join(r.sample(FILLERS, r.randint(1, 4)))
            notes.append(_row(pt, adm, when, kind, _typos(r, text, 0.04)))
        when = adm["end"] + timedelta(hours=r.randint(8, 16))
        notes.append(_row(pt, adm, when, "Discharge summary",
                          _typos(r, _discharge(r, pt, adm, los), 0.02)))
        start = adm["end"] + timedelta(days=r.randint(20, 900))
    return notes, diagnoses


def _row(pt: _Story, adm: dict, when: datetime, kind: str, text: str) -> list:
    timed = kind not in ("Discharge summary", "ECG")
    return [pt.subject, adm["hadm"], f"{when:%Y-%m-%d}",
            f"{when:%Y-%m-%d %H:%M:%S}" if timed else "",
            f"{when + timedelta(minutes=20):%Y-%m-%d %H:%M:%S}" if timed else "",
            kind, {"Radiology": "RADIOLOGY REPORT"}.get(kind, "Report"), "", "", text]


def generate_transfer(patients: int, out_dir: str | Path, seed: int = 0,
                      progress: bool = False) -> SynthSummary:
    """Write NOTEEVENTS.csv and DIAGNOSES_ICD.csv of the transfer corpus (same columns as
    MIMIC-III and `generate`; same seed, same files)."""
    if isinstance(patients, bool) or not isinstance(patients, int) or patients < 1:
        raise ValueError(f"patients must be a positive integer, got {patients!r}")
    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise NotADirectoryError(f"output path exists and is not a directory: {out}")
    out.mkdir(parents=True, exist_ok=True)
    hadm = iter(range(_HADM_BASE, 10**9))
    counts: dict[str, int] = {}
    note_id = diag_id = admissions = 0
    with atomic_open(out / NOTES_FILE, "w", newline="", encoding="utf-8") as nf, \
            atomic_open(out / DIAGNOSES_FILE, "w", newline="", encoding="utf-8") as df:
        nw = csv.writer(nf, lineterminator="\n")
        dw = csv.writer(df, lineterminator="\n")
        nw.writerow(NOTE_COLUMNS)
        dw.writerow(DIAGNOSIS_COLUMNS)
        for i in tqdm(range(patients), desc="synth", unit="patient", disable=not progress):
            r = random.Random(f"mimicsearch-transfer:{seed}:{i}")
            pt = _Story(r, _SUBJECT_BASE + i)
            notes, diagnoses = _patient(r, pt, lambda: next(hadm))
            admissions += len({row[1] for row in diagnoses})
            for row in notes:
                note_id += 1
                counts[row[5]] = counts.get(row[5], 0) + 1
                nw.writerow([note_id, *row])
            for row in diagnoses:
                diag_id += 1
                dw.writerow([diag_id, *row])
    return SynthSummary(patients=patients, admissions=admissions, notes=note_id,
                        diagnoses=diag_id, seed=seed, notes_by_category=counts,
                        notes_path=str(out / NOTES_FILE),
                        diagnoses_path=str(out / DIAGNOSES_FILE))
