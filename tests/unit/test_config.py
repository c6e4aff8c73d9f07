"""conf/ loading: defaults are valid; bad files and values fail naming the key and file."""
from __future__ import annotations

import pytest

from core.config import PROJECT_ROOT, ConfigError, load_config


def test_default_config_loads_with_the_papers_taxonomy():
    cfg = load_config()
    tax = cfg.taxonomy
    assert len(tax.slot_names) == 7
    assert tax.grouping().name == "audio_video"
    assert tax.grouping("per_slot").num_tasks == 7
    assert tax.grouping("single").num_tasks == 1
    av = tax.grouping("audio_video")
    assert av.task_index("stream_audio") == 0 and av.task_index("podcast_video") == 1
    assert tax.grouping("music_podcast").task_of_slot["podcast_leavebehind"] == "podcast"
    assert cfg.sampling.rate("stream_audio", 1) == 1.0
    assert cfg.sampling.rate("stream_audio", 0) == 0.1
    assert cfg.sampling.rate("podcast_video", 0) == 1.0


def test_unknown_key_is_named_with_its_file():
    with pytest.raises(ConfigError, match=r"data\.yaml.*'generator\.rows_per_dya'"):
        load_config(overrides=["generator.rows_per_dya=5"])


def test_bad_value_names_the_key():
    with pytest.raises(ConfigError, match=r"'generator\.rows_per_day' must be a positive integer, got -3"):
        load_config(overrides=["generator.rows_per_day=-3"])
    with pytest.raises(ConfigError, match=r"'sampling\.slots\.stream_audio\.negative' must be in \(0, 1\]"):
        load_config(overrides=["sampling.slots.stream_audio.negative=0"])
    with pytest.raises(ConfigError, match=r"'sampling\.slots\.stream_podcast' is not a slot"):
        load_config(overrides=["sampling.slots.stream_podcast={negative: 0.5}"])


def test_slot_shares_must_sum_to_one():
    with pytest.raises(ConfigError, match=r"share' must sum to 1"):
        load_config(overrides=["generator.slots.stream_audio.share=0.5"])


def test_malformed_yaml_file_is_named(tmp_path):
    bad = tmp_path / "broken.yaml"
    bad.write_text("generator: {days: [1, 2\n")
    with pytest.raises(ConfigError, match=r"broken\.yaml: not valid YAML"):
        load_config(extra_files=[bad])


def test_unknown_section_and_bad_grouping(tmp_path):
    extra = tmp_path / "extra.yaml"
    extra.write_text("trainng: {epochs: 3}\n")
    with pytest.raises(ConfigError, match=r"unknown config section.*'trainng' in .*extra\.yaml"):
        load_config(extra_files=[extra])
    with pytest.raises(ConfigError, match=r"groupings\.audio_video\.tasks' must list exactly"):
        load_config(overrides=["groupings.audio_video.tasks=[audio]"])
    with pytest.raises(ConfigError, match=r"'default_grouping' must be one of"):
        load_config(overrides=["default_grouping=by_mood"])


def test_schema_roles_cannot_double_as_features():
    with pytest.raises(ConfigError, match=r"'schema\.label'.*cannot also be"):
        load_config(overrides=["schema.dense=[clicked]"])
    with pytest.raises(ConfigError, match=r"'features\.log1p_dense' names 'bitrate'"):
        load_config(overrides=["features.log1p_dense=[bitrate]"])


def test_vocabulary_caps_are_off_by_default_and_checked_per_categorical_column():
    assert load_config().features.vocabulary_caps == {}
    cfg = load_config(overrides=["features.vocabulary_caps={user_id: {capacity: 100000, hash_buckets: 10000}}"])
    assert cfg.features.vocabulary_caps == {"user_id": (100000, 10000)}
    with pytest.raises(ConfigError, match=r"data\.yaml.*'features\.vocabulary_caps\.bitrate' is not a categorical"):
        load_config(overrides=["features.vocabulary_caps={bitrate: {capacity: 10, hash_buckets: 2}}"])
    with pytest.raises(ConfigError, match=r"'features\.vocabulary_caps\.user_id\.capacity' must be a positive "
                                          r"integer, got 0"):
        load_config(overrides=["features.vocabulary_caps={user_id: {capacity: 0, hash_buckets: 2}}"])
    with pytest.raises(ConfigError, match=r"'features\.vocabulary_caps\.ad_id\.hash_buckets' is required"):
        load_config(overrides=["features.vocabulary_caps={ad_id: {capacity: 10}}"])
    with pytest.raises(ConfigError, match=r"unknown key\(s\) 'features\.vocabulary_caps\.ad_id\.bucket'"):
        load_config(overrides=["features.vocabulary_caps={ad_id: {capacity: 10, hash_buckets: 2, bucket: 3}}"])
    with pytest.raises(ConfigError, match=r"'features\.vocabulary_caps\.ad_id\.capacity' \+ hash_buckets must be"):
        load_config(overrides=["features.vocabulary_caps={ad_id: {capacity: 2147483000, hash_buckets: 1000}}"])


