"""Data quality: the raw-log schema check, row-level rules with quarantine, and the Great
Expectations 1.x suites that gate the raw and feature tables.

Row-level rules split a raw batch into accepted and quarantined rows (accepted +
quarantined = input, always); every quarantined row keeps its full content as JSON and the
reasons it was rejected. Table-level gates run as GX suites; a failed gate stops the pipeline.
"""
from __future__ import annotations

import datetime as dt
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pyspark.sql import Column, DataFrame, Window
from pyspark.sql import functions as F

from core.config import Config, RawLogSchema
from core.feature_table import SPLITS, dense_column

REASONS = "_reasons"
RAW_ROW = "_raw_row"        # the row as read from a raw source, before type coercion (JSON)
# Repeated impression ids up to this many are collected and broadcast to the duplicate rule's joins.
BROADCAST_MAX_IDS = 100_000


class SchemaDriftError(ValueError):
    """The raw log's columns differ from conf/schema.yaml."""


class EmptyInputError(ValueError):
    """A requested day has no rows at all."""


class QualityGateError(RuntimeError):
    """A table-level expectation failed; ``summary`` is the readable report."""

    def __init__(self, summary: str):
        super().__init__(summary)
        self.summary = summary


# ----------------------------------------------------------------------------- schema
def check_raw_schema(df: DataFrame, schema: RawLogSchema, table: str) -> None:
    columns = set(df.columns)
    missing = [c for c in schema.required_columns if c not in columns]
    if missing:
        raise SchemaDriftError(
            f"{table}: missing column(s) {', '.join(missing)} required by conf/schema.yaml "
            f"(present: {', '.join(df.columns)})")
    expected = set(schema.required_columns) | set(schema.passthrough)
    extra = [c for c in df.columns if c not in expected]
    if extra and not schema.allow_extra_columns:
        raise SchemaDriftError(
            f"{table}: unexpected column(s) {', '.join(extra)} not declared in conf/schema.yaml; "
            f"declare them (categorical/dense/passthrough) or set schema.allow_extra_columns: true")


def check_days_present(day_counts: dict[dt.date, int], start: dt.date, end: dt.date,
                       table: str, min_rows: int) -> None:
    """Fail on days below ``min_rows`` (quality.min_rows_per_day; 0 allows empty days)."""
    days = [start + dt.timedelta(days=i) for i in range((end - start).days + 1)]
    short = [f"{d.isoformat()} ({day_counts.get(d, 0)} rows)" for d in days
             if day_counts.get(d, 0) < min_rows]
    if short:
        raise EmptyInputError(
            f"{table}: day(s) with fewer than {min_rows} rows in the requested range "
            f"{start}..{end}: {', '.join(short)}")


# ----------------------------------------------------------------------------- row rules
def row_rule_reasons(cfg: Config) -> list[Column]:
    """One nullable string per rule: the reason a row breaks it, or null."""
    s, q = cfg.schema, cfg.quality
    slots = list(cfg.taxonomy.slot_names)
    label = F.col(s.label).cast("double")
    rules = [
        F.when(F.col(s.id).isNull(), F.lit(f"{s.id}: null")),
        F.when(F.col(s.timestamp).isNull(), F.lit(f"{s.timestamp}: null")),
        F.when(F.col(s.slot).isNull(), F.lit(f"{s.slot}: null"))
         .when(~F.col(s.slot).isin(*slots),
               F.concat(F.lit(f"{s.slot}: '"), F.col(s.slot), F.lit("' is not in the taxonomy"))),
        F.when(label.isNull() | ~label.isin(0.0, 1.0),
               F.concat(F.lit(f"{s.label}: "), F.coalesce(F.col(s.label).cast("string"), F.lit("null")),
                        F.lit(" is not 0 or 1"))),
        F.when(F.to_date(F.col(s.timestamp)) != F.col(s.date),
               F.concat(F.lit(f"{s.timestamp}: "), F.col(s.timestamp).cast("string"),
                        F.lit(f" is outside its {s.date} "), F.col(s.date).cast("string"))),
    ]
    for c in s.dense:
        v = F.col(c).cast("double")
        rules.append(F.when(v.isNull() | F.isnan(v) | (F.abs(v) > q.dense_abs_max),
                            F.concat(F.lit(f"{c}: "), F.coalesce(F.col(c).cast("string"), F.lit("null")),
                                     F.lit(" is not a finite number"))))
    return rules


