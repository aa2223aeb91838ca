"""The patient profile's fields: one spec for the command-line tool, the JSON API, the
dashboard's registry pages and the flow files (a score's ``usual`` field). Pure data: no Redis,
no Flask (the conversation core reads it)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Field:
    name: str
    label: str
    kind: str  # text | date | choice | yesno | int | phone
    choices: tuple[str, ...] = ()
    minimum: int | None = None
    maximum: int | None = None
    pattern: str | None = None  # text: a regular expression the whole value must match
    hint: str = ""  # what a valid value looks like (the error message and the form)
    past: bool = False  # date: today or earlier, and not before 1900


MRN_RE = r"[A-Za-z0-9][A-Za-z0-9-]{2,19}"
CAREGIVER_RELATIONSHIPS = ("parent", "guardian", "spouse_or_partner", "adult_child", "sibling",
                           "grandparent", "other_relative", "friend", "other")

FIELDS: tuple[Field, ...] = (
    Field("name", "Name", "text"),
    Field("date_of_birth", "Date of birth", "date", past=True),
    Field("mrn", "Medical record number (MRN)", "text", pattern=MRN_RE,
          hint="3-20 letters, digits or '-', like MRN-004512"),
    Field("status", "Status", "choice", ("active", "paused", "discharged")),
    Field("caregiver_name", "Caregiver's name", "text"),
    Field("caregiver_relationship", "Caregiver's relationship to the patient", "choice",
          CAREGIVER_RELATIONSHIPS),
    Field("caregiver_phone", "Caregiver's phone number", "phone"),
    Field("treatment_phase", "Treatment phase", "choice",
          ("induction", "consolidation", "intensification", "delayed_intensification",
           "interim_maintenance", "maintenance", "reinduction", "relapse", "off_treatment",
           "car_t", "blinatumomab", "transplant", "other")),
    Field("last_chemo_date", "Date of last chemotherapy", "date"),
    Field("low_neutrophils", "Known neutrophils < 0.5 x10^9/L", "yesno"),
    Field("low_platelets", "Known low platelets", "choice", ("no", "lt50", "lt20")),
    Field("t_cell_or_mediastinal_mass", "T-cell ALL or mediastinal mass", "yesno"),
    Field("car_t_date", "CAR T-cell infusion date", "date"),
    Field("blinatumomab_active", "Blinatumomab infusion running now", "yesno"),
    Field("blinatumomab_start_date", "Blinatumomab cycle start date", "date"),
    Field("blinatumomab_cycle", "Blinatumomab cycle", "int", minimum=1, maximum=20),
    Field("blinatumomab_day", "Blinatumomab day of cycle", "int", minimum=1, maximum=60),
    Field("blinatumomab_home_pump", "Blinatumomab pump at home", "yesno"),
    Field("age_band", "Age band", "choice", ("child", "teen", "adult")),
    Field("usual_ice_score", "Usual ICE score (0-10)", "int", minimum=0, maximum=10),
    Field("language", "Preferred language", "text"),
    Field("oncology_line", "24-hour line number for this patient", "phone"),
)
BY_NAME = {f.name: f for f in FIELDS}
