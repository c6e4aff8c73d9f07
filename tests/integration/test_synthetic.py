"""The synthetic log reproduces the paper's skew, focus split and CTR structure."""
from __future__ import annotations

import datetime as dt

import numpy as np
import pandas as pd
import pytest
from pyspark.sql import functions as F

from features.synthetic import generate_impressions


@pytest.fixture(scope="module")
def logs(spark, make_config):
    cfg = make_config()
    df = generate_impressions(spark, cfg.generator, cfg.taxonomy, days=3, rows_per_day=100_000)
    return cfg, df.cache()


def test_slot_shares_match_config_within_tolerance(logs):
    cfg, df = logs
    n = df.count()
    assert n == 300_000
    shares = {r.slot: r["count"] / n for r in df.groupBy("slot").count().collect()}
    for slot, settings in cfg.generator.slots.items():
        assert shares[slot] == pytest.approx(settings.share, abs=0.006), slot
    assert shares["stream_audio"] == pytest.approx(0.70, abs=0.006)


def test_audio_listening_is_mostly_out_of_focus_and_in_focus_clicks_10x(logs):
    cfg, df = logs
    audio = df.where(F.col("slot").isin("stream_audio", "podcast"))
    stats = {r.focus_state: r for r in audio.groupBy("focus_state").agg(
        F.count(F.lit(1)).alias("n"), F.avg("true_ctr").alias("ctr"), F.avg("clicked").alias("clicks")).collect()}
    out_share = stats["out_of_focus"].n / (stats["out_of_focus"].n + stats["in_focus"].n)
    assert out_share == pytest.approx(0.70, abs=0.01)
    ratio = stats["in_focus"].ctr / stats["out_of_focus"].ctr
    assert 8.0 <= ratio <= 11.0, ratio
    # realised clicks follow true_ctr
    assert stats["in_focus"].clicks == pytest.approx(stats["in_focus"].ctr, rel=0.1)
    video_focus = df.where(F.col("slot") == "stream_video").agg(
        F.avg((F.col("focus_state") == "in_focus").cast("double"))).first()[0]
    assert video_focus == 1.0


AUDIO_SLOTS = ("stream_audio", "podcast", "stream_audio_leavebehind", "podcast_leavebehind")
VIDEO_SLOTS = ("stream_video", "embedded_music", "podcast_video")


def _audio_cross():
    return (F.col("headphones") == "yes") & F.col("content_genre").isin("rock", "hiphop", "electronic", "comedy",
                                                                       "sports")


def _video_cross():
    return F.col("age_bucket").isin("18-24", "25-34", "35-44") & F.col("device").isin("tv", "desktop", "laptop")


def _lift(df, slots, condition) -> float:
    """Mean true_ctr where `condition` holds over where it does not, within `slots`."""
    sub = df.where(F.col("slot").isin(*slots))
    on = sub.where(condition).agg(F.avg("true_ctr")).first()[0]
    off = sub.where(~condition).agg(F.avg("true_ctr")).first()[0]
    return on / off


def test_each_modality_has_its_own_cross_on_a_fifth_of_its_rows_every_day(logs):
    _, df = logs
    for slots, cross in ((AUDIO_SLOTS, _audio_cross()), (VIDEO_SLOTS, _video_cross())):
        share = df.where(F.col("slot").isin(*slots)).agg(F.avg(cross.cast("double"))).first()[0]
        assert 0.18 <= share <= 0.26, share
    # 2026-01-01..03: Thursday, Friday, Saturday; each cross lifts its own modality on each day
    for day in ("2026-01-01", "2026-01-02", "2026-01-03"):
        one_day = df.where(F.col("event_date") == day)
        assert _lift(one_day, AUDIO_SLOTS, _audio_cross()) > 2.0
        assert _lift(one_day, VIDEO_SLOTS, _video_cross()) > 2.0
    # ... and not the other one (beyond the shared features' own, opposite effects)
    assert _lift(df, VIDEO_SLOTS, _audio_cross()) < 1.0
    assert _lift(df, AUDIO_SLOTS, _video_cross()) < 1.0


@pytest.mark.parametrize("column, value", [("headphones", "yes"), ("device", "tv"), ("device", "desktop")])
def test_shared_features_push_audio_and_video_in_opposite_directions(logs, column, value):
    _, df = logs
    audio, video = _lift(df, AUDIO_SLOTS, F.col(column) == value), _lift(df, VIDEO_SLOTS, F.col(column) == value)
    assert (audio - 1) * (video - 1) < 0, (audio, video)
    assert min(abs(audio - 1), abs(video - 1)) > 0.15