def annotate_row_rules(df: DataFrame, cfg: Config) -> DataFrame:
    """Add ``_reasons`` (array<string>, empty when the row is accepted).

    Duplicate impression ids: the earliest row (by timestamp, then full content) is kept,
    every later copy is quarantined, so reruns pick the same survivor.
    """
    s = cfg.schema
    rules = row_rule_reasons(cfg)
    # the array filter runs interpreted (no codegen): only for rows that break a rule
    reasons = F.when(F.coalesce(*rules).isNull(), F.array().cast("array<string>")) \
        .otherwise(F.filter(F.array(*rules), lambda r: r.isNotNull()))
    with_reasons = df.withColumn(REASONS, reasons)
    # Only rows of repeated ids need the tie-break window, which shuffles and sorts every
    # column: the ids are counted on a one-column projection (an action), and rows of ids
    # seen once pass through without a shuffle. The repeated ids are few on real logs: they
    # are collected once and broadcast from the driver (a lazy broadcast would count the ids
    # again for every join of every action), unless there are too many.
    repeated = df.where(F.col(s.id).isNotNull()).groupBy(s.id).count().where(F.col("count") > 1) \
        .select(F.col(s.id).alias("_repeated_id"))
    ids = repeated.limit(BROADCAST_MAX_IDS + 1).collect()
    if not ids:
        return with_reasons
    if len(ids) <= BROADCAST_MAX_IDS:
        repeated = F.broadcast(df.sparkSession.createDataFrame(ids, repeated.schema))
    content = F.to_json(F.struct(*[F.col(c) for c in df.columns]))
    order = Window.partitionBy(s.id).orderBy(F.col(s.timestamp).asc_nulls_last(), content)
    duplicate = F.lit(f"{s.id}: duplicate of an earlier row")
    is_repeated = F.col(s.id) == F.col("_repeated_id")
    copies = with_reasons.join(repeated, is_repeated, "left_semi").withColumn(
        REASONS, F.when(F.row_number().over(order) > 1, F.array_append(F.col(REASONS), duplicate))
        .otherwise(F.col(REASONS)))
    return with_reasons.join(repeated, is_repeated, "left_anti").unionByName(copies)


def check_row_accounting(input_rows: int, accepted: int, quarantined: int) -> None:
    """accepted + quarantined = input: no row is lost or counted twice between the two tables."""
    if accepted + quarantined != input_rows:
        raise RuntimeError(f"row accounting broke: {input_rows} input rows but {accepted} accepted "
                           f"+ {quarantined} quarantined")


def accepted_rows(annotated: DataFrame) -> DataFrame:
    return annotated.where(F.size(REASONS) == 0).drop(REASONS, RAW_ROW)


def quarantined_rows(annotated: DataFrame, cfg: Config, run_id: str, stage: str = "build_features") -> DataFrame:
    """Rejected rows in the ``quarantine`` table's shape: key, reason, whole row as JSON, and the
    ``stage`` that rejected them (build_features, or ``ingest:<source>`` for a raw log's ingest:
    each stage replaces only its own rows of a date range). The row as it was read is kept:
    ``_raw_row`` when the rows were coerced (features.ingest), else every column."""
    s = cfg.schema
    content = [c for c in annotated.columns if c not in (REASONS, RAW_ROW)]
    raw = F.col(RAW_ROW) if RAW_ROW in annotated.columns else F.to_json(F.struct(*[F.col(c) for c in content]))
    return annotated.where(F.size(REASONS) > 0).select(
        F.col(s.id).cast("string").alias("impression_id"),
        F.col(s.date).cast("date").alias("event_date"),
        F.array_join(F.col(REASONS), "; ").alias("reason"),
        raw.alias("raw_row"),
        F.lit(run_id).alias("run_id"),
        F.current_timestamp().alias("quarantined_at"),
        F.lit(stage).alias("stage"),
    )


# ----------------------------------------------------------------------------- GX suites
@dataclass
class ExpectationOutcome:
    table: str
    expectation: str
    column: str | None
    success: bool
    observed: str
    details: dict[str, Any] = field(default_factory=dict)


@dataclass
class SuiteResult:
    table: str
    outcomes: list[ExpectationOutcome]
    data_docs: str | None = None        # file URL of this result's Data Docs page

    @property
    def success(self) -> bool:
        return all(o.success for o in self.outcomes)

    def summary(self) -> str:
        failed = [o for o in self.outcomes if not o.success]
        head = f"{self.table}: {len(self.outcomes) - len(failed)}/{len(self.outcomes)} expectations passed"
        lines = [head] + [f"  FAILED {o.expectation}" + (f" [{o.column}]" if o.column else "")
                          + f": {o.observed}" for o in failed]
        return "\n".join(lines)


