"""Code lists the synthetic partners write in, each in the partner's own code system, with Dutch labels.

Invented where no public list exists (court outcome codes, CJIB/DJI/3RO/Halt codes); the OM decision
codes are the ones the terminology table ``terminology/om-afdoening.csv`` maps (keep them exact).
Shares follow DOMAIN.md §2.5.1 for OM decisions and are plausible elsewhere.
"""

from __future__ import annotations

# --- politie (BVI incident codes, "data derden" style dotted codes) ---------------------------------
#: code -> (label, wetsartikel OM qualifies it under, light offence (Halt-eligible), ambtshalve share,
#: Halt delict group, relative frequency)
INCIDENTS: dict[str, tuple[str, str, bool, float, str, int]] = {
    "1.1.1": ("Diefstal/inbraak woning", "311 Sr", False, 0.05, "VERMOGEN", 12),
    "1.2.1": ("Diefstal uit/vanaf motorvoertuigen", "310 Sr", False, 0.05, "VERMOGEN", 10),
    "1.2.3": ("Diefstal van brom-, snor-, fietsen", "310 Sr", True, 0.05, "VERMOGEN", 12),
    "1.2.5": ("Winkeldiefstal", "310 Sr", True, 0.10, "VERMOGEN", 14),
    "1.4.5": ("Mishandeling", "300 Sr", False, 0.10, "GEWELD", 12),
    "1.4.6": ("Straatroof", "312 Sr", False, 0.05, "GEWELD", 4),
    "1.4.7": ("Bedreiging", "285 Sr", False, 0.10, "GEWELD", 8),
    "2.2.1": ("Vernieling cq. zaakbeschadiging", "350 Sr", True, 0.15, "VERNIELING", 12),
    "2.5.2": ("Vuurwerkoverlast", "141 Sr", True, 0.60, "VUURWERK", 3),
    "3.3.2": ("Rijden onder invloed", "8 WVW", False, 0.95, "OVERIG", 8),
    "3.6.2": ("Harddrugs", "2 OW", False, 0.90, "OVERIG", 3),
    "3.6.3": ("Softdrugs", "3 OW", False, 0.85, "OVERIG", 3),
    "3.9.1": ("Horizontale fraude", "326 Sr", False, 0.05, "VERMOGEN", 6),
    "3.7.4": ("Wapenbezit", "26 WWM", False, 0.80, "OVERIG", 2),
}
TRAFFIC_INCIDENTS = frozenset({"3.3.2"})

# --- OM (COMPAS/GPS) --------------------------------------------------------------------------------
#: OM's own decision codes with Dutch labels and share of decisions (DOMAIN.md §2.5.1).
OM_DECISIONS: dict[str, tuple[str, float]] = {
    "DAGV": ("Dagvaarding", 0.50),
    "SEPO": ("Onvoorwaardelijk sepot", 0.20),
    "STRB": ("Strafbeschikking", 0.18),
    "VBSE": ("Voorwaardelijk beleidssepot", 0.05),
    "TRAN": ("Transactie", 0.03),
    "VOEG": ("Voeging ad informandum", 0.02),
    "OVER": ("Overdracht naar ander parket", 0.01),
    "OPVZ": ("Oproeping ter terechtzitting n.a.v. verzet", 0.01),
}
#: Sepot grounds (Aanwijzing 2022A004): 0x technisch, 5x beleid.
TECHNICAL_SEPOT_GROUNDS: dict[str, str] = {
    "01": "Ten onrechte als verdachte aangemerkt",
    "02": "Onvoldoende wettig bewijs",
    "03": "OM niet-ontvankelijk",
}
POLICY_SEPOT_GROUNDS: dict[str, str] = {
    "50": "Geringe strafwaardigheid",
    "52": "Oud feit",
    "56": "Gewijzigde omstandigheden",
    "58": "Corporatie wordt vervolgd",
    "59": "Leidinggever wordt vervolgd",
}
#: Parket code 96 = CVOM, the central traffic parket (DOMAIN.md §2.3).
CVOM_PARKET = "96"

# --- gemeenten, regions ---------------------------------------------------------------------------
#: municipality (CBS GM code) -> (name, police unit in the pv-number, parket code, rechtbank, gerechtshof)
MUNICIPALITIES: dict[str, tuple[str, str, str, str, str]] = {
    "GM0363": ("Amsterdam", "13", "13", "RBAMS", "GHAMS"),
    "GM0599": ("Rotterdam", "17", "10", "RBROT", "GHDHA"),
    "GM0518": ("'s-Gravenhage", "15", "09", "RBDHA", "GHDHA"),
    "GM0344": ("Utrecht", "06", "16", "RBMNE", "GHARL"),
    "GM0772": ("Eindhoven", "21", "01", "RBOBR", "GHSHE"),
    "GM0014": ("Groningen", "01", "18", "RBNNE", "GHARL"),
    "GM0268": ("Nijmegen", "04", "05", "RBGEL", "GHARL"),
    "GM0193": ("Zwolle", "04", "07", "RBOVE", "GHARL"),
}