def test_category_affinity_follows_age_and_country_and_content_effect_is_weaker(logs):
    _, df = logs
    by_cell = df.groupBy("age_bucket", "country", "advertiser_category").agg(F.avg("true_ctr").alias("ctr"))
    # in every (age bucket, country) cell one advertiser category stands out
    spread = by_cell.groupBy("age_bucket", "country").agg((F.max("ctr") / F.expr("percentile_approx(ctr, 0.5)"))
                                                          .alias("r")).agg(F.min("r")).first()[0]
    assert spread > 1.8
    ctr = {r.slot: r.ctr for r in df.groupBy("slot").agg(F.avg("true_ctr").alias("ctr")).collect()}
    content_effect = ctr["podcast"] / ctr["stream_audio"]
    modality_effect = ctr["stream_video"] / ctr["stream_audio"]
    assert 1.0 < content_effect < modality_effect


def test_the_ceiling_is_the_oracle_with_the_unobserved_attention_averaged_out(logs):
    cfg, df = logs
    share, attention = cfg.generator.effects["attention_share"], cfg.generator.effects["attention"]
    rows = df.select("true_ctr", "ceiling_ctr").toPandas()
    t, c = rows.true_ctr.to_numpy(), rows.ceiling_ctr.to_numpy()
    # each row's true_ctr is one of the two states the ceiling mixes
    logit_t = np.log(t / (1 - t))
    attentive = np.isclose(c, share * t + (1 - share) / (1 + np.exp(-(logit_t - attention))), rtol=1e-9)
    calm = np.isclose(c, share / (1 + np.exp(-(logit_t + attention))) + (1 - share) * t, rtol=1e-9)
    assert np.all(attentive | calm)
    assert attentive.mean() == pytest.approx(share, abs=0.005)
    # E[true_ctr | logged columns] = ceiling: equal means overall, the ceiling strictly less spread
    assert t.mean() == pytest.approx(c.mean(), rel=0.01)
    assert c.var() < t.var()


def test_a_day_is_the_same_whatever_range_generated_it(spark, make_config):
    cfg = make_config()
    d = dt.date(2026, 3, 2)
    alone = generate_impressions(spark, cfg.generator, cfg.taxonomy, start_date=d, days=1, rows_per_day=2000)
    within = generate_impressions(spark, cfg.generator, cfg.taxonomy, start_date=d - dt.timedelta(days=1),
                                  days=2, rows_per_day=2000).where(F.col("event_date") == d)
    assert alone.exceptAll(within).count() == 0 and within.exceptAll(alone).count() == 0
    other_seed = generate_impressions(spark, cfg.generator, cfg.taxonomy, start_date=d, days=1,
                                      rows_per_day=2000, seed=99)
    assert other_seed.select("slot", "user_id").exceptAll(alone.select("slot", "user_id")).count() > 1000
    assert alone.select("impression_id").distinct().count() == 2000


def _content_digest(df) -> str:
    """sha256 of every column of every row (sorted by impression_id), doubles by their exact bits
    (``float.hex``), timestamps as epoch microseconds, dates as ISO strings, plus the schema."""
    import hashlib

    from pyspark.sql import types as T

    cols = []
    for f in df.schema.fields:
        if isinstance(f.dataType, T.TimestampType):
            cols.append(F.unix_micros(F.col(f.name)).alias(f.name))
        elif isinstance(f.dataType, T.DateType):
            cols.append(F.col(f.name).cast("string").alias(f.name))
        else:
            cols.append(F.col(f.name))
    digest = hashlib.sha256(df.schema.simpleString().encode())
    for row in df.select(*cols).orderBy("impression_id").collect():
        digest.update("|".join(v.hex() if isinstance(v, float) else repr(v) for v in row).encode())
        digest.update(b"\n")
    return digest.hexdigest()


# sha256 of 2026-01-02..2026-01-04 (Fri, Sat, Sun) x 2,000 rows, default conf (seed 7), computed
# with generator v2 (conflicting modality effects, crosses on every day, ceiling_ctr; issue 11).
# A faster generator must give the same rows bit for bit; change this constant only for an
# intended change of the synthetic data (and say so in the commit).
PINNED_DIGEST = "032f803c2995c4306e09efd32a84abab651d00db799016024306c85e5dbbb914"


def test_generator_output_is_pinned_bit_for_bit(spark, make_config):
    cfg = make_config()
    for parts in (None, 3):
        df = generate_impressions(spark, cfg.generator, cfg.taxonomy, start_date=dt.date(2026, 1, 2), days=3,
                                  rows_per_day=2000, num_partitions=parts)
        assert df.count() == 6000
        assert _content_digest(df) == PINNED_DIGEST, f"num_partitions={parts}"