def raw_expectations(cfg: Config, start: dt.date, end: dt.date) -> list:
    """Raw-log suite: row-level rules hold for all but ``raw_max_bad_fraction`` of rows."""
    import great_expectations as gx

    s, q = cfg.schema, cfg.quality
    mostly = 1.0 - q.raw_max_bad_fraction
    days = (end - start).days + 1
    suite = [
        gx.expectations.ExpectTableRowCountToBeBetween(min_value=q.min_rows_per_day * days),
        gx.expectations.ExpectColumnValuesToNotBeNull(column=s.id, mostly=mostly),
        gx.expectations.ExpectColumnValuesToNotBeNull(column=s.timestamp, mostly=mostly),
        gx.expectations.ExpectColumnValuesToNotBeNull(column=s.slot, mostly=mostly),
        gx.expectations.ExpectColumnValuesToBeInSet(column=s.slot, value_set=list(cfg.taxonomy.slot_names),
                                                    mostly=mostly),
        # the label is compared as a number (see numeric_label): 0/1 ints, booleans, "0"/"1"
        gx.expectations.ExpectColumnValuesToNotBeNull(column=s.label, mostly=mostly),
        gx.expectations.ExpectColumnValuesToBeInSet(column=s.label, value_set=[0.0, 1.0], mostly=mostly),
        gx.expectations.ExpectColumnProportionOfUniqueValuesToBeBetween(column=s.id, min_value=mostly),
    ]
    suite += [gx.expectations.ExpectColumnValuesToBeBetween(
        column=c, min_value=-q.dense_abs_max, max_value=q.dense_abs_max, mostly=mostly) for c in s.dense]
    return suite


def numeric_label(raw: DataFrame, cfg: Config) -> DataFrame:
    """The raw batch as the raw suite sees it: label cast to double (null if not numeric)."""
    return raw.withColumn(cfg.schema.label, F.col(cfg.schema.label).cast("double"))


def feature_expectations(cfg: Config) -> list:
    """Feature-table suite: strict; the feature job must have removed every bad row."""
    import great_expectations as gx

    q, tax = cfg.quality, cfg.taxonomy
    modality_pairs = [(slot, m) for slot, m in tax.modality_of().items()]
    dense_cols = [dense_column(c) for c in cfg.schema.dense]
    suite = [
        gx.expectations.ExpectTableRowCountToBeBetween(min_value=1),
        gx.expectations.ExpectColumnValuesToNotBeNull(column="impression_id"),
        gx.expectations.ExpectColumnValuesToBeUnique(column="impression_id"),
        gx.expectations.ExpectColumnValuesToNotBeNull(column="event_date"),
        gx.expectations.ExpectColumnValuesToBeInSet(column="split", value_set=list(SPLITS)),
        gx.expectations.ExpectColumnValuesToBeInSet(column="slot", value_set=list(tax.slot_names)),
        gx.expectations.ExpectColumnPairValuesToBeInSet(column_A="slot", column_B="modality",
                                                        value_pairs_set=modality_pairs,
                                                        ignore_row_if="neither"),
        gx.expectations.ExpectColumnPairValuesToBeInSet(
            column_A="slot", column_B="slot_id", ignore_row_if="neither",
            value_pairs_set=[(slot, i) for i, slot in enumerate(tax.slot_names)]),
        gx.expectations.ExpectColumnValuesToBeInSet(column="label", value_set=[0, 1]),
        gx.expectations.ExpectColumnValuesToBeBetween(column="sample_weight", min_value=1.0),
        gx.expectations.UnexpectedRowsExpectation(
            description="train, validation and test dates are disjoint and ordered in time",
            unexpected_rows_query=(
                "SELECT event_date FROM {batch} GROUP BY event_date HAVING COUNT(DISTINCT split) > 1 "
                "UNION ALL SELECT NULL FROM (SELECT "
                "MAX(CASE WHEN split = 'train' THEN event_date END) AS tr_max, "
                "MIN(CASE WHEN split = 'validation' THEN event_date END) AS va_min, "
                "MAX(CASE WHEN split = 'validation' THEN event_date END) AS va_max, "
                "MIN(CASE WHEN split = 'test' THEN event_date END) AS te_min FROM {batch}) "
                "WHERE tr_max >= va_min OR va_max >= te_min OR tr_max >= te_min")),
        gx.expectations.UnexpectedRowsExpectation(
            description=(f"per-slot positive rate (before down-sampling correction, validation+test) "
                         f"within [{q.positive_rate_min}, {q.positive_rate_max}]"),
            unexpected_rows_query=(
                "SELECT slot, AVG(label) AS positive_rate FROM {batch} WHERE split != 'train' "
                f"GROUP BY slot HAVING AVG(label) < {q.positive_rate_min} "
                f"OR AVG(label) > {q.positive_rate_max}")),
    ]
    suite += [gx.expectations.ExpectColumnValuesToBeBetween(
        column=c, min_value=-q.dense_abs_max, max_value=q.dense_abs_max) for c in dense_cols]
    suite += [gx.expectations.ExpectColumnValuesToNotBeNull(column=c) for c in dense_cols]
    return suite


