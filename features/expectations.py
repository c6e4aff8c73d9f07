"""The table-level quality gates: Great Expectations 1.x suites over the raw log and the
feature table, run as GX Checkpoints in a file-backed project with Data Docs. A failed gate stops
the pipeline (jobs/validate.py exits 3). Row-level rules: features/quality.py.
"""
from __future__ import annotations

import datetime as dt
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pyspark.sql import DataFrame
from pyspark.sql import functions as F

from core.config import Config
from core.config_data import MAX_CATEGORICAL_ID
from core.feature_table import categorical_column, dense_column


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
    categorical_cols = [categorical_column(c) for c in cfg.schema.categorical]
    suite = [
        gx.expectations.ExpectTableRowCountToBeBetween(min_value=1),
        gx.expectations.ExpectColumnValuesToNotBeNull(column="impression_id"),
        # the daily store's key: an id is unique within its day (a day is built alone)
        gx.expectations.ExpectCompoundColumnsToBeUnique(column_list=["event_date", "impression_id"]),
        gx.expectations.ExpectColumnValuesToNotBeNull(column="event_date"),
        gx.expectations.ExpectColumnValuesToBeInSet(column="slot", value_set=list(tax.slot_names)),
        gx.expectations.ExpectColumnPairValuesToBeInSet(column_A="slot", column_B="modality",
                                                        value_pairs_set=modality_pairs,
                                                        ignore_row_if="neither"),
        gx.expectations.ExpectColumnPairValuesToBeInSet(
            column_A="slot", column_B="slot_id", ignore_row_if="neither",
            value_pairs_set=[(slot, i) for i, slot in enumerate(tax.slot_names)]),
        gx.expectations.ExpectColumnValuesToBeInSet(column="label", value_set=[0, 1]),
        gx.expectations.UnexpectedRowsExpectation(
            description="each day is one build's partition (a day is built whole, never in parts)",
            unexpected_rows_query=("SELECT event_date FROM {batch} GROUP BY event_date "
                                   "HAVING COUNT(DISTINCT build_run_id) > 1")),
        gx.expectations.UnexpectedRowsExpectation(
            description=(f"per-slot positive rate (every accepted row: the store is never down-sampled) "
                         f"within [{q.positive_rate_min}, {q.positive_rate_max}]"),
            unexpected_rows_query=(
                "SELECT slot, AVG(label) AS positive_rate FROM {batch} "
                f"GROUP BY slot HAVING AVG(label) < {q.positive_rate_min} "
                f"OR AVG(label) > {q.positive_rate_max}")),
    ]
    suite += [gx.expectations.ExpectColumnValuesToBeBetween(column=c, min_value=0, max_value=MAX_CATEGORICAL_ID)
              for c in categorical_cols]
    suite += [gx.expectations.ExpectColumnValuesToBeBetween(
        column=c, min_value=-q.dense_abs_max, max_value=q.dense_abs_max) for c in dense_cols]
    suite += [gx.expectations.ExpectColumnValuesToNotBeNull(column=c) for c in dense_cols]
    return suite


GX_PROJECT = "great_expectations"      # the file-backed GX project's folder under storage.artifacts_dir


def gx_project(cfg: Config) -> Path:
    """The file-backed GX project the gates store their suites, results and Data Docs in."""
    return cfg.storage.artifacts_dir / GX_PROJECT


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
