"""``ketenstroom catalogue check|show`` and ``ketenstroom partners add``: the chain catalogue as data.

A partner joins the chain with files, not a release: its schemas under ``schemas/<partner>/``, then
``partners add`` writes ``partners/<partner>/partner.toml`` and a ``mapping.toml`` template derived
from the schemas; the engineer fills in what only they know (chain steps, columns, code systems),
``catalogue check`` says what is still wrong (file, line, key), and ``partners add --apply`` creates
the topics and registers the subjects. CONTRIBUTING.md, "Joining the chain", walks through it.
"""

from __future__ import annotations

from collections.abc import Collection
from pathlib import Path

import typer
from rich.console import Console
from rich.table import Table

from ketenstroom.catalogue import Catalogue, Partner, catalogue_at
from ketenstroom.catalogue.load import PARTNER_FILE, coded_paths, fillable
from ketenstroom.contract import load_schemas
from ketenstroom.errors import KetenstroomError
from ketenstroom.settings import CatalogueSettings

app = typer.Typer(help="The chain catalogue: partners, record types, chain steps.", no_args_is_help=True)
partners_app = typer.Typer(help="Partners joining the chain.", no_args_is_help=True)
console = Console(stderr=True, soft_wrap=True)  # errors whole on one line, for logs and grep
out = Console(soft_wrap=True)


def load() -> Catalogue:
    """The catalogue at ``KETENSTROOM_CATALOGUE_DIR``; a mistake ends the command with exit 2."""
    try:
        return catalogue_at(CatalogueSettings().dir)
    except KetenstroomError as exc:
        console.print(f"[red]catalogue error:[/red] {exc}")
        raise typer.Exit(2) from exc


def partners_or_all(names: list[str]) -> list[str]:
    """The named partners (each checked against the catalogue), or every partner when none is named."""
    catalogue = load()
    if not names:
        return list(catalogue.names)
    for name in names:
        try:
            catalogue.partner(name)
        except KetenstroomError as exc:
            console.print(f"[red]error:[/red] {exc}")
            raise typer.Exit(2) from exc
    return names


@app.command()
def check() -> None:
    """Load and check the whole catalogue against the schemas and terminology. Exit 2 on a mistake."""
    catalogue = load()
    records = sum(len(p.records) for p in catalogue.partners.values())
    out.print(
        f"catalogue {catalogue.root}: {len(catalogue.partners)} partners ({', '.join(catalogue.names)}), "
        f"{records} record types, {len(catalogue.steps)} chain steps, "
        f"terminology {catalogue.terminology.version} ({len(catalogue.terminology)} mappings): ok"
    )


@app.command()
def show(
    partner: str = typer.Argument(None, help="One partner in detail (default: all, one line each)."),
) -> None:
    """What the catalogue declares: partners, or one partner's record types, fields and columns."""
    catalogue = load()
    if partner is None:
        table = Table("partner", "name", "code", "record types", "raw retention", "delivers every")
        for p in catalogue.partners.values():
            every = f"{p.delivery_every_days:g} d" if p.delivery_every_days else "-"
            table.add_row(
                p.name,
                p.display_name,
                p.code,
                str(len(p.records)),
                f"{p.topics.retention_days:g} d",
                every,
            )
        out.print(table)
        return
    try:
        found = catalogue.partner(partner)
    except KetenstroomError as exc:
        console.print(f"[red]error:[/red] {exc}")
        raise typer.Exit(2) from exc
    _show_partner(found)


def _show_partner(p: Partner) -> None:
    out.print(f"[bold]{p.display_name}[/bold] ({p.name}, metadata.partner {p.code}) — {p.directory}")
    every = f"{p.delivery_every_days:g} days" if p.delivery_every_days else "not agreed"
    out.print(
        f"topics: raw.{p.name} and dlq.{p.name}, {p.topics.partitions} partitions; raw retention "
        f"{p.topics.retention_days:g} days ({p.topics.legal_basis}); delivers every {every}"
    )
    by_record = {spec.record: spec for spec in p.mapping.records.values()}
    for r in p.records.values():
        spec = by_record.get(r.fullname)
        value = f" (type value {spec.type_value!r})" if spec else " (no column mapping)"
        out.print(f"\n[bold]{r.fullname}[/bold] -> chain step {r.step}{value}")
        refs = {"case": r.case, "report": r.report, "execution": r.execution}
        out.print("  references: " + (", ".join(f"{k}={v}" for k, v in refs.items() if v) or "-"))
        out.print("  identity:   " + (", ".join(v for v in vars(r.identity).values() if v) or "-"))
        codes = spec.codes if spec else {}
        coded = [
            f"{name} ({kind}, {'@'.join(codes[name]) if name in codes else 'no code system'})"
            for kind, names in (("required", r.required_codes), ("optional", r.optional_codes))
            for name in names
        ]
        out.print("  coded:      " + ("; ".join(coded) or "-"))
        amounts = {
            "sanction_days": r.sanction_days,
            "sanction_hours": r.sanction_hours,
            "amount_eur": r.amount_eur,
        }
        out.print("  amounts:    " + (", ".join(f"{k}={v}" for k, v in amounts.items() if v) or "-"))
        if spec:
            out.print("  columns:    " + ", ".join(f"{c} -> {f}" for f, c in spec.columns.items()))


REFERENCES = (("case", "case.parketnummer"), ("report", "case.pv_number"), ("execution", "case.cjib_number"))


def _toml_string(value: str) -> str:
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


