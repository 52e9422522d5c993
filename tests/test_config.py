from __future__ import annotations

import pytest

from conftest import ROOT
from reviewpipe.config import ConfigError, PipelineConf, load_conf, parse_override


def test_shipped_conf_equals_builtin_defaults():
    assert load_conf(ROOT / "conf" / "pipeline.toml") == PipelineConf()


def test_overrides_are_typed():
    conf = load_conf(None, ["vocab.num_words=10000", "tokenizer.mode=keras", "vocab.splits=train,unsup",
                            "ingest.val_fraction=0.25", "tokenizer.lower=false"])
    assert conf.vocab.num_words == 10000
    assert conf.tokenizer.mode == "keras"
    assert conf.vocab.splits == ["train", "unsup"]
    assert conf.ingest.val_fraction == 0.25
    assert conf.tokenizer.lower is False


def test_parse_override_reads_toml_then_falls_back_to_string():
    assert parse_override("encode.maxlen=200") == ("encode", "maxlen", 200)
    assert parse_override('tokenizer.oov_token="<OOV>"') == ("tokenizer", "oov_token", "<OOV>")
    assert parse_override("encode.padding=pre") == ("encode", "padding", "pre")
    assert parse_override('vocab.splits=["train", "unsup"]') == ("vocab", "splits", ["train", "unsup"])


@pytest.mark.parametrize("override, message", [
    ("vocab.num_wrods=5", "vocab.num_wrods: unknown setting; valid keys in [vocab] are"),
    ("vocabulary.num_words=5", "vocabulary.num_words: unknown section 'vocabulary'"),
    ("vocab.num_words=-1", "vocab.num_words: -1 is below the minimum 0"),
    ("vocab.num_words=ten", "vocab.num_words: expected an integer, got 'ten'"),
    ("encode.padding=middle", "encode.padding: 'middle' is not one of 'pre', 'post'"),
    ("ingest.val_fraction=0.95", "ingest.val_fraction: 0.95 is above the maximum 0.9"),
    ("tokenizer.lower=yes", "tokenizer.lower: expected true or false, got 'yes'"),
    ("vocab.splits=train,val", "vocab.splits: ['train', 'val'] must name one or more of train, unsup"),
    ("tokenizer.split=ab", "tokenizer.split: must be exactly one character"),
    ("train.splits=train,val", "train.splits: ['train', 'val'] must name labelled splits to train on, such as train and pseudo"),
    ("pseudo.split=test", "pseudo.split: 'test' is held out; label unsup rows"),
    ("lm.splits=unsup,val", "lm.splits: ['unsup', 'val'] must name one or more of train, unsup"),
    ("model.encoder_init=lm:", "model.encoder_init: expected random or lm:<folder>, got 'lm:'"),
    ("model.encoder_init=word2vec:x", "model.encoder_init: expected random or lm:<folder>, got 'word2vec:x'"),
    ("model.wide_init=nb", "model.wide_init=nb and model.wide_trainable=true set the n-gram weights of a wide & "
                           "deep model; set model.wide_ngrams > 0"),
    ("model.wide_trainable=false", "model.wide_init=zeros and model.wide_trainable=false set the n-gram weights"),
    ("num_words=5", "--set 'num_words=5': the key must look like section.key"),
    ("vocab.num_words", "--set 'vocab.num_words': expected section.key=value"),
])
def test_bad_overrides_name_the_key(override, message):
    with pytest.raises(ConfigError) as e:
        load_conf(None, [override])
    assert str(e.value).startswith(message)


def test_bad_file_names_the_key(tmp_path):
    p = tmp_path / "bad.toml"
    p.write_text("[encode]\nmaxlen = 'long'\n")
    with pytest.raises(ConfigError, match=r"^encode.maxlen: expected an integer, got 'long'$"):
        load_conf(p)
    p.write_text("[nope]\nx = 1\n")
    with pytest.raises(ConfigError, match=r"^nope: unknown section"):
        load_conf(p)
    with pytest.raises(ConfigError, match=r"no such file"):
        load_conf(tmp_path / "missing.toml")


def test_overlapping_label_spellings_are_refused():
    with pytest.raises(ConfigError, match=r"ingest.positive_labels: \['pos'\] are also negative labels"):
        load_conf(None, ["ingest.positive_labels=pos", "ingest.negative_labels=pos,neg"])


