"""The worked real-data example: MovieLens-100k (GroupLens; RecBole's PyPI wheel ships it, `make
movielens-data` keeps its files) ingested by jobs/ingest.py and driven only by
conf/examples/movielens: lookups join each rating's movie and user, derived Spark SQL columns make
the click (rating >= 4) and the slot (genre family x era). CAMoE and the single-task baselines
train on it and write their slot tables.

The expected rows are computed here with pandas from the same files, independently of Spark."""
from __future__ import annotations

import datetime as dt

import pandas as pd
import pytest
from pyspark.sql import functions as F

from core import tables
from jobs import experiments, ingest, pipeline
from tests.helpers import MOVIELENS_CONF, MOVIELENS_DATA

START, END = dt.date(1998, 3, 1), dt.date(1998, 4, 22)      # the log's last 53 days: ~24k ratings
FAMILY = {"Drama": "drama", "Romance": "drama", "War": "drama", "Documentary": "drama", "unknown": "drama",
          "Action": "action", "Adventure": "action", "Sci-Fi": "action", "Western": "action",
          "Fantasy": "action", "Comedy": "comedy", "Musical": "comedy", "Crime": "dark", "Horror": "dark",
          "Mystery": "dark", "Thriller": "dark", "Film-Noir": "dark", "Animation": "family",
          "Children's": "family"}


def expected_ratings() -> pd.DataFrame:
    """The slice's ratings joined and labelled as conf/examples/movielens/schema.yaml says."""
    def read(name):
        table = pd.read_csv(MOVIELENS_DATA / f"ml-100k.{name}", sep="\t", dtype=str, quoting=3)
        return table.rename(columns=lambda c: c.split(":")[0])
    ratings = read("inter").merge(read("item"), on="item_id", how="left").merge(read("user"), on="user_id")
    ratings["ts"] = pd.to_datetime(ratings.timestamp.astype(int), unit="s", utc=True)
    ratings = ratings[(ratings.ts.dt.date >= START) & (ratings.ts.dt.date <= END)].copy()
    year = pd.to_numeric(ratings.release_year, errors="coerce")
    era = pd.Series(pd.NA, index=ratings.index, dtype=object)
    era[year < 1990], era[year >= 1990] = "catalog", "recent"
    ratings["slot"] = era + "_" + ratings["class"].str.split().str[0].map(FAMILY)
    ratings["clicked"] = (ratings.rating.astype(float) >= 4).astype(int)
    return ratings


@pytest.fixture(scope="module")
def expected():
    if not (MOVIELENS_DATA / "ml-100k.inter").is_file():
        pytest.fail(f"{MOVIELENS_DATA} has no ml-100k.inter: run `make movielens-data` (make test does)")
    return expected_ratings()


def test_movielens_from_its_own_files_by_conf_alone(spark, fresh_db, base_overrides, tmp_path, capsys, expected):
    cfg = fresh_db(conf_dir=MOVIELENS_CONF)
    flags = ["--conf-dir", str(MOVIELENS_CONF), *[f"--set={o}" for o in base_overrides],
             f"--set=database={cfg.database}"]
    source = f"--source {MOVIELENS_DATA / 'ml-100k.inter'} --format csv --option 'sep=\\t'"

    # an expression naming a column the log does not have: named with its key, nothing written
    code = ingest.cli([*flags, "--set=ingest.derived.genre=try_element_at(split(`genres:token_seq`, ' '), 1)",
                       "--source", str(MOVIELENS_DATA / "ml-100k.inter"), "--format", "csv", "--option", "sep=\\t"])
    err = capsys.readouterr().err
    assert code == 2 and "ingest.derived.genre:" in err and "genres:token_seq" in err, err[-2000:]
    assert not tables.table_exists(spark, cfg.table(tables.IMPRESSIONS))

    code = pipeline.main([*flags, "--steps", "ingest,build_features,validate",
                          "--step-args", f"ingest={source} --start-date {START} --end-date {END}"])
    out = capsys.readouterr()
    assert code == 0, out.err[-3000:]
    known = expected[expected.slot.notna()]
    assert f"{len(expected):,} rows read, {len(known):,} accepted" in out.err

    impressions = spark.table(cfg.table(tables.IMPRESSIONS))
    got = impressions.groupBy("slot").agg(F.count("*").alias("rows"), F.sum("clicked").alias("clicks")).toPandas()
    want = known.groupby("slot").agg(rows=("clicked", "size"), clicks=("clicked", "sum")).reset_index()
    assert sorted(map(tuple, got.values.tolist())) == sorted(map(tuple, want.values.tolist()))
    assert len(want) == 10                                          # every slot of slots.yaml has ratings
    first = known.sort_values(["ts", "user_id", "item_id"]).iloc[0]
    row = impressions.where(F.col("impression_id") == f"{first.user_id}-{first.item_id}").first()
    assert (row.event_ts.replace(tzinfo=dt.UTC) if row.event_ts.tzinfo is None else row.event_ts) \
        .timestamp() == first.ts.timestamp()
    assert (row.event_date, row.clicked, row.gender, row.occupation, row.release_year) == (
        first.ts.date(), first.clicked, first.gender, first.occupation, float(first.release_year))
    assert row.movie_age_years == first.ts.year - int(first.release_year)
    # a movie without a release year has no era: its rating is quarantined with the row as read
    unknown = expected[expected.slot.isna()]
    quarantined = spark.table(cfg.table(tables.QUARANTINE)).collect()
    assert sorted(r.impression_id for r in quarantined) == sorted(unknown.user_id + "-" + unknown.item_id)
    assert all("slot" in r.reason and "\"rating:float\"" in r.raw_row for r in quarantined), quarantined

    # CAMoE (era heads) and the single-task baselines, each calibrated and evaluated per slot
    models = ["wide_deep", "dcnv2", "camoe"]
    code = experiments.cli([*flags, "--models", *models, "--set=experiments.seeds=[17]", "--set=experiments.epochs=1",
                            "--set=experiments.bootstrap_resamples=20", "--report", str(tmp_path / "report.md")])
    out = capsys.readouterr()
    assert code == 0, out.err[-3000:]
    metrics = spark.table(cfg.table(tables.SLOT_METRICS)).where("level = 'slot' AND calibrated")
    per_model = {r.model: r.slots
                 for r in metrics.groupBy("model").agg(F.countDistinct("slot").alias("slots")).collect()}
    assert per_model == {m: 10 for m in models}
    assert metrics.where("auc_pr IS NULL OR ece_equal_mass IS NULL").count() == 0
    report = (tmp_path / "report.md").read_text()
    assert all(m in report for m in models) and "catalog_drama" in report