# The benchmark is learnable: a logistic regression given the true structure (the slot, the focus
# state, each shared feature per modality, the two crosses, age x country x category cells, the ad
# and session fatigue) and 1.4M training rows reaches >= 0.95 of the ceiling's signal on later
# days, and never beats it (the ceiling is E[click | logged columns]). Measured label-free:
# gain(x) = expected log loss of the per-slot base rate minus that of x, both against true_ctr.
def _design(df, cfg):
    """(n, fields) int64 indices of one-hot fields, (n,) dense session index, true_ctr, ceiling, labels."""
    audio = F.col("slot").isin(*AUDIO_SLOTS).cast("int")
    fields = [
        F.col("slot"), F.col("focus_state"), F.concat_ws("|", audio, F.col("headphones")),
        F.concat_ws("|", audio, F.col("device").isin("tv", "desktop")),
        F.concat_ws("|", audio, F.col("hour") >= 18),
        F.concat_ws("|", audio, _audio_cross()), F.concat_ws("|", audio, _video_cross()),
        F.concat_ws("|", "age_bucket", "country", "advertiser_category"), F.col("ad_id")]
    names = [f"f{i}" for i in range(len(fields))]
    rows = df.select(*[f.cast("string").alias(n) for f, n in zip(fields, names)], "session_ad_index", "clicked",
                     "true_ctr", "ceiling_ctr").toPandas()
    return rows, names


def _fit_logistic(index: np.ndarray, dense: np.ndarray, labels: np.ndarray, size: int):
    import torch

    torch.manual_seed(0)
    idx, x, y = torch.from_numpy(index), torch.from_numpy(dense).float(), torch.from_numpy(labels).float()
    weights = torch.zeros(size, requires_grad=True)
    slope = torch.zeros(1, requires_grad=True)
    bias = torch.full((1,), float(np.log(labels.mean() / (1 - labels.mean()))), requires_grad=True)
    optimiser = torch.optim.LBFGS([weights, slope, bias], max_iter=200, line_search_fn="strong_wolfe")

    def loss():
        optimiser.zero_grad()
        logit = weights[idx].sum(1) + slope * x + bias
        value = torch.nn.functional.binary_cross_entropy_with_logits(logit, y) + 1e-7 * weights.pow(2).sum()
        value.backward()
        return value

    optimiser.step(loss)
    return lambda i, d: torch.sigmoid(weights[torch.from_numpy(i)].sum(1) + slope * torch.from_numpy(d).float()
                                      + bias).detach().double().numpy()


@pytest.mark.slow
def test_a_learner_given_the_true_structure_reaches_the_ceiling(spark, make_config):
    from core.metrics import signal_gain

    cfg = make_config()
    train, names = _design(generate_impressions(spark, cfg.generator, cfg.taxonomy, start_date=dt.date(2026, 2, 2),
                                                days=14, rows_per_day=100_000), cfg)
    test, _ = _design(generate_impressions(spark, cfg.generator, cfg.taxonomy, start_date=dt.date(2026, 2, 16),
                                           days=3, rows_per_day=100_000), cfg)
    # one weight per (field, value) seen in training; a value unseen there gets index 0 (weight 0)
    train_index = np.zeros((len(train), len(names)), dtype=np.int64)
    test_index = np.zeros((len(test), len(names)), dtype=np.int64)
    size = 1
    for j, name in enumerate(names):
        codes, values = pd.factorize(train[name])
        train_index[:, j] = codes + size
        seen = pd.Index(values).get_indexer(test[name])
        test_index[:, j] = np.where(seen >= 0, seen + size, 0)
        size += len(values)
    predict = _fit_logistic(train_index, train.session_ad_index.to_numpy(), train.clicked.to_numpy(), size)
    learned = predict(test_index, test.session_ad_index.to_numpy())

    t, ceiling = test.true_ctr.to_numpy(), test.ceiling_ctr.to_numpy()
    base = test.groupby("f0").true_ctr.transform("mean").to_numpy()     # per-slot base rate
    gain = {name: signal_gain(t, p, base) for name, p in (("oracle", t), ("ceiling", ceiling), ("learned", learned))}
    print({k: round(v, 6) for k, v in gain.items()}, "learned/ceiling", gain["learned"] / gain["ceiling"])
    assert 0.75 < gain["ceiling"] / gain["oracle"] < 0.95        # the unobserved attention is a real share
    assert 0.95 <= gain["learned"] / gain["ceiling"] <= 1.0
