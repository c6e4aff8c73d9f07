"""Synthetic impression logs: Spark-native, seeded, with the true click probability per row.

Every random draw is a seeded hash of (seed, draw name, date, row index), so a day's rows
depend only on the seed and the date, never on which range or cluster generated them, and
generation is a single narrow map over ``spark.range`` (no driver-side loops).

The click model reproduces the paper's setting (see DESIGN.md section 7 and ``click_logit``):
slot shares skewed to stream_audio, most audio listening out of focus with in-focus CTR ~10x,
shared features whose effects conflict between audio and video (headphones, big screens,
evening), a modality-specific multi-feature cross on about a fifth of each modality's rows on
every day of the week, a user x advertiser-category affinity that follows observed user
attributes, per-ad quality, session fatigue and a weaker content (music/podcast) effect.

Two reference columns come with every row: ``true_ctr``, the click probability the label was
drawn from (the oracle, which nothing can beat), and ``ceiling_ctr`` = E[click | the logged
columns]: the oracle also knows one unobserved per-impression state (the listener's
attention), which the ceiling averages out in closed form. Every other term of the logit is a
function of logged columns (the ad's quality of its ``ad_id``), so a learner given the right
structure and enough data reaches the ceiling (tests/test_synthetic.py checks that one does).
"""
from __future__ import annotations

import datetime as dt
import math
from dataclasses import replace
from functools import reduce

from pyspark.sql import Column, DataFrame, SparkSession
from pyspark.sql import functions as F

from core.columns import lookup, uniform
from core.config import GeneratorSettings
from core.slots import Taxonomy

PLATFORMS = ("ios", "android", "web", "desktop", "tv")
DEVICES = {"ios": "phone", "android": "phone", "web": "laptop", "desktop": "desktop", "tv": "tv"}
COUNTRIES = ("US", "GB", "DE", "SE", "BR", "MX", "IN", "JP")
AGE_BUCKETS = ("18-24", "25-34", "35-44", "45-54", "55+")
GENDERS = ("female", "male", "non_binary")
MUSIC_GENRES = ("pop", "rock", "hiphop", "electronic", "classical", "latin")
PODCAST_GENRES = ("news", "comedy", "true_crime", "sports", "education")
ENERGETIC_GENRES = ("rock", "hiphop", "electronic", "comedy", "sports")
BIG_SCREENS = ("tv", "desktop")                  # devices of the conflicting screen effect
LARGE_SCREENS = ("tv", "desktop", "laptop")      # devices of the video cross
UNDER_45 = ("18-24", "25-34", "35-44")           # age buckets of the video cross
EVENING_FROM_HOUR = 18


def standard_normal(seed: int, name: str, *keys: Column) -> Column:
    """Approximately N(0, 1) (Irwin-Hall of four uniforms): cheap and bounded."""
    total = reduce(lambda a, b: a + b, [uniform(seed, f"{name}#{i}", *keys) for i in range(4)])
    return (total - 2.0) * math.sqrt(3.0)


def pick(u: Column, values: tuple[str, ...], weights: tuple[float, ...] | None = None) -> Column:
    """Map a uniform draw to one of ``values`` (equal or given weights)."""
    weights = weights or tuple(1.0 for _ in values)
    total = float(sum(weights))
    expr, cumulative = None, 0.0
    for value, w in zip(values[:-1], weights[:-1]):
        cumulative += w / total
        expr = F.when(u < cumulative, F.lit(value)) if expr is None else expr.when(u < cumulative, F.lit(value))
    last = F.lit(values[-1])
    return last if expr is None else expr.otherwise(last)


def _logit(p: float) -> float:
    return math.log(p / (1.0 - p))


def _pick_index(u: Column, weights: tuple[float, ...]) -> Column:
    """The index ``pick`` would choose (same cumulative thresholds, same comparisons), as an int."""
    total = float(sum(weights))
    expr, cumulative = None, 0.0
    for i, w in enumerate(weights[:-1]):
        cumulative += w / total
        expr = F.when(u < cumulative, F.lit(i)) if expr is None else expr.when(u < cumulative, F.lit(i))
    last = F.lit(len(weights) - 1)
    return last if expr is None else expr.otherwise(last)