# --- rechtspraak (RECHTSPRAAK.* code systems) -------------------------------------------------------
COURTS: dict[str, str] = {
    "RBAMS": "Rechtbank Amsterdam",
    "RBROT": "Rechtbank Rotterdam",
    "RBDHA": "Rechtbank Den Haag",
    "RBMNE": "Rechtbank Midden-Nederland",
    "RBOBR": "Rechtbank Oost-Brabant",
    "RBNNE": "Rechtbank Noord-Nederland",
    "RBGEL": "Rechtbank Gelderland",
    "RBOVE": "Rechtbank Overijssel",
    "GHAMS": "Gerechtshof Amsterdam",
    "GHDHA": "Gerechtshof Den Haag",
    "GHARL": "Gerechtshof Arnhem-Leeuwarden",
    "GHSHE": "Gerechtshof 's-Hertogenbosch",
}
#: First-instance outcome (RECHTSPRAAK.EINDBESLISSING) -> (label, share) (DOMAIN.md §2.5.3).
JUDGMENT_OUTCOMES: dict[str, tuple[str, float]] = {
    "SCHULDIG_STRAF": ("Schuldigverklaring met straf", 0.85),
    "SCHULDIG_ZONDER_STRAF": ("Schuldigverklaring zonder straf (art. 9a Sr)", 0.02),
    "VRIJSPRAAK": ("Vrijspraak", 0.07),
    "ONTSLAG": ("Ontslag van alle rechtsvervolging", 0.01),
    "OVERIG": ("Overig (o.a. niet-ontvankelijkheid OM, nietigheid dagvaarding)", 0.05),
}
#: Appeal outcome (RECHTSPRAAK.HB-BESLISSING) -> label.
APPEAL_OUTCOMES: dict[str, str] = {
    "BEVESTIGD": "Vonnis bevestigd",
    "VERNIETIGD_STRAF": "Vonnis vernietigd, (andere) straf opgelegd",
    "VERNIETIGD_VRIJSPRAAK": "Vonnis vernietigd, vrijspraak",
}
#: Principal sanction (RECHTSPRAAK.SANCTIE) -> (label, unit of its size).
SANCTIONS: dict[str, tuple[str, str]] = {
    "GEV": ("Gevangenisstraf", "dagen"),
    "JD": ("Jeugddetentie", "dagen"),
    "TAAK": ("Taakstraf", "uren"),
    "BOETE": ("Geldboete", "euro"),
    "TBS": ("Terbeschikkingstelling", "-"),
    "ISD": ("Plaatsing in een Inrichting voor Stelselmatige Daders", "dagen"),
}
ADULT_SANCTIONS: tuple[tuple[str, float], ...] = (
    ("GEV", 0.34),
    ("TAAK", 0.31),
    ("BOETE", 0.32),
    ("ISD", 0.02),
    ("TBS", 0.01),
)
JUVENILE_SANCTIONS: tuple[tuple[str, float], ...] = (("JD", 0.25), ("TAAK", 0.55), ("BOETE", 0.20))

# --- CJIB, DJI, reclassering, Halt ------------------------------------------------------------------
CJIB_SANCTIONS: dict[str, str] = {
    "GB": "Geldboete (vonnis)",
    "SB": "Strafbeschikking OM",
    "TR": "Transactie",
}
DJI_TITLES: dict[str, str] = {
    "VH": "Voorlopige hechtenis",
    "VRIJHEIDSSTRAF": "Vrijheidsstraf",
    "VERV_HECHTENIS": "Vervangende hechtenis/dwangmaatregel",
    "ISD": "ISD-maatregel",
    "TBS": "Terbeschikkingstelling met verpleging",
}
DJI_INSTITUTIONS: dict[str, str] = {
    "HVB": "Huis van bewaring",
    "GEVANGENIS": "Gevangenis",
    "JJI": "Justitiële jeugdinrichting",
    "FPC": "Forensisch psychiatrisch centrum",
}
DJI_OUTFLOW_REASONS: dict[str, str] = {
    "EINDE_STRAF": "Einde straf of maatregel",
    "SCHORSING": "Schorsing voorlopige hechtenis",
    "OVERPLAATSING": "Overplaatsing naar andere inrichting",
    "VI": "Voorwaardelijke invrijheidstelling",
}
RECLASSERING_PRODUCTS: dict[str, str] = {
    "WERKSTRAF": "Werkstraf (taakstraf)",
    "TOEZICHT": "Toezicht op bijzondere voorwaarden",
}
#: 3RO organisations with their share of clients (DOMAIN.md §2.1: ~30% SVG, ~10% LJR, rest RN).
RECLASSERING_ORGANISATIONS: dict[str, tuple[str, float]] = {
    "RN": ("Reclassering Nederland", 0.60),
    "SVG": ("Verslavingsreclassering GGZ", 0.30),
    "LJR": ("Leger des Heils Jeugdbescherming & Reclassering", 0.10),
}
RECLASSERING_RESULTS: dict[str, str] = {"VOLTOOID": "Voltooid", "NEGATIEF": "Negatief beëindigd"}
HALT_REFERRERS: dict[str, str] = {"POLITIE": "Politie", "BOA": "Boa", "LPA": "Leerplichtambtenaar"}
HALT_OFFENCE_GROUPS: dict[str, str] = {
    "VERMOGEN": "Vermogensmisdrijf",
    "VERNIELING": "Vernieling en openbare orde",
    "GEWELD": "Geweldsmisdrijf",
    "VUURWERK": "Vuurwerk",
    "OVERIG": "Overig",
}
HALT_RESULTS: dict[str, str] = {"POSITIEF": "Positief afgerond", "NEGATIEF": "Negatief afgerond"}

#: What the noise writes where a partner's code list is expected: no partner has it.
UNKNOWN_CODE = "XXXX"