def test_spark_defaults_file_formats(tmp_path):
    from reviewpipe.session import read_spark_defaults

    p = tmp_path / "spark-defaults.conf"
    p.write_text("# comment\nspark.a   1\nspark.b=two words\n\nspark.c = x\n")
    assert read_spark_defaults(p) == {"spark.a": "1", "spark.b": "two words", "spark.c": "x"}
    assert read_spark_defaults(tmp_path / "missing.conf") == {}
    p.write_text("lonely\n")
    with pytest.raises(ValueError, match=r"spark-defaults.conf:1: expected 'key value', got 'lonely'"):
        read_spark_defaults(p)


def test_experiment_confs_load_and_presets_apply():
    from pathlib import Path

    root = Path(__file__).resolve().parents[1] / "conf" / "experiments"
    loaded = {p.stem: load_conf(p) for p in sorted(root.glob("*.toml"))}
    assert set(loaded) == {"seed"}  # the multi-step experiments are recipes now (conf/recipes/)
    seed = loaded["seed"]
    assert (seed.model.units, seed.model.embedding_dim, seed.train.maxlen, seed.train.optimizer) == (32, "32", 200, "rmsprop")
    bigru = load_conf(None, ["model.cell=gru", "model.bidirectional=true"])
    assert bigru.model.bidirectional and bigru.model.units == 64 and bigru.model.preset == "default"


def test_spark_defaults_resolve_from_another_folder_or_warn(tmp_path, monkeypatch, caplog):
    from reviewpipe.session import CHECKOUT, defaults_path

    monkeypatch.chdir(tmp_path)  # a job started outside the checkout
    assert defaults_path(load_conf(None, [])) == CHECKOUT / "conf" / "spark-defaults.conf"
    with caplog.at_level("WARNING"):
        assert defaults_path(load_conf(None, ["spark.defaults_file=nowhere/spark.conf"])) is None
    assert "spark.defaults_file nowhere/spark.conf not found" in caplog.text


def test_wide_init_rules_need_a_wide_model_its_train_labels_and_a_start_to_freeze():
    conf = load_conf(None, ["model.wide_ngrams=3", "model.wide_init=nb", "model.wide_trainable=false"])
    assert (conf.model.wide_init, conf.model.wide_trainable, conf.model.wide_nb_c) == ("nb", False, 1000.0)
    with pytest.raises(ConfigError, match=r"^model.wide_trainable=false with model.wide_init=zeros freezes the "
                                          r"n-gram weights at 0; set model.wide_init=nb or model.wide_ngrams=0$"):
        load_conf(None, ["model.wide_ngrams=3", "model.wide_trainable=false"])
    with pytest.raises(ConfigError, match=r"^model.wide_nb_splits: \['train'\] must name one or more of "
                                          r"train.splits \['pseudo'\] \(the wide_init=nb regression fits on "
                                          r"training rows only\)$"):
        load_conf(None, ["model.wide_ngrams=3", "model.wide_init=nb", "train.splits=pseudo"])
    assert load_conf(None, ["model.wide_ngrams=3", "model.wide_init=nb", "train.splits=pseudo",
                            "model.wide_nb_splits=pseudo"]).model.wide_nb_splits == ["pseudo"]
    with pytest.raises(ConfigError, match="model.wide_nb_c: 0.0 is below the minimum"):
        load_conf(None, ["model.wide_ngrams=3", "model.wide_init=nb", "model.wide_nb_c=0.0"])
    frozen = ["model.wide_ngrams=3", "model.wide_init=nb", "model.wide_trainable=false"]
    assert load_conf(None, [*frozen, "model.wide_nb_folds=5"]).model.wide_nb_folds == 5
    for folds, overrides in ((1, frozen), (5, ["model.wide_ngrams=3", "model.wide_init=nb"])):  # 1 fold; trainable
        with pytest.raises(ConfigError, match=rf"^model.wide_nb_folds={folds} stacks a frozen regression out of "
                                              r"fold: it needs 2 or more folds, model.wide_init=nb and "
                                              r"model.wide_trainable=false$"):
            load_conf(None, [*overrides, f"model.wide_nb_folds={folds}"])
