from __future__ import annotations

import numpy as np
import pytest

from reviewpipe.explain import explain, one_hot, word_index_whitespace
from reviewpipe.matrix import sparse_rows, to_dense
from reviewpipe.tokenizer import TokenizerSpec
from reviewpipe.vocab import Vocabulary, fingerprint

SEED = ("Yours and mine ancestors had run after a mastodons or wild boar, like an olympic sprinter, with a spear "
        "in hand covering themselves with leaves and tiger skin, for their breakfast")


def test_seed_sentence_has_28_unique_words():
    index = word_index_whitespace(SEED)
    assert len(index) == 28
    assert list(index.items())[:4] == [("Yours", 1), ("and", 2), ("mine", 3), ("ancestors", 4)]
    assert index["boar,"] == 12 and index["breakfast"] == 28
    hot = one_hot(index)
    assert hot.shape == (28, 29)
    assert hot.sum() == 28 and hot[:, 0].sum() == 0 and hot[27, 28] == 1


def tiny_vocab(oov="[UNK]") -> Vocabulary:
    spec_tok = TokenizerSpec(mode="default", oov_token=oov)
    tokens = ["and", "with", "a", "run"]
    spec = {"tokenizer": spec_tok.to_dict(), "size": spec_tok.first_word_index + len(tokens),
            "corpus": {"documents": 3, "tokens": 10}}
    spec["fingerprint"] = fingerprint(spec, tokens)
    return Vocabulary(tokens, [4, 3, 2, 1], [3, 2, 2, 1], spec)


def test_explain_report_with_vocabulary():
    report = explain(SEED, tiny_vocab(), maxlen=8, padding="post", truncating="pre", embedding_dim=32)
    lines = report.splitlines()
    assert "1. unique words (split on whitespace): 28; word_index starts at 1, 0 is reserved" in lines
    assert "     1 Yours      01000000000000000000000000000" in lines
    assert "   ids:    [1, 2, 1, 1, 1, 5, 1, 4, 1, 1, 1, 1, 1, 1, 1, 1, 3, 4, 1, 1, 1, 1, 1, 3, 1, 2, 1, 1, 1, 1, 1]" in lines
    assert "   padded (maxlen=8, padding=post, truncating=pre): [3, 1, 2, 1, 1, 1, 1, 1]" in lines
    assert "   one-hot: 8 x 6 = 48 values = 0.2 KiB" in lines
    assert any(line.startswith("   OOV words (24): ['yours', 'mine'") and line.endswith("-> id 1") for line in lines)


def test_matrix_modes_match_keras_formulas():
    # rows: ids [2, 2, 3] and [] and [1, 4]
    values, lengths = np.array([2, 2, 3, 1, 4]), np.array([3, 0, 2])
    dense = {m: to_dense(sparse_rows(values, lengths, m, 5, {2: 2, 3: 1, 4: 1}, 3), 5)
             for m in ("binary", "count", "freq", "tfidf")}
    np.testing.assert_array_equal(dense["binary"], [[0, 0, 1, 1, 0], [0] * 5, [0, 1, 0, 0, 1]])
    np.testing.assert_array_equal(dense["count"], [[0, 0, 2, 1, 0], [0] * 5, [0, 1, 0, 0, 1]])
    np.testing.assert_allclose(dense["freq"], [[0, 0, 2 / 3, 1 / 3, 0], [0] * 5, [0, 0.5, 0, 0, 0.5]])
    assert dense["tfidf"][0, 2] == pytest.approx((1 + np.log(2)) * np.log(1 + 3 / 3))
    assert dense["tfidf"][2, 1] == pytest.approx(np.log(1 + 3 / 1))  # OOV id 1: no doc count
    with pytest.raises(ValueError, match="matrix mode 'onehot' is not one of binary, count, freq, tfidf"):
        sparse_rows(values, lengths, "onehot", 5)


def test_shard_writer_row_groups_and_files(tmp_path):
    import pyarrow as pa
    import pyarrow.fs as pafs
    import pyarrow.parquet as pq

    from reviewpipe.config import EncodeConf
    from reviewpipe.encode import ShardWriter

    w = ShardWriter(pafs.LocalFileSystem(), str(tmp_path), "train", 3, EncodeConf(row_group_rows=64, rows_per_file=150))
    for start in range(0, 330, 70):  # uneven batches: 70, 70, 70, 70, 50
        n = min(70, 330 - start)
        w.add(pa.table({"x": pa.array(range(start, start + n), pa.int32())}))
    done = w.finish()
    assert [(name, rows) for _, name, rows, _, _ in done] == [
        ("split=train/task-00003-0000.parquet", 150), ("split=train/task-00003-0001.parquet", 150),
        ("split=train/task-00003-0002.parquet", 30)]
    groups = [[pq.ParquetFile(tmp_path / name).metadata.row_group(i).num_rows
               for i in range(pq.ParquetFile(tmp_path / name).num_row_groups)] for _, name, *_ in done]
    assert groups == [[64, 64, 22], [64, 64, 22], [30]]
    values = [v for _, name, *_ in done for v in pq.read_table(tmp_path / name).column("x").to_pylist()]
    assert values == list(range(330))