GX_PROJECT = "great_expectations"      # the file-backed GX project's folder under storage.artifacts_dir


def data_docs_index(project_dir: Path) -> Path:
    """The Data Docs site's front page (GX's default local site) of the project in ``project_dir``."""
    return project_dir / "gx" / "uncommitted" / "data_docs" / "local_site" / "index.html"


def run_suite(df: DataFrame, table: str, expectations: list, project_dir: Path | None = None,
              run_name: str | None = None) -> SuiteResult:
    """Validate ``df`` against ``expectations`` with a GX Checkpoint (Spark engine).

    With ``project_dir`` the GX project is file-backed there: the suite, its validation
    definition and checkpoint are stored as JSON (replaced each run: the suite's bounds depend
    on the dates), every result is kept under ``run_name``, and the checkpoint's
    UpdateDataDocsAction adds it to the Data Docs site (``data_docs_index``). Without it the
    context is ephemeral and nothing is written.
    """
    import great_expectations as gx
    from great_expectations.checkpoint import UpdateDataDocsAction
    from great_expectations.core.run_identifier import RunIdentifier
    from great_expectations.data_context.types.base import ProgressBarsConfig

    if project_dir is None:
        context = gx.get_context(mode="ephemeral")
    else:
        context = gx.get_context(mode="file", project_root_dir=str(project_dir))
    context.variables.progress_bars = ProgressBarsConfig(globally=False, metric_calculations=False)
    safe = table.replace(".", "_")
    asset = context.data_sources.add_or_update_spark(name=f"{safe}_source").add_dataframe_asset(name=safe)
    batch_definition = asset.add_batch_definition_whole_dataframe(f"{safe}_batch")
    suite = context.suites.add_or_update(gx.ExpectationSuite(name=f"{safe}_suite", expectations=expectations))
    validation = context.validation_definitions.add_or_update(
        gx.ValidationDefinition(name=f"{safe}_validation", data=batch_definition, suite=suite))
    checkpoint = context.checkpoints.add_or_update(gx.Checkpoint(
        name=f"{safe}_checkpoint", validation_definitions=[validation], result_format="SUMMARY",
        actions=[] if project_dir is None else [UpdateDataDocsAction(name="update_data_docs")]))
    run = checkpoint.run(batch_parameters={"dataframe": df},
                         run_id=RunIdentifier(run_name=run_name) if run_name else None)
    key, result = next(iter(run.run_results.items()))
    outcomes = []
    for r in result.results:
        cfg = r.expectation_config
        kwargs = dict(cfg.kwargs)
        observed = _describe(r.result, r.exception_info)
        outcomes.append(ExpectationOutcome(
            table=table, expectation=cfg.type if not cfg.description else f"{cfg.type}: {cfg.description}",
            column=kwargs.get("column") or (f"{kwargs['column_A']},{kwargs['column_B']}"
                                            if "column_A" in kwargs else None),
            success=bool(r.success), observed=observed,
            details={k: v for k, v in kwargs.items() if k not in ("batch_id",)}))
    pages = context.get_docs_sites_urls(resource_identifier=key) if project_dir is not None else []
    return SuiteResult(table, outcomes, pages[0]["site_url"] if pages else None)


def _describe(result: dict, exception_info: Any) -> str:
    if exception_info and isinstance(exception_info, dict) and exception_info.get("raised_exception"):
        return f"error: {exception_info.get('exception_message')}"
    result = result or {}
    if "unexpected_count" in result:
        text = f"{result['unexpected_count']} unexpected of {result.get('element_count')}"
        sample = result.get("partial_unexpected_list")
        if sample:
            text += f", e.g. {json.dumps(sample[:3], default=str)}"
        return text
    if "observed_value" in result:
        return f"observed {json.dumps(result['observed_value'], default=str)[:200]}"
    return json.dumps(result, default=str)[:200]