def test_evaluation_experiment_and_auction_sections_are_checked():
    cfg = load_config()
    assert cfg.experiments.baseline == "wide_deep" and "camoe_no_alm" in cfg.experiments.models
    quick = cfg.experiments.quick()           # --quick: same models, fewer seeds/epochs/resamples
    assert (quick.models, quick.seeds, quick.epochs, quick.bootstrap_resamples) == \
        (cfg.experiments.models, cfg.experiments.seeds[:2], 1, 50)
    assert cfg.auction.serve_focus == {"audio": "out_of_focus", "video": "in_focus"}
    with pytest.raises(ConfigError, match=r"evaluation\.yaml.*'evaluation\.baseline_model' must be a model"):
        load_config(overrides=["evaluation.baseline_model=deepfm"])
    with pytest.raises(ConfigError, match=r"'evaluation\.temperature_min' must be below temperature_max"):
        load_config(overrides=["evaluation.temperature_min=30"])
    with pytest.raises(ConfigError, match=r"'experiments\.models' names unknown model\(s\) \['camoe_t9'\]"):
        load_config(overrides=["experiments.models=[wide_deep, camoe_t9]"])
    with pytest.raises(ConfigError, match=r"'auction\.positions' must be below candidates_per_break"):
        load_config(overrides=["auction.positions.audio=6"])
    with pytest.raises(ConfigError, match=r"'auction\.serve_focus\.video' is required"):
        load_config(overrides=["auction.serve_focus={audio: out_of_focus}"])


STARTER = PROJECT_ROOT / "conf" / "examples" / "starter"


def test_a_real_logs_conf_folder_needs_no_generator_auction_or_experiments(tmp_path):
    cfg = load_config(STARTER)
    assert cfg.generator is None and cfg.auction is None
    assert cfg.taxonomy.grouping().name == "modality" and cfg.experiments.target_model == "camoe"
    assert cfg.storage.warehouse_dir.resolve() == PROJECT_ROOT / "starter-lake" / "warehouse"
    # a folder with only what the platform's jobs need: the optional sections are refused where used
    for name in STARTER.glob("*.yaml"):
        (tmp_path / name.name).write_text(name.read_text().split("\nexperiments:")[0])
    bare = load_config(tmp_path)
    assert bare.experiments is None
    with pytest.raises(ConfigError, match=r"generate_logs needs a 'generator:' section .*conf/data\.yaml"):
        bare.require("generator", "generate_logs", "the synthetic log")
    with pytest.raises(ConfigError, match=r"replay_auction needs a 'auction:' section .*conf/evaluation\.yaml"):
        bare.require("auction", "replay_auction", "the auctions")
    assert bare.require("evaluation", "calibrate_evaluate", "-") is bare.evaluation


def test_the_experiments_target_model_defaults_to_default_model_and_must_be_run():
    assert load_config().experiments.target_model == "camoe"
    assert load_config(overrides=["default_model=mmoe"]).experiments.target_model == "camoe"   # set in conf
    with pytest.raises(ConfigError, match=r"'experiments\.target_model' \('unimodal_audio'.*must be one of"):
        load_config(overrides=["experiments.target_model=unimodal_audio"])
    with pytest.raises(ConfigError, match=r"'experiments\.target_model' must be a model of conf/models\.yaml"):
        load_config(overrides=["experiments.target_model=deepfm"])


MOVIELENS = PROJECT_ROOT / "conf" / "examples" / "movielens"


def test_the_ingest_section_joins_lookups_and_derives_schema_columns_only():
    cfg = load_config(MOVIELENS)
    assert load_config().ingest.lookups == () and not load_config().ingest.reshapes
    movies, users = cfg.ingest.lookups
    assert (movies.name, movies.format, movies.key, movies.options["sep"]) == (
        "movies", "csv", ("item_id:token",), "\t")
    assert movies.location == str(PROJECT_ROOT / "conf" / "examples" / "../../data/movielens/ml-100k.item")
    assert list(cfg.ingest.derived)[:3] == ["impression_id", "event_ts", "clicked"]    # order kept
    assert cfg.ingest.source.endswith("movielens/schema.yaml") and cfg.taxonomy.grouping().num_tasks == 2
    unknown = (r"schema\.yaml \(\+ --set ingest\.derived\.rating\): "
               r"'ingest\.derived\.rating' is not a column of the schema")
    with pytest.raises(ConfigError, match=unknown):
        load_config(MOVIELENS, overrides=["ingest.derived.rating='`rating:float`'"])
    with pytest.raises(ConfigError, match=r"override 'ingest.derived.rating=`r`': the value is not valid YAML"):
        load_config(MOVIELENS, overrides=["ingest.derived.rating=`r`"])
    with pytest.raises(ConfigError, match=r"'ingest\.derived\.slot' must be a Spark SQL expression, got 3"):
        load_config(MOVIELENS, overrides=["ingest.derived.slot=3"])
    with pytest.raises(ConfigError, match=r"'ingest\.lookups\.users\.key' must be a list of names, got None"):
        load_config(MOVIELENS, overrides=["ingest.lookups.users.key=null"])
    with pytest.raises(ConfigError, match=r"unknown key\(s\) 'ingest\.lookups\.users\.on'"):
        load_config(MOVIELENS, overrides=["ingest.lookups.users.on=[user_id]"])


def test_set_reaches_a_dotted_spark_setting_and_a_nested_one_is_refused_by_name(tmp_path):
    cfg = load_config(overrides=["spark.conf.spark.sql.shuffle.partitions=400",
                                 "spark.conf.spark.databricks.delta.snapshotPartitions=2"])
    assert cfg.spark.conf["spark.sql.shuffle.partitions"] == "400"
    assert cfg.spark.conf["spark.databricks.delta.snapshotPartitions"] == "2"
    assert "spark" not in cfg.spark.conf
    nested = tmp_path / "spark.yaml"
    nested.write_text("spark:\n  app_name: x\n  master: local[2]\n  shuffle_partitions: 4\n"
                      "  conf:\n    spark:\n      sql:\n        shuffle.partitions: 400\n")
    with pytest.raises(ConfigError, match=r"spark\.yaml: 'spark\.conf\.spark' must be one Spark setting's value"):
        load_config(extra_files=[nested])