def _per_slot(index: Column, values: list) -> Column:
    """``values[index]`` from a literal array (one array access, not a CASE chain per reference)."""
    return F.element_at(F.array(*[F.lit(v) for v in values]), index + 1)


def generate_impressions(spark: SparkSession, settings: GeneratorSettings, taxonomy: Taxonomy,
                         start_date: dt.date | None = None, days: int | None = None,
                         rows_per_day: int | None = None, seed: int | None = None,
                         num_partitions: int | None = None) -> DataFrame:
    """Impression logs for ``days`` days from ``start_date``, ``rows_per_day`` rows each.

    Performance (the draws and arithmetic are unchanged, so the rows are the same bit for bit):
    what depends only on the day (dates, weekday, the impression-id prefix), the user or the ad
    is computed once in a small table and broadcast-joined onto the rows by its key; the slot's
    attributes are array look-ups by a slot index; each row then costs its own 11 hashes, a few
    comparisons and the logit. One big fused projection (the former shape) compiled to a Java
    method above the JIT's 8,000-byte limit and ran interpreted.
    """
    g = replace(settings, **{k: v for k, v in dict(start_date=start_date, days=days,
                                                    rows_per_day=rows_per_day, seed=seed).items()
                             if v is not None})
    s, eff = g.seed, g.effects
    total = g.days * g.rows_per_day
    parts = num_partitions or max(spark.sparkContext.defaultParallelism, total // 500_000)

    # Per day: every row of a day shares these (same Spark expressions as per row before).
    event_date = F.date_add(F.lit(g.start_date), F.col("id").cast("int"))
    day_table = spark.range(0, g.days, numPartitions=1).select(
        F.col("id").cast("int").alias("day"), event_date.alias("event_date")).select(
        "day", "event_date", F.unix_date(F.col("event_date")).alias("d"),
        F.concat(F.lit("imp-"), F.date_format("event_date", "yyyyMMdd"), F.lit("-")).alias("id_prefix"),
        F.dayofweek("event_date").alias("dow"),
        F.unix_timestamp(F.col("event_date").cast("timestamp")).alias("midnight_s"))

    # Per user: everything drawn from (seed, name, user_n).
    user_key = F.col("user_n")
    users = spark.range(0, g.num_users + 1, numPartitions=1).withColumnRenamed("id", "user_n").select(
        "user_n",
        F.format_string("u%07d", user_key).alias("user_id"),
        pick(uniform(s, "platform", user_key), PLATFORMS, (0.35, 0.35, 0.1, 0.12, 0.08)).alias("platform"),
        pick(uniform(s, "country", user_key), COUNTRIES).alias("country"),
        pick(uniform(s, "age", user_key), AGE_BUCKETS, (0.25, 0.3, 0.2, 0.15, 0.1)).alias("age_bucket"),
        pick(uniform(s, "gender", user_key), GENDERS, (0.48, 0.48, 0.04)).alias("gender"),
        F.floor(-F.log(uniform(s, "tenure", user_key)) * 400).cast("double").alias("user_tenure_days"),
    ).select("*", lookup(F.col("platform"), DEVICES).alias("device")).select(
        "*",
        # the preferred advertiser category follows observed attributes (age bucket x country):
        # learnable from the logs as a cross of three logged columns
        F.pmod(F.xxhash64(F.lit(s), F.lit("preferred_category"), F.col("age_bucket"), F.col("country")),
               F.lit(g.num_advertiser_categories)).alias("preferred_category_n"),
        F.col("device").isin(*BIG_SCREENS).alias("big_screen"),
        (F.col("device").isin(*LARGE_SCREENS) & F.col("age_bucket").isin(*UNDER_45)).alias("under_45_large_screen"))

    # Per ad: advertiser, category and quality depend on ad_n only.
    ad_key = F.col("ad_n")
    advertiser_n = F.pmod(F.xxhash64(F.lit(s), F.lit("advertiser"), ad_key), F.lit(g.num_advertisers))
    ads = spark.range(0, g.num_ads + 1, numPartitions=1).withColumnRenamed("id", "ad_n").select(
        "ad_n", advertiser_n.alias("advertiser_n"),
        standard_normal(s, "ad_quality", ad_key).alias("ad_quality"),
    ).select(
        "ad_n",
        F.format_string("ad%05d", ad_key).alias("ad_id"),
        F.format_string("cmp%05d", (ad_key / 4).cast("long")).alias("campaign_id"),
        F.format_string("adv%04d", F.col("advertiser_n")).alias("advertiser_id"),
        F.pmod(F.xxhash64(F.lit(s), F.lit("category"), F.col("advertiser_n")),
               F.lit(g.num_advertiser_categories)).alias("category_n"),
        "ad_quality",
    ).select("*", F.format_string("cat%02d", F.col("category_n")).alias("advertiser_category"))

    rows = spark.range(0, total, numPartitions=parts)
    day = (F.col("id") / g.rows_per_day).cast("int")
    idx = F.col("id") % g.rows_per_day
    df = rows.select(day.alias("day"), idx.alias("idx")).join(F.broadcast(day_table), "day")
    key = (F.col("d"), F.col("idx"))

    def u(name: str) -> Column:
        return uniform(s, name, *key)

    slot_names = tuple(g.slots)
    shares = tuple(g.slots[n].share for n in slot_names)
    df = df.select(
        "event_date", "idx", "id_prefix", "dow", "midnight_s",
        _pick_index(u("slot"), shares).alias("slot_i"),
        F.floor(F.pow(u("user"), 2.0) * g.num_users).cast("long").alias("user_n"),   # heavy users first
        F.floor(u("ad") * g.num_ads).cast("long").alias("ad_n"),
        F.floor(F.pow(u("hour"), 0.8) * 24).cast("int").alias("hour"),
        F.floor(u("second") * 3600).cast("int").alias("second_of_hour"),
        F.floor(-F.log(u("session")) * 2.5).cast("int").alias("session_ad_index"),
        u("focus").alias("u_focus"), u("headphones").alias("u_headphones"),
        u("genre").alias("u_genre"), u("duration").alias("u_duration"), u("click").alias("u_click"),
        u("attention").alias("u_attention"),
    )

    slot_i = F.col("slot_i")
    modality = [taxonomy.slots[n].modality for n in slot_names]
    content = [taxonomy.slots[n].content for n in slot_names]
    fmt = [taxonomy.slots[n].format for n in slot_names]
    # the content genre as an index into music + podcast genres (each pick's own thresholds)
    genres = MUSIC_GENRES + PODCAST_GENRES
    is_podcast = _per_slot(slot_i, [c == "podcast" for c in content])
    genre_i = F.when(is_podcast, _pick_index(F.col("u_genre"), tuple(1.0 for _ in PODCAST_GENRES))
                     + len(MUSIC_GENRES)) \
        .otherwise(_pick_index(F.col("u_genre"), tuple(1.0 for _ in MUSIC_GENRES)))
    # ad duration as pick(...) of "6"/"15"/"30" cast to double gave: the same values as doubles
    duration = F.when(_per_slot(slot_i, [f == "video" for f in fmt]), pick(F.col("u_duration"), (6.0, 15.0, 30.0))) \
        .when(_per_slot(slot_i, [f == "display" for f in fmt]), F.lit(0.0)) \
        .otherwise(pick(F.col("u_duration"), (15.0, 30.0)))
    df = df.select(
        "*",
        _per_slot(slot_i, list(slot_names)).alias("slot"),
        _per_slot(slot_i, [m == "audio" for m in modality]).alias("is_audio"),
        _per_slot(slot_i, [m == "video" for m in modality]).alias("is_video"),
        is_podcast.alias("is_podcast"),
        (F.col("u_focus") < _per_slot(slot_i, [g.slots[n].in_focus_share for n in slot_names])).alias("in_focus"),
        _per_slot(slot_i, [_logit(g.slots[n].base_ctr) for n in slot_names]).alias("base_logit"),
        (F.col("u_headphones") < _per_slot(slot_i, [0.45 if m == "audio" else 0.2 for m in modality])
         ).alias("has_headphones"),
        genre_i.alias("genre_i"),
        duration.alias("ad_duration_s"),
    ).select(
        "*",
        _per_slot(F.col("genre_i"), list(genres)).alias("content_genre"),
        _per_slot(F.col("genre_i"), [x in ENERGETIC_GENRES for x in genres]).alias("energetic"),
    ).join(F.broadcast(users), "user_n").join(F.broadcast(ads), "ad_n")

    logit = click_logit(g)
    share, attention = eff["attention_share"], eff["attention"]
    df = df.select(
        "*",
        _sigmoid(logit + F.when(F.col("u_attention") < share, attention).otherwise(0.0)).alias("true_ctr"),
        (F.lit(share) * _sigmoid(logit + attention) + F.lit(1.0 - share) * _sigmoid(logit)).alias("ceiling_ctr"))
    event_ts = F.timestamp_seconds(F.col("midnight_s") + F.col("hour") * 3600 + F.col("second_of_hour"))
    # format_string("imp-%s-%09d", yyyyMMdd, idx) without a Formatter per row; %09d pads to 9 digits
    # and never truncates, so past 9 digits the id keeps the formatter
    if g.rows_per_day <= 10 ** 9:
        impression_id = F.concat(F.col("id_prefix"), F.lpad(F.col("idx").cast("string"), 9, "0"))
    else:
        impression_id = F.concat(F.col("id_prefix"), F.format_string("%09d", F.col("idx")))

    return df.select(
        impression_id.alias("impression_id"),
        event_ts.alias("event_ts"),
        "user_id", "ad_id", "campaign_id", "advertiser_id", "advertiser_category", "slot",
        F.when(F.col("in_focus"), "in_focus").otherwise("out_of_focus").alias("focus_state"),
        "platform", "device", "country", "age_bucket", "gender", "content_genre",
        F.when(F.col("has_headphones"), "yes").otherwise("no").alias("headphones"),
        "hour", "dow",
        "ad_duration_s",
        F.col("session_ad_index").cast("double").alias("session_ad_index"),
        "user_tenure_days",
        (F.col("u_click") < F.col("true_ctr")).cast("int").alias("clicked"),
        "true_ctr",
        "ceiling_ctr",
        "event_date",
    )


def _sigmoid(x: Column) -> Column:
    return 1.0 / (1.0 + F.exp(-x))


def click_logit(g: GeneratorSettings) -> Column:
    """The click log-odds from logged columns alone (the unobserved attention is added apart).

    Each term is there because the paper describes the platform so (DESIGN.md section 7); signs
    and sizes are set from that description, never tuned for a model:
    - the slot's base rate, and in-focus listening ~10x out-of-focus (video is always in focus);
    - shared features that help one modality and hurt the other, so a head fitted mostly on
      audio rows carries audio's signs into video: headphones (audio heard; a video not
      watched), a big screen (tv or desktop: a video watched; audio in the background), the
      evening (lean-back listening; shorter viewing);
    - one multi-feature cross per modality on about a fifth of its rows, on every day of the
      week: audio = headphones x energetic genre, video = age under 45 x large screen (tv,
      desktop, laptop); each is absent from the other modality;
    - the user's preferred advertiser category (a function of age bucket x country), per-ad
      quality (a function of ad_id), session fatigue, and a content effect (podcast vs music)
      weaker than the modality effect.
    """
    eff = g.effects
    audio, video = F.col("is_audio"), F.col("is_video")

    def by_modality(condition: Column, audio_effect: float, video_effect: float) -> Column:
        return F.when(condition & audio, audio_effect).when(condition & video, video_effect).otherwise(0.0)

    audio_cross = audio & F.col("has_headphones") & F.col("energetic")
    video_cross = video & F.col("under_45_large_screen")
    return (F.col("base_logit")
            + F.when(F.col("in_focus"), math.log(g.in_focus_ctr_multiplier)).otherwise(0.0)
            + by_modality(F.col("has_headphones"), eff["headphones_audio"], eff["headphones_video"])
            + by_modality(F.col("big_screen"), eff["big_screen_audio"], eff["big_screen_video"])
            + by_modality(F.col("hour") >= EVENING_FROM_HOUR, eff["evening_audio"], eff["evening_video"])
            + F.when(audio_cross, eff["audio_cross"]).otherwise(0.0)
            + F.when(video_cross, eff["video_cross"]).otherwise(0.0)
            + F.when(F.col("category_n") == F.col("preferred_category_n"),
                     eff["user_category_affinity"]).otherwise(0.0)
            + F.when(F.col("is_podcast"), eff["content_podcast"]).otherwise(0.0)
            + F.col("ad_quality") * eff["ad_quality_sd"]
            + F.col("session_ad_index") * eff["session_fatigue"])