def scaffold(name: str, display_name: str, code: str, root: Path) -> list[Path]:
    """Write ``partners/<name>/partner.toml`` and ``mapping.toml`` templates from ``schemas/<name>/``."""
    group = [s for s in load_schemas(root / "schemas") if s.group == name]
    if not group:
        raise KetenstroomError(
            f"no schemas under {root / 'schemas' / name}/: write the partner's record types there first "
            "(CONTRIBUTING.md, 'Joining the chain')"
        )
    directory = root / "partners" / name
    if (directory / PARTNER_FILE).exists():
        raise KetenstroomError(f"{directory / PARTNER_FILE} exists already; edit it instead")
    directory.mkdir(parents=True, exist_ok=True)
    decl = [
        f"# {display_name}: the partner's declaration (`ketenstroom catalogue show {name}`).",
        "# Fill in every TODO, then run `ketenstroom catalogue check`.",
        f"name = {_toml_string(name)}",
        f"display_name = {_toml_string(display_name)}",
        f"code = {_toml_string(code)}  # symbol of nl.ketenstroom.common.Partner (metadata.partner)",
        'mapping = "mapping.toml"',
        "delivery_every_days = 7  # TODO: the agreed delivery schedule",
        "",
        "[topics]",
        "partitions = 3",
        "retention_days = 14  # raw topics hold personal data: long enough to reprocess, no longer",
        'legal_basis = "TODO: the legal basis for delivering these data"',
    ]
    mapping = [
        f"# {display_name} export -> contract: every contract field and the export column that fills it.",
        "# Replace the column names with the export's own; delete lines the export does not have.",
        'type_column = "soort"  # TODO: the column that tells the record type',
    ]
    for schema in group:
        fields = fillable(schema.schema)
        paths = {p for p, _ in fields}
        decl += [
            "",
            f"[records.{_toml_string(schema.fullname)}]",
            'step = "TODO"  # a chain step (chain-steps.csv)',
        ]
        for key, path in (
            ("case", "case.parketnummer"),
            ("report", "case.pv_number"),
            ("execution", "case.cjib_number"),
        ):
            if path in paths:
                decl.append(f"{key} = {_toml_string(path)}")
        if "suspect.skn" in paths:
            decl.append('identity = "suspect"')
        coded_here = coded_paths(schema.schema)
        coded = [p for p, _ in fields if p in coded_here]
        for key, wanted in (("required_codes", False), ("optional_codes", True)):
            names = [_toml_string(p) for p, optional in fields if p in coded and optional == wanted]
            if names:
                decl.append(f"{key} = [{', '.join(names)}]  # mapped through terminology")
        short = schema.fullname.rsplit(".", 1)[-1]
        mapping += ["", f"[records.{short.upper()}]", f"record = {_toml_string(schema.fullname)}"]
        if "case.parketnummer" in paths:
            mapping.append('key = "case.parketnummer"')
        mapping += ["", f"[records.{short.upper()}.columns]"]
        mapping += [f"{_toml_string(p)} = {_toml_string(p.rsplit('.', 1)[-1])}" for p, _ in fields]
        if coded:
            mapping += ["", f"[records.{short.upper()}.codes]"]
            mapping += [f'{c} = {{ system = "TODO", version = "TODO" }}' for c in coded]
        mapping += _plausibility(short.upper(), paths)
    written = [directory / PARTNER_FILE, directory / "mapping.toml"]
    written[0].write_text("\n".join(decl) + "\n", encoding="utf-8")
    written[1].write_text("\n".join(mapping) + "\n", encoding="utf-8")
    return written


def _plausibility(record: str, paths: Collection[str]) -> list[str]:
    """A record type's plausibility rules to start from (``producers/plausibility.py``): adjust them."""
    if "metadata.event_time" not in paths:
        return []
    out = [
        "",
        f"[records.{record}.plausibility]",
        "max_clock_skew_minutes = 60",
        "event_not_before = 2000-01-01",
    ]
    if "metadata.registration_time" in paths:
        out.append("registration_not_before_event = true")
    if "suspect.birth_date" in paths:
        out += ["birth_before_event = true", "age_at_event = [12, 100]"]
    return out


@partners_app.command("add")
def add(
    name: str = typer.Argument(..., help="Lower-case partner name: raw.<name>, schemas/<name>/."),
    display_name: str = typer.Option(..., "--display-name", help="e.g. 'Koninklijke Marechaussee'."),
    code: str = typer.Option(..., "--code", help="Symbol of nl.ketenstroom.common.Partner, e.g. HALT."),
    apply: bool = typer.Option(
        False,
        "--apply",
        help="The files exist and check out: create the topics, grant the partner its Kafka rights "
        "and register the subjects.",
    ),
) -> None:
    """Scaffold a partner's declaration and mapping from its schemas; with --apply, create its topics
    and registry subjects once ``catalogue check`` passes."""
    from cli.access import grant, print_report
    from cli.pipeline import topics
    from cli.schemas import register_group

    root = CatalogueSettings().dir
    if not apply:
        try:
            written = scaffold(name, display_name, code, root)
        except KetenstroomError as exc:
            console.print(f"[red]error:[/red] {exc}")
            raise typer.Exit(2) from exc
        for path in written:
            out.print(f"wrote {path}")
        out.print(
            "next: fill in the TODOs, `ketenstroom catalogue check`, then "
            f"`ketenstroom partners add {name} --display-name ... --code {code} --apply`"
        )
        return
    catalogue = load()
    try:
        catalogue.partner(name)
        topics(partitions=3, replication_factor=None, check=False)
        report = grant([name])
        if report.authorizer:
            print_report(report)
        else:
            out.print("the cluster has no authorizer: no rights to grant (secured clusters only)")
        out.print(register_group(name))
    except KetenstroomError as exc:
        console.print(f"[red]error:[/red] {exc}")
        raise typer.Exit(2) from exc
